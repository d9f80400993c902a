"""The synthetic MSP-Podcast layout: ``Audios/MSP-PODCAST_<podcast>_<turn>.wav`` and labels_consensus.csv.

Speaker-independent partitions as in the real corpus (tiny: Train 8 speakers, Development 3, Test1 3,
Test2 2, and a few Test3 turns whose labels are withheld). Each speaker is one podcast (its own room);
about one turn in eight has an Unknown speaker. Train holds every EmoClass at least twice, the other labelled
partitions each of the four main classes at least once; the rest follows MSP-Podcast's skew towards neutral.
EmoAct/EmoVal/EmoDom are drawn around the label's attributes on the 1-7 scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sertk.corpora.msppodcast import COLUMNS, EMOTIONS, LABELS, speaker_and_utt
from sertk.corpora.synthetic.tree import TINY_CLIPS, Clip, Durations, Recording, TreePlan
from sertk.corpora.synthetic.voice import draw_voice
from sertk.utils import atomic_write_text

TITLE = "MSP-Podcast"
# size -> ({partition: (speakers, labelled turns)}, durations); Test3's turns have withheld labels.
SIZES = {
    "tiny": (
        {"Train": (8, 60), "Development": (3, 20), "Test1": (3, 20), "Test2": (2, 10), "Test3": (1, 4)},
        TINY_CLIPS,
    ),
    "small": (
        {"Train": (20, 300), "Development": (6, 80), "Test1": (6, 80), "Test2": (4, 40), "Test3": (2, 20)},
        Durations(4.5, 0.45, 2.75, 11.0),
    ),
}
STREAM = 23
CODE_OF = {code: letter for letter, code in EMOTIONS.items()}
# Label proportions, roughly MSP-Podcast's: mostly neutral, many turns without agreement.
SKEW = {
    "neu": 0.30, "hap": 0.14, "ang": 0.07, "sad": 0.07, "sur": 0.03,
    "fea": 0.02, "dis": 0.02, "con": 0.05, "oth": 0.05, "xxx": 0.25,
}  # fmt: skip
# (valence, arousal, dominance) of each label on the 1-7 scale.
ATTRIBUTES = {
    "neu": (4.0, 3.8, 4.0), "hap": (5.5, 4.6, 4.4), "ang": (2.4, 5.6, 5.4), "sad": (2.6, 3.0, 3.2),
    "sur": (4.8, 5.2, 4.2), "fea": (2.6, 5.0, 3.0), "dis": (2.4, 4.4, 4.8), "con": (2.8, 4.2, 5.0),
    "oth": (3.8, 4.2, 4.0), "xxx": (3.8, 4.2, 4.0),
}  # fmt: skip
UNKNOWN_SHARE = 0.125


def _labels(partition: str, n: int, rng: np.random.Generator) -> list[str]:
    """Each code twice (Train) or each main class once (others) first, the rest by SKEW, shuffled."""
    first = [c for c in SKEW for _ in range(2)] if partition == "Train" else ["neu", "hap", "ang", "sad"]
    rest = rng.choice(list(SKEW), n - len(first), p=np.array(list(SKEW.values())) / sum(SKEW.values()))
    labels = first + [str(c) for c in rest]
    rng.shuffle(labels)
    return labels


def _row(name: str, code: str, speaker: str, gender: str, partition: str, rng: np.random.Generator) -> str:
    """A labels_consensus.csv line (EmoClass and attributes empty for Test3's withheld labels)."""
    if partition == "Test3":
        return f"{name},,,,,{speaker},{gender},{partition}"
    val, act, dom = np.clip(np.array(ATTRIBUTES[code]) + rng.normal(0, 0.5, 3), 1, 7)
    return f"{name},{CODE_OF[code]},{act:.1f},{val:.1f},{dom:.1f},{speaker},{gender},{partition}"


def plan_tree(size: str, seed: int) -> TreePlan:
    partitions, durations = SIZES[size]
    rng = np.random.default_rng([seed, STREAM])
    clips: list[Clip] = []
    rows: list[str] = []
    speaker_number = 0
    for p_index, (partition, (speakers, turns)) in enumerate(partitions.items()):
        numbers = list(range(speaker_number + 1, speaker_number + speakers + 1))
        speaker_number += speakers
        voices = {k: draw_voice("F" if k % 2 else "M", rng) for k in numbers}
        segments: dict[int, int] = {}
        for code, duration in zip(_labels(partition, turns, rng), durations.draw(turns, rng), strict=True):
            unknown = rng.uniform() < UNKNOWN_SHARE
            podcast = 9000 + p_index if unknown else int(rng.choice(numbers))
            segments[podcast] = segments.get(podcast, 0) + 1
            name = f"MSP-PODCAST_{podcast:04d}_{segments[podcast]:04d}.wav"
            spkr_id, gender = (
                ("Unknown", "Unknown") if unknown else (str(podcast), "Female" if podcast % 2 else "Male")
            )
            voice = draw_voice(str(rng.choice(["F", "M"])), rng) if unknown else voices[podcast]
            speaker = speaker_and_utt(spkr_id, Path(name).stem)[0]
            recording = Recording((seed, STREAM), (seed, STREAM, podcast), speaker, voice)
            clips += recording.clips(len(clips), [(f"Audios/{name}", code, 1.0)], [duration])
            rows.append(_row(name, code, spkr_id, gender, partition, rng))
    text = "\n".join([",".join(COLUMNS), *rows]) + "\n"
    return TreePlan(clips, write_labels=lambda root: atomic_write_text(root / LABELS, text))
