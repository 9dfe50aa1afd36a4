"""Interface alignment stage (`vlynx align`): train one modality's vision LoRA on unlabeled inputs.

Top to bottom (docs/method.md §2, eq. 4-9):

1. `AlignConfig` (in `vlynx.stage_configs`): every setting of a run; its output/resume policy;
2. load the vision encoder and projector only (the LLM stays on the meta device), check the
   reference statistics were computed for this model, attach the modality's vision LoRA;
3. `AlignmentModel`: the encoder + projector as one `nn.Module` whose forward returns the
   V-LynX losses (`vlynx.losses.alignment_losses`) for a batch of modality frames;
4. HF `Trainer` runs the loop (AdamW, warm-up + cosine decay, bf16 on GPU, gradient
   accumulation, checkpoints holding only the LoRA weights, resume), so `accelerate launch`,
   torchrun and DeepSpeed work unchanged;
5. the adapter is written in PEFT format with the resolved config and a run record, atomically.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlynx.backbones.base import Backbone
from vlynx.distributed import on_rank_zero
from vlynx.errors import VlynxError
from vlynx.losses import AlignmentLossSettings, alignment_losses
from vlynx.outputs import checkpoint_dir_for, claim_output, record_identity, run_identity, save_run
from vlynx.progress import log
from vlynx.stage_configs import AlignConfig
from vlynx.training import enable_gradient_checkpointing, last_checkpoint, show_progress, train, training_arguments

CHECKPOINT_WEIGHTS = "alignment_lora.safetensors"


def loss_settings(config: AlignConfig) -> AlignmentLossSettings:
    """The loss switches of `config` (`AlignmentLossSettings` shares their field names)."""
    names = [f.name for f in dataclasses.fields(AlignmentLossSettings)]
    try:
        return AlignmentLossSettings(**{name: getattr(config, name) for name in names})
    except ValueError as error:
        raise VlynxError(str(error)) from error


@dataclass
class AlignResult:
    out: Path
    final_losses: dict[str, float]
    steps: int


# ----- data ------------------------------------------------------------------------------------------
def alignment_inputs(spec: str | Path, modality: str, media_root: str | Path | None = None) -> list[Path]:
    """Modality inputs named by DIR | LIST.txt | ANNOT.json[l].

    In an annotation file each entry's `modality` field is used, else its `video` (audio comes
    from a video's own track), each input once however many entries name it; a folder lists
    audio/video files, or sub-folders for depth scenes.
    """
    from vlynx.inputs import AUDIO_SUFFIXES, VIDEO_SUFFIXES, list_media, read_annotations, require_existing

    spec = Path(spec)
    if spec.suffix in (".json", ".jsonl") and spec.is_file():
        root = Path(media_root) if media_root is not None else spec.parent
        names = [entry.get(modality) or entry.get("video") for entry in read_annotations(spec)]
        # a clip asked several questions is one alignment input, not one per question
        paths = [Path(n) if Path(n).is_absolute() else root / n for n in dict.fromkeys(names) if n]
    else:
        suffixes = {"audio": AUDIO_SUFFIXES | VIDEO_SUFFIXES, "depth": set()}.get(modality, VIDEO_SUFFIXES)
        paths = list_media(spec, field=modality, suffixes=suffixes, media_root=media_root)
    if not paths:
        raise VlynxError(f"no {modality} inputs found", spec)
    return require_existing(paths, spec)


class ModalityFrames(torch.utils.data.Dataset):
    """Item i: {"pixel_values": (F * images_per_frame, 3, S, S)} of input i through the modality transform."""

    def __init__(self, paths: Sequence[Path], modality: Any, backbone: Backbone, num_frames: int,
                 skip_bad_items: bool = False) -> None:
        self.paths, self.modality, self.num_frames = list(paths), modality, num_frames
        self.preprocess, self.skip_bad_items = backbone.preprocess_frames, skip_bad_items

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        for attempt in range(len(self.paths)):
            path = self.paths[(index + attempt) % len(self.paths)]
            try:
                return {"pixel_values": self.preprocess(self.modality.frames(path, self.num_frames))}
            except VlynxError as error:
                if not self.skip_bad_items:
                    raise VlynxError(f"cannot read alignment input ({error})", path) from error
                # Deterministic stand-in (the next input) keeps batch shapes and resume order intact.
                log.warning("skipping unreadable input %s: %s", path, error)
        raise VlynxError("no alignment input is readable", self.paths[0].parent)


# ----- the trained module ----------------------------------------------------------------------------
class AlignmentModel(nn.Module):
    """Vision encoder + projector of `backbone` whose forward returns the alignment losses.

    Only the encoder and projector are registered submodules, so `Trainer`, DDP and DeepSpeed
    see neither the (meta) LLM nor anything else outside this stage.
    """

    def __init__(self, backbone: Backbone, modality: str, reference: Any,
                 settings: AlignmentLossSettings, images_per_frame: int = 1) -> None:
        super().__init__()
        self.encoder = backbone.vision_tower
        self.projector = backbone.projector
        self._backbone = (backbone,)  # a tuple: not registered as a submodule
        self.modality, self.settings, self.images_per_frame = modality, settings, images_per_frame
        device = backbone.device
        # (layers, heads, positions, head_dim), eq. (2); (D_llm,), eq. (3)
        self.register_buffer("reference_keys", reference.keys.to(device, torch.float32), persistent=False)
        self.register_buffer("reference_values", reference.values.to(device, torch.float32), persistent=False)
        self.register_buffer("token_mean", reference.token_mean.to(device, torch.float32), persistent=False)
        self.register_buffer("token_var", reference.token_var.to(device, torch.float32), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        return alignment_losses(
            self._backbone[0], self.modality, pixel_values, self.reference_keys, self.reference_values,
            self.token_mean, self.token_var, self.settings, self.images_per_frame)

    def lora_state(self) -> dict[str, torch.Tensor]:
        """The trainable (LoRA) weights, by parameter name."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}


