"""Writing a synthetic tree: its audio clips in parallel, the SYNTHETIC markers, all-or-nothing.

A layout module plans a ``TreePlan``: the clips (where each wav goes, how it sounds) and a function that
writes the label files. ``write_tree`` builds the tree in a temporary sibling of ``out`` and renames it
onto ``out`` at the end, with a ``SYNTHETIC_CORPUS.txt`` readme (prep marks its data dir synthetic by it)
and, last, ``SYNTHETIC_CORPUS.json`` (layout, size, seed, version, summary): a second run with the same
settings finds it and does nothing.
"""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sertk.corpora.common import SYNTHETIC_MARKER
from sertk.corpora.synthetic.voice import SAMPLE_RATE, Voice, label_target, render, room_response
from sertk.errors import SertkError
from sertk.utils import atomic_path, atomic_write_text, console

MARKER = "SYNTHETIC_CORPUS.json"
README = SYNTHETIC_MARKER
# Bump when the output of a given (layout, size, seed) changes, so that an old tree is not silently reused.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class Clip:
    """One audio file of a synthetic tree: where it goes, what it is labelled, how it sounds.

    ``seed`` seeds the clip's own random stream and ``room`` the room impulse response (a session's or a
    studio's, shared by its clips), so any clip can be rendered alone, in any worker, identically.
    """

    path: str  # relative to the tree's root
    duration: float  # seconds
    label: str  # the sertk code the prosody follows
    speaker: str
    voice: Voice
    target: tuple[float, ...]  # prosody target, voice.PROSODY_FIELDS order
    seed: tuple[int, ...]
    room: tuple[int, ...]


@dataclass(frozen=True)
class Recording:
    """One speaker in one room: makes the speaker's clips, numbered on in the layout's seed stream."""

    stream: tuple[int, int]  # (corpus seed, layout stream): clip i is seeded (*stream, i)
    room: tuple[int, ...]
    speaker: str
    voice: Voice

    def clips(self, first: int, files: list[tuple[str, str, float]], durations: list[float]) -> list[Clip]:
        """Clips ``first``, ``first + 1``, ... of ``files``: (path, label, strength away from neutral)."""
        return [
            Clip(
                path,
                duration,
                code,
                self.speaker,
                self.voice,
                tuple(label_target(code, strength)),
                (*self.stream, first + i),
                self.room,
            )
            for i, ((path, code, strength), duration) in enumerate(zip(files, durations, strict=True))
        ]


@dataclass(frozen=True)
class Durations:
    """Clip durations: lognormal around ``median`` seconds, clipped to [lo, hi]."""

    median: float
    sigma: float
    lo: float
    hi: float

    def draw(self, n: int, rng: np.random.Generator) -> list[float]:
        d = np.clip(np.exp(rng.normal(np.log(self.median), self.sigma, n)), self.lo, self.hi)
        return [round(float(x), 4) for x in d]


# The clips of every tiny tree: about a second each, like IEMOCAP's tiny turns.
TINY_CLIPS = Durations(1.0, 0.25, 0.6, 1.6)


@dataclass
class TreePlan:
    """Everything a layout writes: clips, label files (``write_labels(root)``), extra summary fields."""

    clips: list[Clip]
    write_labels: Callable[[Path], None]
    summary: dict = field(default_factory=dict)


def render_clip(clip: Clip) -> np.ndarray:
    room = room_response(np.random.default_rng(list(clip.room)))
    return render(
        clip.duration, np.array(clip.target), clip.voice, room, np.random.default_rng(list(clip.seed))
    )


def _write_clip(job: tuple[Path, Clip]) -> None:
    """Synthesise one clip and write it atomically; top-level so that spawned workers can run it."""
    root, clip = job
    audio = np.round(render_clip(clip) * 32767).astype(np.int16)
    with atomic_path(root / clip.path) as tmp:
        sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def write_audio(root: Path, clips: list[Clip], nj: int) -> None:
    jobs = [(root, clip) for clip in clips]
    columns = (TextColumn("synth audio"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("synth", total=len(jobs))
        if nj == 1:
            for job in jobs:
                _write_clip(job)
                progress.advance(task)
            return
        # spawn: workers must not inherit the parent's threads (torch) or open files.
        with multiprocessing.get_context("spawn").Pool(nj) as pool:
            for _ in pool.imap_unordered(_write_clip, jobs, chunksize=8):
                progress.advance(task)


def summarize(out: Path, title: str, plan: TreePlan) -> dict:
    return {
        "root": str(out),
        "layout": title,
        "utterances": len(plan.clips),
        "hours": round(sum(c.duration for c in plan.clips) / 3600, 4),
        **plan.summary,
        "speakers": len({c.speaker for c in plan.clips}),
        "labels": dict(sorted(Counter(c.label for c in plan.clips).items())),
    }


def readme(title: str, command: str, size: str, seed: int, summary: dict) -> str:
    return (
        f"THIS IS A SYNTHETIC CORPUS, NOT {title.upper()}.\n\n"
        f"It was generated by sertk.corpora.synthetic (`{command}`) in the {title} layout so that every\n"
        "sertk stage can run without the real data. The audio is formant-synthesised speech whose prosody\n"
        "follows the label; the labels, speakers and texts are random. Results computed on it say nothing\n"
        "about emotion recognition on real speech, and every sertk output made from it is marked synthetic\n"
        "(sertk prep detects this file).\n\n"
        f"size: {size}\nseed: {seed}\nutterances: {summary['utterances']}\nhours: {summary['hours']}\n"
    )


def read_marker(out: Path) -> dict | None:
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("summary"), dict) else None


def existing_tree(out: Path, layout: str, size: str, seed: int) -> dict | None:
    """The summary of the same tree already at ``out``, None if ``out`` is free; SertkError otherwise."""
    if not out.exists():
        return None
    marker = read_marker(out)
    wanted = {"layout": layout, "size": size, "seed": seed, "version": GENERATOR_VERSION}
    # Trees written before there were other layouts are IEMOCAP trees.
    if marker is not None and all(
        marker.get(k, "iemocap" if k == "layout" else None) == v for k, v in wanted.items()
    ):
        console.print(
            f"{out}: already holds the synthetic {layout} corpus (size={size}, seed={seed}); skipping"
        )
        return {**marker["summary"], "root": str(out)}
    if not out.is_dir() or any(out.iterdir()):
        raise SertkError(
            f"{out}: exists and is not the synthetic corpus size={size} seed={seed} ({layout}); "
            "remove it or choose another directory"
        )
    return None


def write_tree(out: Path, layout: str, title: str, plan: TreePlan, settings: tuple[str, int, int]) -> dict:
    """Write ``plan`` as the tree ``out`` (built aside, renamed at the end); ``settings`` = (size, seed, nj)."""
    size, seed, nj = settings
    summary = summarize(out, title, plan)
    command = f"sertk synth --corpus {layout} --size {size} --seed {seed}"
    with atomic_path(out) as tmp:
        tmp.mkdir()
        atomic_write_text(tmp / README, readme(title, command, size, seed, summary))
        plan.write_labels(tmp)
        write_audio(tmp, plan.clips, nj)
        # Written last: its presence means the tree is complete.
        marker = {
            "layout": layout,
            "size": size,
            "seed": seed,
            "version": GENERATOR_VERSION,
            "summary": summary,
        }
        atomic_write_text(tmp / MARKER, json.dumps(marker, indent=2) + "\n")
    return summary
