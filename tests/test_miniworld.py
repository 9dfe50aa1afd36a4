"""The miniature world: determinism, answers vs. scene specs, sound in the track, depth maps, CLI."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from vlynx.miniworld import generate_split

SHAPE_FREQUENCY = {"ball": 500.0, "box": 1500.0, "triangle": 3000.0}  # the world's documented tones
SOUND_NAME = {"ball": "ding", "box": "buzz", "triangle": "whistle"}
RGB = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 235), "yellow": (235, 210, 40)}
VELOCITY = {"left": (-7, 0), "right": (7, 0), "up": (0, -7), "down": (0, 7), "still": (0, 0)}  # px/s: 14 px in 2 s
NUMBER = ["zero", "one", "two", "three"]


@pytest.fixture(scope="module")
def train_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    generate_split(out, "train", 6, seed=0)
    return out


def _load(split_dir):
    scenes = {s["id"]: s for s in json.loads((split_dir / "scenes.json").read_text())}
    return scenes, json.loads((split_dir / "annotations.json").read_text())


def test_same_seed_same_annotations_and_other_seed_differs(tmp_path, train_split):
    generate_split(tmp_path / "again", "train", 6, seed=0)
    generate_split(tmp_path / "other", "train", 6, seed=1)
    for name in ("annotations.json", "scenes.json"):
        assert (tmp_path / "again" / name).read_bytes() == (train_split / name).read_bytes()
        assert (tmp_path / "other" / name).read_bytes() != (train_split / name).read_bytes()


def _expected_answer(question: str, scene: dict) -> str:
    """Answer re-derived from the scene spec by a separate reading of each question."""
    objects, sound = scene["objects"], scene["sound"]
    by_shape = {o["shape"]: o for o in objects}
    by_colour = {o["colour"]: o for o in objects}
    sounding = objects[sound["source"]] if sound else None
    if m := re.fullmatch(r"what colour is the (\w+) \?", question):
        return by_shape[m[1]]["colour"]
    if m := re.fullmatch(r"what shape is the (\w+) object \?", question):
        return by_colour[m[1]]["shape"]
    if m := re.fullmatch(r"which way is the (\w+) moving \?", question):
        return by_shape[m[1]]["motion"]
    if question == "what sound do you hear ?":
        return SOUND_NAME[sounding["shape"]] if sounding else "none"
    if question == "how many beeps do you hear ?":
        return NUMBER[len(sound["beeps"]) if sound else 0]
    if question == "what colour is the object making the sound ?":
        return sounding["colour"]
    if question == "which way is the sounding object moving ?":
        return sounding["motion"]
    if question == "is the sounding object big or small ?":
        return sounding["size"]
    raise AssertionError(f"unexpected question {question!r}")


def test_every_answer_follows_from_the_scene(train_split):
    scenes, entries = _load(train_split)
    assert {e["category"] for e in entries} == {"video", "audio", "audio-visual"}
    for entry in entries:
        human, gpt = entry["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt" and human["value"].startswith("<image>\n")
        scene = scenes[entry["scene"]]
        assert gpt["value"] == _expected_answer(human["value"][len("<image>\n"):], scene)
        assert len(gpt["value"].split()) == 1
        if entry["category"] == "audio-visual":  # vision alone must not settle it: the other object differs
            other = [o for i, o in enumerate(scene["objects"]) if i != scene["sound"]["source"]]
            assert len(other) == 1 and other[0][entry["kind"].split("-")[0]] != gpt["value"]
        for field in ("video", "audio", "depth"):
            assert (train_split / entry[field]).exists()


def _decode(path):
    import av

    frames, samples = [], []
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        for frame in container.decode(audio=0):
            samples += [piece.to_ndarray()[0] for piece in resampler.resample(frame)]
    return np.stack(frames), np.concatenate(samples)


def test_rendered_objects_show_their_colour_along_their_path(train_split):
    scenes, _ = _load(train_split)
    for scene_id, scene in scenes.items():
        frames, _ = _decode(train_split / "videos" / f"{scene_id}.mp4")
        assert frames.shape == (16, 32, 32, 3)
        for obj in scene["objects"]:
            for k in (0, 15):  # first and last frame, at 8 fps
                vx, vy = VELOCITY[obj["motion"]]
                x, y = obj["start"][0] + vx * k / 8, obj["start"][1] + vy * k / 8
                pixel = frames[k, int(y), int(x)].astype(int)
                assert np.abs(pixel - RGB[obj["colour"]]).max() < 45, (scene_id, obj, k, pixel)


def _tone_energy(signal: np.ndarray, start: float, end: float, frequency: float) -> float:
    piece = signal[int(start * 16000):int(end * 16000)]
    spectrum = np.abs(np.fft.rfft(piece * np.hanning(len(piece))))
    bins = np.fft.rfftfreq(len(piece), 1 / 16000)
    return float(spectrum[np.abs(bins - frequency) < 40].max())


def test_sound_is_in_the_track_at_the_stated_times(train_split):
    import soundfile

    scenes, _ = _load(train_split)
    sounding = [s for s in scenes.values() if s["sound"]]
    silent = [s for s in scenes.values() if not s["sound"]]
    assert sounding and silent
    for scene in sounding:
        _, track = _decode(train_split / "videos" / f"{scene['id']}.mp4")
        wav, rate = soundfile.read(train_split / "audio" / f"{scene['id']}.wav")
        assert rate == 16000
        shape = scene["objects"][scene["sound"]["source"]]["shape"]
        for signal in (track, wav):
            for start, end in scene["sound"]["beeps"]:
                inside = _tone_energy(signal, start + 0.04, end - 0.04, SHAPE_FREQUENCY[shape])
                others = [_tone_energy(signal, start + 0.04, end - 0.04, f)
                          for s, f in SHAPE_FREQUENCY.items() if s != shape]
                assert inside > 20 * max(others)
                gap = _tone_energy(signal, end + 0.06, end + 0.22, SHAPE_FREQUENCY[shape])
                assert inside > 20 * gap  # silent between beeps (and after the last)
    for scene in silent:
        _, track = _decode(train_split / "videos" / f"{scene['id']}.mp4")
        assert np.abs(track).max() < 0.05


def test_depth_pngs_are_uint16_millimetres_of_the_nearest_surface(train_split):
    from PIL import Image

    scenes, _ = _load(train_split)
    for scene_id, scene in scenes.items():
        folder = train_split / "depth" / scene_id
        files = sorted(folder.glob("*.png"))
        assert len(files) == 16
        header = files[0].read_bytes()[:26]
        assert header[24] == 16 and header[25] == 0  # PNG IHDR: 16-bit, grayscale
        depth = np.array(Image.open(files[0]))
        assert depth.dtype == np.uint16 and depth.shape == (32, 32)
        for obj in scene["objects"]:
            assert depth[int(obj["start"][1]), int(obj["start"][0])] == obj["depth_mm"]
        covered = set(np.unique(depth)) - {6000}
        assert covered == {o["depth_mm"] for o in scene["objects"]}
        assert (depth == 6000).mean() > 0.5  # mostly background wall at 6 m
        assert np.loadtxt(folder / "intrinsic_depth.txt").shape == (4, 4)


def test_reference_and_align_splits_are_media_lists_of_other_scenes(tmp_path, train_split):
    reference = generate_split(tmp_path / "ref", "reference", 3, seed=0)
    align = generate_split(tmp_path / "align", "align", 3, seed=0)
    assert reference.name == "videos.txt" and align.name == "audio.txt"
    videos = reference.read_text().split()
    wavs = align.read_text().split()
    assert len(videos) == 3 and all((tmp_path / "ref" / v).suffix == ".mp4" for v in videos)
    assert len(wavs) == 3 and all((tmp_path / "align" / w).is_file() for w in wavs)
    assert not (tmp_path / "ref" / "annotations.json").exists()
    train_specs = [json.dumps(s["objects"]) for s in json.loads((train_split / "scenes.json").read_text())]
    for split in ("ref", "align"):
        for spec in json.loads((tmp_path / split / "scenes.json").read_text()):
            assert json.dumps(spec["objects"]) not in train_specs


def test_tokenizer_covers_every_generated_word_and_round_trips(train_split):
    from vlynx.miniworld import all_texts, build_tokenizer

    tokenizer = build_tokenizer()
    _, entries = _load(train_split)
    texts = all_texts() + [t["value"].replace("<image>\n", "") for e in entries for t in e["conversations"]]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert tokenizer.unk_token_id not in ids, text
        assert tokenizer.decode(ids) == text


def test_cli_generate_writes_the_split(tmp_path, capsys):
    from vlynx.cli import main

    assert main(["miniworld", "generate", "--out", str(tmp_path), "--split", "test", "--n", "2", "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "annotations.json")
    assert main(["miniworld", "generate", "--out", str(tmp_path), "--split", "test", "--n", "0"]) == 2
