"""The synthetic IEMOCAP_full_release layout, for running every stage without the real data.

``plan_tree(size, seed)`` (sizes tiny, small, full) turns ``iemocap_plan.plan_corpus`` into the tree the
real release is:

- ``SessionN/sentences/wav/<dialog>/<utt>.wav``: 16 kHz mono PCM16, one file per labelled turn;
- ``SessionN/dialog/EmoEvaluation/<dialog>.txt``: the header line, then one block per turn (summary line
  ``[start - end]<TAB>utt<TAB>code<TAB>[V, A, D]``, ``C-E*`` votes, ``C-F1``/``C-M1`` self-ratings,
  ``A-E*`` attribute lines), plus the ``Categorical/``, ``Attribute/`` and ``Self-evaluation/`` sub-folders;
- ``SessionN/dialog/transcriptions/<dialog>.txt``: every turn in time order, including ``..._MXX0`` turns
  that have no wav and no EmoEvaluation block.

The audio is ``synthetic.voice``'s source-filter speech: each speaker has a voice, each session a room,
and a turn's prosody follows its label (an ``xxx`` turn: the mixture of its raters' votes).
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np

from sertk.corpora.synthetic.iemocap_plan import (
    CATEGORY_NAMES,
    COMMENTS,
    OTHER_WORDS,
    SESSIONS,
    SIZES,
    UttPlan,
    plan_corpus,
)
from sertk.corpora.synthetic.tree import Clip, TreePlan, render_clip
from sertk.corpora.synthetic.voice import Voice, base_weights, blend, draw_voice, prosody_target
from sertk.utils import atomic_write_text

NAME = "iemocap"
TITLE = "IEMOCAP"
__all__ = ["SIZES", "plan_tree", "synthesize"]


# ------------------------------------------------------------------------------------------- text files


def _format_votes(codes: list[str], rng: np.random.Generator) -> str:
    names = []
    for code in codes:
        name = CATEGORY_NAMES[code]
        if code == "oth" and rng.uniform() < 0.6:
            name += ":" + str(rng.choice(OTHER_WORDS))
        names.append(name + ";")
    return " ".join(names)


def _comment(rng: np.random.Generator, p: float = 0.1) -> str:
    return f"({rng.choice(COMMENTS)})" if rng.uniform() < p else "()"


def _emo_evaluation_text(turns: list[UttPlan], rng: np.random.Generator) -> str:
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for t in turns:
        v, a, d = t.vad
        lines.append(f"[{t.start:.4f} - {t.end:.4f}]\t{t.utt}\t{t.label}\t[{v:.4f}, {a:.4f}, {d:.4f}]")
        for rater, vote in zip(t.evaluators, t.votes, strict=True):
            lines.append(f"C-{rater}:\t{_format_votes(vote, rng)}\t{_comment(rng)}")
        if t.self_rating is not None:
            lines.append(f"C-{t.gender}1:\t{_format_votes(t.self_rating, rng)}\t{_comment(rng, 0.5)}")
        for rater, val, act, dom in t.attributes:
            lines.append(f"A-{rater}:\tval {val}; act {act}; dom  {dom};\t{_comment(rng)}")
        if t.self_rating is not None:
            val, act, dom = (int(x) for x in rng.integers(1, 6, 3))
            lines.append(f"A-{t.gender}1:\tval {val}; act {act}; dom  {dom};\t()")
        lines.append("")
    return "\n".join(lines) + "\n"


def _transcription_text(turns: list[UttPlan], rng: np.random.Generator, with_xx: bool) -> str:
    """Every turn in time order; ``with_xx`` adds turns like ``..._MXX0`` that have no wav or label."""
    entries = [(t.start, t.end, t.utt, t.text) for t in turns]
    if with_xx:
        # Short back-channel turns inside the gaps between labelled turns (or after the last one).
        counters = {"F": 0, "M": 0}
        gaps = [(a.end, b.start) for a, b in pairwise(turns) if b.start - a.end > 0.5]
        gaps.append((turns[-1].end, turns[-1].end + 3.0))
        for i in sorted(rng.choice(len(gaps), min(len(gaps), int(rng.integers(1, 3))), replace=False)):
            gap_start, gap_end = gaps[i]
            start = round(gap_start + 0.1, 4)
            end = round(min(gap_end - 0.05, start + rng.uniform(0.3, 1.5)), 4)
            gender = str(rng.choice(["F", "M"]))
            text = str(rng.choice(["[LAUGHTER]", "[BREATHING]", "Mm-hmm.", "Yeah."]))
            entries.append((start, end, f"{turns[0].dialog}_{gender}XX{counters[gender]}", text))
            counters[gender] += 1
    entries.sort()
    return "".join(f"{utt} [{s:08.4f}-{e:08.4f}]: {text}\n" for s, e, utt, text in entries)


def _write_text_files(root: Path, plans: list[UttPlan], seed: int) -> None:
    rng = np.random.default_rng([seed, 2])
    dialogs: dict[str, list[UttPlan]] = {}
    for plan in plans:
        dialogs.setdefault(plan.dialog, []).append(plan)
    first_of_session: set[int] = set()
    for dialog, turns in dialogs.items():
        session_dir = root / f"Session{turns[0].session}" / "dialog"
        emo_dir = session_dir / "EmoEvaluation"
        atomic_write_text(emo_dir / f"{dialog}.txt", _emo_evaluation_text(turns, rng))
        # A few XX turns per session: always in its first dialog, then in about one dialog in six.
        with_xx = turns[0].session not in first_of_session or rng.uniform() < 0.17
        first_of_session.add(turns[0].session)
        atomic_write_text(
            session_dir / "transcriptions" / f"{dialog}.txt", _transcription_text(turns, rng, with_xx)
        )
        _write_sub_folders(emo_dir, dialog, turns, rng)


def _write_sub_folders(emo_dir: Path, dialog: str, turns: list[UttPlan], rng: np.random.Generator) -> None:
    """Per-evaluator files the real release keeps beside the EmoEvaluation files (parsers must skip them)."""
    by_rater: dict[str, list[str]] = {}
    for t in turns:
        for rater, vote in zip(t.evaluators, t.votes, strict=True):
            by_rater.setdefault(rater, []).append(f"{t.utt} :{_format_votes(vote, rng)} {_comment(rng)}")
    for rater, lines in sorted(by_rater.items()):
        atomic_write_text(
            emo_dir / "Categorical" / f"{dialog}_{rater.lower()}_cat.txt", "\n".join(lines) + "\n"
        )
    by_rater = {}
    for t in turns:
        for rater, val, act, dom in t.attributes:
            by_rater.setdefault(rater, []).append(f"{t.utt} :act {act}; val {val}; dom  {dom}; ()")
    for rater, lines in sorted(by_rater.items()):
        atomic_write_text(
            emo_dir / "Attribute" / f"{dialog}_{rater.lower()}_atr.txt", "\n".join(lines) + "\n"
        )
    rated = [t for t in turns if t.self_rating is not None]
    if rated:
        lines = [f"{t.utt} :{_format_votes(t.self_rating or [], rng)} ()" for t in rated]
        atomic_write_text(emo_dir / "Self-evaluation" / f"{dialog}.txt", "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------- audio


def _prosody_mix(plan: UttPlan) -> np.ndarray:
    """The class target of a turn: a basic class, a fixed mixture, or for xxx the mixture of its votes."""
    if plan.label != "xxx":
        return prosody_target({plan.label: 1.0})
    weights: dict[str, float] = {}
    for vote in plan.votes:
        for code in vote:
            for base, w in base_weights(code).items():
                weights[base] = weights.get(base, 0.0) + w / len(vote)
    return blend(weights)


def _speaker_voices(seed: int) -> dict[str, Voice]:
    """Speaker -> voice, for the ten actors (one F and one M per session)."""
    rng = np.random.default_rng([seed, 3])
    return {f"Ses{s:02d}{g}": draw_voice(g, rng) for s in SESSIONS for g in ("F", "M")}


def _clip(plan: UttPlan, seed: int, voices: dict[str, Voice]) -> Clip:
    """The turn's audio: its own random stream, its session's room."""
    return Clip(
        path=f"Session{plan.session}/sentences/wav/{plan.dialog}/{plan.utt}.wav",
        duration=plan.duration,
        label=plan.label,
        speaker=plan.speaker,
        voice=voices[plan.speaker],
        target=tuple(_prosody_mix(plan)),
        seed=(seed, 1, plan.index),
        room=(seed, 4, plan.session),
    )


def synthesize(plan: UttPlan, seed: int) -> np.ndarray:
    """The turn's audio as float64 in [-1, 1): source-filter speech with the turn's emotion prosody."""
    return render_clip(_clip(plan, seed, _speaker_voices(seed)))


def plan_tree(size: str, seed: int) -> TreePlan:
    """The IEMOCAP_full_release tree of ``size`` and ``seed`` (see the module docstring)."""
    plans = plan_corpus(size, seed)
    voices = _speaker_voices(seed)
    return TreePlan(
        clips=[_clip(p, seed, voices) for p in plans],
        write_labels=lambda root: _write_text_files(root, plans, seed),
        summary={"sessions": len({p.session for p in plans})},
    )
