"""Pretrain the miniworld Video LLM from random init on video-only data of the world.

The whole model (SigLIP encoder, projector, Qwen2 LLM) trains with the Hugging Face
model's own forward: the prompt holds `<video>` placeholders, one per video token
(`backbone.tokens_per_video(F)`), the frames go in as `pixel_values_videos`, and only
the answer (plus its end-of-turn token) is supervised. The data are video questions
and captions of silent clips: the model never hears anything, so zero-shot it
answers video questions and guesses at audio ones.

Training runs in three stages with one optimizer (docs/method.md §10): single frames with
the questions one frame answers, then clips with motion questions only, then clips with
every question. Trained on clips from the start, the model stayed near chance on shape
and motion questions (measured: shape 40 %, motion 15-21 %).

Reads top to bottom: data -> model -> stages and training loop -> held-out check -> save.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlynx.errors import VlynxError
from vlynx.files import atomic_directory, ordinary_permissions
from vlynx.progress import log, progress

IGNORE_INDEX = -100
MOTION = "motion-of-shape"  # the question kind that needs more than one frame
MODEL_CONFIG = Path(__file__).resolve().parent / "model.json"


@dataclass(frozen=True)
class StageSettings:
    """One stage of pretraining: `steps` AdamW steps of `batch_size` examples (with replacement)."""

    name: str
    steps: int
    frames: int = 8  # 1: each clip's middle frame alone
    motion_share: float = 1 / 3  # of each batch, motion questions; the rest any other question or caption
    llm_only: bool = False  # the encoder and projector stay as they are
    decay: bool = True  # cosine decay to 0 after the warm-up; otherwise the rate stays
    batch_size: int = 16


# Measured on held-out video questions (docs/method.md §10): trained on clips from the start, the model
# stayed near chance on shape and motion. Single frames first teach shapes. Comparing frames is a
# circuit the LLM found only when motion questions filled its batches (though a linear probe read the
# motion from a clip-trained model's video tokens at 98 %), and the rest survived only with the encoder
# left alone meanwhile; a long last stage on every question restores what the motion stage made it forget.
STAGES = (
    StageSettings("single frames", 2000, frames=1, motion_share=0.0, batch_size=32),
    StageSettings("motion", 4000, motion_share=1.0, llm_only=True, decay=False),
    StageSettings("every question", 10000),
)


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    stages: tuple[StageSettings, ...] = STAGES
    learning_rate: float = 5e-4  # 1e-3 and above leave the model ignoring the video (measured)
    warmup_steps: int = 100  # at the start of every stage
    weight_decay: float = 0.01
    scenes: int = 4000  # pretraining scenes (each gives ~9 questions + a caption)
    eval_scenes: int = 100  # held-out scenes for the video-accuracy check after training
    num_frames: int = 8  # frames sampled per clip (WORLD.frames_per_video)
    data_dir: str | None = None  # reuse a generated `pretrain` split instead of writing a temporary one
    threads: int | None = 1  # torch CPU threads; 1 keeps results reproducible across machines (None: leave as is)


def model_config():
    """The Hugging Face config of the miniworld Video LLM (vocabulary sized for the world's tokenizer)."""
    from transformers import AutoConfig

    raw = {k: v for k, v in json.loads(MODEL_CONFIG.read_text()).items() if not k.startswith("_")}
    return AutoConfig.for_model(raw.pop("model_type"), **raw)


def build_model(seed: int):
    """A randomly initialised miniworld backbone (`seed`) with the world's tokenizer."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from vlynx.backbones.llava_onevision import LlavaOnevisionBackbone
    from vlynx.miniworld.questions import build_tokenizer

    tokenizer = build_tokenizer()
    config = model_config()
    if len(tokenizer) > config.text_config.vocab_size:
        raise VlynxError(f"the world's vocabulary ({len(tokenizer)} tokens) exceeds the model's "
                         f"({config.text_config.vocab_size})", MODEL_CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaOnevisionForConditionalGeneration(config)
    return LlavaOnevisionBackbone(model, tokenizer, "miniworld")


# ----- data -----------------------------------------------------------------------------


@dataclass
class VideoQA:
    """Tokenised examples over a shared cache of preprocessed clips."""

    pixels: torch.Tensor  # (clips, frames, 3, S, S) encoder input
    clip_of: list[int]  # example -> clip index
    input_ids: list[list[int]]  # prompt + answer + <|im_end|>
    labels: list[list[int]]  # IGNORE_INDEX over the prompt
    prompt_lengths: list[int]
    answers: list[str]
    kinds: list[str]


def prompt_ids(backbone, question: str, num_frames: int) -> list[int]:
    """Chat-template prompt ids for `question` about one video, `<video>` expanded to every video token."""
    tokenizer = backbone.tokenizer
    text = tokenizer.apply_chat_template([{"role": "user", "content": f"<video>\n{question}"}],
                                         tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    video_id = tokenizer.convert_tokens_to_ids("<video>")
    expanded: list[int] = []
    for token in ids:
        expanded += [video_id] * backbone.tokens_per_video(num_frames) if token == video_id else [token]
    return expanded


def load_video_qa(backbone, annotations: Path, num_frames: int) -> VideoQA:
    """Read a generated split's annotations and clips into tensors ready for training/evaluation."""
    from vlynx.inputs import read_annotations
    from vlynx.media.video import read_video

    entries = read_annotations(annotations)
    clips: dict[str, int] = {}
    pixels = []
    data = VideoQA(torch.empty(0), [], [], [], [], [], [])
    end = backbone.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for entry in progress(entries, desc="reading clips", unit="question"):
        if entry["video"] not in clips:
            clips[entry["video"]] = len(pixels)
            frames = read_video(annotations.parent / entry["video"], num_frames).frames
            pixels.append(backbone.preprocess_frames(frames))
        question = entry["conversations"][0]["value"].replace("<image>\n", "")
        answer = entry["conversations"][1]["value"]
        prompt = prompt_ids(backbone, question, num_frames)
        target = backbone.tokenizer(answer, add_special_tokens=False).input_ids + [end]
        data.clip_of.append(clips[entry["video"]])
        data.input_ids.append(prompt + target)
        data.labels.append([IGNORE_INDEX] * len(prompt) + target)
        data.prompt_lengths.append(len(prompt))
        data.answers.append(answer)
        data.kinds.append(entry.get("kind", ""))
    data.pixels = torch.stack(pixels)
    return data


def collate(data: VideoQA, indices: list[int], pad_id: int, with_labels: bool = True) -> dict[str, torch.Tensor]:
    """Right-padded batch for the HF forward: input_ids, attention_mask, pixel_values_videos (+ labels).

    Without labels the sequences stop after the prompt (for answering).
    """
    sequences = [data.input_ids[i] if with_labels else data.input_ids[i][: data.prompt_lengths[i]] for i in indices]
    length = max(map(len, sequences))
    ids = torch.full((len(indices), length), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(indices), length), dtype=torch.long)
    for row, (i, sequence) in enumerate(zip(indices, sequences)):
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
        if with_labels:
            labels[row, : len(sequence)] = torch.tensor(data.labels[i])
    batch = {"input_ids": ids, "attention_mask": mask, "pixel_values_videos": data.pixels[[data.clip_of[i] for i in indices]]}
    if with_labels:
        batch["labels"] = labels
    return batch


