"""Reference-pass throughput relative to a bare encoder forward on the same frames (goal >= 0.95).

The reference pass is what `vlynx reference` does per batch once frames are decoded: one
encoder forward with K/V captured where the encoder computes them, plus the float32 K/V
sums and the float64 token moments. Decoding is excluded (it runs in worker processes).

    python benchmarks/reference_overhead.py --model tiny --frames 8 --batch-size 4
    python benchmarks/reference_overhead.py --model llava-onevision-0.5b --device cuda --dtype bfloat16
"""
from __future__ import annotations

import argparse
import time

import torch

from vlynx.backbones import load_backbone
from vlynx.reference.accumulate import SourceAccumulator, accumulate


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(step, device: torch.device, repeats: int) -> float:
    step()  # warm-up
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    _synchronize(device)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="preset (random weights) or checkpoint dir")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4, help="videos per encoder pass")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each is kept")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()

    backbone = load_backbone(args.model, device=args.device, dtype=getattr(torch, args.dtype))
    device = backbone.device
    size = backbone.image_size
    generator = torch.Generator().manual_seed(0)
    videos = [torch.rand(args.frames, 3, size, size, generator=generator) * 2 - 1 for _ in range(args.batch_size)]
    pixels = torch.stack(videos).to(device)  # (B, F, 3, S, S)
    batch = [(0, video.to(device)) for video in videos]  # (source index, pixels): all of one source
    accumulators = [SourceAccumulator(backbone, device)]

    def bare() -> None:
        backbone.encode_frames(pixels)

    def reference() -> None:
        accumulate(backbone, accumulators, batch)

    bare_times, reference_times = [], []
    with torch.inference_mode():
        for _ in range(args.rounds):  # alternate so drift in machine load hits both alike
            bare_times.append(_time(bare, device, args.repeats))
            reference_times.append(_time(reference, device, args.repeats))
    frames = args.batch_size * args.frames
    bare_rate, reference_rate = frames / min(bare_times), frames / min(reference_times)
    print(f"model {args.model} on {device} ({args.dtype}), {args.batch_size} videos x {args.frames} frames per pass")
    print(f"bare encoder forward : {bare_rate:10.1f} frames/s")
    print(f"reference pass       : {reference_rate:10.1f} frames/s")
    print(f"relative throughput  : {reference_rate / bare_rate:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
