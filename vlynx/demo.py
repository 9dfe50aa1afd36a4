"""The end-to-end demo on the miniature world: does interface alignment help?

Stage, top to bottom (docs/method.md §10), all on the shipped tiny Video LLM (`--model miniworld`),
which has only ever seen silent video:

1. generate the world's splits: reference videos, unpaired unlabeled audio, paired
   instruction data (train) and held-out questions (test);
2. reference statistics on the reference videos (eq. 2-3);
3. interface alignment of an audio LoRA on the unpaired audio: full V-LynX, without the
   attention term, without the distribution term (the paper's ablations);
4. instruction tuning of the LLM LoRA for every row of the paper's table;
5. evaluation on the held-out questions by category: audio only, audio-visual, video only.

The same settings and seed give the same numbers. Results go to `results.json`, a
markdown table and a bar chart (`results.png`).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlynx.files import write_text_atomic
from vlynx.outputs import claim_output, save_run
from vlynx.progress import log
from vlynx.stage_configs import DemoConfig

MODEL = "miniworld"
MODALITY = "audio"
CATEGORIES = ("audio", "audio-visual", "video")


@dataclass(frozen=True)
class Row:
    """One row of the paper's table: how the audio adapter is obtained and what the LLM sees."""

    name: str
    tuned: bool = True  # instruction-tune an LLM LoRA
    audio: bool = True  # audio tokens in the prompt
    alignment: str | None = None  # "full" | "no_attn" | "no_dist": which aligned adapter to start from
    train_vision_adapter: bool = False  # no alignment: the vision LoRA trains during tuning instead


ROWS = (
    Row("zero-shot (video only)", tuned=False, audio=False),
    Row("FT (LLM LoRA, video only)", audio=False),
    Row("V-LynX", alignment="full"),
    Row("V-LynX w/o attention alignment", alignment="no_attn"),
    Row("V-LynX w/o distribution regularization", alignment="no_dist"),
    Row("w/o interface alignment", train_vision_adapter=True),
)
ALIGNMENTS = {"full": {}, "no_attn": {"no_attn": True}, "no_dist": {"no_dist": True}}


