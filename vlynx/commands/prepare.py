"""`vlynx prepare`: a benchmark's released files -> a vlynx annotation file (LLaVA/PAVE conversations
plus the fields scoring needs)."""
from __future__ import annotations

import argparse
import textwrap


def benchmark_lines() -> str:
    """One line per benchmark: its name, splits and what it reads."""
    from vlynx.prepare import PREPARERS

    return "\n".join(f"  {p.name:<20} splits {', '.join(p.splits)}\n  {'':<20} reads {p.reads}"
                     for p in PREPARERS.values())


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from vlynx.prepare import PREPARERS

    parser = subparsers.add_parser(
        "prepare",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="turn a benchmark's released files into a vlynx annotation file",
        description=textwrap.fill("Read one split of a benchmark from its files as released (--release) and write the "
        "annotation file that align, tune and eval read (--out): one entry per question with its media, "
        "the prompt vlynx eval sends, the reference answer, and the benchmark's own fields. Media lie "
        "under --media-root (default: the release folder); media that do not exist are listed and are "
        "an error, unless --allow-missing drops (and counts) those entries."),
        epilog="benchmarks:\n" + benchmark_lines(),
    )
    parser.add_argument("benchmark", choices=list(PREPARERS), metavar="BENCHMARK",
                        help="which benchmark (listed below)")
    parser.add_argument("--release", required=True, metavar="DIR", help="folder of the released annotation files")
    parser.add_argument("--split", required=True, help="which split (per benchmark, listed below)")
    parser.add_argument("--out", required=True, metavar="ANNOT.json", help="annotation file to write")
    parser.add_argument("--media-root", metavar="DIR", help="folder the media lie under (default: --release)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="drop entries whose media do not exist (counted and logged) instead of failing")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlynx.prepare import prepare

    summary = prepare(args.benchmark, args.release, args.split, args.out, media_root=args.media_root,
                      allow_missing=args.allow_missing, overwrite=args.overwrite)
    print(summary.to_text(), end="")
    return 0
