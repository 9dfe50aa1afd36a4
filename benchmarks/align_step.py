"""Alignment-stage figures: step-time ratio and peak memory vs the whole model.

    python benchmarks/align_step.py                       # 0.5B config step ratio + 7B config memory
    python benchmarks/align_step.py --model tiny --frames 4 --memory-model tiny
    python benchmarks/align_step.py --skip-time --memory-dtype bfloat16   # bfloat16 weights too

1. Step time: one alignment step (eq. 4-9 losses, backward, AdamW) divided by a plain
   vision-LoRA step with a trivial loss (mean square of the projected tokens) on the same
   batch and the same model (goal <= 1.10): the two steps run in turns and the median of the
   pairs' ratios is reported, so a load change on a shared machine hits both alike. Random
   weights, CPU unless CUDA is present.
2. Memory: the peak memory of a fresh process that loads the backbone as `vlynx align` does
   (encoder + projector only, LLM on meta; weights in --memory-dtype) and runs one alignment
   step (forward, backward, AdamW update) at --memory-batch x --memory-frames in bfloat16
   autocast with gradient checkpointing (the GPU defaults), divided by the bytes of the whole model's float32 parameters
   (goal <= 0.10). The whole model is counted on the meta device, not allocated (the 7B model
   in float32 needs ~32 GB). On CUDA the peak is `torch.cuda.max_memory_allocated`; on CPU it is
   the process's peak resident set (with glibc returning every freed large block, so that it
   follows the live tensors), which also counts the Python and library baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch


def _setup(model: str, frames: int, batch: int, rank: int, dtype: str = "float32", device: str = "cpu"):
    from vlynx.adapters import LoraSettings, add_vision_adapter, set_trainable
    from vlynx.backbones import load_backbone
    from vlynx.losses import AlignmentLossSettings
    from vlynx.reference import ReferenceStats

    backbone = load_backbone(model, language_model=False, seed=0, dtype=dtype, device=device)
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
    pixels = torch.randn(batch, frames, 3, backbone.image_size, backbone.image_size, generator=generator).to(device)
    return backbone, reference, pixels, AlignmentLossSettings()


def _seconds(step) -> float:
    start = time.perf_counter()
    step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _alternating(first, second, repeats: int) -> tuple[list[float], list[float]]:
    """Times of `first` and `second` run in turns (after one warm-up each), so that a change in the
    machine's load hits both alike; the ratio of each adjacent pair is then a fair comparison."""
    first(), second()
    times = [(_seconds(first), _seconds(second)) for _ in range(repeats)]
    return [a for a, _ in times], [b for _, b in times]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


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

    plain, aligned = _alternating(plain_step, alignment_step, repeats)
    ratios = [a / p for p, a in zip(plain, aligned)]
    return {"model": model, "frames": frames, "batch": batch, "plain_step_s": _median(plain),
            "align_step_s": _median(aligned), "ratio": _median(ratios), "ratio_range": (min(ratios), max(ratios))}


def memory_child(model: str, frames: int, batch: int, dtype: str, checkpointing: bool) -> None:
    """Run in a fresh process: load for this stage, one bf16-autocast alignment step (forward, backward,
    AdamW update), print the peak."""
    from vlynx.align import AlignmentModel
    from vlynx.stage_configs import AlignConfig
    from vlynx.training import enable_gradient_checkpointing

    device = "cuda" if torch.cuda.is_available() else "cpu"
    baseline = _resident_bytes() if device == "cpu" else 0  # Python and the libraries, before the model
    backbone, reference, pixels, settings = _setup(model, frames, batch, 64, dtype, device)
    enable_gradient_checkpointing(AlignConfig(gradient_checkpointing=checkpointing), backbone.vision_tower)
    aligner = AlignmentModel(backbone, "audio", reference, settings).train()
    optimizer = torch.optim.AdamW([p for p in aligner.parameters() if p.requires_grad], lr=1e-5)
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = aligner(pixels)["loss"]
    loss.backward()
    optimizer.step()  # AdamW's two moments per LoRA weight count too
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"peak_bytes": peak, "baseline_bytes": baseline, "loss": loss.item()}))


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def memory_ratio(model: str, frames: int, batch: int, dtype: str, checkpointing: bool) -> dict:
    from vlynx.backbones import load_backbone

    whole = load_backbone(model, empty=True)
    whole_bytes = sum(p.numel() for p in whole.model.parameters()) * 4  # float32
    encoder_bytes = sum(p.numel() for p in [*whole.vision_tower.parameters(), *whole.projector.parameters()]) * 4
    command = [sys.executable, __file__, "--memory-child", model, "--memory-frames", str(frames),
               "--memory-batch", str(batch), "--memory-dtype", dtype,
               "--checkpointing" if checkpointing else "--no-checkpointing"]
    # glibc keeps freed blocks of a dynamic size mapped, so peak RSS would count memory that torch had
    # already freed; a fixed mmap threshold returns every freed large block, and RSS follows live tensors.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    child = subprocess.run(command, capture_output=True, text=True, env=env)
    if child.returncode != 0:
        sys.exit(f"the memory measurement failed:\n{child.stderr}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    peak, baseline = result["peak_bytes"], result["baseline_bytes"]
    return {"model": model, "frames": frames, "batch": batch, "dtype": dtype, "checkpointing": checkpointing,
            "stage_peak_gb": peak / 1e9, "baseline_gb": baseline / 1e9, "whole_model_fp32_gb": whole_bytes / 1e9,
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
    parser.add_argument("--memory-batch", type=int, default=8)
    parser.add_argument("--memory-dtype", default="float32", choices=["float32", "bfloat16"],
                        help="weights dtype (vlynx align --dtype; default float32 as vlynx align)")
    parser.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=True,
                        help="gradient checkpointing in the encoder (default on, as on GPU)")
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.memory_frames, args.memory_batch, args.memory_dtype, args.checkpointing)
        return
    torch.manual_seed(0)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu, {torch.get_num_threads()} threads"
    if not args.skip_time:
        result = step_ratio(args.model, args.frames, args.batch, args.rank, args.repeats)
        print(f"[{device}] step time {result['model']}, {result['batch']}x{result['frames']} frames: "
              f"plain vision-LoRA {result['plain_step_s']:.3f} s, alignment {result['align_step_s']:.3f} s, "
              f"ratio {result['ratio']:.3f} (median of {args.repeats} alternating pairs, "
              f"{result['ratio_range'][0]:.3f}-{result['ratio_range'][1]:.3f}; goal <= 1.10)")
    if not args.skip_memory:
        result = memory_ratio(args.memory_model, args.memory_frames, args.memory_batch, args.memory_dtype,
                              args.checkpointing)
        what = "peak allocated" if torch.cuda.is_available() else "peak RSS"
        print(f"[{device}] memory {result['model']}, batch {result['batch']} x {result['frames']} frame(s), "
              f"{result['dtype']} weights, bf16 autocast, checkpointing {'on' if result['checkpointing'] else 'off'}: "
              f"stage {what} {result['stage_peak_gb']:.2f} GB"
              + (f" (of which {result['baseline_gb']:.2f} GB Python and libraries before loading)"
                 if result["baseline_gb"] else "")
              + f" vs whole model fp32 "
              f"{result['whole_model_fp32_gb']:.2f} GB (encoder+projector alone "
              f"{result['encoder_projector_fp32_gb']:.2f} GB): ratio {result['ratio']:.3f} (goal <= 0.10)")


if __name__ == "__main__":
    main()
