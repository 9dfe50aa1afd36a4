"""Frame sampling throughput: vlynx's reader vs decoding every frame; reference loader vs encoder.

    python benchmarks/decode.py                        # 60 s 1280x720 30 fps H.264, keyframe every 2 s
    python benchmarks/decode.py --gop 10 --clip /tmp/clip_gop10.mp4
    python benchmarks/decode.py --repeats 5 --skip-loader --skip-encoder

1. Sampling. One generated clip (PyAV/libx264, fixed GOP, B-frames, content that moves
   like video: a camera pan over a textured scene, sensor grain and a moving object),
   read 60 frames (1 fps) four ways: vlynx `read_video` (decode forward, seek only across
   gaps > 2 s, RGB only for the picks); transformers' `load_video(backend="pyav")`
   (decodes every frame, RGB only for the picks); decode-all (every frame decoded and
   converted to RGB, the nearest 60 kept; keeping all of them would also cost
   frames x H x W x 3 bytes of memory); and keyframes only (`skip_frame="NONKEY"`, the
   nearest keyframe per target: cheap, but its frames are up to GOP/2 away from the
   targets). Also vlynx at sparser sampling, where its seeking applies. Each way runs
   in two modes: pinned to one core (FFmpeg's automatic thread count is then 1) and on
   all cores (thread_type AUTO: FFmpeg frame threads). Figures are medians over
   alternating rounds, with the spread; CPU seconds are this process's user+sys time
   (decoder threads included), so "per core" figures hold under machine load too.
2. Loader vs encoder. The reference pass's dataset (`read_video` + `preprocess_frames`
   per video) in a DataLoader with 0, 1, 2 worker processes, against one encoder forward
   (SigLIP + projector + pooling, random weights, float32, CPU) of the 0.5B config. The
   encoder is timed on a few frames and scaled per frame (frames are encoded independently).
3. Scale. For the paper's 117k reference videos: CPU cores needed per GPU to keep an
   encoder fed, from the measured per-core reader cost and the FLOPs counted per frame at
   an assumed GPU throughput (`--gpu-tflops`; no GPU is measured here).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

REFERENCE_VIDEOS = 117_000  # the paper's reference set (docs/method.md)


# ----- the clip ------------------------------------------------------------------------
def make_clip(path: Path, seconds: float, fps: int, width: int, height: int, gop: float) -> None:
    """H.264 (libx264 veryfast, crf 23, B-frames) with a keyframe every `gop` seconds exactly."""
    import av

    rng = np.random.default_rng(0)
    pan_x, pan_y = width // 8, height // 8
    # A scene larger than the frame: smooth colour fields plus fine static texture, panned over.
    yy, xx = np.mgrid[0:height + 2 * pan_y, 0:width + 2 * pan_x].astype(np.float32)
    scene = np.stack([np.sin(xx / 97), np.sin(yy / 61 + xx / 300), np.sin((xx + yy) / 150)], axis=-1)
    scene = (90 + 80 * scene + rng.integers(0, 50, scene.shape)).astype(np.uint8)  # 10..220
    grain = rng.integers(0, 16, (8, height, width, 3), dtype=np.uint8)  # sensor noise, changes every frame
    keyint = max(1, round(gop * fps))
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast",
                          "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0"}
        for i in range(round(seconds * fps)):
            t = i / fps
            x, y = int(pan_x * (1 + np.sin(0.31 * t))), int(pan_y * (1 + np.sin(0.23 * t + 1)))
            image = scene[y:y + height, x:x + width] + grain[i % len(grain)]
            left = int((width - 200) * (0.5 + 0.5 * np.sin(0.9 * t)))
            image[height // 3:height // 3 + 160, left:left + 200] = (240, (3 * i) % 256, 40)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def clip_facts(path: Path) -> dict:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base)
        keyframes = [float(p.pts * p.time_base) for p in container.demux(stream) if p.is_keyframe and p.pts is not None]
        return {"duration": duration, "frames": stream.frames, "fps": float(stream.average_rate),
                "size": f"{stream.width}x{stream.height}", "codec": stream.codec_context.name,
                "gop": float(np.median(np.diff(keyframes))) if len(keyframes) > 1 else duration,
                "mbps": path.stat().st_size * 8 / duration / 1e6}


# ----- ways of sampling F frames -----------------------------------------------------------
def targets(duration: float, num_frames: int) -> np.ndarray:
    return (np.arange(num_frames) + 0.5) * duration / num_frames  # as read_video samples


def read_vlynx(path: Path, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    from vlynx.media import read_video

    clip = read_video(path, num_frames)
    return clip.frames, clip.timestamps


def read_transformers(path: Path, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    from transformers.video_utils import load_video

    frames, metadata = load_video(str(path), num_frames=num_frames, backend="pyav")
    return frames, np.asarray(metadata.frames_indices) / metadata.fps


def read_every_frame(path: Path, num_frames: int, skip_frame: str = "DEFAULT") -> tuple[np.ndarray, np.ndarray]:
    """Decode (every frame, or only keyframes) with the same decoder settings as vlynx; RGB for each decoded frame."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.skip_frame = skip_frame
        wanted = targets(float(stream.duration * stream.time_base), num_frames)
        best_gap = np.full(num_frames, np.inf)
        picks: list[np.ndarray | None] = [None] * num_frames
        times = np.zeros(num_frames)
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            gap = np.abs(wanted - frame.time)
            for i in np.flatnonzero(gap < best_gap):  # this frame is the nearest so far to these targets
                best_gap[i], picks[i], times[i] = gap[i], rgb, frame.time
    return np.stack(picks), times


