"""Alignment-stage figures (issue 5): step-time ratio and peak memory vs the whole model.

    python benchmarks/align_step.py                       # 0.5B config step ratio + 7B config memory
    python benchmarks/align_step.py --model tiny --frames 4 --memory-model tiny

1. Step time: one alignment step (eq. 4-9 losses, backward, AdamW) divided by a plain
   vision-LoRA step with a trivial loss (mean square of the projected tokens) on the same
   batch and the same model (goal <= 1.15). Random weights, CPU unless CUDA is present.
2. Memory: peak resident memory of a fresh process that loads the backbone for this stage
   (encoder + projector only, LLM on meta) and runs one alignment step, divided by the
   bytes of the whole model's parameters at the same dtype (goal <= 0.15). The whole model
   is counted on the meta device, not allocated (the 7B model in fp32 needs ~32 GB).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def _setup(model: str, frames: int, batch: int, rank: int):
    from vlynx.adapters import LoraSettings, add_vision_adapter, set_trainable
    from vlynx.backbones import load_backbone
    from vlynx.losses import AlignmentLossSettings
    from vlynx.reference import ReferenceStats

    backbone = load_backbone(model, language_model=False, seed=0)
    layout = backbone.layout
    shape = (layout.num_layers, layout.num_heads, layout.num_positions, layout.head_dim)
    generator = torch.Generator().manual_seed(0)
    reference = ReferenceStats(
        keys=torch.randn(shape, generator=generator), values=torch.randn(shape, generator=generator),
        token_mean=torch.zeros(backbone.llm_hidden_size, dtype=torch.float64),
        token_var=torch.ones(backbone.llm_hidden_size, dtype=torch.float64),
        fingerprint={}, frames_per_video=frames, counts={}, sources={})
    add_vision_adapter(backbone, "audio", LoraSettings(rank, 2 * rank, 0.05))
    set_trainable(backbone, ["audio"])
    pixels = torch.randn(batch, frames, 3, backbone.image_size, backbone.image_size, generator=generator)
    return backbone, reference, pixels, AlignmentLossSettings()


def _time(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def step_ratio(model: str, frames: int, batch: int, rank: int, repeats: int) -> dict:
    from vlynx.adapters import encode
    from vlynx.align import AlignmentModel

    backbone, reference, pixels, settings = _setup(model, frames, batch, rank)
    aligner = AlignmentModel(backbone, "audio", reference, settings).train()
    optimizer = torch.optim.AdamW([p for p in aligner.parameters() if p.requires_grad], lr=1e-5)

    def alignment_step():
        optimizer.zero_grad(set_to_none=True)
        aligner(pixels)["loss"].backward()
        optimizer.step()

    def plain_step():
        optimizer.zero_grad(set_to_none=True)
        encode(backbone, pixels, "audio").pow(2).mean().backward()
        optimizer.step()

    plain = _time(plain_step, repeats)
    aligned = _time(alignment_step, repeats)
    return {"model": model, "frames": frames, "batch": batch, "plain_step_s": plain, "align_step_s": aligned,
            "ratio": aligned / plain}


def memory_child(model: str, frames: int) -> None:
    """Run in a fresh process: load for this stage, one alignment step, print peak RSS."""
    from vlynx.align import AlignmentModel

    backbone, reference, pixels, settings = _setup(model, frames, 1, 64)
    AlignmentModel(backbone, "audio", reference, settings).train()(pixels)["loss"].backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"peak_rss_bytes": peak}))


def memory_ratio(model: str, frames: int) -> dict:
    from vlynx.backbones import load_backbone

    whole = load_backbone(model, empty=True)
    whole_bytes = sum(p.numel() for p in whole.model.parameters()) * 4  # fp32, as the stage runs
    encoder_bytes = sum(p.numel() for p in [*whole.vision_tower.parameters(), *whole.projector.parameters()]) * 4
    output = subprocess.run([sys.executable, __file__, "--memory-child", model, "--frames", str(frames)],
                            check=True, capture_output=True, text=True).stdout
    peak = json.loads(output.strip().splitlines()[-1])["peak_rss_bytes"]
    return {"model": model, "frames": frames, "stage_peak_rss_gb": peak / 1e9, "whole_model_fp32_gb": whole_bytes / 1e9,
            "encoder_projector_fp32_gb": encoder_bytes / 1e9, "ratio": peak / whole_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llava-onevision-0.5b", help="backbone for the step-time ratio")
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-model", default="llava-onevision-7b")
    parser.add_argument("--memory-frames", type=int, default=1)
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.frames)
        return
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    if not args.skip_time:
        result = step_ratio(args.model, args.frames, args.batch, args.rank, args.repeats)
        print(f"[{device}] step time {result['model']}, {result['batch']}x{result['frames']} frames: "
              f"plain vision-LoRA {result['plain_step_s']:.3f} s, alignment {result['align_step_s']:.3f} s, "
              f"ratio {result['ratio']:.3f} (goal <= 1.15)")
    if not args.skip_memory:
        result = memory_ratio(args.memory_model, args.memory_frames)
        print(f"[cpu] memory {result['model']}, {result['frames']} frame(s): stage peak RSS "
              f"{result['stage_peak_rss_gb']:.2f} GB vs whole model fp32 {result['whole_model_fp32_gb']:.2f} GB "
              f"(encoder+projector alone {result['encoder_projector_fp32_gb']:.2f} GB): ratio {result['ratio']:.3f} "
              f"(goal <= 0.15)")


if __name__ == "__main__":
    main()
