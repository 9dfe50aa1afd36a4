"""`vlynx answer`: ask a V-LynX bundle one question about a video (and its other modalities)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vlynx.stage_configs import LOAD_DTYPES


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "answer",
        parents=[common],
        help="answer a question about a video (plus audio, depth, ...) with a tuned bundle",
        description="Load a bundle written by `vlynx tune` and answer QUESTION about --video, with each new "
        "modality's input given by its own flag (--audio, --depth, or --input NAME=PATH for plug-ins). "
        "A modality left out is read from the video itself (e.g. its audio track). A base model alone "
        "(e.g. --model miniworld) answers about the video only. Greedy decoding. A question that does not "
        "fit the model's context is an error; an answer is capped to the context the question leaves.",
    )
    parser.add_argument("question", help="the question, in quotes (vlynx puts the video before it; one <image> "
                        "placeholder in it puts the video there instead)")
    parser.add_argument("--model", required=True, help="bundle directory (from `vlynx tune --out`), or a base "
                        "model alone: miniworld, a preset, a hub id or a checkpoint directory")
    parser.add_argument("--video", required=True, help="the video file, or a 3D scene folder (color/, depth/, pose/)")
    parser.add_argument("--audio", help="audio file for the audio modality (default: the video's own track)")
    parser.add_argument("--depth", help="depth scene folder for the depth modality")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                        help="input for any other modality of the bundle (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default 64)")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames sampled from the video (default: the bundle's; 8 for a base model)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=["auto", *LOAD_DTYPES], default="auto",
                        help="dtype the weights are loaded in (default auto: the checkpoint's own)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own code")
    parser.add_argument("--json", action="store_true",
                        help="print {answer, empty, timing} as JSON (empty: the model returned no text)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    from vlynx.bundle import VLynx
    from vlynx.errors import VlynxError

    hf_logging.disable_progress_bar()  # weight-loading bars would bury a one-line answer or error

    sources = {name: value for name, value in (("audio", args.audio), ("depth", args.depth)) if value}
    for item in args.input:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise VlynxError(f"--input expects NAME=PATH, got {item!r}")
        sources[name] = value
    _check_input(args, sources)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    began = time.perf_counter()
    model = VLynx.from_pretrained(args.model, device=device, num_frames=args.frames,
                                  dtype=args.dtype,
                                  trust_remote_code=args.trust_remote_code)
    load_s = time.perf_counter() - began
    unused = sorted(set(sources) - set(model.modalities))
    if unused:
        raise VlynxError(f"this bundle has no {', '.join(unused)} modality (it takes: "
                         f"{', '.join(model.modalities) or 'video only'})", args.model)
    timing: dict[str, float] = {}
    answer = model.generate([{"video": args.video, "question": args.question, **sources}],
                            max_new_tokens=args.max_new_tokens, timing=timing)[0]
    if args.json:
        timing = {"load_s": round(load_s, 4), **{k: round(v, 4) for k, v in timing.items()}}
        print(json.dumps({"answer": answer, "empty": not answer, "timing": timing}))
    else:  # an empty answer is also reported on stderr, by the library's warning
        print(answer)
    return 0


def _check_input(args: argparse.Namespace, sources: dict[str, str]) -> None:
    """One-line errors for what the command line gets wrong, before any model is loaded."""
    from vlynx.bundle import question_problem
    from vlynx.errors import VlynxError

    problem = question_problem(args.question)
    if problem:
        raise VlynxError(problem)
    for flag, value in (("--max-new-tokens", args.max_new_tokens), ("--frames", args.frames)):
        if value is not None and value < 1:
            raise VlynxError(f"{flag} must be at least 1, got {value}")
    if not Path(args.video).exists():  # a file, or a 3D scene folder (vlynx.media.scene)
        raise VlynxError("video file not found", args.video)
    for name, value in sources.items():
        if not Path(value).exists():
            raise VlynxError(f"{name} input not found", value)
