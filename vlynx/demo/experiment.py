"""The demo's runs: one seed of the miniature world through every row, and the paired-data curve.

Stages of one seed, top to bottom (docs/method.md §10, design in docs/demo.md), all on the
shipped tiny Video LLM (`--model miniworld`), which has only ever seen silent video:

1. generate the world's splits with the seed: reference videos, unpaired unlabeled audio,
   paired instruction data (train) and held-out questions (test);
2. reference statistics on the reference videos (eq. 2-3);
3. interface alignment of an audio LoRA on the unpaired audio: full V-LynX, without the
   attention term, without the distribution term; and an untrained LoRA for the control row;
4. instruction tuning of the LLM LoRA for every row;
5. evaluation on the held-out questions by category: audio only, audio-visual, video only.

The same settings and seed give the same numbers.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlynx.files import write_text_atomic
from vlynx.progress import log
from vlynx.stage_configs import DemoConfig

MODEL = "miniworld"
MODALITY = "audio"
CATEGORIES = ("audio", "audio-visual", "video")


@dataclass(frozen=True)
class Row:
    """One row of the table: how the audio adapter is obtained and what the LLM sees."""

    name: str
    tuned: bool = True  # instruction-tune an LLM LoRA
    audio: bool = True  # audio tokens in the prompt
    adapter: str | None = None  # "full" | "no_attn" | "no_dist" (aligned) | "untrained": the audio LoRA used
    train_vision_adapter: bool = False  # no alignment: the vision LoRA trains during tuning instead


VLYNX = "V-LynX"
CONTROL = "control: untrained vision LoRA"
ROWS = (
    Row("zero-shot (video only)", tuned=False, audio=False),
    Row("FT (LLM LoRA, video only)", audio=False),
    Row(VLYNX, adapter="full"),
    Row("V-LynX w/o attention alignment", adapter="no_attn"),
    Row("V-LynX w/o distribution regularization", adapter="no_dist"),
    Row("w/o interface alignment", train_vision_adapter=True),
    Row(CONTROL, adapter="untrained"),
)
CURVE_ROWS = ("FT (LLM LoRA, video only)", VLYNX, "w/o interface alignment", CONTROL)
ALIGNMENTS = {"full": {}, "no_attn": {"no_attn": True}, "no_dist": {"no_dist": True}}


def run_seed_and_curve(config: DemoConfig, out: Path) -> dict[str, Any]:
    """`run_seed`, then (with `config.curve`) its curve points, on one CPU thread: the same numbers
    in any process. The curve's full amount is the table's own run, not a second one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = run_seed(config, out)
        began = time.perf_counter()
        if config.curve:
            run["curve"] = {scenes: run_curve_point(config, out, run, scenes)
                            for scenes in config.curve_scenes if scenes < config.n_train}
            run["curve"][config.n_train] = {name: run["rows"][name] for name in CURVE_ROWS}
        run["curve_seconds"] = round(time.perf_counter() - began, 1)
        return run
    finally:
        torch.set_num_threads(threads)


def quiet_worker(level: int) -> None:
    """Logging in a process that runs one seed beside others: stage lines at `level`, no progress bars."""
    import os

    from vlynx.progress import configure_logging, hide_bars

    configure_logging(level)
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # the Hugging Face libraries' own bars
    hide_bars()


