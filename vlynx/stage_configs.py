"""The settings of every stage, side by side: the same name means the same thing in every stage.

Defaults and where they come from: docs/method.md §8. The rules shared by all of them
(files, `--set`, flags, derived defaults, saving, checkpoints): `vlynx.config`.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any

from vlynx.config import StageConfig, flag
from vlynx.errors import VlynxError

VIDEO_STREAM = "video"  # the base-encoder stream of a prompt
LLM_ADAPTER = "llm"  # the LLM LoRA's adapter name
# Never a modality's name: those two, and PEFT's "default" (saved without a subfolder of its own,
# so a bundle could not find it again).
RESERVED_NAMES = (VIDEO_STREAM, LLM_ADAPTER, "default")
LOAD_DTYPES = ("float32", "bfloat16", "float16")  # `dtype` choices besides "auto"


def dtype_field(default: str | None, default_help: str = "auto") -> Any:
    """The `dtype` setting: the dtype the model's weights are loaded in (one meaning in every stage)."""
    return field(default=default, metadata=flag(
        "dtype the weights are loaded in: auto (the checkpoint's own; presets float32), "
        + ", ".join(LOAD_DTYPES) + f" (default: {default_help})", choices=["auto", *LOAD_DTYPES]))


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
    RESULT_FREE = (*StageConfig.RESULT_FREE, "workers", "checkpoint_every", "device")

    model: str = field(default="", metadata=flag("preset (tiny, llava-onevision-0.5b, ...), hub id or checkpoint dir"))
    videos: list[str] = field(default_factory=list, metadata=flag(
        "reference videos: a folder, a list file or an annotation file (repeat for several sources)",
        action="append", metavar="DIR|LIST.txt|ANNOT.json"))
    sources: list[str] = field(default_factory=list, metadata=flag(
        "name of each --videos set, in the same order (default: its file/folder name)", "--source",
        action="append", metavar="NAME"))
    frames: int | None = field(default=None, metadata=flag("frames sampled per video (as in alignment)"))
    out: str = field(default="", metadata=flag("output file (.safetensors)"))
    batch_size: int = field(default=4, metadata=flag("videos per encoder pass"))
    workers: int | None = field(default=None, metadata=flag(
        "video-decoding worker processes, 0 decodes in the main process (default: min(4, CPU cores))"))
    checkpoint_every: int = field(default=500, metadata=flag(
        "save resumable progress every N videos per rank; 0: only at the end", metavar="N"))
    checkpoint_dir: str | None = field(default=None, metadata=flag("where checkpoints go (default: OUT.checkpoints)"))
    device: str | None = field(default=None, metadata=flag(
        "cpu, cuda, cuda:1 ... (default: cuda if available; under torchrun each rank uses cuda:LOCAL_RANK)"))
    # Statistics accumulate in float32/float64 whatever the weights' dtype (vlynx/reference/accumulate.py).
    dtype: str = dtype_field("auto")
    resume: bool = field(default=False, metadata=flag("continue from the checkpoints of an interrupted run of the "
                                                      "same job (none: start afresh)"))
    overwrite: bool = field(default=False, metadata=flag("replace an existing output and discard its checkpoints"))
    trust_remote_code: bool = field(default=False, metadata=flag("allow the checkpoint's own code"))

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

    # gradient_checkpointing: the same gradients (bit-identical on CPU, tests/test_align.py), less memory
    RESULT_FREE = (*StageConfig.RESULT_FREE, "workers", "logging_steps", "save_steps", "save_total_limit",
                   "gradient_checkpointing")

    epochs: float = field(default=1.0, metadata=flag("training epochs"))
    max_steps: int | None = field(default=None, metadata=flag("optimizer steps; overrides --epochs"))
    lr: float = field(default=1e-4, metadata=flag("peak learning rate (3%% linear warm-up, then cosine decay)"))
    warmup_ratio: float = field(default=0.03, metadata=flag("warm-up fraction of the steps", "--warmup-ratio",
                                                            "--warmup"))
    weight_decay: float = 0.0
    batch_size: int = field(default=1, metadata=flag("inputs per device per step"))
    grad_accum: int = field(default=1, metadata=flag("gradient accumulation steps"))
    max_grad_norm: float = 1.0
    dtype: str = dtype_field("auto")
    bf16: bool | None = field(default=None, metadata=flag(
        "bfloat16 mixed precision (Trainer autocast; default: on exactly when a CUDA GPU is used)",
        action=argparse.BooleanOptionalAction))
    gradient_checkpointing: bool | None = field(default=None, metadata=flag(
        "recompute encoder/LLM layer activations in backward to save memory (non-reentrant: same gradients; "
        "default: on exactly when a CUDA GPU is used)", action=argparse.BooleanOptionalAction))
    seed: int = field(default=0, metadata=flag("random seed"))
    workers: int = field(default=0, metadata=flag("data-loading worker processes"))
    logging_steps: int = field(default=10, metadata=flag("log losses every N steps"))
    save_steps: int = field(default=500, metadata=flag("checkpoint every N steps"))
    save_total_limit: int | None = 2
    checkpoint_dir: str | None = field(default=None, metadata=flag("where checkpoints go (default: OUT.checkpoints)"))
    resume: bool = field(default=False, metadata=flag("continue from the checkpoints in the checkpoint directory "
                                                      "(none: start afresh)"))
    overwrite: bool = field(default=False, metadata=flag("remove an existing output and its checkpoints first"))
    deepspeed: str | None = field(default=None, metadata=flag(
        "DeepSpeed JSON config (run under `accelerate launch` or torchrun)"))
    trust_remote_code: bool = field(default=False, metadata=flag("allow the checkpoint's own code"))

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
    # the gap monitor only observes: the adapter is the same with or without it (tests/test_diagnose_monitor.py)
    RESULT_FREE = (*TrainingConfig.RESULT_FREE, "eval_data", "eval_steps")

    model: str = field(default="", metadata=flag("preset, hub id or checkpoint dir of the Video LLM"))
    modality: str = field(default="", metadata=flag("modality name (audio, depth, hfr, egocentric or a plug-in)"))
    data: str = field(default="", metadata=flag("unlabeled modality inputs: DIR | LIST.txt | ANNOT.json[l]"))
    reference: str = field(default="", metadata=flag(
        "reference statistics file from `vlynx reference` (must match --model)"))
    out: str = field(default="", metadata=flag("output adapter directory (PEFT format)"))
    media_root: str | None = field(default=None, metadata=flag(
        "folder that relative paths in --data resolve against (default: its folder)"))
    modality_settings: dict[str, Any] = field(default_factory=dict)  # the transform's settings (`vlynx modalities`)
    frames: int | None = field(default=None, metadata=flag(
        "frames per input (default: the reference's frames per video)"))
    skip_bad_items: bool = field(default=False, metadata=flag(
        "skip unreadable inputs (listed in the log) instead of stopping"))
    # None: decided when the run starts, like bf16 (`vlynx.align.run_align`). On GPU, bfloat16 weights keep a 7B
    # model's alignment step within 0.10 of its float32 size (benchmarks/align_step.py); on CPU,
    # float32 weights keep the math exact (CPU autocast is off by default).
    dtype: str | None = dtype_field(None, "bfloat16 exactly when a CUDA GPU is used, else float32")
    # losses (eq. 6, 8, 9); field names as in `vlynx.losses.AlignmentLossSettings`
    lambda_dist: float = field(default=0.01, metadata=flag("weight of the distribution loss, eq. (9)"))
    attn_loss: str = field(default="l1", metadata=flag(
        "attention distance: l1 (authors' code) or mse (the paper's wording)", choices=["l1", "mse"]))
    dist_loss: str = field(default="l2norm", metadata=flag(
        "distribution distance: l2norm (unsquared L2 norms, authors' code) or mse", choices=["l2norm", "mse"]))
    no_attn: bool = field(default=False, metadata=flag("ablation: drop the attention alignment loss"))
    no_dist: bool = field(default=False, metadata=flag("ablation: drop the distribution regularization"))
    stop_grad_reference: bool = field(default=False, metadata=flag(
        "no gradient through the reference-response branch"))
    all_queries: bool = field(default=False, metadata=flag(
        "use every query position, not only those kept by 2x pooling"))
    before_out_proj: bool = field(default=False, metadata=flag(
        "compare attention outputs before the layer's output projection"))
    dist_per_image: bool = field(default=False, metadata=flag(
        "distribution loss over every image's tokens (depth and normals apart, as the authors' code) instead of "
        "each frame's average"))
    # the vision LoRA (r 64, alpha 2 x rank)
    vision_rank: int = field(default=64, metadata=flag("vision LoRA rank (alpha defaults to 2 x rank)",
                                                       "--vision-rank", "--lora-rank"))
    vision_alpha: float | None = field(default=None, metadata=flag("vision LoRA alpha (default: 2 x rank)",
                                                                   "--vision-alpha", "--lora-alpha"))
    vision_dropout: float = field(default=0.05, metadata=flag("vision LoRA dropout"))
    # the interface-gap monitor (vlynx.diagnose.monitor)
    eval_data: str | None = field(default=None, metadata=flag(
        "held-out modality inputs (DIR | LIST.txt | ANNOT.json[l]) whose interface gap (eq. 6 per layer, eq. 8) "
        "is logged during training"))
    eval_steps: int = field(default=50, metadata=flag("log the interface gap on --eval-data every N steps"))

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
        if self.eval_steps < 1:
            raise VlynxError(f"eval_steps must be >= 1 (got {self.eval_steps})")


