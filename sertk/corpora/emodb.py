"""EmoDB preparation: the Berlin Database of Emotional Speech -> a Kaldi-style data dir.

Corpus layout (Burkhardt et al., 2005, "A database of German emotional speech"), as the download unpacks::

    <root>/
      wav/03a01Fa.wav ...     535 utterances, 16 kHz mono; the file name is the whole annotation
      lablaut/ labsilb/ ...   phonetic segmentations, not read

A name is ``SS TTT E V``: speaker ``03``, text ``a01``, emotion letter ``F``, version ``a`` (several takes
of one text and emotion). Ten actors (speaker: sex): 03 m, 08 f, 09 f, 10 m, 11 m, 12 m, 13 f, 14 f,
15 m, 16 f. Ten texts, all German (see ``TEXTS``). A name that does not parse, or names an unknown speaker,
text or emotion, is reported and skipped.

Labels -> sertk codes (every EmoDB emotion keeps a code of its own):

======  ======================  ====
letter  German / English        code
======  ======================  ====
W       Ärger / anger           ang
L       Langeweile / boredom    bor
E       Ekel / disgust          dis
A       Angst / fear            fea
F       Freude / happiness      hap
T       Trauer / sadness        sad
N       neutral                 neu
======  ======================  ====

Ids: speaker ``emodb03`` (prefixed so that speakers of different corpora never collide), utterance
``emodb03-03a01Fa`` (the speaker id, ``-``, the file stem: speaker ids are prefixes of utterance ids, so
sorting by either agrees, as Kaldi's tools expect). No utt2session (EmoDB has none), no votes.
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
    require_dir,
    visible,
)
from sertk.corpora.run import run_prep

NAME = "emodb"
TITLE = "EmoDB"
VERSION = 1
DEFAULT_CLASSES = "neu,hap,ang,sad"
EMOTIONS = {"W": "ang", "L": "bor", "E": "dis", "A": "fea", "F": "hap", "T": "sad", "N": "neu"}
LABEL_CODES = ("neu", "hap", "ang", "sad", "bor", "dis", "fea")
SPEAKER_SEX = {
    "03": "M", "08": "F", "09": "F", "10": "M", "11": "M",
    "12": "M", "13": "F", "14": "F", "15": "M", "16": "F",
}  # fmt: skip
TEXTS = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute Abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}
FILE_NAME = re.compile(r"(?P<speaker>\d\d)(?P<text>[a-z]\d\d)(?P<emotion>[A-Z])(?P<version>[a-z])")
NAMING = "EmoDB's <speaker><text><emotion><version> (e.g. 03a01Fa)"
KNOWN_FIELDS = {
    "speaker": ("speaker", SPEAKER_SEX),
    "text": ("text code", TEXTS),
    "emotion": ("emotion letter", EMOTIONS),
}


def speaker_id(number: str) -> str:
    return f"{NAME}{number}"


def input_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(no label files: the names are the labels, and the audio digest covers them; the wavs)."""
    return [], visible(require_dir(Path(root), "EmoDB", "wav").glob("*.wav"))


def prepare_emodb(root: Path, out: Path, classes: str = DEFAULT_CLASSES) -> PrepReport:
    """Parse an EmoDB tree ``root`` (layout and label table: the module docstring) into the data dir ``out``.

    Utterances outside ``classes`` are filtered; a file whose name does not parse or whose wav is damaged
    is reported one line and skipped. An up-to-date ``out`` is left as it is.
    """
    return run_prep(SPEC, root, out, classes=classes)


def parse_name(path: Path) -> tuple[dict[str, str] | None, str | None]:
    """``03a01Fa.wav`` -> ({speaker, text, emotion, version}, None), or (None, why it is not EmoDB's)."""
    return parse_file_name(path.stem, FILE_NAME, NAMING, KNOWN_FIELDS)


def candidate(path: Path, fields: dict[str, str]) -> Candidate:
    """The utterance of a parsed EmoDB file name."""
    speaker = speaker_id(fields["speaker"])
    gender = SPEAKER_SEX[fields["speaker"]]
    return Candidate.from_file(path, speaker, gender, EMOTIONS[fields["emotion"]], text=TEXTS[fields["text"]])


def build(
    root: Path, report: PrepReport, classes: list[str], class_map: dict[str, str]
) -> tuple[dict[str, dict[str, str]], dict]:
    candidates = candidates_from_names(report, input_files(root)[1], parse_name, candidate)
    return finish(report, build_tables(report, candidates, class_map), root, classes, class_map)


SPEC = CorpusSpec.of(sys.modules[__name__])
