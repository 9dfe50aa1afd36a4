"""Instruction tuning (docs/method.md §2 eq. 10, §6): train the LLM LoRA on video + new-modality prompts.

Reads top to bottom: load the backbone -> attach the aligned vision adapters (frozen) and a
fresh LLM LoRA -> read and tokenize the conversations -> train on HF Trainer -> save a bundle.

With `token_cache`, the frozen streams' tokens (video always; a modality when its adapter is not
trained) are computed once into the cache before training and read from it in every step
(`vlynx.token_cache`): the same tokens, so the same bundle.

Variants from the paper, by setting:
- no modalities: the "-FT" baseline (video only + LLM LoRA);
- `train_vision_adapter`: vision LoRAs train jointly with the LLM LoRA; a modality with
  no aligned adapter gets a fresh one (the "no interface alignment" ablation).
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from vlynx.adapters import (
    LLM_ADAPTER,
    LoraSettings,
    add_llm_adapter,
    add_vision_adapter,
    encode,
    find_adapter_dir,
    load_adapter,
    save_adapters,
    set_trainable,
)
from vlynx.backbones.base import Backbone
from vlynx.bundle import VLynx
from vlynx.conversation import (
    IGNORE_INDEX,
    Example,
    Modality,
    TokenizedChat,
    images_per_frame,
    load_examples,
    read_streams,
    splice_blocks,
    tokenize_chat,
)
from vlynx.distributed import on_rank_zero
from vlynx.errors import VlynxError
from vlynx.outputs import (
    checkpoint_dir_for,
    claim_output,
    read_run_record,
    record_identity,
    run_identity,
    save_run,
)
from vlynx.progress import log, progress
from vlynx.stage_configs import VIDEO_STREAM, TuneConfig
from vlynx.token_cache import TokenCache, adapter_fingerprint, run_fingerprint, transform_fingerprint
from vlynx.training import enable_gradient_checkpointing, last_checkpoint, show_progress, train, training_arguments

@dataclass(frozen=True)
class TuneResult:
    bundle: Path
    losses: list[float]  # training loss as logged (every `logging_steps` steps)
    steps: int


def run_tune(config: TuneConfig, transforms: Mapping[str, Modality] | None = None) -> TuneResult:
    """Run instruction tuning and write a bundle to `config.out`.

    `transforms` overrides the registered modality transforms (default:
    `vlynx.modalities.get_modality(name, **settings)`).
    """
    from transformers import set_seed

    from vlynx.backbones import load_backbone

    started = time.time()
    config = config.resolved()
    config.check()
    adapter_dirs = [_adapter_dir(config, index, modality) for index, modality in enumerate(config.modalities)]
    for modality, directory in zip(config.modalities, adapter_dirs):
        if directory is None and not config.train_vision_adapter:
            raise VlynxError(f"no vision adapter for modality '{modality}': give --vision-adapter (the alignment "
                             f"output) or --train-vision-adapter for a fresh one trained here")
    # The transform settings and reference statistics each adapter was aligned with, unless given.
    aligned = {m: _alignment_record(d) for m, d in zip(config.modalities, adapter_dirs) if d is not None}
    config = replace(config, modality_settings={
        **{m: settings for m, (settings, _) in aligned.items() if settings is not None},
        **config.modality_settings})
    reference_fingerprints = {m: fingerprint for m, (_, fingerprint) in aligned.items() if fingerprint is not None}
    examples = load_examples(config.data, config.modalities, config.media_root)
    out, checkpoints = Path(config.out), checkpoint_dir_for(config.out, config.checkpoint_dir)
    args = training_arguments(config, checkpoints, label_names=["labels"])
    with claim_output(out, checkpoints, resume=config.resume, overwrite=config.overwrite) as resume:
        # 1. Model: base backbone + aligned vision adapters (frozen) + fresh LLM LoRA (seeded: runs repeat exactly).
        set_seed(config.seed)
        backbone = load_backbone(config.model, device=_device(), dtype=config.dtype,
                                  trust_remote_code=config.trust_remote_code)
        if backbone.tokenizer is None:
            raise VlynxError("instruction tuning needs the model's tokenizer; none found", config.model)
        identity = run_identity(config, model=backbone.fingerprint(), inputs=[config.data],
                                adapters={m: d for m, d in zip(config.modalities, adapter_dirs) if d is not None})
        on_rank_zero(lambda: record_identity(checkpoints, identity, resuming=resume))
        trained = [LLM_ADAPTER]
        for modality, directory in zip(config.modalities, adapter_dirs):
            if directory is not None:
                load_adapter(backbone, directory, modality)
            else:
                add_vision_adapter(backbone, modality,
                                   LoraSettings(config.vision_rank, config.vision_alpha, config.vision_dropout))
            if config.train_vision_adapter:
                trained.append(modality)
        add_llm_adapter(backbone, LoraSettings(config.llm_rank, config.llm_alpha, config.llm_dropout))
        set_trainable(backbone, trained)
        enable_gradient_checkpointing(config, backbone.language_model,
                                      *([backbone.vision_tower] if config.train_vision_adapter else []))

        # 2. Data: every entry checked and tokenized before training starts; media decoded per step,
        # except the frozen streams' tokens when a token cache keeps them (filled here, once).
        transforms = _transforms(config, transforms)
        group = {m: images_per_frame(transforms[m]) for m in config.modalities}
        cache = _token_cache(config, backbone, transforms, adapter_dirs) if config.token_cache else None
        dataset = ConversationDataset(backbone, examples, transforms, config.frames, cache)
        if cache is not None:
            fill_token_cache(dataset, group, config.batch_size, args.process_index, args.world_size)

        # 3. Train: AdamW, linear warm-up then cosine decay (paper §A), checkpoints for --resume.
        trainer = InstructionTrainer(backbone, config.modalities, group, trained, config.train_vision_adapter,
                                     model=backbone.peft_model, args=args, train_dataset=dataset,
                                     data_collator=Collator(backbone.pad_token_id))
        show_progress(trainer, "tune")
        train(trainer, last_checkpoint(checkpoints) if resume else None)
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

        # 4. Save: the bundle, and the resolved config and run record in it so the run can be repeated.
        settings = {m: config.modality_settings.get(m, {}) for m in config.modalities}
        model = VLynx(backbone, config.modalities, config.frames, settings, transforms, reference_fingerprints or None)
        if trainer.is_world_process_zero():  # one writer under torchrun / accelerate launch
            model.save_pretrained(out)
            save_run(config, out, started, steps=trainer.state.global_step, losses=losses,
                     reference_fingerprints=reference_fingerprints, identity=identity)
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


def _alignment_record(directory: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(transform settings, reference fingerprint) recorded by `vlynx align` beside its adapter.

    The same transform must be used in alignment, tuning and inference (docs/method.md §5).
    """
    record = read_run_record(directory) or {}
    settings = (record.get("config") or {}).get("modality_settings")
    fingerprint = ((record.get("results") or {}).get("reference") or {}).get("fingerprint")
    return (settings if isinstance(settings, dict) else None), fingerprint


