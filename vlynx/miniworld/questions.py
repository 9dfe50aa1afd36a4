"""Questions, answers and captions about a scene, and the world's full word vocabulary.

Every answer is one word, so accuracy is exact match. Categories say which senses a
question needs: `video` (seen), `audio` (heard), `audio-visual` (which object is heard
must come from the sound, the asked property from the picture; only asked when the two
objects differ in that property so vision alone is a coin toss).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlynx.miniworld.world import COLOURS, MOTIONS, SHAPES, SIZES, SOUNDS, Scene, Sound, WorldObject

NUMBERS = ("zero", "one", "two", "three")
CATEGORIES = ("video", "audio", "audio-visual")
CAPTION_PROMPT = "describe the video ."
NO_SOUND = "none"


@dataclass(frozen=True)
class Question:
    category: str  # video | audio | audio-visual
    kind: str  # template name, e.g. "colour-of-shape"
    text: str
    answer: str


def _colour_of(obj: WorldObject) -> Question:
    return Question("video", "colour-of-shape", f"what colour is the {obj.shape} ?", obj.colour)


def _shape_of(obj: WorldObject) -> Question:
    return Question("video", "shape-of-colour", f"what shape is the {obj.colour} object ?", obj.shape)


def _motion_of(obj: WorldObject) -> Question:
    return Question("video", "motion-of-shape", f"which way is the {obj.shape} moving ?", obj.motion)


def _size_of(obj: WorldObject) -> Question:
    return Question("video", "size-of-shape", f"is the {obj.shape} big or small ?", obj.size)


def _count(scene: Scene) -> Question:
    return Question("video", "object-count", "how many objects are there ?", NUMBERS[len(scene.objects)])


def video_questions(scene: Scene) -> list[Question]:
    """Every video-only question about the scene (used for pretraining)."""
    questions = [_count(scene)]
    for obj in scene.objects:
        questions += [_colour_of(obj), _shape_of(obj), _motion_of(obj), _size_of(obj)]
    return questions


def audio_questions(scene: Scene) -> list[Question]:
    sounding = scene.sounding_object
    name = NO_SOUND if sounding is None else SOUNDS[sounding.shape][0]
    beeps = 0 if scene.sound is None else len(scene.sound.beeps)
    return [
        Question("audio", "sound-name", "what sound do you hear ?", name),
        Question("audio", "beep-count", "how many beeps do you hear ?", NUMBERS[beeps]),
    ]


def audio_visual_questions(scene: Scene) -> list[Question]:
    """Questions about the sounding object's look; only where the other object looks different."""
    sounding = scene.sounding_object
    if sounding is None or len(scene.objects) < 2:
        return []
    other = next(o for i, o in enumerate(scene.objects) if i != scene.sound.source)
    questions = []
    if sounding.colour != other.colour:
        questions.append(Question("audio-visual", "colour-of-sounding", "what colour is the object making the sound ?",
                                  sounding.colour))
    if sounding.motion != other.motion:
        questions.append(Question("audio-visual", "motion-of-sounding", "which way is the sounding object moving ?",
                                  sounding.motion))
    if sounding.size != other.size:
        questions.append(Question("audio-visual", "size-of-sounding", "is the sounding object big or small ?",
                                  sounding.size))
    return questions


def instruction_questions(scene: Scene, rng: np.random.Generator) -> list[Question]:
    """The questions written for a train/test scene: three video questions about one object
    (drawn by `rng`), both audio questions and every applicable audio-visual question."""
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    return [_colour_of(obj), _shape_of(obj), _motion_of(obj)] + audio_questions(scene) + audio_visual_questions(scene)


def caption(scene: Scene) -> str:
    """One sentence naming every object's size, colour, shape and motion, e.g. 'a big red ball moves left .'"""
    parts = []
    for obj in scene.objects:
        movement = "stays still" if obj.motion == "still" else f"moves {obj.motion}"
        parts.append(f"a {obj.size} {obj.colour} {obj.shape} {movement}")
    return " and ".join(parts) + " ."


def all_texts() -> list[str]:
    """Every question template filled with every value, every answer and caption word: the world's language."""
    texts = [CAPTION_PROMPT, "a and stays still moves .", NO_SOUND, *NUMBERS]
    texts += [name for name, _ in SOUNDS.values()]
    for shape in SHAPES:
        for colour in COLOURS:
            for size in SIZES:
                for motion in MOTIONS:
                    obj = WorldObject(shape, colour, size, motion, (0.0, 0.0), 1000)
                    texts += [q.text + " " + q.answer for q in
                              (_colour_of(obj), _shape_of(obj), _motion_of(obj), _size_of(obj))]
    # Two objects that differ in everything, one sounding: every audio and audio-visual template applies.
    pair = (WorldObject("ball", "red", "big", "still", (0.0, 0.0), 1000),
            WorldObject("box", "blue", "small", "left", (0.0, 0.0), 1000))
    scene = Scene("x", pair, Sound(0, ((0.0, 0.2),)))
    texts += [q.text for q in audio_questions(scene) + audio_visual_questions(scene) + [_count(scene)]]
    return texts


def build_tokenizer():
    """The world's word tokenizer (special ids as the tiny preset; ChatML template)."""
    from vlynx.word_tokenizer import build_word_tokenizer

    return build_word_tokenizer(all_texts())
