"""The synthetic RAVDESS layout: ``Actor_XX/03-01-EE-II-SS-RR-XX.wav`` speech plus some song files.

Actors 01..N (odd male, even female) speak every emotion (tiny: 12 actors once, small: 24 actors, both
statements), with random intensity (neutral: normal only) and repetition; a strong take moves the prosody
further from neutral. The first few actors also have song files (``03-02-...``, emotions 01-06 as in the
real song set), which prep leaves out unless asked. The real audio is 48 kHz; this is 16 kHz.
"""

from __future__ import annotations

import numpy as np

from sertk.corpora.ravdess import EMOTIONS, NAME
from sertk.corpora.synthetic.tree import TINY_CLIPS, Clip, Durations, Recording, TreePlan
from sertk.corpora.synthetic.voice import draw_voice

TITLE = "RAVDESS"
# size -> (actors, takes per emotion (one per statement), actors with song files, songs each, durations).
SIZES = {"tiny": (12, 1, 4, 1, TINY_CLIPS), "small": (24, 2, 6, 6, Durations(3.3, 0.15, 2.5, 5.0))}
SONG_EMOTIONS = ("01", "02", "03", "04", "05", "06")
STRONG = 1.3  # how much further from neutral a strong (intensity 02) take is
STREAM = 21


def _names(actor: int, takes: int, songs: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(file stem, emotion code) of one actor's clips: speech, then songs."""
    names = []
    for emotion in EMOTIONS:
        for take in range(takes):
            intensity = "01" if emotion == "01" else str(rng.choice(["01", "02"]))
            repetition = str(rng.choice(["01", "02"]))
            names.append((f"03-01-{emotion}-{intensity}-0{take + 1}-{repetition}-{actor:02d}", emotion))
    for emotion in [str(e) for e in rng.choice(SONG_EMOTIONS, songs, replace=False)]:
        names.append((f"03-02-{emotion}-01-01-01-{actor:02d}", emotion))
    return names


def plan_tree(size: str, seed: int) -> TreePlan:
    actors, takes, song_actors, songs, durations = SIZES[size]
    rng = np.random.default_rng([seed, STREAM])
    clips: list[Clip] = []
    for actor in range(1, actors + 1):
        voice = draw_voice("M" if actor % 2 else "F", rng)
        names = _names(actor, takes, songs if actor <= song_actors else 0, rng)
        files = [
            (
                f"Actor_{actor:02d}/{stem}.wav",
                EMOTIONS[emotion],
                STRONG if stem.split("-")[3] == "02" else 1.0,
            )
            for stem, emotion in names
        ]
        recording = Recording((seed, STREAM), (seed, STREAM), f"{NAME}{actor:02d}", voice)
        clips += recording.clips(len(clips), files, durations.draw(len(files), rng))
    return TreePlan(clips, write_labels=lambda root: None)
