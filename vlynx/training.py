"""The optimisation recipe both training stages share (paper §A): AdamW, 3% linear warm-up, cosine decay.

Alignment and instruction tuning run on Hugging Face `Trainer`, so DDP, FSDP and
DeepSpeed come through `accelerate launch` / `torchrun` with no code of ours.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback

from vlynx.errors import VlynxError
from vlynx.progress import bars_shown, log

if TYPE_CHECKING:
    from vlynx.stage_configs import TrainingConfig


def training_arguments(config: TrainingConfig, output_dir: str | Path, **extra: Any):
    """`TrainingArguments` for a V-LynX stage from its config; `bf16=None` means bf16 exactly on CUDA.

    `extra` passes further TrainingArguments fields.
    """
    from transformers import TrainingArguments

    use_cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        optim="adamw_torch",
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,  # < 1: a fraction of the total steps
        max_grad_norm=config.max_grad_norm,
        bf16=use_cuda if config.bf16 is None else config.bf16,
        use_cpu=not use_cuda,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        dataloader_num_workers=config.workers,
        remove_unused_columns=False,
        report_to="none",
        deepspeed=config.deepspeed,
        disable_tqdm=not bars_shown(),
        **extra,
    )


def enable_gradient_checkpointing(config: TrainingConfig, *models: Any) -> bool:
    """Turn on non-reentrant gradient checkpointing in each of `models` (HF `PreTrainedModel`s) when
    `config.gradient_checkpointing` says so (None: exactly on CUDA); returns whether it is on.

    Non-reentrant, because tensors captured inside a checkpointed layer (the alignment loss's
    queries and out_proj outputs) keep their autograd graph only then: reentrant checkpointing runs
    the layer's forward under no_grad and backpropagates only through the layer's output. The
    recomputation in backward runs with the vision adapters routed as in the forward.
    """
    from vlynx.adapters import same_routing_in_recomputation

    on = torch.cuda.is_available() if config.gradient_checkpointing is None else config.gradient_checkpointing
    if on:
        for model in models:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={
                "use_reentrant": False, "context_fn": same_routing_in_recomputation(model)})
    return on


def last_checkpoint(directory: str | Path) -> str | None:
    """The newest complete `checkpoint-N` in `directory`, or None when it holds none.

    A run killed while saving leaves a checkpoint without its trainer or optimizer state:
    it is passed over (and said so) for the one before it.
    """
    steps = sorted((int(p.name.split("-")[1]), p) for p in Path(directory).glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit())
    for step, path in reversed(steps):
        missing = [name for name in ("trainer_state.json", "optimizer.pt") if not (path / name).exists()]
        if missing == ["optimizer.pt"] and any(path.glob("global_step*")):
            missing = []  # DeepSpeed keeps the optimizer state in global_stepN/
        if not missing:
            log.info("resuming from step %d (%s)", step, path)
            return str(path)
        log.warning("%s is incomplete (no %s: interrupted while saving?); passing over it", path, ", ".join(missing))
    if steps:
        raise VlynxError("holds no complete checkpoint to resume from: pass --overwrite to start over", directory)
    return None


def train(trainer, checkpoint: str | None) -> None:
    """`trainer.train()`, continuing from `checkpoint` when given.

    A checkpoint taken at the run's last step is loaded, not trained on: HF Trainer would
    take one step more than the run asked for (a run killed after its last checkpoint).
    """
    from transformers import TrainerState

    if checkpoint is not None:
        state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
        if 0 < state.max_steps <= state.global_step:
            trainer._load_from_checkpoint(checkpoint)  # our trainers' own loader of their adapter weights
            trainer.state = state
            return
    trainer.train(resume_from_checkpoint=checkpoint)


def show_progress(trainer, label: str) -> None:
    """One progress bar labelled `label` with the latest losses on it; no log dicts printed to stdout.

    HF Trainer prints every log dict (its progress callback writes them under the bar, its
    printer callback without one, with `-q`). The losses stay in the log at debug level, in
    the checkpoints' trainer_state.json and in the run record.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if bars_shown():
        trainer.add_callback(_LabelledProgress(label))
    else:
        trainer.add_callback(_LossLog())


class _LossLog(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            log.debug("step %d: %s", state.global_step, {k: v for k, v in logs.items() if k != "total_flos"})


class _LabelledProgress(_LossLog):
    def __init__(self, label: str) -> None:
        self.label, self.bar, self.step = label, None, 0

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.label, unit="step",
                            dynamic_ncols=True)
            self.step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.step)
            self.step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        super().on_log(args, state, control, logs=logs, **kwargs)
        if self.bar is not None and logs:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k.startswith("loss")})

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
