"""The V-LynX model bundle: a base Video LLM plus its adapters, loadable and answerable in one call.

A bundle directory holds

    vlynx_bundle.json   base model id/path and fingerprint, modalities in prompt order, each
                        modality's transform settings, frames per video, reference fingerprint
    adapters/<name>/    every adapter in PEFT format (one vision LoRA per modality, `llm`)
    tokenizer/          the tokenizer the LLM adapter was trained with

    model = VLynx.from_pretrained("bundle/")
    model.answer(video="clip.mp4", audio="clip.wav", question="what sound do you hear ?")

`VLynx.from_pretrained` also takes a base model alone (`miniworld`, a preset, a hub id or a
checkpoint directory): no adapters, no new modalities, the video only.

Where the manifest records the base model, so that a bundle keeps loading after it is moved:

- a preset or shipped name (`tiny`, `miniworld`) and a hub id as they are; the shipped
  checkpoint is recorded by its name even when it was loaded by its path in site-packages;
- a local checkpoint directory inside the bundle's parent folder (beside the bundle, or in it)
  relative to the bundle, as `../base` or `./base`, so the parent folder can be moved or
  copied whole; loading resolves such a path against the bundle directory;
- any other local directory by its absolute path (it stays put when the bundle alone moves).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from vlynx.adapters import adapter_names, load_adapter, save_adapters, set_trainable
from vlynx.backbones.base import Backbone
from vlynx.conversation import (
    IMAGE_PLACEHOLDER,
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
from vlynx.progress import log

BUNDLE_FILE = "vlynx_bundle.json"
BUNDLE_FORMAT = 1
BASE_MODEL_FRAMES = 8  # frames per video when a base model is loaded alone (the miniworld model's)


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
                        dtype: torch.dtype | str | None = None, base_model: str | Path | None = None,
                        transforms: Mapping[str, Modality] | None = None, num_frames: int | None = None,
                        trust_remote_code: bool = False) -> VLynx:
        """Load the base model, every adapter and the modality transforms of a saved bundle.

        `bundle` may also be a base model alone (a preset, `miniworld`, a hub id or a checkpoint
        directory): it then answers about the video only, from `num_frames` frames (default
        `BASE_MODEL_FRAMES`). `base_model` overrides the recorded base model location (e.g. after
        moving it); its fingerprint must still match the one the bundle was trained on.
        `num_frames` overrides the bundle's frames per video. `trust_remote_code` lets the base
        model and the tokenizer run their checkpoint's own code.
        """
        from vlynx.backbones import load_backbone

        if _is_base_model(bundle):
            backbone = load_backbone(bundle, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
            return cls(backbone, [], num_frames or BASE_MODEL_FRAMES)
        bundle = Path(bundle)
        manifest = _read_manifest(bundle)
        backbone = load_backbone(base_model or _recorded_location(manifest["base_model"], bundle), device=device,
                                 dtype=dtype, trust_remote_code=trust_remote_code)
        _check_fingerprint(backbone, manifest.get("backbone_fingerprint"), bundle)
        if manifest.get("tokenizer"):
            from transformers import AutoTokenizer

            backbone.tokenizer = AutoTokenizer.from_pretrained(str(bundle / manifest["tokenizer"]),
                                                               trust_remote_code=trust_remote_code)
        for name, relative in manifest["adapters"].items():
            load_adapter(backbone, bundle / relative, name)
        set_trainable(backbone, [])
        backbone.model.eval()
        return cls(backbone, manifest["modalities"], num_frames or manifest["num_frames"],
                   manifest.get("modality_settings"), transforms, manifest.get("reference_fingerprint"))

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the bundle (adapters, tokenizer, manifest); an existing bundle there is replaced whole.

        Other files in `directory` (e.g. the tuning run's config and run record) are left as they are.
        """
        directory = Path(directory)
        names = adapter_names(self.backbone)
        missing = [m for m in self.modalities if m not in names]
        if missing:
            raise VlynxError(f"no vision adapter attached for modalities {missing}")
        tokenizer = self.backbone.tokenizer
        manifest = {
            "format": BUNDLE_FORMAT,
            "base_model": _portable_source(self.backbone.source, directory),
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

        A modality left out of a request is read from the video (e.g. its audio track). A question
        may hold one `<image>` placeholder to place the media; without one they come first.
        The model's context (its LLM's `max_position_embeddings`) bounds each request's LLM input,
        the question's tokens plus the media blocks: a prompt that leaves no room for one answer
        token is a `VlynxError` naming both counts and the limit; where it leaves fewer than
        `max_new_tokens`, the answers of its batch are capped to the room left (logged).
        An empty answer is logged as a warning.
        `timing`, when given, receives seconds spent on media (`media_s`) and generation (`generate_s`).
        """
        if max_new_tokens < 1:
            raise VlynxError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        prompts = [self._prompt(number, request, len(requests) > 1) for number, request in enumerate(requests)]
        context = _context_length(self.backbone)
        answers: list[str] = []
        clock = {"media_s": 0.0, "generate_s": 0.0}
        for start in range(0, len(requests), batch_size):
            batch = prompts[start:start + batch_size]
            began = time.perf_counter()
            streams = self._read_media(requests[start:start + batch_size])
            clock["media_s"] += time.perf_counter() - began
            began = time.perf_counter()
            answers += self._generate(batch, streams, self._answer_room(batch, max_new_tokens, context))
            clock["generate_s"] += time.perf_counter() - began
        if timing is not None:
            timing.update(clock)
        _warn_if_empty(answers)
        return answers

    def option_loglikelihoods(self, request: Mapping[str, Any], options: Sequence[str]) -> list[float]:
        """Each option's log-likelihood as the model's answer to `request` ({"video", "question", ...}):
        the summed log-probabilities of the option's tokens right after the prompt `generate` would use
        (same chat template, same media blocks), not length-normalised. The options run as one batch.
        Forced choice picks the argmax (`vlynx eval --protocol likelihood`)."""
        if not options:
            raise VlynxError("no options to score")
        prompt = self._prompt(0, request, False)
        answers = [self.backbone.tokenizer(str(option), add_special_tokens=False)["input_ids"] for option in options]
        if not all(answers):
            raise VlynxError(f"an option has no tokens: {list(options)!r}")
        context = _context_length(self.backbone)
        length = len(prompt) - 1 + self._media_tokens() + max(len(a) for a in answers)
        if context is not None and length > context:
            raise VlynxError(f"prompt and longest option are {length} tokens, the model's context is {context}")
        return self._option_loglikelihoods(prompt, answers, self._read_media([request]))

    @torch.no_grad()
    def _option_loglikelihoods(self, prompt: list[int], answers: list[list[int]],
                               streams: dict[str, torch.Tensor]) -> list[float]:
        backbone = self.backbone
        backbone.model.eval()
        group = {m: images_per_frame(self.transforms[m]) for m in self.modalities}
        blocks = [b.expand(len(answers), *b.shape[1:])  # one question's media, shared by every option
                  for b in encode_blocks(backbone, streams, self.modalities, group=group)]
        # Left padding puts every option's tokens at the end, so only the last positions need logits.
        inputs = splice_blocks(backbone, [prompt + answer for answer in answers], blocks, padding_side="left")
        positions = inputs.pop("position_ids", None)  # a family's own (Qwen2.5-VL: M-RoPE), else 1-D:
        if positions is None:
            positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # as generate numbers left-padded rows
        keep = max(len(a) for a in answers) + 1
        logits = backbone.model(**inputs, position_ids=positions, logits_to_keep=keep).logits  # (N, keep, V)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        scores = []
        for row, answer in enumerate(answers):
            # The logits at position t predict token t + 1: the answer's tokens are the last len(answer).
            predicting = log_probs[row, keep - 1 - len(answer):keep - 1]  # (len(answer), V)
            scores.append(float(predicting.gather(-1, torch.as_tensor(answer, device=predicting.device)[:, None]).sum()))
        return scores

    def _prompt(self, number: int, request: Mapping[str, Any], numbered: bool) -> list[int]:
        """One request's checked prompt ids (its single image token stands for the media blocks).

        `numbered`: errors name the request (there are several)."""
        where = f"request {number}: " if numbered else ""
        unknown = set(request) - {"video", "question", *self.modalities}
        if unknown:
            raise VlynxError(f"{where}unknown inputs {sorted(unknown)}; this model takes video, "
                             f"question{''.join(', ' + m for m in self.modalities)}")
        if not request.get("video") or not isinstance(request.get("question"), str):
            raise VlynxError(f"{where}needs a 'video' path and a 'question' text")
        problem = question_problem(request["question"])
        if problem:
            raise VlynxError(f"{where}{problem}")
        prompt = tokenize_question(self.backbone, request["question"])
        context = _context_length(self.backbone)
        text, media = len(prompt) - 1, self._media_tokens()
        if context is not None and text + media >= context:
            raise VlynxError(f"{where}prompt is {text + media} tokens (text {text} + media {media}), the model's "
                             f"context is {context}: shorten the question or use fewer frames")
        return prompt

    def _media_tokens(self) -> int:
        """LLM-input tokens of the media blocks: the video's, then one block of the same size per modality."""
        return (1 + len(self.modalities)) * self.backbone.tokens_per_video(self.num_frames)

    def _answer_room(self, prompts: list[list[int]], max_new_tokens: int, context: int | None) -> int:
        """`max_new_tokens`, capped so that the batch's longest prompt plus its answer fits the context."""
        longest = max(len(p) for p in prompts) - 1 + self._media_tokens()
        if context is None or longest + max_new_tokens <= context:
            return max_new_tokens
        log.warning("answers are capped at %d new tokens: a %d-token prompt leaves no more of the model's "
                    "%d-token context", context - longest, longest, context)
        return context - longest

    def _read_media(self, requests: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        per_request = [read_streams(self.backbone, request["video"], {m: request.get(m) for m in self.modalities},
                                    self.transforms, self.num_frames) for request in requests]
        return {key: torch.stack([s[key] for s in per_request]) for key in [VIDEO_STREAM, *self.modalities]}

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


def question_problem(question: str) -> str | None:
    """What makes `question` unusable (empty, or more than one `<image>` placeholder), or None."""
    if not question.strip():
        return "the question is empty"
    count = question.count(IMAGE_PLACEHOLDER)
    if count > 1:
        return (f"the question has {count} '{IMAGE_PLACEHOLDER}' placeholders; at most one is allowed (it marks "
                f"where the video goes; without one, the video comes first)")
    return None


def _context_length(backbone: Backbone) -> int | None:
    """The LLM's context in tokens (its `max_position_embeddings`), or None when the config names none."""
    config = backbone.model.config
    return getattr(getattr(config, "text_config", config), "max_position_embeddings", None)


def _warn_if_empty(answers: Sequence[str]) -> None:
    empty = [number for number, answer in enumerate(answers) if not answer]
    if len(answers) == 1 and empty:
        log.warning("the model returned an empty answer (only special tokens, or the end of its turn at once)")
    elif empty:
        log.warning("the model returned empty answers to %d of %d requests (first: request %d)",
                    len(empty), len(answers), empty[0])


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


def _portable_source(source: str, bundle: Path) -> str:
    """How the manifest records the base model `source` of a bundle saved to `bundle` (module docstring)."""
    from vlynx.backbones import SHIPPED_CHECKPOINTS, preset_names

    if source in SHIPPED_CHECKPOINTS or source in preset_names() or not Path(source).exists():
        return source  # a name or a hub id
    location = Path(source).resolve()
    package = Path(__file__).resolve().parent
    for name, folder in SHIPPED_CHECKPOINTS.items():
        if location == (package / folder).resolve():
            return name
    bundle = bundle.resolve()
    if not location.is_relative_to(bundle.parent):
        return str(location)
    relative = Path(os.path.relpath(location, bundle)).as_posix()
    return relative if relative.startswith("../") else f"./{relative}"


def _recorded_location(recorded: str, bundle: Path) -> str:
    """The base model a manifest records: a `./` or `../` path is relative to the bundle directory."""
    return str(bundle / recorded) if recorded.startswith(("./", "../")) else recorded


def _is_base_model(name_or_path: str | Path) -> bool:
    """Whether `from_pretrained` got a base model (a name, a hub id, a checkpoint) rather than a bundle."""
    from vlynx.backbones import SHIPPED_CHECKPOINTS, preset_names

    path, names = Path(name_or_path), [*SHIPPED_CHECKPOINTS, *preset_names()]
    if (path / BUNDLE_FILE).is_file():
        return False
    if str(name_or_path) in names:
        return True
    if not path.exists() and "/" not in str(name_or_path):  # neither a local path nor a hub id (org/name)
        raise VlynxError(f"no such bundle or model directory (a base model is {', '.join(names)}, a hub id "
                         "org/name or a checkpoint directory)", path)
    if path.is_dir() and not (path / "config.json").is_file():
        raise VlynxError(f"not a vlynx bundle (no {BUNDLE_FILE}) nor a model checkpoint (no config.json); "
                         "`vlynx tune --out DIR` writes a bundle", path)
    return True


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
