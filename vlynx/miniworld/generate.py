"""Write a split of the miniature world to disk: media, depth maps, scene specs and annotations.

Splits (each from its own random stream, so no two splits share a scene):

- `reference`: videos only, listed in `videos.txt` (for reference statistics);
- `align`: unlabeled audio only (wav), listed in `audio.txt` (unpaired with the instruction data);
- `train`, `test`: paired instruction data in `annotations.json` (LLaVA conversation format,
  with `category` audio | audio-visual | video), each scene as mp4 (with its sound track),
  wav, and a folder of 16-bit depth PNGs (millimetres) with ScanNet-style intrinsics;
- `pretrain`: video-only questions and captions in `annotations.json` (silent videos).

Scene i of a split depends only on (seed, split, i), so a larger n extends a smaller one.
`scenes.json` holds every scene's full spec; `world.json` the world's settings.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from vlynx.errors import VlynxError
from vlynx.files import write_bytes_atomic, write_text_atomic
from vlynx.miniworld.questions import CAPTION_PROMPT, caption, instruction_questions, video_questions
from vlynx.miniworld.world import (
    WORLD, Scene, WorldSettings, camera_intrinsics, render_depth, render_frames, sample_scene, synthesize_audio,
)
from vlynx.progress import progress

SPLITS = ("reference", "align", "train", "test", "pretrain")
_SPLIT_STREAM = {name: index + 1 for index, name in enumerate(SPLITS)}  # keeps splits' scenes apart
INDEX_FILE = {"reference": "videos.txt", "align": "audio.txt", "train": "annotations.json",
              "test": "annotations.json", "pretrain": "annotations.json"}


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of scene `index` of `split` (independent of how many scenes are made)."""
    return np.random.default_rng([seed, _SPLIT_STREAM[split], index])


def make_scene(seed: int, split: str, index: int) -> tuple[Scene, np.random.Generator]:
    """Scene `index` of `split`, and the stream (already advanced past the scene) for its sound and questions."""
    rng = scene_rng(seed, split, index)
    return sample_scene(rng, f"{split}-{index:05d}"), rng


def generate_split(out_dir: str | Path, split: str, n: int, seed: int = 0,
                   world: WorldSettings = WORLD, overwrite: bool = False) -> Path:
    """Write `n` scenes of `split` under `out_dir`; returns its index file (list or annotations).

    A folder that is not empty is refused unless `overwrite` (which empties it first), so a
    split never mixes files of two runs. The index file is written last and atomically: if
    it exists, the split is complete.
    """
    from vlynx.outputs import output_lock, prepare_output

    if split not in SPLITS:
        raise VlynxError(f"unknown split '{split}' (choose from {', '.join(SPLITS)})")
    if n < 1:
        raise VlynxError("the number of scenes must be at least 1")
    out = Path(out_dir)
    with output_lock(out):
        prepare_output(out, Path(f"{out}.checkpoints"), resume=False, overwrite=overwrite)
        out.mkdir(parents=True, exist_ok=True)
        return _write_split(out, split, n, seed, world)


def _write_split(out: Path, split: str, n: int, seed: int, world: WorldSettings) -> Path:
    scenes: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    listed: list[str] = []
    for index in progress(range(n), desc=f"miniworld {split}", total=n, unit="scene"):
        scene, rng = make_scene(seed, split, index)
        scenes.append(scene.to_json())
        audio = synthesize_audio(scene, rng, world)
        if split == "align":
            listed.append(_write_wav(out / "audio" / f"{scene.id}.wav", audio, world))
            continue
        video = f"videos/{scene.id}.mp4"
        _write_mp4(out / video, scene, None if split == "pretrain" else audio, world)
        if split == "reference":
            listed.append(video)
        elif split == "pretrain":
            entries += _pretrain_entries(scene, video)
        else:
            wav = _write_wav(out / "audio" / f"{scene.id}.wav", audio, world)
            depth = _write_depth(out / "depth" / scene.id, scene, world)
            entries += _instruction_entries(scene, rng, video, wav, depth)
    write_text_atomic(out / "scenes.json", json.dumps(scenes, indent=1) + "\n")
    write_text_atomic(out / "world.json", json.dumps(world.as_dict() | {"seed": seed, "split": split, "scenes": n},
                                               indent=1) + "\n")
    index_file = out / INDEX_FILE[split]
    if split in ("reference", "align"):
        write_text_atomic(index_file, "".join(f"{name}\n" for name in listed))
    else:
        write_text_atomic(index_file, json.dumps(entries, indent=1) + "\n")
    return index_file


def read_scenes(split_dir: str | Path) -> dict[str, Scene]:
    """The scene specs of a generated split, by scene id."""
    path = Path(split_dir) / "scenes.json"
    if not path.is_file():
        raise VlynxError("no scenes.json here; generate the split first", path.parent)
    return {data["id"]: Scene.from_json(data) for data in json.loads(path.read_text())}


def _entry(entry_id: str, scene: Scene, category: str, kind: str, question: str, answer: str,
           media: dict[str, str]) -> dict[str, Any]:
    return {
        "id": entry_id, "scene": scene.id, **media, "category": category, "kind": kind,
        "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
    }


def _instruction_entries(scene: Scene, rng: np.random.Generator, video: str, wav: str, depth: str) -> list[dict]:
    media = {"video": video, "audio": wav, "depth": depth}
    return [_entry(f"{scene.id}-q{k}", scene, q.category, q.kind, q.text, q.answer, media)
            for k, q in enumerate(instruction_questions(scene, rng))]


def _pretrain_entries(scene: Scene, video: str) -> list[dict]:
    media = {"video": video}
    entries = [_entry(f"{scene.id}-q{k}", scene, q.category, q.kind, q.text, q.answer, media)
               for k, q in enumerate(video_questions(scene))]
    entries.append(_entry(f"{scene.id}-caption", scene, "video", "caption", CAPTION_PROMPT, caption(scene), media))
    return entries


# ----- writers (each to a temporary name, then renamed) --------------------------------


def _write_mp4(path: Path, scene: Scene, audio: np.ndarray | None, world: WorldSettings) -> None:
    from vlynx.media.video import write_video

    write_video(path, render_frames(scene, world), world.fps, audio=audio, sample_rate=world.sample_rate)


def _write_wav(path: Path, audio: np.ndarray, world: WorldSettings) -> str:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, audio, world.sample_rate, format="WAV", subtype="PCM_16")
    write_bytes_atomic(path, buffer.getvalue())
    return f"{path.parent.name}/{path.name}"


def _write_depth(folder: Path, scene: Scene, world: WorldSettings) -> str:
    """One 16-bit PNG (millimetres) per rendered frame, `0000.png` at t = 0, `0001.png` at 1/fps, ..."""
    from PIL import Image

    for k, depth in enumerate(render_depth(scene, world)):
        buffer = io.BytesIO()
        Image.fromarray(depth).save(buffer, format="PNG")  # uint16 array -> 16-bit grayscale PNG
        write_bytes_atomic(folder / f"{k:04d}.png", buffer.getvalue())
    matrix = camera_intrinsics(world)
    write_text_atomic(folder / "intrinsic_depth.txt", "".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in matrix))
    return f"depth/{scene.id}"