@dataclass
class TuneConfig(TrainingConfig):
    """`vlynx tune`: instruction tuning of the LLM LoRA (eq. 10), written as a model bundle."""

    STAGE = "tune"
    REQUIRED = ("model", "data", "out")
    # the token cache holds exactly the tokens the run would compute (tests/test_token_cache.py)
    RESULT_FREE = (*TrainingConfig.RESULT_FREE, "token_cache")

    model: str = field(default="", metadata=flag("base Video LLM: checkpoint dir, hub id or preset"))
    data: str = field(default="", metadata=flag("annotation file (JSON list or JSONL, LLaVA/PAVE conversations)"))
    out: str = field(default="", metadata=flag("bundle directory to write (checkpoints in OUT.checkpoints)"))
    media_root: str | None = field(default=None, metadata=flag(
        "folder that relative media paths resolve against (default: the annotation file's folder)"))
    modalities: list[str] = field(default_factory=list, metadata=flag(
        "new modalities in prompt order, comma-separated (e.g. audio,depth); empty for the video-only -FT "
        "baseline", "--modality"))
    vision_adapters: list[str] = field(default_factory=list, metadata=flag(
        "aligned vision adapters (`vlynx align` outputs): one dir per modality, comma-separated, or one dir with "
        "a subfolder per modality", "--vision-adapter"))
    # transform settings per modality; default: those recorded by `vlynx align` beside each adapter
    modality_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    frames: int = field(default=32, metadata=flag("frames per video"))
    # the LLM LoRA (r 64, alpha rank / 4)
    llm_rank: int = field(default=64, metadata=flag("LLM LoRA rank (alpha defaults to rank / 4)"))
    llm_alpha: float | None = field(default=None, metadata=flag("LLM LoRA alpha (default: rank / 4)"))
    llm_dropout: float = field(default=0.05, metadata=flag("LLM LoRA dropout"))
    # vision LoRAs trained here: the no-interface-alignment ablation
    train_vision_adapter: bool = field(default=False, metadata=flag(
        "train the vision adapters jointly; a modality without --vision-adapter gets a fresh one (the "
        "no-interface-alignment ablation)"))
    vision_rank: int = field(default=64, metadata=flag("rank of fresh vision adapters (alpha defaults to 2 x rank)"))
    vision_alpha: float | None = field(default=None, metadata=flag("alpha of fresh vision adapters (default: 2 x rank)"))
    vision_dropout: float = field(default=0.05, metadata=flag("dropout of fresh vision adapters"))
    token_cache: str | None = field(default=None, metadata=flag(
        "folder that keeps the frozen streams' tokens (video; modalities whose adapter is not trained) across "
        "epochs and runs: computed once, reused while model, adapters, transform settings and frames match",
        metavar="DIR"))

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
    RESULT_FREE = (*StageConfig.RESULT_FREE, "meteor")  # scoring only: the predictions do not depend on it

    benchmark: str = field(default="", metadata=flag("which benchmark"))
    model: str = field(default="", metadata=flag("V-LynX bundle directory"))
    data: str = field(default="", metadata=flag("annotation file (JSON list or JSONL)"))
    out: str = field(default="", metadata=flag("output folder: predictions.jsonl, results.json, results.md"))
    media_root: str | None = field(default=None, metadata=flag(
        "folder the media paths are relative to (default: the annotation file's folder)"))
    batch_size: int = field(default=1, metadata=flag("requests per generate call"))
    protocol: str = field(default="generate", metadata=flag(
        "generate: free generation, the answer read from the text; likelihood (benchmarks with options: "
        "avqa): forced choice, the option letter with the highest log-likelihood as the answer",
        choices=["generate", "likelihood"]))
    meteor: bool = field(default=True, metadata=flag("skip METEOR (saves a JVM start)", "--no-meteor"))
    resume: bool = field(default=False, metadata=flag("continue the run in OUT: questions already answered are kept"))
    overwrite: bool = field(default=False, metadata=flag("remove OUT and start over"))
    trust_remote_code: bool = field(default=False, metadata=flag("allow the base model's own code"))

    def check(self) -> None:
        super().check()
        if self.batch_size < 1:
            raise VlynxError("batch_size must be >= 1")