# ----- evaluation -----------------------------------------------------------------------


@torch.no_grad()
def answer_accuracy(backbone, data: VideoQA, batch_size: int = 32, kinds: set[str] | None = None) -> dict[str, float]:
    """Exact-match accuracy of the greedy first answer token (every answer is one word), overall and per kind."""
    model, tokenizer = backbone.model, backbone.tokenizer
    model.eval()
    chosen = [i for i, kind in enumerate(data.kinds) if kinds is None or kind in kinds]
    correct: dict[str, list[bool]] = {}
    for start in range(0, len(chosen), batch_size):
        indices = chosen[start:start + batch_size]
        batch = collate(data, indices, tokenizer.pad_token_id, with_labels=False)
        logits = model(**batch).logits  # (B, T, vocab)
        last = batch["attention_mask"].sum(1) - 1
        predicted = logits[torch.arange(len(indices)), last].argmax(-1)
        for i, token in zip(indices, predicted.tolist()):
            correct.setdefault(data.kinds[i], []).append(tokenizer.convert_ids_to_tokens(token) == data.answers[i])
    scores = {kind: float(np.mean(hits)) for kind, hits in sorted(correct.items())}
    scores["overall"] = float(np.mean([h for hits in correct.values() for h in hits])) if correct else float("nan")
    return scores


# ----- the run --------------------------------------------------------------------------


def run_pretraining(out_dir: str | Path, config: PretrainConfig = PretrainConfig()) -> Path:
    """Generate data, train, check on held-out scenes, and save the checkpoint to `out_dir`."""
    for stage in config.stages:
        if stage.steps < 0 or stage.batch_size < 1 or stage.frames not in (1, config.num_frames) \
                or not 0 <= stage.motion_share <= 1:
            raise VlynxError(f"stage {stage.name!r}: steps must be >= 0, batch_size >= 1, frames 1 or "
                             f"{config.num_frames}, motion_share within [0, 1]")
    if not any(stage.steps for stage in config.stages):
        raise VlynxError("no pretraining steps: every stage has 0")
    _check_replaceable(Path(out_dir))  # before training, not after
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _pretrain(Path(out_dir), config)
    finally:
        torch.set_num_threads(threads)


