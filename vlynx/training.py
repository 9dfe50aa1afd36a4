"""The optimisation recipe both training stages share (paper §A): AdamW, 3% linear warm-up, cosine decay.

Alignment and instruction tuning run on Hugging Face `Trainer`, so DDP, FSDP and
DeepSpeed come through `accelerate launch` / `torchrun` with no code of ours.
"""
from __future__ import annotations

from typing import Any

import torch

from vlynx.progress import log


def training_arguments(
    output_dir: str,
    *,
    batch_size: int,
    grad_accum: int,
    lr: float,
    weight_decay: float,
    epochs: float,
    max_steps: int | None,
    warmup: float,
    seed: int,
    logging_steps: int,
    save_steps: int,
    save_total_limit: int | None = 2,
    workers: int = 0,
    max_grad_norm: float = 1.0,
    bf16: bool | None = None,
    deepspeed: str | None = None,
    **extra: Any,
):
    """`TrainingArguments` for a V-LynX stage; `bf16=None` means bf16 exactly when a CUDA GPU is used.

    `warmup` < 1 is a fraction of the total steps. `extra` passes further TrainingArguments fields.
    """
    from transformers import TrainingArguments

    use_cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        learning_rate=lr,
        weight_decay=weight_decay,
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps and max_steps > 0 else -1,
        optim="adamw_torch",
        lr_scheduler_type="cosine",
        warmup_steps=warmup,
        max_grad_norm=max_grad_norm,
        bf16=use_cuda if bf16 is None else bf16,
        use_cpu=not use_cuda,
        seed=seed,
        data_seed=seed,
        logging_steps=logging_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=save_total_limit,
        dataloader_num_workers=workers,
        remove_unused_columns=False,
        report_to="none",
        deepspeed=deepspeed,
        disable_tqdm=not log.isEnabledFor(20),
        **extra,
    )


def quiet_when_asked(trainer) -> None:
    """With progress hidden (`-q`), HF Trainer would print every log dict instead: drop that printer."""
    from transformers.trainer_callback import PrinterCallback

    if not log.isEnabledFor(20):
        trainer.remove_callback(PrinterCallback)
