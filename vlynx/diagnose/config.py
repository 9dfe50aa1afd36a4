"""`DiagnoseConfig`: the settings of `vlynx diagnose`, in the same form as every stage's (`vlynx.config`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlynx.config import StageConfig, flag
from vlynx.errors import VlynxError


@dataclass
class DiagnoseConfig(StageConfig):
    """`vlynx diagnose`: token-interface geometry (Table B1), a modality's interface gap, attention maps."""

    STAGE = "diagnose"
    REQUIRED = ("out",)

    out: str = field(default="", metadata=flag("output folder: diagnose.json and the pictures"))
    # Table B1 and the interface gap
    model: str = field(default="", metadata=flag("preset, hub id or checkpoint dir of the Video LLM"))
    videos: str = field(default="", metadata=flag("videos whose tokens are measured: DIR | LIST.txt | ANNOT.json[l]"))
    frames: int | None = field(default=None, metadata=flag(
        "frames per video and per modality input (default: the --reference file's, else the adapter's alignment "
        "run's)"))
    batch_size: int = field(default=8, metadata=flag("inputs per encoder pass"))
    modality: str = field(default="", metadata=flag("a new modality whose interface gap to measure (with --data)"))
    data: str = field(default="", metadata=flag("the modality's inputs: DIR | LIST.txt | ANNOT.json[l]"))
    adapter: str | None = field(default=None, metadata=flag(
        "the modality's aligned vision adapter (`vlynx align` output) for the 'after' numbers"))
    reference: str | None = field(default=None, metadata=flag(
        "reference statistics (`vlynx reference`) to measure eq. 6/8 against (default: computed from --videos)"))
    media_root: str | None = field(default=None, metadata=flag(
        "folder that relative paths in --videos/--data resolve against (default: the list file's folder)"))
    modality_settings: dict[str, Any] = field(default_factory=dict)  # default: those recorded beside the adapter
    sample_size: int = field(default=2000, metadata=flag("tokens sampled per group for the MMD and the picture"))
    seed: int = field(default=0, metadata=flag("seed of the token samples"))
    # attention maps (Figure 4)
    bundle: str = field(default="", metadata=flag("a V-LynX bundle: draw the LLM's attention to each modality"))
    video: str = field(default="", metadata=flag("the video the question is about (with --bundle)"))
    inputs: dict[str, str] = field(default_factory=dict)  # modality -> its input (flags --audio, --depth, ...)
    question: str = field(default="", metadata=flag("the question whose attention is drawn (with --bundle)"))
    overwrite: bool = field(default=False, metadata=flag("replace an existing output folder"))
    trust_remote_code: bool = field(default=False, metadata=flag("allow the checkpoint's own code"))

    def check(self) -> None:
        super().check()
        if bool(self.model) == bool(self.bundle):
            raise VlynxError("give --model (token-interface statistics) or --bundle (attention maps), not both")
        if self.bundle:
            if not self.video or not self.question.strip():
                raise VlynxError("--bundle needs --video and --question")
            return
        if not self.videos:
            raise VlynxError("--model needs --videos (the videos whose tokens are measured)")
        if bool(self.modality) != bool(self.data):
            raise VlynxError("--modality and --data go together (the modality's inputs)")
        if self.adapter and not self.modality:
            raise VlynxError("--adapter needs --modality and --data")
        for name in ("batch_size", "sample_size"):
            if getattr(self, name) < 1:
                raise VlynxError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.frames is not None and self.frames < 1:
            raise VlynxError(f"frames must be >= 1 (got {self.frames})")
