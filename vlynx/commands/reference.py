"""`vlynx reference`: compute the video reference statistics (eq. 2-3), or report their stability."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

REPORT_HELP = (
    "print the stability diagnostics of a reference file (paper Table B2) and exit. Per encoder layer l, with "
    "K the reference keys (mean over all frames) and K_s the mean keys of source s (S sources): "
    "|K| = mean over heads, positions and channels of |K[l]|; var K = (1/S) sum_s mean((K_s[l] - K[l])^2); "
    "dom K = |K| / var K (much greater than 1: the reference is stable across sources). Values likewise. "
    "Variance and dominance need a file computed from at least two sources"
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "reference",
        parents=[common],
        help="compute reference K/V and token statistics from unlabeled videos",
        description="Run reference videos through the frozen base encoder once and save, per encoder layer, "
        "head and patch position, the mean key and value over all frames (eq. 2), and the mean and population "
        "variance of all projected video tokens (eq. 3), with a fingerprint of the model. Unreadable videos "
        "are skipped and listed. Resumable (a checkpoint OUT.partial every N videos) and distributed: "
        "under `torchrun --nproc_per_node K -m vlynx reference ...` each rank takes a shard.",
    )
    parser.add_argument("--model", help="preset (tiny, llava-onevision-0.5b, ...), hub id or checkpoint dir")
    parser.add_argument("--videos", action="append", default=[], metavar="DIR|LIST.txt|ANNOT.json",
                        help="reference videos: a folder, a list file or an annotation file (repeat for "
                        "several sources)")
    parser.add_argument("--source", action="append", default=[], metavar="NAME",
                        help="name of each --videos set, in the same order (default: its file/folder name)")
    parser.add_argument("--frames", type=int, default=None, help="frames sampled per video (as in alignment)")
    parser.add_argument("--out", type=Path, help="output file (.safetensors)")
    parser.add_argument("--batch-size", type=int, default=4, help="videos per encoder pass (default 4)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="video-decoding worker processes, 0 decodes in the main process (default: up to 4)")
    parser.add_argument("--checkpoint-every", type=int, default=500, metavar="N",
                        help="save resumable progress to OUT.partial every N videos per rank; 0: only at the end "
                        "(default 500). A run finding a matching OUT.partial continues from it")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available; "
                        "under torchrun each rank uses cuda:LOCAL_RANK)")
    parser.add_argument("--report", type=Path, metavar="REF.safetensors", help=REPORT_HELP)
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own code")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlynx.errors import VlynxError
    from vlynx.reference import format_report, load_reference

    if args.report is not None:
        print(format_report(load_reference(args.report)))
        return 0
    missing = [flag for flag, value in (("--model", args.model), ("--videos", args.videos),
                                        ("--frames", args.frames), ("--out", args.out)) if not value]
    if missing:
        raise VlynxError(f"missing {', '.join(missing)} (or give --report FILE)")
    if args.source and len(args.source) != len(args.videos):
        raise VlynxError(f"{len(args.videos)} --videos but {len(args.source)} --source; give one name per set")
    return _compute(args)


def _compute(args: argparse.Namespace) -> int:
    import logging

    import torch
    import torch.distributed as dist

    from vlynx.backbones import load_backbone
    from vlynx.progress import log
    from vlynx.reference import compute_reference, discard_checkpoint, save_reference, video_sources

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and world > 1:
        device = f"cuda:{local_rank}"
    started_group = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        started_group = True
    try:
        rank = dist.get_rank() if dist.is_initialized() else 0
        if rank != 0:
            log.setLevel(logging.ERROR)  # one progress bar and one summary, from rank 0
        sources = video_sources(args.videos, args.source or None)
        backbone = load_backbone(args.model, device=device, trust_remote_code=args.trust_remote_code)
        checkpoint = args.out.with_name(args.out.name + ".partial")
        reference = compute_reference(backbone, sources, args.frames, batch_size=args.batch_size,
                                      workers=args.workers, checkpoint=checkpoint,
                                      checkpoint_every=args.checkpoint_every)
        if rank == 0:
            save_reference(reference, args.out)
        if dist.is_initialized():
            dist.barrier()  # the file is written before any checkpoint goes
        discard_checkpoint(checkpoint)
    finally:
        if started_group:
            dist.destroy_process_group()
    if rank == 0:
        counts = reference.counts
        print(f"{args.out}: {counts['videos']} videos, {counts['frames']} frames, {counts['tokens']} tokens"
              f"{f', {len(reference.skipped)} skipped' if reference.skipped else ''}")
        for entry in reference.skipped:
            print(f"  skipped {entry['path']}: {entry['reason']}")
    return 0