def _transforms(config: TuneConfig, given: Mapping[str, Modality] | None) -> dict[str, Modality]:
    given = dict(given or {})
    if any(m not in given for m in config.modalities):
        from vlynx.modalities import get_modality

        for name in config.modalities:
            if name not in given:
                given[name] = get_modality(name, **config.modality_settings.get(name, {}))
    return {m: given[m] for m in config.modalities}


def _token_cache(config: TuneConfig, backbone: Backbone, transforms: Mapping[str, Modality],
                 adapter_dirs: Sequence[Path | None]) -> TokenCache:
    """The run's token cache, for the video stream and each modality whose adapter stays frozen."""
    streams: dict[str, dict[str, Any]] = {VIDEO_STREAM: {}}
    if not config.train_vision_adapter:
        for modality, directory in zip(config.modalities, adapter_dirs):
            streams[modality] = {
                "adapter": adapter_fingerprint(directory),
                "transform": transform_fingerprint(transforms[modality], config.modality_settings.get(modality, {})),
            }
    return TokenCache.open(config.token_cache, run_fingerprint(backbone, config.frames, streams))


def fill_token_cache(dataset: ConversationDataset, group: Mapping[str, int], batch_size: int, rank: int = 0,
                     world_size: int = 1) -> None:
    """Encode and store the cached streams of every example the cache lacks, `batch_size` at a time.

    Examples with the same media (several questions on one clip) are encoded once. Under several
    processes each encodes its share, then all wait for the others and read the cache again.
    """
    cache = dataset.cache
    todo: dict[tuple[str, ...], int] = {}  # the entries an example needs -> the first example needing them
    for index, keys in enumerate(dataset.cache_keys):
        if any(key not in cache for key in keys.values()):
            todo.setdefault(tuple(keys.values()), index)
    log.info("token cache %s: %d of %d examples' media to encode", cache.directory, len(todo), len(dataset))
    mine = list(todo.values())[rank::world_size]
    batches = [mine[start:start + batch_size] for start in range(0, len(mine), batch_size)]
    for batch in progress(batches, desc="token cache", unit="batch"):
        streams = [dataset.read_media(index) for index in batch]
        entries = {}
        for stream in dataset.cache_keys[batch[0]]:
            pixels = torch.stack([item[stream] for item in streams])  # (B, F*k, 3, S, S), as the collator stacks
            block = frozen_block(dataset.backbone, pixels, None if stream == VIDEO_STREAM else stream,
                                 group.get(stream, 1))
            entries.update({dataset.cache_keys[index][stream]: block[row] for row, index in enumerate(batch)})
        cache.put(entries)
    if world_size > 1:
        torch.distributed.barrier()
        cache.refresh()


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ----- components -------------------------------------------------------------------


