"""`vlynx diagnose --model`: Table B1 and a modality's interface gap, top to bottom (docs/diagnostics.md).

1. check the settings and inputs, read what the adapter's alignment run recorded (transform
   settings, loss settings, frames), before loading anything;
2. load the Video LLM (the vocabulary's embeddings are needed) and the adapter;
3. stream the vocabulary and the videos' tokens into sums: Table B1;
4. with a modality: stream its inputs through the base encoder ("before") and through the
   adapter ("after"), each against the video reference: the interface gap and its picture;
5. write `diagnose.json`, the picture, the resolved config and the run record.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from vlynx.diagnose.config import DiagnoseConfig
from vlynx.diagnose.gap import VideoReference, interface_gap, pixel_batches, token_pass
from vlynx.diagnose.geometry import TABLE_B1, DirectionSums, embedding_rows, interface_table
from vlynx.errors import VlynxError
from vlynx.files import write_text_atomic
from vlynx.losses import AlignmentLossSettings
from vlynx.outputs import claim_output, read_run_record, save_run
from vlynx.progress import log

REPORT_FILE = "diagnose.json"
GAP_PICTURE = "interface_gap.png"


def run_diagnose(config: DiagnoseConfig) -> dict[str, Any]:
    """Run `vlynx diagnose` into `config.out`; returns what `diagnose.json` holds."""
    started = time.time()
    config = config.resolved()
    config.check()
    if config.bundle:
        from vlynx.diagnose.attention import run_attention_maps

        return run_attention_maps(config, started)

    # 1. Everything checkable before the model loads.
    from vlynx.align import alignment_inputs
    from vlynx.reference import video_sources

    videos = video_sources([config.videos])[0].videos
    modality_paths = alignment_inputs(config.data, config.modality, config.media_root) if config.modality else []
    adapter_dir, aligned = _alignment_run(config)
    settings = _loss_settings(aligned)
    transform_settings = config.modality_settings or aligned.get("modality_settings") or {}
    frames = config.frames or _recorded_frames(config, aligned)
    if config.modality:
        from vlynx.diagnose.plots import require_matplotlib

        require_matplotlib()
    out = Path(config.out)
    with claim_output(out, out, resume=False, overwrite=config.overwrite):
        from vlynx.adapters import load_adapter
        from vlynx.backbones import load_backbone
        from vlynx.media import read_video

        # 2. The model, the LLM included: Table B1 needs its input embeddings.
        device = "cuda" if torch.cuda.is_available() else "cpu"
        backbone = load_backbone(config.model, device=device, trust_remote_code=config.trust_remote_code)
        reference_file = None
        if config.reference:
            from vlynx.reference import load_reference

            reference_file = load_reference(config.reference, backbone, frames_per_video=frames)
        if adapter_dir is not None:
            load_adapter(backbone, adapter_dir, config.modality)

        # 3. Table B1: the vocabulary and the videos' tokens, streamed into sums.
        vocab, vocab_sample = vocabulary(backbone, config.sample_size, config.seed)
        log.info("diagnose: %d vocabulary embeddings, %d videos x %d frames", vocab.count, len(videos), frames)
        video_skipped: list[dict[str, str]] = []
        video = token_pass(
            backbone, pixel_batches(videos, lambda p: read_video(p, frames).frames, backbone.preprocess_frames,
                                    config.batch_size, video_skipped),
            reference_sums=bool(config.modality) and reference_file is None,
            sample_size=config.sample_size, seed=config.seed)
        if video.inputs == 0:
            raise VlynxError(f"no readable video ({len(video_skipped)} skipped, first: {video_skipped[0]})",
                             config.videos)
        report: dict[str, Any] = {
            **interface_table(vocab, video.directions),
            "counts": {"vocab": vocab.count, "vocab_zero_rows": vocab.zero_rows, "videos": video.inputs,
                       "frames_per_video": frames, "video_tokens": video.directions.count,
                       "video_zero_tokens": video.directions.zero_rows},
            "exact": "the cosine distances, norms and gaps are exact over every vocabulary row and video token",
            "skipped_videos": video_skipped,
        }

        # 4. The modality before and after its adapter, against the video reference.
        if config.modality:
            from vlynx.diagnose.plots import plot_interface_gap
            from vlynx.modalities import get_modality

            transform = get_modality(config.modality, **transform_settings)
            reference = (VideoReference(reference_file.keys, reference_file.values, reference_file.token_mean,
                                        reference_file.token_var) if reference_file else video.reference())
            passes = {"before": None, "after": config.modality if adapter_dir is not None else None}
            gap: dict[str, Any] = {
                "modality": config.modality, "inputs": len(modality_paths),
                "reference": config.reference or f"computed from --videos ({video.inputs} videos)",
                "settings": dataclasses.asdict(settings), "modality_settings": transform_settings,
                "adapter": str(adapter_dir) if adapter_dir else None,
                "mmd_kernel": "exp(-|a-b|^2 / (2 h^2)), h = median distance between the sampled video tokens",
            }
            samples = {}
            for name, routed in passes.items():
                if name == "after" and adapter_dir is None:
                    gap["after"] = None  # no adapter given: only the frozen video path's view
                    continue
                skipped: list[dict[str, str]] = []
                stats = token_pass(
                    backbone, pixel_batches(modality_paths, lambda p: transform.frames(p, frames),
                                            backbone.preprocess_frames, config.batch_size, skipped),
                    modality=routed, reference=reference, settings=settings,
                    images_per_frame=transform.images_per_frame, sample_size=config.sample_size, seed=config.seed)
                stats.skipped = skipped
                if stats.inputs == 0:
                    raise VlynxError(f"no readable {config.modality} input ({len(skipped)} skipped, first: "
                                     f"{skipped[0]})", config.data)
                gap[name] = interface_gap(stats, reference, settings, video=video, vocab=vocab)
                samples[name] = stats.sample.values
            report["interface_gap"] = gap
            plot_interface_gap(out / GAP_PICTURE, config.modality, vocab_sample, video.sample.values, samples,
                               gap)
            report["pictures"] = [GAP_PICTURE]

        # 5. The report, the config and the run record.
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / REPORT_FILE, json.dumps(report, indent=2) + "\n")
        save_run(config, out, started, **{key: report[key] for key in TABLE_B1}, interface_gap=_summary(report))
    return report


def _summary(report: dict[str, Any]) -> dict[str, Any] | None:
    """The before/after headline numbers of the interface gap, for the run record."""
    gap = report.get("interface_gap")
    if gap is None:
        return None
    keys = ("attention_term", "distribution_term", "mmd", "modality_gap_to_video", "frame_modality_cosine")
    return {name: {key: gap[name][key] for key in keys} if gap[name] else None for name in ("before", "after")}


def vocabulary(backbone, sample_size: int, seed: int) -> tuple[DirectionSums, torch.Tensor]:
    """Direction sums of the LLM's input embeddings (the rows the tokenizer can produce) and a seeded sample."""
    weight = backbone.model.get_input_embeddings().weight  # (vocab rows, D)
    if weight.is_meta:
        raise VlynxError("the model's input embeddings are not loaded", backbone.source)
    rows = weight.shape[0] if backbone.tokenizer is None else min(len(backbone.tokenizer), weight.shape[0])
    sums = DirectionSums(weight.shape[1])
    for chunk in embedding_rows(weight, rows):
        sums.update(chunk)
    chosen = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))[:sample_size].sort().values
    sample = weight[chosen.to(weight.device)].detach().to("cpu", torch.float32)
    return sums, sample[torch.linalg.vector_norm(sample, dim=1) > 0]  # rows without a direction, as in the sums


