"""RAVDESS preparation: the Ryerson Audio-Visual Database of Emotional Speech and Song -> a data dir.

Corpus layout (Livingstone and Russo, 2018, PLoS ONE 13(5)), as its zips unpack into one root::

    <root>/
      Actor_01/ ... Actor_24/
        03-01-05-01-02-01-12.wav   Audio_Speech_Actors_01-24.zip: 60 speech files per actor (1440)
        03-02-...wav               Audio_Song_Actors_01-24.zip: song files (1012; actor 18 has none)
        01-01-...mp4, 02-01-...mp4 the video zips: audio-visual and video-only clips (not read)

A name is seven two-digit fields ``modality-channel-emotion-intensity-statement-repetition-actor``:
modality 01 audio-visual, 02 video-only, 03 audio-only; vocal channel 01 speech, 02 song; intensity
01 normal, 02 strong (neutral has normal only); statement 01 "Kids are talking by the door", 02 "Dogs are
sitting by the door"; repetition 01/02; actor 01-24, odd = male, even = female. Audio is 48 kHz.

Kept by default: audio-only speech (modality 03, channel 01). Song files are filtered unless
``include_song`` (they share the naming; utt2style says ``speech`` or ``song``); files of modality 01/02 are
always filtered (RAVDESS's audio is the modality-03 set) and non-wav files are ignored, each with a count.
A name that does not parse, or whose actor differs from its ``Actor_XX`` folder, is reported and skipped.

Labels -> sertk codes (calm is not neutral: it keeps a code of its own):

====  =========  ====
code  emotion    code
====  =========  ====
01    neutral    neu
02    calm       cal
03    happy      hap
04    sad        sad
05    angry      ang
06    fearful    fea
07    disgust    dis
08    surprised  sur
====  =========  ====

Ids: speaker ``ravdess12``, utterance ``ravdess12-03-01-05-01-02-01-12`` (speaker id, ``-``, file stem).
Intensity is in the id only; no utt2session, no votes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from sertk.corpora.common import (
    Candidate,
    CorpusSpec,
    PrepReport,
    build_tables,
    candidates_from_names,
    finish,
    parse_file_name,
    visible,
)
from sertk.corpora.run import run_prep
from sertk.errors import SertkError

NAME = "ravdess"
TITLE = "RAVDESS"
VERSION = 1
OPTIONS = {"include_song": (False, (False, True))}
DEFAULT_CLASSES = "neu,hap,ang,sad"
EMOTIONS = {
    "01": "neu",
    "02": "cal",
    "03": "hap",
    "04": "sad",
    "05": "ang",
    "06": "fea",
    "07": "dis",
    "08": "sur",
}
LABEL_CODES = ("neu", "cal", "hap", "sad", "ang", "fea", "dis", "sur")
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
ACTOR_DIR = re.compile(r"Actor_(\d\d)")
FILE_NAME = re.compile(
    r"(?P<modality>0[123])-(?P<channel>0[12])-(?P<emotion>\d\d)-(?P<intensity>0[12])-"
    r"(?P<statement>0[12])-(?P<repetition>0[12])-(?P<actor>\d\d)"
)
NAMING = "RAVDESS's modality-channel-emotion-intensity-statement-repetition-actor (e.g. 03-01-05-01-02-01-12)"
AUDIO_ONLY = "03"
SONG = "02"


def find_actor_dirs(root: Path) -> list[Path]:
    """The ``Actor_XX`` folders of a RAVDESS root; SertkError saying what is wrong otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise SertkError(f"{root}: RAVDESS root {'not found' if not root.exists() else 'is not a directory'}")
    actors = sorted(p for p in root.iterdir() if p.is_dir() and ACTOR_DIR.fullmatch(p.name))
    if not actors:
        nested = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("Actor_[0-9][0-9]")))
        hint = f" (did you mean {nested[0]}?)" if nested else ""
        raise SertkError(f"{root}: not a RAVDESS tree: no Actor_01 ... Actor_24 folders{hint}")
    return actors


def input_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(no label files: the names are the labels; every file in the Actor_XX folders)."""
    return [], [f for actor in find_actor_dirs(root) for f in visible(actor.iterdir())]


def prepare_ravdess(
    root: Path, out: Path, classes: str = DEFAULT_CLASSES, include_song: bool = False
) -> PrepReport:
    """Parse a RAVDESS tree ``root`` (layout and label table: the module docstring) into the data dir ``out``.

    Audio-only speech is kept (song too with ``include_song``); everything else is filtered with a count.
    A file whose name does not parse or whose wav is damaged is reported one line and skipped.
    """
    return run_prep(SPEC, root, out, classes=classes, include_song=include_song)


def parse_name(path: Path) -> tuple[dict[str, str] | None, str | None]:
    """``03-01-05-01-02-01-12.wav`` in ``Actor_12`` -> (fields, None), or (None, why it is not RAVDESS's)."""
    fields, reason = parse_file_name(path.stem, FILE_NAME, NAMING, {"emotion": ("emotion", EMOTIONS)})
    if fields is not None and fields["actor"] != path.parent.name.removeprefix("Actor_"):
        return None, f"actor {fields['actor']} of the name is not the folder's ({path.parent.name})"
    return fields, reason


def _filter(fields: dict[str, str], include_song: bool) -> str | None:
    if fields["modality"] != AUDIO_ONLY:
        return "modality 01/02 (audio-visual or video-only; RAVDESS's audio is modality 03)"
    if fields["channel"] == SONG and not include_song:
        return "vocal channel 02 (song; --include-song keeps it)"
    return None


def build(
    root: Path, report: PrepReport, classes: list[str], class_map: dict[str, str], include_song: bool
) -> tuple[dict[str, dict[str, str]], dict]:
    files = input_files(root)[1]
    wavs = [f for f in files if f.suffix.lower() == ".wav"]

    def candidate(path: Path, fields: dict[str, str]) -> Candidate:
        return Candidate.from_file(
            path,
            f"{NAME}{fields['actor']}",
            "M" if int(fields["actor"]) % 2 else "F",
            EMOTIONS[fields["emotion"]],
            text=STATEMENTS[fields["statement"]],
            style="song" if fields["channel"] == SONG else "speech",
            filtered_by=_filter(fields, include_song),
        )

    candidates = candidates_from_names(report, wavs, parse_name, candidate)
    tables = build_tables(report, candidates, class_map)
    if len(files) > len(wavs):
        report.notes.append(
            f"{len(files) - len(wavs)} non-wav files (video clips) in the Actor_XX folders were ignored"
        )
    return finish(report, tables, root, classes, class_map, include_song=include_song)


SPEC = CorpusSpec.of(sys.modules[__name__])
