"""The evaluation stage: generate answers for a benchmark's questions, then score them.

Reads top to bottom: load the annotation (LLaVA/PAVE conversation format plus the
benchmark's own fields) -> build one request per question with the benchmark's prompt ->
skip ids already in `predictions.jsonl` (resume) -> generate in batches, appending each
answer as it comes -> score with the benchmark's rules (`vlynx.metrics.tasks`) -> write
`results.json` and `results.md`. `run_eval(config)` is the stage from its settings: it checks the
inputs, applies the output policy, loads the bundle and saves the resolved config beside the results.

The model is any object with `generate(requests: list[dict]) -> list[str]`, each request a
dict with `video` and `question` (the user text, without the `<image>` placeholder, which the
model inserts itself) plus `audio`/`depth` paths when the entry names them — e.g.
`vlynx.bundle.VLynx`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vlynx.outputs import claim_output, directory_digest, record_identity, run_identity, save_run
from vlynx.errors import VlynxError
from vlynx.files import write_text_atomic
from vlynx.inputs import read_annotations
from vlynx.metrics.report import ScoreReport
from vlynx.metrics.entries import entry_id, entry_prompt_and_reference
from vlynx.metrics.tasks import References, get_benchmark
from vlynx.progress import log, progress
from vlynx.stage_configs import EvalConfig

MEDIA_FIELDS = ("video", "audio", "depth")
PREDICTIONS_FILE = "predictions.jsonl"


PROTOCOLS = {
    "generate": "free generation, the answer read from the text",
    "likelihood": "forced choice: the option label the model gives the highest log-likelihood",
}


class Generator(Protocol):
    def generate(self, requests: list[dict[str, Any]]) -> list[str]: ...


class OptionScorer(Protocol):
    def option_loglikelihoods(self, request: dict[str, Any], options: list[str]) -> list[float]: ...


@dataclass
class EvalItem:
    """One question: its id, the request sent to the model, and the reference it is scored against."""

    id: str
    request: dict[str, Any]
    reference: dict[str, Any]


# ---------------------------------------------------------------- annotation -> requests

def build_items(benchmark: str, data: str | Path, media_root: str | Path | None = None) -> list[EvalItem]:
    """One `EvalItem` per annotation entry; media paths resolve against `media_root`
    (default: the annotation file's folder). Raises VlynxError naming the entry on bad input."""
    spec = get_benchmark(benchmark)
    data = Path(data)
    root = Path(media_root) if media_root is not None else data.parent
    items, seen = [], set()
    for index, entry in enumerate(read_annotations(data)):
        item_id = None
        try:
            item_id = entry_id(spec, entry)
            question, reference = entry_prompt_and_reference(spec, entry)
        except (ValueError, TypeError, KeyError, IndexError) as error:
            raise VlynxError(f"entry {index}{f' ({item_id})' if item_id else ''} {error}", data) from error
        if item_id in seen:
            raise VlynxError(f"id {item_id!r} appears more than once; ids must be unique", data)
        seen.add(item_id)
        if not entry.get("video"):
            raise VlynxError(f"entry {index} ({item_id}) has no 'video'", data)
        # Only the inputs the entry has: a bundle reads a left-out modality from the video
        # (e.g. its audio track) and refuses inputs it has no adapter for.
        request = {field: str(root / entry[field]) for field in MEDIA_FIELDS if entry.get(field)}
        request["question"] = question
        items.append(EvalItem(item_id, request, reference))
    if not items:
        raise VlynxError("no entries to evaluate", data)
    absent = [item.request[f] for item in items for f in MEDIA_FIELDS
              if f in item.request and not Path(item.request[f]).exists()]
    if absent:
        raise VlynxError(f"{len(absent)} media files not found (check --media-root), e.g. {', '.join(absent[:3])}")
    return items


# ---------------------------------------------------------------- predictions file (resumable)

def read_done(path: Path) -> dict[str, str]:
    """Predictions already written by an earlier (possibly interrupted) run; a torn last line is dropped."""
    if not path.exists():
        return {}
    done: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            done[str(record["question_id"])] = str(record["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            if number == len(lines):
                log.warning("%s: dropping an incomplete last line (interrupted run)", path)
                _rewrite_jsonl(path, done)
                break
            raise VlynxError(f"line {number} is not a prediction record: {error}", path) from error
    return done


def _rewrite_jsonl(path: Path, predictions: dict[str, str]) -> None:
    text = "".join(json.dumps({"question_id": k, "text": v}) + "\n" for k, v in predictions.items())
    write_text_atomic(path, text)


# ---------------------------------------------------------------- the stage

def evaluate(model: Generator | OptionScorer, benchmark: str, data: str | Path, out_dir: str | Path,
             media_root: str | Path | None = None, batch_size: int = 1, meteor: bool = True,
             protocol: str = "generate") -> ScoreReport:
    """Answer every question of `data` not yet in `out_dir/predictions.jsonl`, score all of them, and
    write `results.json` and `results.md` (both name the protocol) to `out_dir`. Returns the report.

    `protocol` "generate": the model's `generate` answers in free text (batches of `batch_size`);
    "likelihood" (benchmarks with options): the model's `option_loglikelihoods` scores each option's
    label as the answer and the highest is the prediction (`choose_option`)."""
    if batch_size < 1:
        raise VlynxError("batch size must be at least 1")
    spec = get_benchmark(benchmark)
    items = build_items(benchmark, data, media_root)
    check_protocol(protocol, benchmark, items[0].reference)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions_path = out_dir / PREDICTIONS_FILE
    predictions = read_done(predictions_path)
    pending = [item for item in items if item.id not in predictions]
    if predictions:
        log.info("resuming: %d of %d questions already answered", len(items) - len(pending), len(items))

    consumed = _consumed_fields(model, pending)
    size = batch_size if protocol == "generate" else 1  # likelihood batches a question's options instead
    batches = [pending[i:i + size] for i in range(0, len(pending), size)]
    with predictions_path.open("a", encoding="utf-8") as file:
        for batch in progress(batches, desc=f"eval {benchmark}", total=len(batches), unit="batch"):
            requests = [{k: v for k, v in item.request.items() if k in consumed} for item in batch]
            if protocol == "generate":
                records = [{"text": str(answer)} for answer in model.generate(requests)]
            else:
                records = [choose_option(model, request, spec.option_labels(item.reference))
                           for item, request in zip(batch, requests)]
            if len(records) != len(batch):
                raise RuntimeError(f"model returned {len(records)} answers for {len(batch)} requests")
            for item, record in zip(batch, records):
                predictions[item.id] = record["text"]
                file.write(json.dumps({"question_id": item.id, **record}) + "\n")
            # Flushed per batch so an interrupted run resumes from here.
            file.flush()

    references: References = {item.id: item.reference for item in items}
    report = spec.score(references, predictions, meteor=meteor)
    report.protocol = protocol
    write_text_atomic(out_dir / "results.json", report.to_json() + "\n")
    write_text_atomic(out_dir / "results.md", report.to_markdown())
    return report


def check_protocol(protocol: str, benchmark: str, reference: dict[str, Any]) -> None:
    """A VlynxError unless `protocol` is known and, for "likelihood", the benchmark has options."""
    if protocol not in PROTOCOLS:
        raise VlynxError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "likelihood" and get_benchmark(benchmark).option_labels(reference) is None:
        raise VlynxError(f"--protocol likelihood needs a benchmark with options (avqa); {benchmark} has none: "
                         "use --protocol generate")


def choose_option(model: OptionScorer, request: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """The forced-choice prediction of one question: {"text": the label with the highest log-likelihood
    as the model's answer, "option_loglikelihoods": label -> summed log-probability}.

    As the authors' AVQA evaluation: the options are listed in the prompt and the model's answer is
    scored over their letters; a letter is one token, so its log-likelihood needs no length normalising."""
    scores = model.option_loglikelihoods(request, labels)
    if len(scores) != len(labels):
        raise RuntimeError(f"model returned {len(scores)} log-likelihoods for {len(labels)} options")
    best = max(range(len(labels)), key=lambda i: scores[i])  # the first of equal scores, deterministically
    return {"text": labels[best], "option_loglikelihoods": dict(zip(labels, map(float, scores)))}


def _consumed_fields(model: Generator, items: list[EvalItem]) -> set[str]:
    """The request fields `model` reads: the question, the video and its modalities (all, when it does not say).

    A media field of the annotation that the model has no adapter for (e.g. `depth` for an
    audio bundle) is left out, and said once.
    """
    fields = {key for item in items for key in item.request}
    modalities = getattr(model, "modalities", None)
    if modalities is None:
        return fields
    consumed = {"question", "video", *modalities}
    ignored = sorted(fields - consumed)
    if ignored:
        log.warning("ignoring the annotation's %s field(s): the model does not use them", ", ".join(ignored))
    return consumed


def run_eval(config: EvalConfig) -> ScoreReport:
    """The eval stage from its settings: check them, the annotation and the media (before loading the
    model), apply the output policy to `config.out`, load the bundle `config.model`, `evaluate`, and
    write the resolved config and a run record beside the results. Returns the report."""
    started = time.time()
    config = config.resolved()
    config.check()
    items = build_items(config.benchmark, config.data, config.media_root)
    check_protocol(config.protocol, config.benchmark, items[0].reference)
    out = Path(config.out)
    if (out / PREDICTIONS_FILE).is_file() and not (config.resume or config.overwrite):
        raise VlynxError("holds the predictions of an earlier run: pass --resume to continue it (answered "
                         "questions are kept) or --overwrite to start over", out)
    # The predictions are eval's progress: the output folder is its own checkpoint folder.
    with claim_output(out, out, resume=config.resume, overwrite=config.overwrite) as resume:
        bundle = Path(config.model)  # its manifest (base model, settings) and weights identify the model
        model = {"weights": directory_digest(bundle)} if bundle.is_dir() else {"name": config.model}
        identity = run_identity(config, model=model, inputs=[config.data, *sorted(bundle.glob("*.json"))])
        record_identity(out, identity, resuming=resume and (out / PREDICTIONS_FILE).is_file())
        try:
            from vlynx.bundle import VLynx
        except ImportError as error:
            raise VlynxError(f"cannot load bundles in this installation: {error}") from error
        model = VLynx.from_pretrained(config.model, trust_remote_code=config.trust_remote_code)
        report = evaluate(model, config.benchmark, config.data, out, media_root=config.media_root,
                          batch_size=config.batch_size, meteor=config.meteor, protocol=config.protocol)
        save_run(config, out, started, scores=report.metrics, identity=identity)
    return report
