"""The settings of every stage, side by side: the same name means the same thing in every stage.

Defaults and where they come from: docs/method.md §8. The rules shared by all of them
(files, `--set`, flags, derived defaults, saving, checkpoints): `vlynx.config`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from vlynx.config import StageConfig
from vlynx.errors import VlynxError

# Never a modality's name: the base video stream, the LLM adapter, and PEFT's "default" (saved
# without a subfolder of its own, so a bundle could not find it again).
RESERVED_NAMES = ("video", "llm", "default")


def vision_alpha_for(rank: int) -> float:
    """The vision LoRA's alpha when only its rank is given: 2 x rank (the paper's r 64 / alpha 128)."""
    return 2.0 * rank


def llm_alpha_for(rank: int) -> float:
    """The LLM LoRA's alpha when only its rank is given: rank / 4 (the paper's r 64 / alpha 16)."""
    return rank / 4.0


@dataclass
class ReferenceConfig(StageConfig):
    """`vlynx reference`: video reference statistics (eq. 2-3) on the frozen base model."""

    STAGE = "reference"
    REQUIRED = ("model", "videos", "frames", "out")

    model: str = ""
    videos: list[str] = field(default_factory=list)  # one DIR | LIST.txt | ANNOT.json per source
    sources: list[str] = field(default_factory=list)  # a name per `videos` entry (default: its file name)
    frames: int | None = None  # frames sampled per video, as in alignment
    out: str = ""  # the statistics file (.safetensors)
    batch_size: int = 4  # videos per encoder pass
    workers: int | None = None  # decoding processes; None: min(4, CPU cores)
    checkpoint_every: int = 500  # videos per rank between checkpoints
    checkpoint_dir: str | None = None  # None: OUT.checkpoints
    device: str | None = None  # None: cuda if available (cuda:LOCAL_RANK under torchrun), else cpu
    resume: bool = False
    overwrite: bool = False
    trust_remote_code: bool = False

    def resolved(self) -> ReferenceConfig:
        return self if self.workers is not None else self.updated({"workers": min(4, os.cpu_count() or 1)})

    def check(self) -> None:
        super().check()
        if self.frames < 1 or self.batch_size < 1:
            raise VlynxError("frames and batch_size must be >= 1")
        if (self.workers or 0) < 0 or self.checkpoint_every < 0:
            raise VlynxError("workers and checkpoint_every must be >= 0")
        if self.sources and len(self.sources) != len(self.videos):
            raise VlynxError(f"{len(self.videos)} video sets but {len(self.sources)} source names; "
                             "give one name per set")


@dataclass
class TrainingConfig(StageConfig):
    """The optimisation settings that alignment and instruction tuning share (paper §A.3 schedule)."""

    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; overrides epochs
    lr: float = 1e-4  # peak learning rate: linear warm-up, then cosine decay
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    batch_size: int = 1  # per device and step
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    bf16: bool | None = None  # None: on exactly when a CUDA GPU is used
    seed: int = 0
    workers: int = 0  # data-loading processes
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    checkpoint_dir: str | None = None  # None: OUT.checkpoints
    resume: bool = False
    overwrite: bool = False
    deepspeed: str | None = None  # a DeepSpeed JSON config (run under accelerate launch / torchrun)
    trust_remote_code: bool = False

    def check(self) -> None:
        super().check()
        for name in ("batch_size", "grad_accum", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise VlynxError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.max_steps is not None and self.max_steps < 1:
            raise VlynxError("max_steps must be >= 1 (leave it unset to train for `epochs`)")
        if self.lr <= 0 or (self.max_steps is None and self.epochs <= 0):
            raise VlynxError("lr and epochs (or max_steps) must be positive")
        if not 0 <= self.warmup_ratio < 1 or self.workers < 0:
            raise VlynxError("warmup_ratio must be in [0, 1) and workers >= 0")


@dataclass
class AlignConfig(TrainingConfig):
    """`vlynx align`: interface alignment of one modality's vision LoRA (eq. 4-9)."""

    STAGE = "align"
    REQUIRED = ("model", "modality", "data", "reference", "out")

    model: str = ""
    modality: str = ""
    data: str = ""  # unlabeled modality inputs: DIR | LIST.txt | ANNOT.json[l]
    reference: str = ""  # the statistics file of `vlynx reference` for this model
    out: str = ""  # the adapter directory (PEFT format)
    media_root: str | None = None  # relative paths in `data` resolve here (default: its folder)
    modality_settings: dict[str, Any] = field(default_factory=dict)
    frames: int | None = None  # None: the reference's frames per video
    skip_bad_items: bool = False  # default: an unreadable input stops the run (path + reason)
    # losses (eq. 6, 8, 9); field names as in `vlynx.losses.AlignmentLossSettings`
    lambda_dist: float = 0.01
    attn_loss: str = "l1"  # l1 (authors' code) | mse (the paper's wording)
    dist_loss: str = "l2norm"  # unsquared L2 norms (authors' code) | mse
    no_attn: bool = False
    no_dist: bool = False
    stop_grad_reference: bool = False
    all_queries: bool = False  # default: only the queries at the positions 2x pooling keeps
    before_out_proj: bool = False  # default: compare after the layer's (adapted) out_proj
    # the vision LoRA (r 64, alpha 2 x rank)
    vision_rank: int = 64
    vision_alpha: float | None = None  # None: vision_alpha_for(vision_rank)
    vision_dropout: float = 0.05

    def resolved(self) -> AlignConfig:
        if self.vision_alpha is not None:
            return self
        return self.updated({"vision_alpha": vision_alpha_for(self.vision_rank)})

    def check(self) -> None:
        super().check()
        if self.modality in RESERVED_NAMES:
            raise VlynxError(f"'{self.modality}' cannot name a modality (reserved)")
        if self.frames is not None and self.frames < 1:
            raise VlynxError("frames must be >= 1")
        if self.vision_rank < 1:
            raise VlynxError("vision_rank must be >= 1")


