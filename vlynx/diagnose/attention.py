"""`vlynx diagnose --bundle`: where the LLM looks when it reads a question (paper Figure 4).

The prompt is built exactly as the bundle answers it (`vlynx.conversation`): the video block
(base encoder), then one block per modality (its adapter), then the question. The LLM runs
once over everything before the question (keeping its key/value cache) and once over the
question and the rest of the prompt with `output_attentions`, so only the question's rows of
each attention matrix are ever held (not the full L x L matrices of a long video prompt).

Aggregation (the map of one stream): the attention weights (softmax probabilities, eager
attention) from each question token to each token, averaged over every layer and head of the
LLM, then over the question's tokens. A frame's map is its pooled token grid; the share of a
stream is the summed weight of all its tokens, newline included, and so is comparable across
streams and with the text.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlynx.backbones.base import Backbone
from vlynx.diagnose.config import DiagnoseConfig
from vlynx.errors import VlynxError
from vlynx.files import write_text_atomic
from vlynx.outputs import claim_output, save_run

AGGREGATION = "mean over all LLM layers and heads, then over the question's tokens"
PICTURE = "attention.png"


def run_attention_maps(config: DiagnoseConfig, started: float) -> dict[str, Any]:
    """Draw the attention of `config.question` to each stream of `config.bundle`; returns diagnose.json's content."""
    from vlynx.bundle import VLynx, question_problem
    from vlynx.conversation import VIDEO_STREAM, encode_blocks, images_per_frame, read_streams
    from vlynx.diagnose.plots import plot_attention_maps, require_matplotlib
    from vlynx.diagnose.run import REPORT_FILE

    require_matplotlib()
    problem = question_problem(config.question)
    if problem:
        raise VlynxError(problem)
    for path in [config.video, *config.inputs.values()]:
        if not Path(path).exists():
            raise VlynxError("file not found", path)
    out = Path(config.out)
    with claim_output(out, out, resume=False, overwrite=config.overwrite):
        model = VLynx.from_pretrained(config.bundle, num_frames=config.frames,
                                      trust_remote_code=config.trust_remote_code)
        unknown = sorted(set(config.inputs) - set(model.modalities))
        if unknown:
            raise VlynxError(f"this bundle has no adapter for {', '.join(unknown)} (its modalities: "
                             f"{', '.join(model.modalities) or 'none, video only'})", config.bundle)
        backbone = model.backbone
        streams = read_streams(backbone, config.video, {m: config.inputs.get(m) for m in model.modalities},
                               model.transforms, model.num_frames)
        group = {m: images_per_frame(model.transforms[m]) for m in model.modalities}
        blocks = encode_blocks(backbone, {k: v.unsqueeze(0) for k, v in streams.items()}, model.modalities,
                               group=group)
        names = [VIDEO_STREAM, *model.modalities]
        weights, start, question_tokens = question_attention(backbone, config.question, blocks)

        rows, report_streams = [], {}
        for name, block in zip(names, blocks):
            block_weights = weights[start:start + block.shape[1]]
            start += block.shape[1]
            heat = frame_maps(backbone, block_weights[:-1], model.num_frames)  # (F, h, w); the newline is last
            images = _as_images(streams[name][::group.get(name, 1)])
            share = float(block_weights.sum())
            rows.append((name, images, heat, share))
            report_streams[name] = {"share": share, "newline": float(block_weights[-1]),
                                    "per_frame": [float(frame.sum()) for frame in heat]}
        report = {
            "question": config.question, "video": config.video, "inputs": dict(config.inputs),
            "aggregation": AGGREGATION, "question_tokens": question_tokens, "frames": model.num_frames,
            "attention": report_streams,
            "text_share": 1.0 - sum(entry["share"] for entry in report_streams.values()),
            "pictures": [PICTURE],
        }
        out.mkdir(parents=True, exist_ok=True)
        plot_attention_maps(out / PICTURE, rows, config.question, AGGREGATION)
        write_text_atomic(out / REPORT_FILE, json.dumps(report, indent=2) + "\n")
        save_run(config, out, started, attention={k: v["share"] for k, v in report_streams.items()})
    return report


def question_attention(backbone: Backbone, question: str,
                       blocks: list[torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """Attention of the question's tokens over the whole prompt, aggregated as `AGGREGATION`.

    The prompt is the question's chat rendering with its image token replaced by `blocks`
    (each (1, T_k, D), in order). Returns the weights over every prompt position (L,), the
    position of the first media token (the blocks follow one another from there) and the
    number of question tokens.
    """
    from vlynx.conversation import splice_blocks, tokenize_question

    ids = tokenize_question(backbone, question)
    image = ids.index(backbone.model.config.image_token_id)
    first, count = _question_span(ids, tokenize_question(backbone, ""), image)
    embeds = splice_blocks(backbone, [ids], blocks)["inputs_embeds"]  # (1, L, D)
    media = sum(block.shape[1] for block in blocks)
    split = first + media - 1  # where the question starts once the image token became the blocks
    llm_config = backbone.language_model.config
    previous = llm_config._attn_implementation
    backbone.language_model.set_attn_implementation("eager")  # only eager attention returns its weights
    try:
        with torch.no_grad():
            cache = backbone.model(inputs_embeds=embeds[:, :split], use_cache=True).cache
            output = backbone.model(inputs_embeds=embeds[:, split:], cache=cache, output_attentions=True)
    finally:
        backbone.language_model.set_attn_implementation(previous)
    # each layer: (1, heads, rows from the question on, L); keep the question's rows
    layers = torch.stack([layer[0, :, :count].float() for layer in output.attentions])
    weights = layers.mean(dim=(0, 1)).mean(dim=0)  # (L,)
    return weights.cpu(), image, count


def _question_span(ids: list[int], empty: list[int], image: int) -> tuple[int, int]:
    """(first index, count) of the question's own tokens in `ids`.

    They are what differs from the rendering of an empty question once the common start and
    end (the template's turn markers) are set aside.
    """
    after, base = ids[image + 1:], empty[empty.index(ids[image]) + 1:]
    prefix = 0
    while prefix < min(len(after), len(base)) and after[prefix] == base[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(after), len(base)) - prefix and after[-1 - suffix] == base[-1 - suffix]:
        suffix += 1
    count = len(after) - prefix - suffix
    if count < 1:
        raise VlynxError("the question has no tokens of its own after the chat template is applied")
    return image + 1 + prefix, count


def frame_maps(backbone: Backbone, weights: torch.Tensor, frames: int) -> np.ndarray:
    """A stream's frame-token weights (F*n,) as (F, rows, cols) maps on the backbone's pooled token grid.

    The grid is read off `query_positions` (the patch position each frame token stands for);
    a layout that is not a full grid is drawn as one row of n tokens.
    """
    positions = backbone.query_positions()
    columns = backbone.layout.grid[1]
    rows, cols = positions.div(columns, rounding_mode="floor").unique().numel(), (positions % columns).unique().numel()
    per_frame = weights.numel() // frames
    if rows * cols != per_frame:
        rows, cols = 1, per_frame
    return weights.reshape(frames, rows, cols).numpy()


def _as_images(pixels: torch.Tensor) -> np.ndarray:
    """Encoder inputs (F, 3, S, S) as uint8 RGB (F, S, S, 3), each stretched to its own range (what the encoder saw)."""
    pixels = pixels.float()
    low = pixels.amin(dim=(1, 2, 3), keepdim=True)
    high = pixels.amax(dim=(1, 2, 3), keepdim=True)
    scaled = (pixels - low) / (high - low).clamp_min(1e-8)
    return (scaled * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