def _trainer_class():
    from transformers import Trainer

    class AlignmentTrainer(Trainer):
        """Trainer whose loss is the V-LynX alignment loss and whose checkpoints hold only the LoRA."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._component_sums: dict[str, torch.Tensor] = {}
            self._component_count = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            losses = model(inputs["pixel_values"])
            for name in ("attn", "dist"):
                total = self._component_sums.get(name)
                self._component_sums[name] = losses[name] if total is None else total + losses[name]
            self._component_count += 1
            return (losses["loss"], losses) if return_outputs else losses["loss"]

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs and self._component_count:
                for name, total in self._component_sums.items():
                    logs[f"loss_{name}"] = round(float(total) / self._component_count, 6)
                self._component_sums, self._component_count = {}, 0
            super().log(logs, start_time)

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            from safetensors.torch import save_file

            output_dir = output_dir or self.args.output_dir
            os.makedirs(output_dir, exist_ok=True)
            if self.args.should_save:
                state = {k: v.contiguous().cpu() for k, v in self.accelerator.unwrap_model(self.model).lora_state().items()}
                save_file(state, os.path.join(output_dir, CHECKPOINT_WEIGHTS), metadata={"format": "pt"})

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
            from safetensors.torch import load_file

            model = self.accelerator.unwrap_model(model or self.model)
            path = os.path.join(resume_from_checkpoint, CHECKPOINT_WEIGHTS)
            if not os.path.isfile(path):
                raise VlynxError("checkpoint has no alignment LoRA weights", path)
            state = load_file(path)
            expected = model.lora_state()
            if set(state) != set(expected):
                raise VlynxError("checkpoint belongs to a different adapter layout (other modality or rank?)", path)
            with torch.no_grad():
                for name, tensor in expected.items():
                    tensor.copy_(state[name].to(tensor.device, tensor.dtype))

    return AlignmentTrainer


# ----- the stage -------------------------------------------------------------------------------------
def run_align(config: AlignConfig, callbacks: Sequence[Any] = ()) -> AlignResult:
    """Train `config.modality`'s vision LoRA against the reference statistics; write the adapter to `config.out`.

    Returns the output directory, the final logged losses and the number of optimiser steps.
    `callbacks` are extra `transformers.TrainerCallback`s.
    """
    from transformers import set_seed

    from vlynx.adapters import LoraSettings, add_vision_adapter, set_trainable
    from vlynx.backbones import load_backbone
    from vlynx.modalities import get_modality
    from vlynx.reference import load_reference

    started = time.time()
    config = config.resolved()
    config.check()
    settings = loss_settings(config)
    modality = get_modality(config.modality, **config.modality_settings)
    paths = alignment_inputs(config.data, config.modality, config.media_root)
    eval_paths = alignment_inputs(config.eval_data, config.modality, config.media_root) if config.eval_data else []
    if not Path(config.reference).is_file():
        raise VlynxError("reference statistics file not found (`vlynx reference` writes it)", config.reference)
    out, checkpoints = Path(config.out), checkpoint_dir_for(config.out, config.checkpoint_dir)
    args = training_arguments(
        config, checkpoints,
        # Without the distribution term the last layer's MLP LoRA gets no gradient (the attention
        # loss reads only attention outputs); DDP must then look for unused parameters.
        ddp_find_unused_parameters=config.no_dist,
    )
    with claim_output(out, checkpoints, resume=config.resume, overwrite=config.overwrite) as resume:
        # Encoder + projector only: the LLM is never allocated (a 7B backbone aligns in encoder memory).
        dtype = config.dtype or ("bfloat16" if args.device.type == "cuda" else "float32")
        backbone = load_backbone(config.model, device=args.device, dtype=dtype,
                                 trust_remote_code=config.trust_remote_code, language_model=False)
        # Checked on the base model, before the LoRA exists (reference statistics are base-model statistics).
        reference = load_reference(config.reference, backbone)
        identity = run_identity(config, model=backbone.fingerprint(), inputs=[*paths, config.reference])
        on_rank_zero(lambda: record_identity(checkpoints, identity, resuming=resume))
        frames = config.frames or reference.frames_per_video
        set_seed(config.seed)  # the LoRA A init is random: the same seed gives the same run
        add_vision_adapter(backbone, config.modality,
                           LoraSettings(config.vision_rank, config.vision_alpha, config.vision_dropout))
        set_trainable(backbone, [config.modality])
        enable_gradient_checkpointing(config, backbone.vision_tower)  # the LLM is on meta

        dataset = ModalityFrames(paths, modality, backbone, frames, config.skip_bad_items)
        model = AlignmentModel(backbone, config.modality, reference, settings, modality.images_per_frame)
        trainer = _trainer_class()(model=model, args=args, train_dataset=dataset, callbacks=list(callbacks))
        if eval_paths:  # the interface gap on held-out inputs, logged through the Trainer (vlynx.diagnose.monitor)
            from vlynx.diagnose.monitor import attach_gap_monitor, gap_curve

            attach_gap_monitor(trainer, backbone, config, modality, eval_paths, frames, reference, settings)
        show_progress(trainer, f"align {config.modality}")
        log.info("aligning '%s' on %d inputs x %d frames; reference %s", config.modality, len(dataset), frames,
                 config.reference)
        train(trainer, last_checkpoint(checkpoints) if resume else None)

        final = _final_losses(trainer.state.log_history)
        if trainer.is_world_process_zero():
            _write_output(backbone, config, reference, final, trainer.state.global_step, frames, started, identity,
                          gap_curve(trainer.state.log_history) if eval_paths else None)
    return AlignResult(out=out, final_losses=final, steps=trainer.state.global_step)


def _final_losses(history: list[dict[str, Any]]) -> dict[str, float]:
    for entry in reversed(history):
        if "loss" in entry:
            return {k: float(entry[k]) for k in ("loss", "loss_attn", "loss_dist") if k in entry}
    return {}


def _write_output(backbone: Backbone, config: AlignConfig, reference: Any, final: dict[str, float],
                  steps: int, frames: int, started: float, identity: dict[str, Any],
                  interface_gap: list[dict[str, Any]] | None = None) -> None:
    """The PEFT adapter, the resolved config and the run record, all replacing `config.out` at once."""
    from vlynx.files import atomic_directory, ordinary_permissions

    with atomic_directory(config.out) as staging:
        backbone.peft_model.save_pretrained(str(staging), selected_adapters=[config.modality])
        # PEFT puts a non-default adapter in a subfolder; the output dir itself is the adapter.
        nested = staging / config.modality
        if nested.is_dir():
            for item in nested.iterdir():
                os.replace(item, staging / item.name)
            nested.rmdir()
        ordinary_permissions(staging)
        reference_record = {"path": str(config.reference), "fingerprint": reference.fingerprint,
                            "frames_per_video": reference.frames_per_video, "counts": reference.counts}
        save_run(config, staging, started, adapter_name=config.modality, frames=frames, steps=steps,
                 final_losses=final, reference=reference_record, identity=identity, interface_gap=interface_gap)
