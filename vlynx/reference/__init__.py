"""Reference statistics: the video-derived interface guidance that alignment is trained against.

Stage, top to bottom (docs/method.md §2, eq. 2-3), one module each:

1. `sources`: list the reference videos of each source (`video_sources`);
2. `compute`: on the frozen base model, ONE encoder pass per batch (`accumulate`) records every
   layer's keys/values where the encoder computes them (`backbone.capture_attention`) and
   the projected video tokens; K/V are summed over all frames in float32 (eq. 2), tokens
   go into a float64 Chan/Welford accumulator (eq. 3). Videos are decoded in DataLoader
   worker processes; a `checkpoint` every N videos makes the run resumable; under
   `torch.distributed` each rank takes a shard and `collectives` combine the statistics;
3. `file`: one safetensors file with a backbone fingerprint that is checked on load;
4. `report`: the paper's Table B2 diagnostics from the per-source means;
5. `run`: `run_reference(config)`, the whole stage as `vlynx reference` runs it.
"""
from __future__ import annotations

from vlynx.reference.checkpoint import discard_checkpoint
from vlynx.reference.compute import compute_reference
from vlynx.reference.file import ReferenceStats, load_reference, save_reference
from vlynx.reference.report import LayerStability, format_report, stability_report
from vlynx.reference.run import run_reference
from vlynx.reference.sources import VideoSource, video_sources

__all__ = [
    "LayerStability",
    "ReferenceStats",
    "VideoSource",
    "compute_reference",
    "discard_checkpoint",
    "format_report",
    "load_reference",
    "run_reference",
    "save_reference",
    "stability_report",
    "video_sources",
]
