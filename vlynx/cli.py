"""`vlynx` command line: one subcommand per module in `vlynx.commands`.

Each command module exposes `register(subparsers, common)`; heavy imports (torch,
transformers) happen inside the handlers so `vlynx --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from vlynx import __version__
from vlynx.distributed import close_process_group
from vlynx.errors import VlynxError

COMMANDS = (  # in pipeline order, as `vlynx --help` lists them
    "vlynx.commands.demo",
    "vlynx.commands.prepare",
    "vlynx.commands.reference",
    "vlynx.commands.align",
    "vlynx.commands.tune",
    "vlynx.commands.answer",
    "vlynx.commands.eval",
    "vlynx.commands.score",
    "vlynx.commands.diagnose",
    "vlynx.commands.modalities",
    "vlynx.commands.preview",
    "vlynx.commands.params",
    "vlynx.commands.miniworld",
)


def build_parser() -> argparse.ArgumentParser:
    # --debug / -q work before or after the subcommand; SUPPRESS keeps a subcommand's
    # default from overwriting a flag given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks and debug logs")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and errors, no progress bars")
    parser = argparse.ArgumentParser(
        prog="vlynx",
        description="Extend a Video LLM to new modalities (audio, depth, fast motion, new views) "
        "by token-interface alignment.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"vlynx {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS:
        importlib.import_module(module_name).register(subparsers, common)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.debug = getattr(args, "debug", False)
    args.quiet = getattr(args, "quiet", False)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from vlynx import outputs
    from vlynx.progress import configure_logging

    outputs.command_line = ["vlynx", *(sys.argv[1:] if argv is None else argv)]
    configure_logging(logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO)
    if args.quiet:  # also the Hugging Face libraries' own progress bars (weight loading, ...)
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        return int(args.handler(args) or 0)
    except VlynxError as error:
        if args.debug:
            raise
        print(f"vlynx {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # a stage's checkpoints (or eval's answers) stay: the same command with --resume continues
        resumable = args.command in ("reference", "align", "tune", "eval")
        hint = "; progress saved: rerun the same command with --resume to continue" if resumable else ""
        print(f"vlynx {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        close_process_group()
