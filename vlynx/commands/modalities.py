"""`vlynx modalities`: the modalities that can be aligned (built-in and plug-ins)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "modalities",
        parents=[common],
        help="list the registered modalities",
        description="List every modality vlynx can turn into pseudo-video frames: the built-ins and "
        "plug-ins registered through the 'vlynx.modalities' entry-point group.",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlynx.errors import VlynxError
    from vlynx.modalities import modality_description, modality_names

    names = modality_names()
    width = max(len(name) for name in names)
    for name in names:
        try:
            description = modality_description(name)
        except VlynxError as error:  # one broken plug-in should not hide the others
            description = f"(cannot load: {error})"
        print(f"{name:<{width}}  {description}")
    return 0