@dataclass
class RowResult:
    name: str
    trainable_params: int
    accuracy: dict[str, float]  # category -> exact-match accuracy on the held-out questions
    counts: dict[str, int]  # category -> number of questions
    seconds: float
    predictions: str  # JSONL file of this row's answers, relative to the output folder
    losses: dict[str, float] = field(default_factory=dict)


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the whole demo into `config.out`; returns what `results.json` holds."""
    started = time.time()
    config = config.resolved()
    config.check()
    out = Path(config.out)
    with claim_output(out, out, resume=False, overwrite=config.overwrite):
        out.mkdir(parents=True, exist_ok=True)
        report = _run(config, out)
        save_run(config, out, started)  # the record holds the wall time
    return report


def _run(config: DemoConfig, out: Path) -> dict[str, Any]:
    from vlynx.miniworld import WORLD, generate_split

    started = time.time()
    audio_settings = WORLD.audio_settings()

    # 1. The world: four disjoint splits.
    log.info("[1/5] generating the miniature world in %s", out / "world")
    splits = {split: generate_split(out / "world" / split, split, n, seed=config.seed)
              for split, n in (("reference", config.n_reference), ("align", config.n_align),
                               ("train", config.n_train), ("test", config.n_test))}

    # 2. Reference statistics of the frozen base model on videos.
    log.info("[2/5] reference statistics on %d videos", config.n_reference)
    reference = _reference(out / "reference.safetensors", splits["reference"], WORLD.frames_per_video)

    # 3. Interface alignment on unpaired audio (and the ablations).
    aligned: dict[str, tuple[Path, dict[str, float]]] = {}
    for number, (variant, switches) in enumerate(ALIGNMENTS.items(), 1):
        log.info("[3/5] interface alignment %d/%d (%s)", number, len(ALIGNMENTS), variant)
        aligned[variant] = _align(out / "adapters" / variant, splits["align"], reference, audio_settings,
                                  config, switches)

    # 4-5. Instruction tuning and evaluation, one row at a time.
    results = []
    for number, row in enumerate(ROWS, 1):
        log.info("[4/5] row %d/%d: %s", number, len(ROWS), row.name)
        began = time.perf_counter()
        # The frozen tokens (video; the aligned audio adapter's) are computed once per example and adapter:
        # a cache folder keeps one adapter's tokens per modality, and rows without one share the first's video.
        cache = out / "token-cache" / (row.alignment or next(iter(ALIGNMENTS)))
        model, losses = _row_model(out / "bundles" / _slug(row.name), row, splits["train"], aligned,
                                   audio_settings, config, cache)
        log.info("[5/5] evaluating %s", row.name)
        predictions = Path("predictions") / f"{_slug(row.name)}.jsonl"
        accuracy, counts = _evaluate(model, splits["test"], out / predictions)
        results.append(RowResult(row.name, _trainable_parameters(model), accuracy, counts,
                                 round(time.perf_counter() - began, 1), str(predictions), losses))

    report = {
        "settings": config.to_dict(),
        "model": MODEL,
        "rows": [asdict(result) for result in results],
        "seconds": round(time.time() - started, 1),
    }
    write_text_atomic(out / "results.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "results.md", format_table(report) + "\n")
    plot_results(report, out / "results.png")
    return report


# ----- stages ------------------------------------------------------------------------------------
def _reference(path: Path, videos: Path, frames: int) -> Path:
    from vlynx.backbones import load_backbone
    from vlynx.reference import compute_reference, save_reference, video_sources

    backbone = load_backbone(MODEL)
    stats = compute_reference(backbone, video_sources([videos], ["miniworld"]), frames, batch_size=8)
    save_reference(stats, path)
    return path


def _align(out: Path, data: Path, reference: Path, audio_settings: dict[str, Any], config: DemoConfig,
           switches: dict[str, bool]) -> tuple[Path, dict[str, float]]:
    from vlynx.align import AlignConfig, run_align

    result = run_align(AlignConfig(
        model=MODEL, modality=MODALITY, data=str(data), reference=str(reference), out=str(out),
        modality_settings=audio_settings, lambda_dist=config.lambda_dist, vision_rank=config.vision_rank,
        max_steps=config.align_steps, lr=config.align_lr, batch_size=config.batch_size, seed=config.seed,
        logging_steps=max(config.align_steps // 5, 1), save_steps=10 * config.align_steps, overwrite=True,
        **switches,
    ))
    return result.out, result.final_losses


def _row_model(out: Path, row: Row, train: Path, aligned: dict[str, tuple[Path, dict[str, float]]],
               audio_settings: dict[str, Any], config: DemoConfig, token_cache: Path):
    from vlynx.backbones import load_backbone
    from vlynx.bundle import VLynx
    from vlynx.miniworld import WORLD
    from vlynx.tune import TuneConfig, run_tune

    if not row.tuned:
        return VLynx(load_backbone(MODEL), [], WORLD.frames_per_video), {}
    result = run_tune(TuneConfig(
        model=MODEL, data=str(train), out=str(out), frames=WORLD.frames_per_video,
        modalities=[MODALITY] if row.audio else [],
        vision_adapters=[str(aligned[row.alignment][0])] if row.alignment else [],
        modality_settings={MODALITY: audio_settings} if row.audio else {},
        train_vision_adapter=row.train_vision_adapter, vision_rank=config.vision_rank,
        llm_rank=config.llm_rank, llm_alpha=2.0 * config.llm_rank,
        max_steps=config.tune_steps, lr=config.tune_lr, batch_size=config.batch_size, seed=config.seed,
        logging_steps=max(config.tune_steps // 5, 1), save_steps=10 * config.tune_steps, overwrite=True,
        token_cache=str(token_cache),
    ))
    losses = {"tune_final": round(result.losses[-1], 4)} if result.losses else {}
    if row.alignment:
        losses.update({f"align_{k}": round(v, 4) for k, v in aligned[row.alignment][1].items()})
    return VLynx.from_pretrained(result.bundle), losses


def _evaluate(model, test: Path, predictions: Path) -> tuple[dict[str, float], dict[str, int]]:
    """Exact match of the first answer word, per question category."""
    from vlynx.inputs import read_annotations
    from vlynx.progress import progress

    entries = read_annotations(test)
    requests = []
    for entry in entries:
        request = {"video": str(test.parent / entry["video"]), "question": entry["conversations"][0]["value"]}
        if MODALITY in model.modalities:
            request[MODALITY] = str(test.parent / entry[MODALITY])
        requests.append(request)
    answers: list[str] = []
    batch = 32
    for start in progress(range(0, len(requests), batch), desc="answering", total=-(-len(requests) // batch),
                          unit="batch"):
        answers += model.generate(requests[start:start + batch], max_new_tokens=4, batch_size=batch)
    correct = {category: 0 for category in CATEGORIES}
    counts = {category: 0 for category in CATEGORIES}
    lines = []
    for entry, answer in zip(entries, answers):
        expected = entry["conversations"][1]["value"].strip().lower()
        words = answer.strip().lower().split()
        hit = bool(words) and words[0] == expected
        counts[entry["category"]] += 1
        correct[entry["category"]] += hit
        lines.append(json.dumps({"id": entry["id"], "category": entry["category"], "answer": answer,
                                 "expected": expected, "correct": hit}))
    write_text_atomic(predictions, "\n".join(lines) + "\n")
    accuracy = {c: round(correct[c] / counts[c], 4) if counts[c] else 0.0 for c in CATEGORIES}
    return accuracy, counts


def _trainable_parameters(model) -> int:
    """Parameters V-LynX added to the base model (every LoRA attached)."""
    from vlynx.adapters import adapter_names, adapter_parameter_count

    return sum(adapter_parameter_count(model.backbone, name) for name in adapter_names(model.backbone))


# ----- reporting -----------------------------------------------------------------------------------
def format_table(report: dict[str, Any]) -> str:
    """The results as a markdown table (accuracy in percent)."""
    lines = ["| method | trainable params | audio | audio-visual | video |", "|---|---:|---:|---:|---:|"]
    for row in report["rows"]:
        cells = " | ".join(f"{100 * row['accuracy'][c]:.1f}" for c in CATEGORIES)
        lines.append(f"| {row['name']} | {row['trainable_params']:,} | {cells} |")
    counts = report["rows"][0]["counts"]
    lines.append("")
    lines.append("Held-out questions: " + ", ".join(f"{counts[c]} {c}" for c in CATEGORIES)
                 + f". Wall time {report['seconds']:.0f} s.")
    return "\n".join(lines)


def plot_results(report: dict[str, Any], path: Path) -> None:
    """A grouped bar chart of accuracy per category and row, drawn with PIL (no plotting dependency)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from vlynx.media.images import write_png

    rows, colours = report["rows"], [(66, 133, 244), (234, 67, 53), (52, 168, 83)]
    width, height, left, bottom, top = 900, 420, 60, 120, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    plot_h = height - bottom - top
    draw.line([(left, top), (left, top + plot_h), (width - 20, top + plot_h)], fill="black")
    for tick in range(0, 101, 25):
        y = top + plot_h - plot_h * tick / 100
        draw.line([(left - 4, y), (width - 20, y)], fill=(225, 225, 225) if tick else "black")
        draw.text((left - 34, y - 6), f"{tick}%", fill="black")
    group = (width - 20 - left) / len(rows)
    bar = group * 0.8 / len(CATEGORIES)
    for i, row in enumerate(rows):
        x0 = left + i * group + group * 0.1
        for j, category in enumerate(CATEGORIES):
            value = row["accuracy"][category]
            x = x0 + j * bar
            draw.rectangle([x, top + plot_h * (1 - value), x + bar - 2, top + plot_h], fill=colours[j])
        for k, word_line in enumerate(_wrap(row["name"], 18)):
            draw.text((x0, top + plot_h + 8 + 12 * k), word_line, fill="black")
    for j, category in enumerate(CATEGORIES):
        draw.rectangle([left + 10 + 150 * j, 12, left + 22 + 150 * j, 24], fill=colours[j])
        draw.text((left + 28 + 150 * j, 12), f"{category} questions", fill="black")
    write_png(path, np.asarray(image))


def _wrap(text: str, width: int) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return lines + [current]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")
