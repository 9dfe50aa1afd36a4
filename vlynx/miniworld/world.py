"""The miniature world: scene specs, and their rendering as RGB frames, depth maps and sound.

A scene holds one or two objects (shape, colour, size, start position, motion, depth)
seen by a fixed camera for `WORLD.duration_s` seconds. Each shape has its own sound (a
tone at its own frequency); in most scenes exactly one object sounds, as a few short
beeps at known times, and it makes no visible sign of it. Everything here is a pure
function of the scene spec, and scenes are a pure function of a numpy `Generator`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SHAPES = ("ball", "box", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 235), "yellow": (235, 210, 40)}
SIZES = {"small": 4.0, "big": 7.0}  # half-width in pixels at 32 px
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
# One sound per shape: its name (an answer word) and its tone frequency (Hz). The three tones
# fall in well separated mel bands (about bands 7, 13 and 21 of 32 between 0 and 8 kHz).
SOUNDS = {"ball": ("ding", 500.0), "box": ("buzz", 1500.0), "triangle": ("whistle", 3000.0)}
BACKGROUND_RGB = (30, 30, 36)


@dataclass(frozen=True)
class WorldSettings:
    """Fixed constants of the world (media format) and the audio transform that suits it."""

    size: int = 32  # frame side, pixels
    fps: int = 8
    duration_s: float = 2.0
    sample_rate: int = 16_000
    travel_px: float = 14.0  # how far a moving object goes over the whole clip
    background_depth_mm: int = 6000
    depth_range_mm: tuple[int, int] = (800, 4000)
    beep_s: float = 0.2  # length of one beep
    beep_gap_s: float = 0.5  # start-to-start spacing of beeps
    tone_amplitude: float = 0.5
    noise_amplitude: float = 0.003  # faint hiss so silence is not digital zero
    frames_per_video: int = 8  # frames the model samples from each clip
    # Audio -> pseudo-frame transform suited to 32 px frames (docs/method.md §5 with smaller settings):
    # one spectrogram per sampled video frame, a window centred on that frame's timestamp.
    audio_n_mels: int = 32
    audio_window_s: float = 0.5
    audio_n_fft: int = 400
    audio_hop_length: int = 250  # 0.5 s / 250 samples = 32 time steps
    audio_time_steps: int = 32
    audio_f_max: float = 8000.0

    @property
    def num_frames(self) -> int:
        return int(round(self.duration_s * self.fps))

    @property
    def num_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def audio_settings(self) -> dict[str, Any]:
        """Settings of the `audio` modality transform (vlynx.modalities) that suit this world."""
        return {"sample_rate": self.sample_rate, "n_mels": self.audio_n_mels, "window_s": self.audio_window_s,
                "n_fft": self.audio_n_fft, "hop": self.audio_hop_length, "time_steps": self.audio_time_steps,
                "f_max": self.audio_f_max}


WORLD = WorldSettings()


@dataclass(frozen=True)
class WorldObject:
    shape: str
    colour: str
    size: str
    motion: str
    start: tuple[float, float]  # (x, y) centre in pixels at t = 0
    depth_mm: int  # distance from the camera

    def position(self, t: float, world: WorldSettings = WORLD) -> tuple[float, float]:
        """Centre (x, y) in pixels at time t seconds (constant velocity)."""
        dx, dy = MOTIONS[self.motion]
        speed = world.travel_px / world.duration_s
        return self.start[0] + dx * speed * t, self.start[1] + dy * speed * t


@dataclass(frozen=True)
class Sound:
    source: int  # index of the sounding object in Scene.objects
    beeps: tuple[tuple[float, float], ...]  # (start, end) seconds of each beep


@dataclass(frozen=True)
class Scene:
    id: str
    objects: tuple[WorldObject, ...]
    sound: Sound | None = None

    @property
    def sounding_object(self) -> WorldObject | None:
        return None if self.sound is None else self.objects[self.sound.source]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "objects": [asdict(o) | {"start": list(o.start)} for o in self.objects],
            "sound": None if self.sound is None else {
                "source": self.sound.source, "name": SOUNDS[self.objects[self.sound.source].shape][0],
                "frequency_hz": SOUNDS[self.objects[self.sound.source].shape][1],
                "beeps": [list(b) for b in self.sound.beeps],
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scene:
        objects = tuple(WorldObject(**(o | {"start": tuple(o["start"])})) for o in data["objects"])
        sound = data.get("sound")
        return cls(data["id"], objects, None if sound is None else
                   Sound(sound["source"], tuple(tuple(b) for b in sound["beeps"])))


# ----- sampling -------------------------------------------------------------------------


def sample_scene(rng: np.random.Generator, scene_id: str, *, p_two: float = 0.7, p_sound: float = 0.8,
                 world: WorldSettings = WORLD) -> Scene:
    """Draw one scene: 1-2 objects with distinct shape, colour and motion; usually one sounding object."""
    count = 2 if rng.random() < p_two else 1
    shapes = rng.choice(len(SHAPES), size=count, replace=False)
    colours = rng.choice(len(COLOURS), size=count, replace=False)
    motions = rng.choice(len(MOTIONS), size=count, replace=False)
    for _ in range(100):  # re-place until the objects never overlap much during the clip
        objects = tuple(
            _sample_object(rng, SHAPES[s], list(COLOURS)[c], list(MOTIONS)[m], world)
            for s, c, m in zip(shapes, colours, motions)
        )
        if count == 1 or _min_gap(objects, world) >= 2.0:
            break
    sound = None
    if rng.random() < p_sound:
        beeps = int(rng.integers(1, 4))
        latest = world.duration_s - (beeps - 1) * world.beep_gap_s - world.beep_s - 0.1
        first = round(float(rng.uniform(0.1, latest)), 3)
        sound = Sound(int(rng.integers(count)), tuple(
            (round(first + k * world.beep_gap_s, 3), round(first + k * world.beep_gap_s + world.beep_s, 3))
            for k in range(beeps)))
    return Scene(scene_id, objects, sound)


def _sample_object(rng: np.random.Generator, shape: str, colour: str, motion: str, world: WorldSettings) -> WorldObject:
    size = list(SIZES)[int(rng.integers(len(SIZES)))]
    half = SIZES[size] * world.size / 32
    dx, dy = MOTIONS[motion]
    margin = half + 1
    # Start so that the whole path stays inside the frame.
    low_x, high_x = margin - min(dx, 0) * world.travel_px, world.size - margin - max(dx, 0) * world.travel_px
    low_y, high_y = margin - min(dy, 0) * world.travel_px, world.size - margin - max(dy, 0) * world.travel_px
    start = (round(float(rng.uniform(low_x, high_x)), 2), round(float(rng.uniform(low_y, high_y)), 2))
    depth = int(rng.integers(world.depth_range_mm[0] // 10, world.depth_range_mm[1] // 10 + 1)) * 10
    return WorldObject(shape, colour, size, motion, start, depth)


def _min_gap(objects: tuple[WorldObject, ...], world: WorldSettings) -> float:
    """Smallest distance between the two objects' outlines (approximately) over the clip."""
    a, b = objects
    reach = (SIZES[a.size] + SIZES[b.size]) * world.size / 32
    gaps = []
    for t in np.linspace(0, world.duration_s, world.num_frames + 1):
        (ax, ay), (bx, by) = a.position(float(t), world), b.position(float(t), world)
        gaps.append(max(abs(ax - bx), abs(ay - by)) - reach)
    return min(gaps)