def run_seed(config: DemoConfig, out: Path) -> dict[str, Any]:
    """Every row on the world of `config.seed`, into `out`; returns {"rows": {name: result}, "chance": ...}."""
    from vlynx.miniworld import WORLD, generate_split

    audio_settings = WORLD.audio_settings()
    seed = config.seed

    # 1. The world: four disjoint splits, all drawn with this seed.
    log.info("[seed %d 1/5] generating the miniature world in %s", seed, out / "world")
    splits = {split: generate_split(out / "world" / split, split, n, seed=seed)
              for split, n in (("reference", config.n_reference), ("align", config.n_align),
                               ("train", config.n_train), ("test", config.n_test))}

    # 2. Reference statistics of the frozen base model on videos.
    log.info("[seed %d 2/5] reference statistics on %d videos", seed, config.n_reference)
    reference = _reference(out / "reference.safetensors", splits["reference"], WORLD.frames_per_video)

    # 3. Interface alignment on unpaired audio (and the ablations); the control's adapter is never trained.
    adapters: dict[str, tuple[Path, dict[str, float]]] = {}
    for number, (variant, switches) in enumerate(ALIGNMENTS.items(), 1):
        log.info("[seed %d 3/5] interface alignment %d/%d (%s)", seed, number, len(ALIGNMENTS), variant)
        adapters[variant] = _align(out / "adapters" / variant, splits["align"], reference, audio_settings,
                                   config, switches)
    adapters["untrained"] = (_untrained_adapter(out / "adapters" / "untrained", config), {})

    # 4-5. Instruction tuning and evaluation, one row at a time.
    rows = {}
    for number, row in enumerate(ROWS, 1):
        log.info("[seed %d 4/5] row %d/%d: %s", seed, number, len(ROWS), row.name)
        rows[row.name] = _tune_and_evaluate(out, row, splits["train"], splits["test"], adapters, audio_settings,
                                            config, tag="")
    return {"rows": rows, "adapters": adapters, "splits": splits,
            "chance": chance_levels(splits["train"], splits["test"])}


def run_curve_point(config: DemoConfig, out: Path, seed_run: dict[str, Any], scenes: int) -> dict[str, Any]:
    """The curve's rows tuned on the first `scenes` paired scenes of the seed's train split."""
    from vlynx.miniworld import WORLD

    train = _train_subset(seed_run["splits"]["train"], scenes)
    results = {}
    for name in CURVE_ROWS:
        row = next(r for r in ROWS if r.name == name)
        log.info("[seed %d curve] %d paired scenes: %s", config.seed, scenes, name)
        results[name] = _tune_and_evaluate(out, row, train, seed_run["splits"]["test"], seed_run["adapters"],
                                           WORLD.audio_settings(), config, tag=f"-{scenes}-scenes")
    return results


def chance_levels(train: Path, test: Path) -> dict[str, dict[str, float]]:
    """Per category: `uniform`, the mean over held-out questions of 1 / (distinct answers of the question's
    kind in train and test), and `prior`, the accuracy of always giving the kind's most frequent training answer."""
    train_entries, test_entries = json.loads(train.read_text()), json.loads(test.read_text())
    answers: dict[str, Counter] = {}
    for entry in train_entries:
        answers.setdefault(entry["kind"], Counter())[_answer(entry)] += 1
    answer_sets = {kind: set(counts) for kind, counts in answers.items()}
    for entry in test_entries:
        answer_sets.setdefault(entry["kind"], set()).add(_answer(entry))
    # Ties between equally frequent answers go to the alphabetically first: the same world, the same prior.
    prior = {kind: min(counts, key=lambda a: (-counts[a], a)) for kind, counts in answers.items()}
    levels = {}
    for category in CATEGORIES:
        entries = [e for e in test_entries if e["category"] == category]
        if entries:
            levels[category] = {
                "uniform": round(sum(1 / len(answer_sets[e["kind"]]) for e in entries) / len(entries), 4),
                "prior": round(sum(prior.get(e["kind"]) == _answer(e) for e in entries) / len(entries), 4)}
    return levels


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


def _untrained_adapter(out: Path, config: DemoConfig) -> Path:
    """A fresh audio LoRA saved as initialised: PEFT's B matrices are zero, so the encoder is unchanged."""
    from vlynx.adapters import LoraSettings, add_vision_adapter, save_adapters
    from vlynx.backbones import load_backbone
    from vlynx.files import atomic_directory
    from vlynx.stage_configs import vision_alpha_for

    backbone = load_backbone(MODEL)
    add_vision_adapter(backbone, MODALITY, LoraSettings(config.vision_rank, vision_alpha_for(config.vision_rank)))
    with atomic_directory(out) as staging:
        save_adapters(backbone, staging, [MODALITY])
    return out


