"""The V-LynX model bundle: a base Video LLM plus its adapters, loadable and answerable in one call.

A bundle directory holds

    vlynx_bundle.json   base model id/path and fingerprint, modalities in prompt order, each
                        modality's transform settings, frames per video, reference fingerprint
    adapters/<name>/    every adapter in PEFT format (one vision LoRA per modality, `llm`)
    tokenizer/          the tokenizer the LLM adapter was trained with

    model = VLynx.from_pretrained("bundle/")
    model.answer(video="clip.mp4", audio="clip.wav", question="What instrument is playing?")
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from vlynx.adapters import adapter_names, load_adapter, save_adapters, set_trainable
from vlynx.backbones.base import Backbone
from vlynx.conversation import (
    VIDEO_STREAM,
    Modality,
    encode_blocks,
    images_per_frame,
    read_streams,
    splice_blocks,
    tokenize_question,
)
from vlynx.errors import VlynxError
from vlynx.files import atomic_directory, write_text_atomic
from vlynx.fingerprints import fingerprint_differences

BUNDLE_FILE = "vlynx_bundle.json"
BUNDLE_FORMAT = 1


# ----- the bundle ----------------------------------------------------------------


class VLynx:
    """A Video LLM with V-LynX adapters: video plus new-modality inputs in, text out.

    `modalities` is the prompt order of the new-modality blocks; `transforms` turns each
    modality's raw input into frames (default: `vlynx.modalities.get_modality(name, **settings)`).
    """

    def __init__(self, backbone: Backbone, modalities: Sequence[str], num_frames: int,
                 modality_settings: Mapping[str, Mapping[str, Any]] | None = None,
                 transforms: Mapping[str, Modality] | None = None,
                 reference_fingerprint: Mapping[str, Any] | None = None) -> None:
        self.backbone = backbone
        self.modalities = list(modalities)
        self.num_frames = num_frames
        self.modality_settings = {m: dict((modality_settings or {}).get(m, {})) for m in self.modalities}
        self.transforms = dict(transforms) if transforms is not None else {}
        for name in self.modalities:
            if name not in self.transforms:
                self.transforms[name] = _default_transform(name, self.modality_settings[name])
        self.reference_fingerprint = dict(reference_fingerprint) if reference_fingerprint else None

    # ----- loading and saving ------------------------------------------------------
    @classmethod
    def from_pretrained(cls, bundle: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, base_model: str | Path | None = None,
                        transforms: Mapping[str, Modality] | None = None) -> VLynx:
        """Load the base model, every adapter and the modality transforms of a saved bundle.

        `base_model` overrides the recorded base model location (e.g. after moving it); its
        fingerprint must still match the one the bundle was trained on.
        """
        from vlynx.backbones import load_backbone

        bundle = Path(bundle)
        manifest = _read_manifest(bundle)
        backbone = load_backbone(base_model or manifest["base_model"], device=device, dtype=dtype)
        _check_fingerprint(backbone, manifest.get("backbone_fingerprint"), bundle)
        if manifest.get("tokenizer"):
            from transformers import AutoTokenizer

            backbone.tokenizer = AutoTokenizer.from_pretrained(str(bundle / manifest["tokenizer"]))
        for name, relative in manifest["adapters"].items():
            load_adapter(backbone, bundle / relative, name)
        set_trainable(backbone, [])
        backbone.model.eval()
        return cls(backbone, manifest["modalities"], manifest["num_frames"], manifest.get("modality_settings"),
                   transforms, manifest.get("reference_fingerprint"))

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the bundle (adapters, tokenizer, manifest); an existing bundle there is replaced whole.

        Other files in `directory` (e.g. a tuning run's checkpoint folder) are left as they are.
        """
        directory = Path(directory)
        names = adapter_names(self.backbone)
        missing = [m for m in self.modalities if m not in names]
        if missing:
            raise VlynxError(f"no vision adapter attached for modalities {missing}")
        tokenizer = self.backbone.tokenizer
        manifest = {
            "format": BUNDLE_FORMAT,
            "base_model": _portable_source(self.backbone.source),
            "backbone_fingerprint": self.backbone.fingerprint(),
            "modalities": self.modalities,
            "modality_settings": self.modality_settings,
            "num_frames": self.num_frames,
            "adapters": {name: f"adapters/{name}" for name in names},
            "tokenizer": "tokenizer" if tokenizer is not None else None,
            "reference_fingerprint": self.reference_fingerprint,
        }
        with contextlib.ExitStack() as parts:
            save_adapters(self.backbone, parts.enter_context(atomic_directory(directory / "adapters")), names)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(parts.enter_context(atomic_directory(directory / "tokenizer"))))
            # Every part is written; the manifest goes before they move in and comes back last,
            # so a directory with a manifest always holds a complete bundle.
            (directory / BUNDLE_FILE).unlink(missing_ok=True)
            if tokenizer is None:
                shutil.rmtree(directory / "tokenizer", ignore_errors=True)
        write_text_atomic(directory / BUNDLE_FILE, json.dumps(manifest, indent=2) + "\n")
        return directory

    # ----- answering --------------------------------------------------------------
    def answer(self, video: str | Path, question: str, max_new_tokens: int = 64, **sources: str | Path) -> str:
        """Answer one question about `video` (plus e.g. `audio=`, `depth=` inputs); greedy decoding."""
        return self.generate([{"video": video, "question": question, **sources}], max_new_tokens)[0]

    def generate(self, requests: Sequence[Mapping[str, Any]], max_new_tokens: int = 64, batch_size: int = 8,
                 timing: dict[str, float] | None = None) -> list[str]:
        """Answers for `requests` ({"video", "question", modality: input, ...}), batched with left padding.

        A modality left out of a request is read from the video (e.g. its audio track).
        `timing`, when given, receives seconds spent on media (`media_s`) and generation (`generate_s`).
        """
        answers: list[str] = []
        clock = {"media_s": 0.0, "generate_s": 0.0}
        for start in range(0, len(requests), batch_size):
            chunk = requests[start:start + batch_size]
            began = time.perf_counter()
            prompts, streams = self._prepare(chunk)
            clock["media_s"] += time.perf_counter() - began
            began = time.perf_counter()
            answers += self._generate(prompts, streams, max_new_tokens)
            clock["generate_s"] += time.perf_counter() - began
        if timing is not None:
            timing.update(clock)
        return answers

    def _prepare(self, requests: Sequence[Mapping[str, Any]]) -> tuple[list[list[int]], dict[str, torch.Tensor]]:
        known = {"video", "question", *self.modalities}
        prompts, per_request = [], []
        for number, request in enumerate(requests):
            unknown = set(request) - known
            if unknown:
                raise VlynxError(f"request {number}: unknown inputs {sorted(unknown)}; this model takes video, "
                                 f"question{''.join(', ' + m for m in self.modalities)}")
            if not request.get("video") or not isinstance(request.get("question"), str):
                raise VlynxError(f"request {number}: needs a 'video' path and a 'question' text")
            prompts.append(tokenize_question(self.backbone, request["question"]))
            per_request.append(read_streams(self.backbone, request["video"],
                                            {m: request.get(m) for m in self.modalities},
                                            self.transforms, self.num_frames))
        streams = {key: torch.stack([s[key] for s in per_request]) for key in [VIDEO_STREAM, *self.modalities]}
        return prompts, streams

    @torch.no_grad()
    def _generate(self, prompts: list[list[int]], streams: dict[str, torch.Tensor], max_new_tokens: int) -> list[str]:
        backbone = self.backbone
        backbone.model.eval()
        group = {m: images_per_frame(self.transforms[m]) for m in self.modalities}
        blocks = encode_blocks(backbone, streams, self.modalities, group=group)
        inputs = splice_blocks(backbone, prompts, blocks, padding_side="left")
        tokenizer = backbone.tokenizer
        output = backbone.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            eos_token_id=_stop_ids(backbone), pad_token_id=backbone.pad_token_id,
        )
        # With inputs_embeds only, generate returns just the new tokens.
        return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in output]