def _pretrain(out: Path, config: PretrainConfig) -> Path:
    from vlynx.miniworld.generate import generate_split

    backbone = build_model(config.seed)
    with tempfile.TemporaryDirectory(prefix="vlynx-miniworld-") as scratch:
        if config.data_dir:
            annotations = Path(config.data_dir) / "annotations.json"
            if not annotations.is_file():
                raise VlynxError("no annotations.json: generate a `pretrain` split there first", config.data_dir)
        else:
            annotations = generate_split(Path(scratch) / "pretrain", "pretrain", config.scenes, config.seed)
        data = {frames: load_video_qa(backbone, annotations, frames)
                for frames in sorted({stage.frames for stage in config.stages if stage.steps})}
        held_out = None
        if config.eval_scenes:
            # Held-out scenes come from another seed's stream: never trained on.
            test_file = generate_split(Path(scratch) / "check", "pretrain", config.eval_scenes, config.seed + 10_000)
            held_out = load_video_qa(backbone, test_file, config.num_frames)
    losses = train_loop(backbone, pretraining_stages(config, data), config)
    metrics: dict[str, Any] = {"first_loss": losses[0], "final_loss": float(np.mean(losses[-50:]))}
    if held_out is not None:
        metrics["held_out_accuracy"] = answer_accuracy(backbone, held_out, kinds={
            "colour-of-shape", "shape-of-colour", MOTION, "size-of-shape", "object-count"})
        log.info("held-out video accuracy: %s", json.dumps(metrics["held_out_accuracy"]))
    save_checkpoint(backbone, out, {"config": asdict(config), "metrics": metrics})
    return out


@dataclass(frozen=True)
class Stage:
    """A stage ready to run: its settings, its data, and the example pools each batch draws from."""

    settings: StageSettings
    data: VideoQA
    pools: tuple[tuple[list[int], int], ...]  # (example indices, count per batch)


def pretraining_stages(config: PretrainConfig, data: dict[int, VideoQA]) -> list[Stage]:
    """Each stage with a run of steps over the data of its frame count ({frames: VideoQA})."""
    stages = []
    for settings in config.stages:
        if not settings.steps:
            continue
        examples = data[settings.frames]
        motion = [i for i, kind in enumerate(examples.kinds) if kind == MOTION]
        rest = [i for i, kind in enumerate(examples.kinds) if kind != MOTION]
        in_motion = round(settings.batch_size * settings.motion_share) if motion else 0
        if in_motion < settings.batch_size and not rest:
            in_motion = settings.batch_size
        stages.append(Stage(settings, examples, ((motion, in_motion), (rest, settings.batch_size - in_motion))))
    return stages


def train_loop(backbone, stages: list[Stage], config: PretrainConfig) -> list[float]:
    """The stages in turn with one AdamW (linear warm-up at each stage's start); returns every step's loss."""
    model = backbone.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    pad = backbone.tokenizer.pad_token_id
    losses: list[float] = []
    vision = [*backbone.vision_tower.parameters(), *backbone.projector.parameters()]
    for stage in stages:
        settings = stage.settings
        for parameter in vision:
            parameter.requires_grad_(not settings.llm_only)
        for step in progress(range(settings.steps), desc=f"pretraining ({settings.name})", unit="step"):
            rate = config.learning_rate * min(1.0, (step + 1) / config.warmup_steps)
            if settings.decay:
                rate *= 0.5 * (1 + math.cos(math.pi * step / settings.steps))
            for group in optimizer.param_groups:
                group["lr"] = rate
            indices = [i for pool, count in stage.pools if count for i in rng.choice(pool, count).tolist()]
            model.train()
            loss = model(**collate(stage.data, indices, pad)).loss  # next-token cross-entropy on answer tokens
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            if step % 500 == 0 or step == settings.steps - 1:
                log.debug("%s step %d loss %.4f", settings.name, step, losses[-1])
    for parameter in vision:
        parameter.requires_grad_(True)
    model.eval()
    return losses


def save_checkpoint(backbone, out: Path, record: dict[str, Any]) -> None:
    """save_pretrained (config + safetensors) and the tokenizer, plus `pretrain.json` (settings, metrics).

    Written to a staging folder that replaces `out` whole once complete.
    """
    _check_replaceable(out)
    with atomic_directory(out) as staging:
        backbone.model.save_pretrained(staging)
        ordinary_permissions(staging)
        backbone.tokenizer.save_pretrained(staging)
        (staging / "pretrain.json").write_text(json.dumps(record, indent=1) + "\n")


def _check_replaceable(out: Path) -> None:
    """Refuse an `out` that saving would wipe though it is no checkpoint (e.g. `--out .`)."""
    if out.exists() and not (out / "pretrain.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise VlynxError("exists and is not a miniworld checkpoint; the checkpoint replaces its folder whole, "
                         "so choose a new or empty one", out)
