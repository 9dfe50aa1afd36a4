"""`vlynx preview`: a contact sheet of exactly the frames the vision encoder receives for a modality."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "preview",
        parents=[common],
        help="write a contact sheet of what the encoder sees for a modality input",
        description="Turn INPUT into the modality's pseudo-video frames, pass them through the backbone's own "
        "preprocessing (resize to the encoder's size), and write them as one PNG, frame 0 top-left, row by row. "
        "Depth with normals shows each depth image followed by its normals image. Frames that are partly "
        "filled in rather than taken from INPUT (audio windows reaching past the recording, drawn as silence) "
        "are listed with how much.",
    )
    parser.add_argument("input", metavar="INPUT",
                        help="the modality's input (audio/video file, 3D scene or depth folder)")
    parser.add_argument("--modality", "-m", required=True, help="modality name (see `vlynx modalities`)")
    parser.add_argument("--out", "-o", required=True, help="PNG file to write")
    parser.add_argument("--frames", "-n", type=int, default=8, help="frames to sample (default 8)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="modality setting, e.g. --set n_mels=32 --set normals=true (repeatable)")
    parser.add_argument("--align-to", metavar="VIDEO",
                        help="sample at the times of this video's frames (e.g. audio windows centred on them); "
                        "for a 3D scene folder, take the very frames the scene's video takes")
    parser.add_argument("--model", default="llava-onevision-0.5b",
                        help="backbone whose preprocessing to apply: preset, hub id or checkpoint dir "
                        "(default llava-onevision-0.5b; only its config is read)")
    parser.add_argument("--raw", action="store_true", help="show the modality's frames before the backbone's resize")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own code")
    parser.set_defaults(handler=run)


def parse_settings(pairs: list[str]) -> dict:
    """`KEY=VALUE` strings -> modality settings; lists become tuples (settings are frozen dataclasses)."""
    from vlynx.config import parse_assignments

    return {key: tuple(value) if isinstance(value, list) else value
            for key, value in parse_assignments(pairs).items()}


def encoder_view(frames, backbone):
    """uint8 frames as the encoder receives them: the backbone's preprocessing, its normalisation undone."""
    import numpy as np

    pixels = backbone.preprocess_frames(frames).numpy()  # (F, 3, S, S) normalised
    # Preprocessing is resize then a per-channel affine map; recover it from black and white frames.
    probe = backbone.preprocess_frames(np.stack([np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)]))
    black, white = probe[0, :, 0, 0].numpy(), probe[1, :, 0, 0].numpy()  # (3,)
    unit = (pixels - black[None, :, None, None]) / (white - black)[None, :, None, None]
    return np.rint(np.clip(unit, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)


def run(args: argparse.Namespace) -> int:
    from vlynx.errors import VlynxError
    from vlynx.media.images import contact_sheet, with_caption, write_png
    from vlynx.media.video import read_video
    from vlynx.modalities import get_modality
    from vlynx.modalities.base import paired_frames
    from vlynx.progress import log

    if args.frames < 1:
        raise VlynxError("--frames must be at least 1")
    modality = get_modality(args.modality, **parse_settings(args.settings))
    timestamps = None
    if args.align_to:  # as tune and eval pair them (vlynx.conversation.read_streams)
        clip = read_video(args.align_to, args.frames, scene_choice=modality.scene_frame_choice)
        frames, timestamps = paired_frames(modality, args.input, args.frames, clip), clip.timestamps
    else:
        frames = modality.frames(args.input, args.frames)
    if not args.raw:
        from vlynx.backbones import load_backbone

        frames = encoder_view(frames, load_backbone(args.model, empty=True, trust_remote_code=args.trust_remote_code))
    columns = 2 * modality.images_per_frame if modality.images_per_frame > 1 else None
    sheet = contact_sheet(frames, columns=columns)
    padding = modality.padding(args.input, args.frames, timestamps)
    padded = [f"frame {i} {share:.1%}" for i, share in enumerate(padding) if share > 1e-9]
    note = f"padding in {len(padded)} of {len(padding)} frames ({modality.padding_note}): {', '.join(padded)}"
    if padded:  # said on the sheet itself, where a person looks
        sheet = with_caption(sheet, note)
        log.info("%s: %s", args.input, note)
    path = write_png(args.out, sheet)
    log.info("wrote %s: %d image(s) of %dx%d from %s", path, len(frames), frames.shape[2], frames.shape[1], args.input)
    return 0
