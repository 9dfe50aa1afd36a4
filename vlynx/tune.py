"""Instruction tuning (DESIGN.md §2 eq. 10, §6): train the LLM LoRA on video + new-modality prompts.

Reads top to bottom: load the backbone -> attach the aligned vision adapters (frozen) and a
fresh LLM LoRA -> read and tokenize the conversations -> train on HF Trainer -> save a bundle.

Variants from the paper, by setting:
- no modalities: the "-FT" baseline (video only + LLM LoRA);
- `train_vision_adapter`: vision LoRAs train jointly with the LLM LoRA; a modality with
  no aligned adapter gets a fresh one (the "no interface alignment" ablation).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from vlynx.adapters import (
    LLM_ADAPTER,
    VISION_LORA,
    LoraSettings,
    add_llm_adapter,
    add_vision_adapter,
    find_adapter_dir,
    load_adapter,
    save_adapters,
    set_trainable,
)
from vlynx.backbones.base import Backbone
from vlynx.bundle import VLynx
from vlynx.conversation import (
    IGNORE_INDEX,
    VIDEO_STREAM,
    Example,
    Modality,
    TokenizedChat,
    encode_blocks,
    images_per_frame,
    load_examples,
    read_streams,
    splice_blocks,
    tokenize_chat,
)
from vlynx.errors import VlynxError
from vlynx.files import write_text_atomic
from vlynx.training import quiet_when_asked, training_arguments

CONFIG_FILE = "tune_config.json"
ALIGN_RECORD = "vlynx_align_run.json"  # written by `vlynx align` beside its adapter
CHECKPOINTS = "checkpoints"


@dataclass
class TuneConfig:
    """Everything one instruction-tuning run depends on (saved beside its output as `tune_config.json`)."""

    model: str  # preset, hub id or checkpoint directory of the base Video LLM
    data: str  # LLaVA/PAVE annotation file (JSON list or JSONL)
    out: str  # bundle directory to write (checkpoints go to OUT/checkpoints)
    media_root: str | None = None  # relative media paths resolve here (default: the annotation file's folder)
    modalities: list[str] = field(default_factory=list)  # new-modality blocks, in prompt order
    vision_adapters: list[str] = field(default_factory=list)  # one dir per modality, or one dir with subfolders
    modality_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # transform settings per modality
    frames: int = 32
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    lr: float = 1e-4  # the paper's instruction-tuning rate for both model sizes
    batch_size: int = 1
    grad_accum: int = 1
    warmup: float = 0.03  # fraction of steps with linear warm-up, then cosine decay
    weight_decay: float = 0.0
    llm_rank: int = 64
    llm_alpha: float = 16.0
    train_vision_adapter: bool = False
    vision_rank: int = VISION_LORA.rank  # for fresh vision adapters only
    vision_alpha: float = VISION_LORA.alpha
    save_steps: int = 500
    logging_steps: int = 10
    resume: bool = False
    seed: int = 0
    dataloader_workers: int = 0
    # modality -> fingerprint of the reference statistics its adapter was aligned to (default: the align record)
    reference_fingerprint: dict[str, Any] | None = None

    def validate(self) -> None:
        if len(set(self.modalities)) != len(self.modalities):
            raise VlynxError(f"modalities listed twice: {self.modalities}")
        for name in self.modalities:
            if name in (VIDEO_STREAM, LLM_ADAPTER) or not name:
                raise VlynxError(f"'{name}' cannot name a modality (reserved)")
        if self.vision_adapters and len(self.vision_adapters) not in (1, len(self.modalities)):
            raise VlynxError(f"give one vision adapter dir per modality ({len(self.modalities)}) or one dir holding "
                             f"a subfolder per modality; got {len(self.vision_adapters)}")
        if self.vision_adapters and not self.modalities:
            raise VlynxError("vision adapters given but no --modality to use them for")
        for name, value in (("frames", self.frames), ("batch_size", self.batch_size),
                            ("grad_accum", self.grad_accum), ("llm_rank", self.llm_rank)):
            if value < 1:
                raise VlynxError(f"{name} must be >= 1 (got {value})")
        if self.lr <= 0 or (self.max_steps <= 0 and self.epochs <= 0):
            raise VlynxError("learning rate and epochs (or max_steps) must be positive")


@dataclass(frozen=True)
class TuneResult:
    bundle: Path
    losses: list[float]  # training loss as logged (every `logging_steps` steps)
    steps: int


def tune(config: TuneConfig, transforms: Mapping[str, Modality] | None = None) -> TuneResult:
    """Run instruction tuning and write a bundle to `config.out`.

    `transforms` overrides the registered modality transforms (default:
    `vlynx.modalities.get_modality(name, **settings)`).
    """
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from vlynx.backbones import load_backbone

    config.validate()
    config = replace(config, modality_settings=dict(config.modality_settings))  # filled in below; caller's stays
    out = Path(config.out)
    checkpoints = out / CHECKPOINTS
    resume_from = None
    if config.resume:
        resume_from = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
        if resume_from is None:
            raise VlynxError("--resume: no checkpoint to resume from", checkpoints)

    # 1. Model: base backbone + aligned vision adapters (frozen) + fresh LLM LoRA (seeded: runs repeat exactly).
    set_seed(config.seed)
    backbone = load_backbone(config.model, device=_device())
    if backbone.tokenizer is None:
        raise VlynxError("instruction tuning needs the model's tokenizer; none found", config.model)
    trained = [LLM_ADAPTER]
    for index, modality in enumerate(config.modalities):
        directory = _adapter_dir(config, index, modality)
        if directory is not None:
            load_adapter(backbone, directory, modality)
            _adopt_alignment_record(config, modality, directory)
        elif config.train_vision_adapter:
            add_vision_adapter(backbone, modality, LoraSettings(config.vision_rank, config.vision_alpha))
        else:
            raise VlynxError(f"no vision adapter for modality '{modality}': give --vision-adapter (the alignment "
                             f"output) or --train-vision-adapter for a fresh one trained here")
        if config.train_vision_adapter:
            trained.append(modality)
    add_llm_adapter(backbone, LoraSettings(config.llm_rank, config.llm_alpha))
    set_trainable(backbone, trained)

    # 2. Data: every entry checked and tokenized before training starts; media decoded per step.
    examples = load_examples(config.data, config.modalities, config.media_root)
    transforms = _transforms(config, transforms)
    dataset = ConversationDataset(backbone, examples, transforms, config.frames)

    # 3. Train: AdamW, linear warm-up then cosine decay (paper §A), checkpoints for --resume.
    args = training_arguments(
        str(checkpoints), batch_size=config.batch_size, grad_accum=config.grad_accum, lr=config.lr,
        weight_decay=config.weight_decay, epochs=config.epochs, max_steps=config.max_steps,
        warmup=config.warmup, seed=config.seed, logging_steps=config.logging_steps,
        save_steps=config.save_steps, workers=config.dataloader_workers, label_names=["labels"],
    )
    group = {m: images_per_frame(transforms[m]) for m in config.modalities}
    trainer = InstructionTrainer(backbone, config.modalities, group, trained, config.train_vision_adapter,
                                 model=backbone.peft_model, args=args, train_dataset=dataset,
                                 data_collator=Collator(_pad_id(backbone)))
    quiet_when_asked(trainer)
    trainer.train(resume_from_checkpoint=resume_from)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    # 4. Save: the bundle, and the config beside it so the run can be repeated.
    settings = {m: config.modality_settings.get(m, {}) for m in config.modalities}
    model = VLynx(backbone, config.modalities, config.frames, settings, transforms, config.reference_fingerprint)
    if trainer.is_world_process_zero():  # one writer under torchrun / accelerate launch
        model.save_pretrained(out)
        write_text_atomic(out / CONFIG_FILE, json.dumps(asdict(config), indent=2) + "\n")
    return TuneResult(out, losses, trainer.state.global_step)


def _adapter_dir(config: TuneConfig, index: int, modality: str) -> Path | None:
    if not config.vision_adapters:
        return None
    if len(config.vision_adapters) == len(config.modalities):
        return find_adapter_dir(config.vision_adapters[index], modality)
    root = Path(config.vision_adapters[0])
    try:
        return find_adapter_dir(root, modality)
    except VlynxError:
        if config.train_vision_adapter:  # a modality the alignment run did not cover: fresh adapter
            return None
        raise


def _adopt_alignment_record(config: TuneConfig, modality: str, directory: Path) -> None:
    """Take the transform settings and reference fingerprint the adapter was aligned with, unless given.

    The same transform must be used in alignment, tuning and inference (DESIGN.md §5).
    """
    path = directory / ALIGN_RECORD
    if not path.is_file():
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise VlynxError(f"invalid JSON at line {error.lineno}: {error.msg}", path) from error
    aligned = (record.get("config") or {}).get("modality_settings")
    if modality not in config.modality_settings and isinstance(aligned, dict):
        config.modality_settings[modality] = aligned
    fingerprint = (record.get("reference") or {}).get("fingerprint")
    if fingerprint is not None:
        config.reference_fingerprint = {modality: fingerprint, **(config.reference_fingerprint or {})}


def _transforms(config: TuneConfig, given: Mapping[str, Modality] | None) -> dict[str, Modality]:
    given = dict(given or {})
    if any(m not in given for m in config.modalities):
        from vlynx.modalities import get_modality

        for name in config.modalities:
            if name not in given:
                given[name] = get_modality(name, **config.modality_settings.get(name, {}))
    return {m: given[m] for m in config.modalities}


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _pad_id(backbone: Backbone) -> int:
    tokenizer = backbone.tokenizer
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


# ----- components -------------------------------------------------------------------


class ConversationDataset(torch.utils.data.Dataset):
    """Tokenized conversations (all up front) with media decoded on access.

    Item: {"input_ids": [int], "labels": [int], "streams": {"video": (F, 3, S, S), modality: ...}}.
    """

    def __init__(self, backbone: Backbone, examples: Sequence[Example], transforms: Mapping[str, Modality],
                 num_frames: int) -> None:
        self.backbone = backbone
        self.examples = list(examples)
        self.transforms = dict(transforms)
        self.num_frames = num_frames
        self.chats: list[TokenizedChat] = [tokenize_chat(backbone, e.messages) for e in self.examples]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        streams = read_streams(self.backbone, example.video, example.sources, self.transforms, self.num_frames)
        chat = self.chats[index]
        return {"input_ids": chat.input_ids, "labels": chat.labels, "streams": streams}


class Collator:
    """Pads text to (B, L) (labels with -100) and stacks each stream to (B, F, 3, S, S)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        length = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), length), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
        for row, item in enumerate(items):
            input_ids[row, :len(item["input_ids"])] = torch.as_tensor(item["input_ids"])
            labels[row, :len(item["labels"])] = torch.as_tensor(item["labels"])
        return {
            "input_ids": input_ids,
            "labels": labels,
            "lengths": torch.tensor([len(item["input_ids"]) for item in items]),
            "streams": {key: torch.stack([item["streams"][key] for item in items]) for key in items[0]["streams"]},
        }