# ----- rendering ----------------------------------------------------------------------


def frame_times(world: WorldSettings = WORLD) -> np.ndarray:
    """Time (s) at which each rendered frame is shown: frame k at k / fps."""
    return np.arange(world.num_frames) / world.fps


def object_mask(obj: WorldObject, t: float, world: WorldSettings = WORLD) -> np.ndarray:
    """Boolean (H, W) mask of the pixels the object covers at time t (pixel centres at i + 0.5)."""
    cx, cy = obj.position(t, world)
    half = SIZES[obj.size] * world.size / 32
    ys, xs = np.mgrid[0:world.size, 0:world.size] + 0.5
    u, v = xs - cx, ys - cy
    if obj.shape == "ball":
        return u * u + v * v <= half * half
    if obj.shape == "box":
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    # triangle pointing up: apex at (0, -half), base at v = +half
    return (v <= half) & (v >= -half) & (np.abs(u) <= (v + half) / 2)


def _front_to_back(scene: Scene) -> list[WorldObject]:
    return sorted(scene.objects, key=lambda o: -o.depth_mm)  # far first, near painted last


def render_frames(scene: Scene, world: WorldSettings = WORLD) -> np.ndarray:
    """RGB frames (F, H, W, 3) uint8; nearer objects hide farther ones."""
    frames = np.empty((world.num_frames, world.size, world.size, 3), dtype=np.uint8)
    for k, t in enumerate(frame_times(world)):
        frames[k] = BACKGROUND_RGB
        for obj in _front_to_back(scene):
            frames[k][object_mask(obj, float(t), world)] = COLOURS[obj.colour]
    return frames


def render_depth(scene: Scene, world: WorldSettings = WORLD) -> np.ndarray:
    """Depth maps (F, H, W) uint16 in millimetres: nearest object's depth, background wall elsewhere."""
    depth = np.full((world.num_frames, world.size, world.size), world.background_depth_mm, dtype=np.uint16)
    for k, t in enumerate(frame_times(world)):
        for obj in _front_to_back(scene):
            depth[k][object_mask(obj, float(t), world)] = obj.depth_mm
    return depth


def synthesize_audio(scene: Scene, rng: np.random.Generator, world: WorldSettings = WORLD) -> np.ndarray:
    """Mono float32 waveform (samples,) in [-1, 1]: the sounding object's tone during each beep, plus hiss."""
    samples = world.num_samples
    audio = (rng.standard_normal(samples) * world.noise_amplitude).astype(np.float64)
    if scene.sound is not None:
        frequency = SOUNDS[scene.sounding_object.shape][1]
        t = np.arange(samples) / world.sample_rate
        tone = np.sin(2 * np.pi * frequency * t)
        ramp = int(0.01 * world.sample_rate)  # 10 ms fades avoid clicks (broadband energy)
        for start, end in scene.sound.beeps:
            a, b = int(round(start * world.sample_rate)), int(round(end * world.sample_rate))
            envelope = np.ones(b - a)
            envelope[:ramp] = np.linspace(0, 1, ramp)
            envelope[-ramp:] = np.linspace(1, 0, ramp)
            audio[a:b] += world.tone_amplitude * envelope * tone[a:b]
    return np.clip(audio, -1, 1).astype(np.float32)


def camera_intrinsics(world: WorldSettings = WORLD) -> np.ndarray:
    """4x4 pinhole intrinsics of the depth camera (ScanNet `intrinsic_depth.txt` layout), 90° field of view."""
    focal = world.size / 2
    matrix = np.eye(4)
    matrix[0, 0] = matrix[1, 1] = focal
    matrix[0, 2] = matrix[1, 2] = world.size / 2 - 0.5
    return matrix