def _alignment_run(config: DiagnoseConfig) -> tuple[Path | None, dict[str, Any]]:
    """The adapter folder and the config its `vlynx align` run recorded ({} when there is none)."""
    if not config.adapter:
        return None, {}
    from vlynx.adapters import find_adapter_dir

    directory = find_adapter_dir(config.adapter, config.modality)
    record = read_run_record(directory) or {}
    aligned = dict(record.get("config") or {})
    frames = (record.get("results") or {}).get("frames")
    if frames is not None:
        aligned["frames"] = frames
    if aligned.get("modality") not in (None, config.modality):
        raise VlynxError(f"this adapter was aligned for '{aligned['modality']}', not '{config.modality}'", directory)
    return directory, aligned


def _loss_settings(aligned: dict[str, Any]) -> AlignmentLossSettings:
    """How eq. (6)/(8) are measured: as the adapter's alignment run defined them (the defaults without one).

    Both terms are always measured, whatever the run's ablation switches.
    """
    names = ("attn_loss", "dist_loss", "all_queries", "before_out_proj")
    return AlignmentLossSettings(**{name: aligned[name] for name in names if name in aligned})


def _recorded_frames(config: DiagnoseConfig, aligned: dict[str, Any]) -> int:
    if config.reference:
        from vlynx.reference import load_reference

        return load_reference(config.reference).frames_per_video
    if aligned.get("frames"):
        return int(aligned["frames"])
    raise VlynxError("give --frames (frames per video), or a --reference file or --adapter that records them")