def decoder_threads(path: Path) -> int:
    """Threads FFmpeg starts for this clip with thread_type AUTO under the current CPU affinity."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        next(container.decode(stream))
        return stream.codec_context.thread_count


# ----- timing ------------------------------------------------------------------------------
def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process, decoder threads included
    return usage.ru_utime + usage.ru_stime


def timed(run: Callable[[], object]) -> tuple[object, float, float]:
    """(result, wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = run()
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


@contextlib.contextmanager
def cores(count: int) -> Iterator[None]:
    """Pin this thread (and the decoder threads it starts) to `count` CPUs; FFmpeg sizes its thread pool to them."""
    every = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, every[:count])
    try:
        yield
    finally:
        os.sched_setaffinity(0, every)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})"


# ----- 1. sampling ----------------------------------------------------------------------------
def sampling(path: Path, facts: dict, num_frames: int, seek_frames: int, repeats: int) -> dict:
    ways = {
        "vlynx read_video": lambda: read_vlynx(path, num_frames),
        "transformers load_video": lambda: read_transformers(path, num_frames),
        "decode-all to RGB": lambda: read_every_frame(path, num_frames),
        "keyframes only": lambda: read_every_frame(path, num_frames, "NONKEY"),
    }
    if seek_frames:
        ways[f"vlynx read_video, {seek_frames} fr"] = lambda: read_vlynx(path, seek_frames)
    all_cores = len(os.sched_getaffinity(0))
    modes = {"1 core": 1, f"{all_cores} cores": all_cores}
    threads = {}
    for mode, count in modes.items():
        with cores(count):
            threads[mode] = decoder_threads(path)
    read_vlynx(path, 2)  # warm-up: imports, file in the page cache
    read_transformers(path, 2)
    wall = {(mode, way): [] for mode in modes for way in ways}
    cpu = {(mode, way): [] for mode in modes for way in ways}
    quality = {}
    for _ in range(repeats):  # rounds alternate ways and modes so drifting machine load hits all alike
        for mode, count in modes.items():
            with cores(count):
                for way, run in ways.items():
                    (frames, times), seconds, cpu_s = timed(run)
                    wall[mode, way].append(seconds)
                    cpu[mode, way].append(cpu_s)
                    wanted = targets(facts["duration"], len(frames))
                    quality[way] = (len(frames), len(np.unique(times)), float(np.max(np.abs(times - wanted))))

    print(f"\n1. Sampling {num_frames} frames ({num_frames / facts['duration']:.2f} fps) from the clip, "
          f"{repeats} rounds: median (min-max)")
    print("   decoder threads with thread_type AUTO: " + ", ".join(f"{m}: {t}" for m, t in threads.items()))
    header = (f"   {'mode':8} {'way':32} {'s/clip':>17} {'CPU s/clip':>17} {'sampled fr/s':>12} "
              f"{'fr/CPU-s':>9} {'frames (unique, max |dt|)':>26}")
    print("   (|dt|: distance from the uniform targets (i + 0.5) T / F; transformers samples at i T / F instead)")
    print(header)
    for mode in modes:
        for way in ways:
            count, unique, error = quality[way]
            print(f"   {mode:8} {way:32} {summary(wall[mode, way]):>17} {summary(cpu[mode, way]):>17} "
                  f"{count / statistics.median(wall[mode, way]):12.1f} "
                  f"{count / statistics.median(cpu[mode, way]):9.1f} {f'{count} ({unique}, {error:.2f} s)':>26}")
    decoded = facts["frames"]
    print(f"   decoder alone: decode-all turns {decoded} frames into RGB at "
          f"{decoded / statistics.median(cpu['1 core', 'decode-all to RGB']):.0f} frames per CPU-second (1 core)")
    print("   ratio decode-all / vlynx (goal >= 5):")
    for mode in modes:
        base = "vlynx read_video"
        walls = [a / b for a, b in zip(wall[mode, "decode-all to RGB"], wall[mode, base])]
        cpus = [a / b for a, b in zip(cpu[mode, "decode-all to RGB"], cpu[mode, base])]
        tf = [a / b for a, b in zip(cpu[mode, "transformers load_video"], cpu[mode, base])]
        key = [a / b for a, b in zip(cpu[mode, "decode-all to RGB"], cpu[mode, "keyframes only"])]
        print(f"     {mode:8} wall {summary(walls)}  CPU {summary(cpus)}   "
              f"[transformers / vlynx CPU {summary(tf)}; decode-all / keyframes-only CPU {summary(key)}]")
    return {"cpu": cpu, "modes": list(modes), "ways": list(ways)}