@dataclass
class TuneConfig(TrainingConfig):
    """`vlynx tune`: instruction tuning of the LLM LoRA (eq. 10), written as a model bundle."""

    STAGE = "tune"
    REQUIRED = ("model", "data", "out")

    model: str = ""
    data: str = ""  # LLaVA/PAVE annotation file (JSON list or JSONL)
    out: str = ""  # the bundle directory
    media_root: str | None = None  # relative media paths resolve here (default: the annotation's folder)
    modalities: list[str] = field(default_factory=list)  # new-modality blocks in prompt order; [] = -FT
    vision_adapters: list[str] = field(default_factory=list)  # per modality, or one dir with a subfolder each
    modality_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # default: the align records'
    frames: int = 32
    # the LLM LoRA (r 64, alpha rank / 4)
    llm_rank: int = 64
    llm_alpha: float | None = None  # None: llm_alpha_for(llm_rank)
    llm_dropout: float = 0.05
    # vision LoRAs trained here: the no-interface-alignment ablation
    train_vision_adapter: bool = False
    vision_rank: int = 64  # fresh vision adapters only
    vision_alpha: float | None = None  # None: vision_alpha_for(vision_rank)
    vision_dropout: float = 0.05

    def resolved(self) -> TuneConfig:
        derived = {}
        if self.llm_alpha is None:
            derived["llm_alpha"] = llm_alpha_for(self.llm_rank)
        if self.vision_alpha is None:
            derived["vision_alpha"] = vision_alpha_for(self.vision_rank)
        return self.updated(derived) if derived else self

    def check(self) -> None:
        super().check()
        if len(set(self.modalities)) != len(self.modalities):
            raise VlynxError(f"modalities listed twice: {self.modalities}")
        for name in self.modalities:
            if name in RESERVED_NAMES or not name:
                raise VlynxError(f"'{name}' cannot name a modality (reserved)")
        if self.vision_adapters and len(self.vision_adapters) not in (1, len(self.modalities)):
            raise VlynxError(f"give one vision adapter dir per modality ({len(self.modalities)}) or one dir holding "
                             f"a subfolder per modality; got {len(self.vision_adapters)}")
        if self.vision_adapters and not self.modalities:
            raise VlynxError("vision adapters given but no modality to use them for")
        for name in ("frames", "llm_rank", "vision_rank"):
            if getattr(self, name) < 1:
                raise VlynxError(f"{name} must be >= 1 (got {getattr(self, name)})")


@dataclass
class EvalConfig(StageConfig):
    """`vlynx eval`: answer a benchmark's questions with a bundle, then score them."""

    STAGE = "eval"
    REQUIRED = ("benchmark", "model", "data", "out")

    benchmark: str = ""
    model: str = ""  # a bundle directory
    data: str = ""  # annotation file (JSON list or JSONL)
    out: str = ""  # output folder: predictions.jsonl, results.json, results.md
    media_root: str | None = None  # relative media paths resolve here (default: the annotation's folder)
    batch_size: int = 1  # requests per generate call
    meteor: bool = True  # METEOR costs a JVM start
    resume: bool = False  # continue an interrupted run: answered ids are kept
    overwrite: bool = False
    trust_remote_code: bool = False

    def check(self) -> None:
        super().check()
        if self.batch_size < 1:
            raise VlynxError("batch_size must be >= 1")


@dataclass
class DemoConfig(StageConfig):
    """`vlynx demo`: the whole pipeline on the miniature world. Sizes left at None follow `quick`."""

    STAGE = "demo"

    out: str = "demo-out"
    seed: int = 0  # of the world and of training
    quick: bool = False  # a small run that checks the plumbing
    overwrite: bool = False
    n_reference: int | None = None  # reference videos (eq. 2-3)
    n_align: int | None = None  # unpaired, unlabeled audio clips
    n_train: int | None = None  # paired instruction scenes (about 6 questions each)
    n_test: int | None = None  # held-out scenes
    align_steps: int | None = None
    tune_steps: int | None = None
    batch_size: int = 8
    # The paper aligns gently (2e-5 for 0.5B) and tunes faster (1e-4); the tiny model needs larger
    # rates, in the same order: a fast alignment washes the audio out of the tokens (measured).
    align_lr: float = 2e-4
    tune_lr: float = 3e-3
    vision_rank: int = 8  # the tiny encoder is 64 wide: rank 64 would exceed it
    llm_rank: int = 16
    lambda_dist: float = 0.01

    SIZES = {  # (full, quick)
        "n_reference": (200, 40), "n_align": (300, 64), "n_train": (120, 60), "n_test": (80, 40),
        "align_steps": (150, 40), "tune_steps": (600, 150),
    }

    def resolved(self) -> DemoConfig:
        derived = {name: sizes[self.quick] for name, sizes in self.SIZES.items() if getattr(self, name) is None}
        return self.updated(derived) if derived else self

    def check(self) -> None:
        super().check()
        if self.seed < 0:
            raise VlynxError("seed must be a non-negative integer")
        resolved = self.resolved()
        for name in (*self.SIZES, "batch_size", "vision_rank", "llm_rank"):
            if getattr(resolved, name) < 1:
                raise VlynxError(f"{name} must be >= 1")