class InstructionTrainer(Trainer):
    """HF Trainer whose loss splices media blocks into the prompt (eq. 10) and whose checkpoints
    hold just the adapters being trained."""

    def __init__(self, backbone: Backbone, modalities: Sequence[str], group: Mapping[str, int],
                 trained_adapters: Sequence[str], train_vision: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone
        self.modalities = list(modalities)
        self.group = dict(group)
        self.trained_adapters = list(trained_adapters)
        self.train_vision = train_vision
        self.model_accepts_loss_kwargs = True  # compute_loss below normalizes by num_items_in_batch itself

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        lengths = inputs["lengths"].tolist()
        input_ids = [row[:n].tolist() for row, n in zip(inputs["input_ids"], lengths)]
        labels = [row[:n].tolist() for row, n in zip(inputs["labels"], lengths)]
        # Video block (base encoder) + one block per modality (its adapter); no autograd unless training them.
        blocks = encode_blocks(self.backbone, inputs["streams"], self.modalities, grad=self.train_vision,
                               group=self.group)
        batch = splice_blocks(self.backbone, input_ids, blocks, labels)
        outputs = model(inputs_embeds=batch["inputs_embeds"], attention_mask=batch["attention_mask"],
                        use_cache=False)
        # (10): -sum_t log p(y_t | y_<t, z_v, z_x, instruction) over supervised tokens, per supervised token.
        logits = outputs.logits[:, :-1].float()  # (B, L-1, vocab): position t predicts token t+1
        targets = batch["labels"][:, 1:]
        total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                ignore_index=IGNORE_INDEX, reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else targets.ne(IGNORE_INDEX).sum()
        loss = total / count
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # the Trainer averages over processes afterwards
        return (loss, outputs) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            save_adapters(self.backbone, output_dir, self.trained_adapters)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        for name in self.trained_adapters:
            weights = Path(resume_from_checkpoint) / name / "adapter_model.safetensors"
            if not weights.is_file():
                raise VlynxError(f"checkpoint has no weights for adapter '{name}'", weights.parent)
            result = set_peft_model_state_dict(self.backbone.peft_model, load_file(str(weights)),
                                               adapter_name=name)
            if any(f".{name}." in key for key in result.missing_keys):
                raise VlynxError(f"checkpoint does not match adapter '{name}' (different rank or targets?)",
                                 weights)