# ----- 2. loader vs encoder ----------------------------------------------------------------------
def loader_vs_encoder(path: Path, num_frames: int, videos: int, workers: list[int], encoder_frames: int,
                      rounds: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from vlynx.backbones import load_backbone
    from vlynx.reference.compute import _fork_context, _keep, _VideoFrames  # the reference pass's own dataset

    backbone = load_backbone("llava-onevision-0.5b", language_model=False, seed=0)  # random weights, float32
    frames = read_vlynx(path, num_frames)[0]
    # Not pinned: torch's thread pool would keep a pinned affinity and slow the encoder timed below.
    preprocess = [timed(lambda: backbone.preprocess_frames(frames))[2] for _ in range(rounds)]

    dataset = _VideoFrames([(path, 0)] * videos, num_frames, backbone)
    loader_rate = {}
    for count in workers:
        rates = []
        for _ in range(rounds):
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=None, sampler=range(videos), num_workers=count, collate_fn=_keep,
                multiprocessing_context=_fork_context() if count else None)
            start = time.perf_counter()
            for _, pixels, reason in loader:
                assert reason is None, reason
            rates.append(videos / (time.perf_counter() - start))
        loader_rate[count] = rates

    size = backbone.image_size
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        one = torch.rand(1, 1, 3, size, size, generator=generator)
        counter = FlopCounterMode(display=False)
        with counter:  # also the warm-up
            backbone.encode_frames(one)
        flops_per_frame = counter.get_total_flops()
        pixels = torch.rand(1, encoder_frames, 3, size, size, generator=generator)  # (B, F, 3, S, S)
        per_frame = [timed(lambda: backbone.encode_frames(pixels))[1] / encoder_frames for _ in range(rounds)]
    encoder_rate = [1 / (s * num_frames) for s in per_frame]  # videos/s

    print(f"\n2. Reference loader vs encoder, {num_frames} frames per video, batch 1 video, {rounds} rounds: "
          "median (min-max)")
    print(f"   preprocess_frames ({num_frames} frames to {size}x{size}): {summary(preprocess)} CPU s/video")
    for count, rates in loader_rate.items():
        print(f"   loader, {count} worker(s) ({videos} videos per round): {summary(rates)} videos/s")
    print(f"   encoder forward, 0.5B config, float32, CPU ({torch.get_num_threads()} threads): "
          f"{summary(per_frame)} s/frame (timed on {encoder_frames} frames) "
          f"= {summary([s * num_frames for s in per_frame])} s/video = {statistics.median(encoder_rate):.4f} videos/s; "
          f"{flops_per_frame / 1e9:.0f} GFLOP/frame counted")
    best = max(statistics.median(r) for r in loader_rate.values())
    needed = statistics.median(encoder_rate)
    print(f"   loader / encoder on this CPU: {best / needed:.1f}x -> "
          f"{'the loader keeps up' if best >= needed else 'the loader does NOT keep up'}")
    return {"preprocess_cpu_s": statistics.median(preprocess), "flops_per_frame": flops_per_frame}


