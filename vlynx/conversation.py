"""Conversations -> LLM inputs: the LLaVA/PAVE data format, prompt assembly and label masking.

docs/method.md §6–§7. One example is a video, optional new-modality inputs and a chat:

    {"id": "x1", "video": "clips/x1.mp4", "audio": "sounds/x1.wav",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is heard?"},
                       {"from": "gpt", "value": "a bell"}]}

The chat is rendered with the backbone's chat template. The single `<image>` placeholder
becomes, in the LLM input, the video block (frames through the base encoder) followed by
one block per new modality (frames through the encoder with that modality's adapter), in
a fixed order; every block is what the backbone's own video path returns, newline token
included. Every assistant turn is supervised; everything else, and every inserted
block, has label -100.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlynx.adapters import encode
from vlynx.backbones.base import IGNORE_INDEX, Backbone
from vlynx.errors import VlynxError
from vlynx.inputs import read_annotations
from vlynx.modalities.base import Modality
from vlynx.stage_configs import VIDEO_STREAM

IMAGE_PLACEHOLDER = "<image>"
_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


@dataclass(frozen=True)
class Example:
    """One training conversation: where its media are and its chat messages."""

    id: str
    video: Path
    sources: dict[str, Path] = field(default_factory=dict)  # modality -> its own input, when the entry names one
    messages: list[dict[str, str]] = field(default_factory=list)  # [{"role", "content"}], chat-template form


@dataclass(frozen=True)
class TokenizedChat:
    input_ids: list[int]  # exactly one image-token id marks where the media blocks go
    labels: list[int]  # same length; IGNORE_INDEX outside assistant turns


# ----- data -------------------------------------------------------------------------


def load_examples(path: str | Path, modalities: Sequence[str] = (),
                  media_root: str | Path | None = None) -> list[Example]:
    """Read a LLaVA/PAVE annotation file (JSON list or JSONL) and check every entry.

    Relative media paths resolve against `media_root`, else the annotation file's folder.
    A modality field absent from an entry means "take it from the video" (e.g. its audio
    track). Raises `VlynxError` naming the file, the entry and the problem.
    """
    path = Path(path)
    root = Path(media_root) if media_root is not None else path.parent
    examples = [_parse_entry(entry, index, path, modalities, root)
                for index, entry in enumerate(read_annotations(path))]
    if not examples:
        raise VlynxError("contains no entries", path)
    return examples


def _parse_entry(entry: dict[str, Any], index: int, path: Path, modalities: Sequence[str], root: Path) -> Example:
    name = f"entry {index}" + (f" (id {entry['id']!r})" if "id" in entry else "")

    def fail(problem: str) -> VlynxError:
        return VlynxError(f"{name}: {problem}", path)

    def media(key: str) -> Path:
        value = entry.get(key)
        if not isinstance(value, str) or not value:
            raise fail(f"'{key}' must be a non-empty path string")
        resolved = Path(value) if Path(value).is_absolute() else root / value
        if not resolved.exists():
            raise fail(f"{key} not found: {resolved}")
        return resolved

    if "video" not in entry:
        raise fail("has no 'video' field")
    turns = entry.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise fail("'conversations' must be a non-empty list of {from, value} turns")
    messages = []
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in _ROLES or not isinstance(turn.get("value"), str):
            raise fail(f"turn {number} must be {{'from': 'human'|'gpt'|'system', 'value': text}}, got {turn!r}")
        messages.append({"role": _ROLES[turn["from"]], "content": turn["value"]})
    try:
        messages = normalize_messages(messages)
    except ValueError as error:
        raise fail(str(error)) from None
    if not any(m["role"] == "assistant" for m in messages):
        raise fail("has no 'gpt' turn to learn from")
    sources = {m: media(m) for m in modalities if entry.get(m) is not None}
    return Example(id=str(entry.get("id", index)), video=media("video"), sources=sources, messages=messages)


def normalize_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Check turn order and place exactly one `<image>` placeholder.

    Turns are an optional system message, then user/assistant alternating from a user
    turn. With no placeholder, one is put at the start of the first user turn (LLaVA's
    convention). Raises ValueError on anything else.
    """
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    for number, message in enumerate(body):
        expected = "user" if number % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise ValueError(f"turns must alternate human/gpt starting with human; turn {number} is "
                             f"{message['role']!r}")
    if not body:
        raise ValueError("has no human turn")
    count = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages)
    if count > 1:
        raise ValueError(f"has {count} '{IMAGE_PLACEHOLDER}' placeholders; exactly one is allowed (it stands for "
                         "all media blocks)")
    if count == 1 and IMAGE_PLACEHOLDER not in "".join(m["content"] for m in body if m["role"] == "user"):
        raise ValueError(f"the '{IMAGE_PLACEHOLDER}' placeholder must be in a human turn")
    if count == 0:
        first = messages.index(body[0])
        messages = [*messages[:first], {"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{body[0]['content']}"},
                    *messages[first + 1:]]
    return messages


# ----- tokens -------------------------------------------------------------------------


