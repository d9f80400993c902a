"""The synthetic EmoDB layout: ``wav/<speaker><text><emotion><version>.wav`` for EmoDB's ten speakers.

Every speaker speaks every emotion (tiny: once, small: three times) with random texts of the real ten; a
text repeated in one emotion gets the next version letter, as the real takes do. No label files: in
EmoDB the file name is the annotation. One room (EmoDB was recorded in one studio).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from sertk.corpora.emodb import EMOTIONS, SPEAKER_SEX, TEXTS, speaker_id
from sertk.corpora.synthetic.tree import TINY_CLIPS, Clip, Durations, Recording, TreePlan
from sertk.corpora.synthetic.voice import draw_voice

NAME = "emodb"
TITLE = "EmoDB"
# size -> (takes per speaker and emotion, clip durations); the real corpus: 535 clips, ~2.8 s on average.
SIZES = {"tiny": (1, TINY_CLIPS), "small": (3, Durations(2.4, 0.35, 1.2, 6.0))}
STREAM = 20  # this layout's random streams: [seed, STREAM, ...]
VERSIONS = "abcdefghij"


def plan_tree(size: str, seed: int) -> TreePlan:
    takes, durations = SIZES[size]
    rng = np.random.default_rng([seed, STREAM])
    clips: list[Clip] = []
    for number, sex in SPEAKER_SEX.items():
        voice = draw_voice(sex, rng)
        versions: Counter[tuple[str, str]] = Counter()
        files = []
        for letter, code in EMOTIONS.items():
            for text in [str(t) for t in rng.choice(list(TEXTS), takes)]:
                files.append((f"wav/{number}{text}{letter}{VERSIONS[versions[text, letter]]}.wav", code, 1.0))
                versions[text, letter] += 1
        recording = Recording((seed, STREAM), (seed, STREAM), speaker_id(number), voice)
        clips += recording.clips(len(clips), files, durations.draw(len(files), rng))
    return TreePlan(clips, write_labels=lambda root: None)