# ----- 3. scale ----------------------------------------------------------------------------------------
def scale(sampled: dict, loader: dict, num_frames: int, gpu_tflops: float, facts: dict) -> None:
    gpu_video_s = loader["flops_per_frame"] * num_frames / (gpu_tflops * 1e12)
    print(f"\n3. Scale: {REFERENCE_VIDEOS // 1000}k reference videos, each like this clip "
          f"({facts['duration']:.0f} s {facts['size']} {facts['fps']:.0f} fps), {num_frames} frames each")
    print(f"   ASSUMED (not measured): encoder on one GPU at {gpu_tflops:.0f} effective TFLOP/s -> "
          f"{1 / gpu_video_s:.1f} videos/s per GPU, {REFERENCE_VIDEOS * gpu_video_s / 3600:.1f} GPU-hours")
    print("   measured on this CPU (1 core): reader + preprocess CPU seconds per video -> "
          "cores needed per GPU, core-hours for the set")
    for way in sampled["ways"]:
        if not way.startswith(("vlynx read_video", "decode-all", "keyframes")) or way.endswith(" fr"):
            continue
        per_video = statistics.median(sampled["cpu"]["1 core", way]) + loader["preprocess_cpu_s"]
        print(f"     {way:24} {per_video:6.2f} CPU s/video -> {per_video / gpu_video_s:6.1f} cores per GPU, "
              f"{REFERENCE_VIDEOS * per_video / 3600:7.0f} core-hours")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, help="H.264 clip to read; generated there first if missing "
                                                  "(default: a fresh one in a temporary folder)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT of a generated clip")
    parser.add_argument("--gop", type=float, default=2.0, help="seconds between keyframes of a generated clip")
    parser.add_argument("--frames", type=int, default=60, help="frames sampled per video (60 s at 1 fps: 60)")
    parser.add_argument("--seek-frames", type=int, default=16, help="also time vlynx at this sparser sampling "
                                                                    "(0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the sampling comparison")
    parser.add_argument("--loader-videos", type=int, default=4, help="videos per loader round")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to time")
    parser.add_argument("--encoder-frames", type=int, default=2, help="frames per timed encoder forward")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the loader and encoder timings")
    parser.add_argument("--gpu-tflops", type=float, default=400.0,
                        help="ASSUMED effective bf16 TFLOP/s of the encoder on one H100 (~40%% of its 989 dense "
                             "peak) for the scale estimate; not measured")
    parser.add_argument("--skip-loader", action="store_true", help="sampling comparison only")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        path = args.clip or Path(scratch) / "clip.mp4"
        if path.exists():
            made = "reused"
        else:
            width, height = (int(v) for v in args.size.split("x"))
            seconds = timed(lambda: make_clip(path, args.seconds, args.fps, width, height, args.gop))[1]
            made = f"generated in {seconds:.0f} s"
        facts = clip_facts(path)
        print(f"clip {path} ({made}): {facts['codec']} {facts['size']} {facts['fps']:.0f} fps, "
              f"{facts['duration']:.1f} s, {facts['frames']} frames, keyframe every {facts['gop']:.1f} s, "
              f"{facts['mbps']:.1f} Mbit/s")
        print(f"machine: {os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable, load average "
              + " ".join(f"{v:.2f}" for v in os.getloadavg()))
        sampled = sampling(path, facts, args.frames, args.seek_frames, args.repeats)
        if args.skip_loader:
            return
        workers = [int(w) for w in args.workers.split(",")]
        loader = loader_vs_encoder(path, args.frames, args.loader_videos, workers, args.encoder_frames, args.rounds)
        scale(sampled, loader, args.frames, args.gpu_tflops, facts)
        print("load average at the end: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