class ConversationDataset(torch.utils.data.Dataset):
    """Tokenized conversations (all up front) with media decoded on access.

    Item: {"input_ids": [int], "labels": [int], "streams": {"video": (F, 3, S, S), modality: ...},
    "cached": {stream: (T, D) tokens}}: a stream the token `cache` keeps is read from it (see
    `fill_token_cache`), not decoded.
    """

    def __init__(self, backbone: Backbone, examples: Sequence[Example], transforms: Mapping[str, Modality],
                 num_frames: int, cache: TokenCache | None = None) -> None:
        from vlynx.modalities.base import shared_scene_choice

        self.backbone = backbone
        self.examples = list(examples)
        self.transforms = dict(transforms)
        self.num_frames = num_frames
        self.chats: list[TokenizedChat] = [tokenize_chat(backbone, e.messages) for e in self.examples]
        self.cache = cache
        choice = shared_scene_choice(self.transforms.values())
        self.cache_keys = [self._entry_keys(example, choice) for example in self.examples]

    def _entry_keys(self, example: Example, scene_choice: Any) -> dict[str, str]:
        """Cached stream -> the key of its tokens for `example` (a modality's frames depend on the video's too)."""
        if self.cache is None:
            return {}
        return {stream: self.cache.entry_key(stream, [example.video] if stream == VIDEO_STREAM else
                                             [example.video, example.sources.get(stream) or example.video],
                                             scene_choice)
                for stream in self.cache.fingerprint["streams"]}

    def __len__(self) -> int:
        return len(self.examples)

    def read_media(self, index: int) -> dict[str, torch.Tensor]:
        """Example `index`'s encoder inputs, every stream (`read_streams`)."""
        example = self.examples[index]
        return read_streams(self.backbone, example.video, example.sources, self.transforms, self.num_frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        keys = self.cache_keys[index]
        cached = {stream: self.cache.get(key) for stream, key in keys.items()}
        decoded = len(cached) < 1 + len(self.transforms)
        streams = {k: v for k, v in self.read_media(index).items() if k not in cached} if decoded else {}
        chat = self.chats[index]
        return {"input_ids": chat.input_ids, "labels": chat.labels, "streams": streams, "cached": cached}


class Collator:
    """Pads text to (B, L) (labels with -100), stacks each stream to (B, F, 3, S, S) and each cached block to
    (B, T, D)."""

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
            "cached": {key: torch.stack([item["cached"][key] for item in items]) for key in items[0]["cached"]},
        }


def media_blocks(backbone: Backbone, streams: Mapping[str, torch.Tensor], cached: Mapping[str, torch.Tensor],
                 modalities: Sequence[str], trained: Sequence[str], group: Mapping[str, int]) -> list[torch.Tensor]:
    """The media blocks in prompt order [video, modality 1, ...], each (B, T, D).

    A block in `cached` is used as it is; a stream whose adapter is in `trained` is encoded with
    autograd (adapter dropout on in training); any other is a `frozen_block`.
    """
    blocks = []
    for stream, modality in [(VIDEO_STREAM, None), *((m, m) for m in modalities)]:
        if stream in cached:
            blocks.append(cached[stream])
        elif modality in trained:
            blocks.append(encode(backbone, streams[stream], modality, group.get(stream, 1)))
        else:
            blocks.append(frozen_block(backbone, streams[stream], modality, group.get(stream, 1)))
    return blocks


def frozen_block(backbone: Backbone, pixels: torch.Tensor, modality: str | None,
                 images_per_frame: int = 1) -> torch.Tensor:
    """Tokens of a frozen stream (video, or a modality whose adapter is not trained): no autograd, the encoder
    in eval mode (no dropout), so they are a fixed function of the frames, as the token cache keeps them."""
    tower = backbone.vision_tower
    was_training = tower.training
    tower.eval()
    try:
        with torch.no_grad():
            return encode(backbone, pixels, modality, images_per_frame)
    finally:
        tower.train(was_training)


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
        blocks = media_blocks(self.backbone, inputs["streams"], inputs["cached"], self.modalities,
                              self.modalities if self.train_vision else [], self.group)
        batch = splice_blocks(self.backbone, input_ids, blocks, labels)
        # position_ids: the family's own (Qwen2.5-VL: M-RoPE over the media grid), None for 1-D positions
        outputs = model(inputs_embeds=batch["inputs_embeds"], attention_mask=batch["attention_mask"],
                        position_ids=batch.get("position_ids"), use_cache=False)
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