def tokenize_chat(backbone: Backbone, messages: list[dict[str, str]]) -> TokenizedChat:
    """Render `messages` with the backbone's chat template; supervise exactly the assistant turns.

    An assistant turn's supervised text is what the template adds for it after the
    generation prompt (its content and end-of-turn marker), so the model learns to stop.
    """
    messages = normalize_messages(messages)
    segments: list[tuple[str, bool]] = []  # (text, supervised), concatenating to the full rendering
    rendered = ""
    for number, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = _render(backbone, messages[:number], add_generation_prompt=True)
            segments.append((prompt[len(rendered):], False))
            rendered = prompt
        full = _render(backbone, messages[:number + 1], add_generation_prompt=False)
        if not full.startswith(rendered):
            raise VlynxError("the chat template does not render conversations incrementally; "
                             "cannot tell the assistant turns apart")
        segments.append((full[len(rendered):], message["role"] == "assistant"))
        rendered = full
    input_ids: list[int] = []
    labels: list[int] = []
    for text, supervised in segments:
        ids = _tokenize(backbone, text)
        input_ids += ids
        labels += ids if supervised else [IGNORE_INDEX] * len(ids)
    return TokenizedChat(input_ids, labels)


def tokenize_question(backbone: Backbone, question: str) -> list[int]:
    """Prompt ids for one user question (placeholder first unless the question has one), ready to generate."""
    messages = normalize_messages([{"role": "user", "content": question}])
    return _tokenize(backbone, _render(backbone, messages, add_generation_prompt=True))


def _render(backbone: Backbone, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    if not messages:
        return ""
    return backbone.tokenizer.apply_chat_template(messages, chat_template=backbone.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)


def _tokenize(backbone: Backbone, text: str) -> list[int]:
    """Token ids of `text`, with every `<image>` placeholder as the model's image-token id."""
    if backbone.tokenizer is None:
        raise VlynxError("this model has no tokenizer; use a checkpoint directory that includes one",
                         backbone.source)
    image_token_id = backbone.image_token_id
    ids: list[int] = []
    for number, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if number:
            ids.append(image_token_id)
        if piece:
            ids += backbone.tokenizer(piece, add_special_tokens=False)["input_ids"]
    return ids


# ----- media -> frames ------------------------------------------------------------


def read_streams(backbone: Backbone, video: str | Path, sources: Mapping[str, str | Path | None],
                 transforms: Mapping[str, Modality], num_frames: int) -> dict[str, torch.Tensor]:
    """Decode one example's media into encoder inputs: {"video": (F, 3, S, S), modality: (F*k, 3, S, S), ...}.

    k is the modality's `images_per_frame` (e.g. depth + normals: 2). Modality frames are
    time-aligned with the sampled video frames; a modality with no
    source of its own reads the video file (e.g. its audio track). When the video is a 3D
    scene folder, its frames are chosen once (by the depth modality's `selection`, else
    uniformly) and a modality reading scenes takes exactly those frames.
    """
    from vlynx.media import read_video
    from vlynx.modalities.base import paired_frames, shared_scene_choice

    clip = read_video(video, num_frames, scene_choice=shared_scene_choice(transforms.values()))
    streams = {VIDEO_STREAM: backbone.preprocess_frames(clip.frames)}
    for name, transform in transforms.items():
        source = sources.get(name) or video
        frames = np.asarray(paired_frames(transform, source, num_frames, clip))
        images = num_frames * images_per_frame(transform)
        if frames.ndim != 4 or frames.shape[0] != images or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise VlynxError(f"modality '{name}' made {frames.dtype} frames shaped {frames.shape}; expected uint8 "
                             f"({images}, H, W, 3)", source)
        streams[name] = backbone.preprocess_frames(frames)
    return streams


# ----- prompt assembly -----------------------------------------------------------


def images_per_frame(transform: Modality) -> int:
    """How many images a modality makes per frame (their tokens are averaged into one frame's)."""
    return int(getattr(transform, "images_per_frame", 1))


def encode_blocks(backbone: Backbone, streams: Mapping[str, torch.Tensor], modalities: Sequence[str],
                  grad: bool = False, group: Mapping[str, int] | None = None) -> list[torch.Tensor]:
    """The media blocks in prompt order: [video (base encoder), modality 1 (its adapter), ...].

    `streams` holds batched encoder inputs (B, F*k, 3, S, S); each block is (B, F*n + 1, D_llm).
    `group[m]` = k > 1 averages the tokens of each k consecutive images of modality m (`vlynx.adapters.average_image_groups`).
    With `grad=False` the encoder runs without autograd and in eval mode (adapters frozen).
    """
    group = group or {}

    def block(key: str, modality: str | None) -> torch.Tensor:
        return encode(backbone, streams[key], modality, group.get(key, 1))  # (B, F*n + 1, D)

    order = [(VIDEO_STREAM, None), *((m, m) for m in modalities)]
    if grad:
        return [block(key, modality) for key, modality in order]
    tower = backbone.vision_tower
    was_training = tower.training
    tower.eval()
    try:
        with torch.no_grad():
            return [block(key, modality) for key, modality in order]
    finally:
        tower.train(was_training)


def splice_blocks(backbone: Backbone, input_ids: Sequence[Sequence[int]], blocks: Sequence[torch.Tensor],
                  labels: Sequence[Sequence[int]] | None = None,
                  padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Build the LLM input: each sequence's image token replaced by its media blocks, then padded.

    The backbone assembles it (`Backbone.build_llm_inputs`: embeddings, mask, its position ids);
    `blocks` are (B, T_k, D) for k = video, modalities...; with `labels`, the blocks and the padding
    get IGNORE_INDEX.
    """
    return backbone.build_llm_inputs(input_ids, blocks, labels, padding_side)