@dataclass
class DemoConfig(StageConfig):
    """`vlynx demo`: the whole pipeline on the miniature world. Sizes left at None follow `quick`."""

    STAGE = "demo"

    out: str = field(default="demo-out", metadata=flag("output folder"))
    seed: int = field(default=0, metadata=flag("first seed of the world and of training"))
    seeds: int = field(default=3, metadata=flag("how many seeds (seed, seed+1, ...): every row runs on each "
                                                  "seed's world, and the table shows mean and 95%% interval"))
    curve: bool = field(default=False, metadata=flag(
        "add the paired-data curve: FT, V-LynX, w/o interface alignment and the control tuned on fewer paired scenes"))
    curve_scenes: list[int] = field(default_factory=lambda: [10, 20, 40])  # the curve's amounts below n_train
    jobs: int | None = field(default=None, metadata=flag(
        "seeds run at once, each in its own process on one CPU thread (default: every seed, at most two per "
        "CPU core); the numbers do not depend on it"))
    quick: bool = field(default=False, metadata=flag(
        "a smaller run that checks the plumbing (3 seeds: about 2.5 minutes on 2 CPU cores)"))
    overwrite: bool = field(default=False, metadata=flag("replace an existing output folder"))
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
        if self.seeds < 1 or any(n < 1 for n in self.curve_scenes) or (self.jobs is not None and self.jobs < 1):
            raise VlynxError("seeds, jobs and every curve_scenes amount must be at least 1")
        resolved = self.resolved()
        for name in (*self.SIZES, "batch_size", "vision_rank", "llm_rank"):
            if getattr(resolved, name) < 1:
                raise VlynxError(f"{name} must be >= 1")