def _default_transform(name: str, settings: Mapping[str, Any]) -> Modality:
    from vlynx.modalities import get_modality

    return get_modality(name, **settings)


def _stop_ids(backbone: Backbone) -> list[int]:
    """End-of-turn ids: the tokenizer's EOS, the model's generation EOS and ChatML's <|im_end|>."""
    tokenizer = backbone.tokenizer
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(backbone.model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return sorted(i for i in ids if i is not None)


def _portable_source(source: str) -> str:
    """A local model directory is recorded as an absolute path; presets and hub ids as they are."""
    return str(Path(source).resolve()) if Path(source).exists() else source


def _read_manifest(bundle: Path) -> dict[str, Any]:
    path = bundle / BUNDLE_FILE
    if not path.is_file():
        raise VlynxError(f"not a vlynx bundle (no {BUNDLE_FILE}); `vlynx tune --out DIR` writes one", bundle)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise VlynxError(f"invalid JSON at line {error.lineno}: {error.msg}", path) from error
    for key in ("base_model", "modalities", "num_frames", "adapters"):
        if key not in manifest:
            raise VlynxError(f"missing '{key}'", path)
    if manifest.get("format", BUNDLE_FORMAT) > BUNDLE_FORMAT:
        raise VlynxError(f"bundle format {manifest['format']} is newer than this vlynx understands; upgrade vlynx",
                         path)
    return manifest


def _check_fingerprint(backbone: Backbone, expected: Mapping[str, Any] | None, bundle: Path) -> None:
    if not expected:
        return
    differing = fingerprint_differences(expected, backbone.fingerprint())
    if differing:
        raise VlynxError(f"the base model '{backbone.source}' is not the one this bundle was trained on "
                         f"(differs in: {'; '.join(differing)})", bundle)