def _tune_and_evaluate(out: Path, row: Row, train: Path, test: Path, adapters: dict[str, tuple[Path, dict]],
                       audio_settings: dict[str, Any], config: DemoConfig, tag: str) -> dict[str, Any]:
    began = time.perf_counter()
    # The frozen tokens (video; the row's frozen audio adapter's) are computed once per example and adapter:
    # a cache folder keeps one adapter's tokens per modality; rows without one share the first's video.
    cache = out / "token-cache" / (row.adapter or next(iter(ALIGNMENTS)))
    model, losses = _row_model(out / "bundles" / f"{_slug(row.name)}{tag}", row, train, adapters, audio_settings,
                               config, cache)
    log.info("[seed %d 5/5] evaluating %s", config.seed, row.name)
    predictions = Path("predictions") / f"{_slug(row.name)}{tag}.jsonl"
    accuracy, counts = _evaluate(model, test, out / predictions)
    return {"accuracy": accuracy, "counts": counts, "trainable_params": _trainable_parameters(model, row),
            "seconds": round(time.perf_counter() - began, 1), "predictions": str(predictions), "losses": losses}


def _row_model(out: Path, row: Row, train: Path, adapters: dict[str, tuple[Path, dict[str, float]]],
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
        vision_adapters=[str(adapters[row.adapter][0])] if row.adapter else [],
        modality_settings={MODALITY: audio_settings} if row.audio else {},
        train_vision_adapter=row.train_vision_adapter, vision_rank=config.vision_rank,
        llm_rank=config.llm_rank, llm_alpha=2.0 * config.llm_rank,
        max_steps=config.tune_steps, lr=config.tune_lr, batch_size=config.batch_size, seed=config.seed,
        logging_steps=max(config.tune_steps // 5, 1), save_steps=10 * config.tune_steps, overwrite=True,
        token_cache=str(token_cache),
    ))
    losses = {"tune_final": round(result.losses[-1], 4)} if result.losses else {}
    if row.adapter:
        losses.update({f"align_{k}": round(v, 4) for k, v in adapters[row.adapter][1].items()})
    return VLynx.from_pretrained(result.bundle), losses


def _train_subset(train: Path, scenes: int) -> Path:
    """The entries of the first `scenes` scenes of a train split, as an annotation file beside it."""
    entries = json.loads(train.read_text())
    kept = sorted({e["scene"] for e in entries})[:scenes]
    path = train.parent / f"annotations-{scenes}-scenes.json"
    write_text_atomic(path, json.dumps([e for e in entries if e["scene"] in set(kept)], indent=1) + "\n")
    return path


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
        expected = _answer(entry)
        words = answer.strip().lower().split()
        hit = bool(words) and words[0] == expected
        counts[entry["category"]] += 1
        correct[entry["category"]] += hit
        lines.append(json.dumps({"id": entry["id"], "category": entry["category"], "answer": answer,
                                 "expected": expected, "correct": hit}))
    write_text_atomic(predictions, "\n".join(lines) + "\n")
    accuracy = {c: round(correct[c] / counts[c], 4) if counts[c] else 0.0 for c in CATEGORIES}
    return accuracy, counts


def _answer(entry: dict[str, Any]) -> str:
    return entry["conversations"][1]["value"].strip().lower()


def _trainable_parameters(model, row: Row) -> int:
    """Parameters the row trained on top of the base model (the control's zero LoRA is not counted)."""
    from vlynx.adapters import adapter_names, adapter_parameter_count

    names = [n for n in adapter_names(model.backbone) if not (row.adapter == "untrained" and n == MODALITY)]
    return sum(adapter_parameter_count(model.backbone, name) for name in names)


def _slug(name: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return slug
