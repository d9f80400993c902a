"""The synthetic CREMA-D layout: ``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav`` and its label files.

Actors 1001..10NN (synthetic sexes, alternating, and ages in VideoDemographics.csv) speak every emotion
(tiny: 10 actors once, small: 20 actors three times) with distinct random sentences of the real twelve;
IEO takes have a level (LO/MD/HI), the others XX, as in the real corpus. processedResults/tabulatedVotes.csv
has one row per clip and presentation mode (voice only, face only, audio-visual; index 100000 * mode +
clip number), the raters' counts drawn around the acted emotion, most often agreeing in the audio-visual
mode as the real ratings do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sertk.corpora.cremad import DEMOGRAPHICS, EMOTIONS, ID_PREFIX, SENTENCES, VOTE_COLUMNS, VOTES
from sertk.corpora.synthetic.tree import TINY_CLIPS, Clip, Durations, Recording, TreePlan
from sertk.corpora.synthetic.voice import draw_voice
from sertk.utils import atomic_write_text

TITLE = "CREMA-D"
SIZES = {"tiny": (10, 1, TINY_CLIPS), "small": (20, 3, Durations(2.5, 0.2, 1.5, 4.5))}
STREAM = 22
# P(a rater picks the acted emotion) per mode: voice only, face only, audio-visual.
AGREEMENT = {1: 0.5, 2: 0.6, 3: 0.7}
MEAN_COLUMNS = (
    "meanEmoResp", "meanAngerResp", "meanDisgustResp", "meanFearResp", "meanHappyResp", "meanNeutralResp",
    "meanSadResp", "medianEmoResp", "meanEmoRespNorm", "meanAngerRespNorm", "meanDisgustRespNorm",
    "meanFearRespNorm", "meanHappyRespNorm", "meanNeutralRespNorm", "meanSadRespNorm", "medianEmoRespNorm",
)  # fmt: skip


def _actor_clips(actor: int, takes: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(file stem, acted emotion) of one actor."""
    names = []
    for emotion in EMOTIONS:
        for sentence in [str(s) for s in rng.choice(list(SENTENCES), takes, replace=False)]:
            level = str(rng.choice(["LO", "MD", "HI"])) if sentence == "IEO" and emotion != "NEU" else "XX"
            names.append((f"{actor}_{sentence}_{emotion}_{level}", emotion))
    return names


def _vote_rows(stems: list[str], rng: np.random.Generator) -> list[str]:
    rows = []
    codes = list(VOTE_COLUMNS.values())
    for mode, agree in AGREEMENT.items():
        for number, stem in enumerate(stems, 1):
            acted = codes.index(EMOTIONS[stem.split("_")[2]])
            p = np.full(len(codes), (1 - agree) / (len(codes) - 1))
            p[acted] = agree
            counts = rng.multinomial(int(rng.integers(6, 12)), p)
            top = counts.max()
            vote = ":".join(col for col, n in zip(VOTE_COLUMNS, counts, strict=True) if n == top)
            means = ",".join(f"{rng.uniform(20, 90):.4f}" for _ in MEAN_COLUMNS)
            n = int(counts.sum())
            rows.append(
                f'"{100000 * mode + number}",{",".join(map(str, counts))},"{stem}",{n},{top / n},"{vote}",{means}'
            )
    return rows


def _write_labels(root: Path, actors: dict[int, str], stems: list[str], seed: int) -> None:
    rng = np.random.default_rng([seed, STREAM, 1])
    lines = ['"ActorID","Age","Sex","Race","Ethnicity"']
    lines += [
        f'{a},{int(rng.integers(20, 75))},"{sex}","Unknown","Not Hispanic"' for a, sex in actors.items()
    ]
    atomic_write_text(root / DEMOGRAPHICS, "\n".join(lines) + "\n")
    header = [
        '""',
        *(f'"{c}"' for c in VOTE_COLUMNS),
        '"fileName"',
        '"numResponses"',
        '"agreement"',
        '"emoVote"',
    ]
    header += [f'"{c}"' for c in MEAN_COLUMNS]
    atomic_write_text(root / VOTES, "\n".join([",".join(header), *_vote_rows(stems, rng)]) + "\n")


def plan_tree(size: str, seed: int) -> TreePlan:
    count, takes, durations = SIZES[size]
    rng = np.random.default_rng([seed, STREAM])
    actors = {1001 + i: "Male" if i % 2 == 0 else "Female" for i in range(count)}
    clips: list[Clip] = []
    for actor, sex in actors.items():
        voice = draw_voice(sex[0], rng)
        names = _actor_clips(actor, takes, rng)
        files = [(f"AudioWAV/{stem}.wav", EMOTIONS[emotion], 1.0) for stem, emotion in names]
        recording = Recording((seed, STREAM), (seed, STREAM), f"{ID_PREFIX}{actor}", voice)
        clips += recording.clips(len(clips), files, durations.draw(len(files), rng))
    stems = [Path(c.path).stem for c in clips]
    return TreePlan(clips, write_labels=lambda root: _write_labels(root, actors, stems, seed))
