"""CREMA-D preparation: the Crowd-sourced Emotional Multimodal Actors Dataset -> a Kaldi-style data dir.

Corpus layout (Cao et al., 2014, IEEE Trans. Affective Computing 5(4); the CheyneyComputerScience/CREMA-D
repository)::

    <root>/
      AudioWAV/1001_DFA_ANG_XX.wav      7442 clips of 91 actors (1001-1091), 16 kHz mono
      VideoDemographics.csv             ActorID, Age, Sex (Male/Female), Race, Ethnicity
      processedResults/tabulatedVotes.csv   the raters' answers per clip and presentation mode (optional)
      AudioMP3/ VideoFlash/ finishedResponses.csv ...   not read

A name is ``actor_sentence_emotion_level``: sentence one of 12 codes (``SENTENCES``), emotion ANG DIS FEA
HAP NEU SAD, level LO MD HI or XX (unspecified). A name that does not parse, or names an unknown sentence
or emotion, is reported and skipped. Sex comes from VideoDemographics.csv (``U`` where it is missing).

Labels -> sertk codes: ANG ang, DIS dis, FEA fea, HAP hap, NEU neu, SAD sad (the acted emotion).

Votes (utt2votes): tabulatedVotes.csv has one row per rated clip and mode, its unnamed first column being
``100000 * queryType + clipNum`` (queryType 1 voice only, 2 face only, 3 audio-visual) and its columns
A D F H N S counting the raters who chose anger, disgust, fear, happy, neutral, sad. sertk reads the
voice-only rows: the raters heard what the models hear. Every rater chose one emotion, so the sertk vote
string is one single-code token per response, in code order: ``A=2, N=3`` -> ``ang ang neu neu neu``. The
counts name no rater, so token order carries nothing; the soft label a vote string gives (count / total)
is exactly the tabulated proportion. A clip without a voice-only row gets an empty vote string (noted).

Ids: speaker ``cremad1001``, utterance ``cremad1001-1001_DFA_ANG_XX``. Text: the sentence (the 12 texts of
the corpus documentation). Level and age are not tabled; no utt2session.
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
    read_csv,
    require_dir,
    visible,
)
from sertk.corpora.run import run_prep

NAME = "crema-d"
ID_PREFIX = "cremad"
TITLE = "CREMA-D"
VERSION = 1
DEFAULT_CLASSES = "neu,hap,ang,sad"
EMOTIONS = {"ANG": "ang", "DIS": "dis", "FEA": "fea", "HAP": "hap", "NEU": "neu", "SAD": "sad"}
LABEL_CODES = ("neu", "hap", "ang", "sad", "dis", "fea")
# tabulatedVotes.csv column -> sertk code, in the order vote tokens are written.
VOTE_COLUMNS = {"A": "ang", "D": "dis", "F": "fea", "H": "hap", "N": "neu", "S": "sad"}
VOICE_ONLY = 1
SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
FILE_NAME = re.compile(
    r"(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>LO|MD|HI|XX)"
)
NAMING = "CREMA-D's <actor>_<sentence>_<emotion>_<level> (e.g. 1001_DFA_ANG_XX)"
KNOWN_FIELDS = {"sentence": ("sentence code", SENTENCES), "emotion": ("emotion", EMOTIONS)}
DEMOGRAPHICS = "VideoDemographics.csv"
VOTES = Path("processedResults") / "tabulatedVotes.csv"
SEX = {"male": "M", "female": "F"}


def input_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(VideoDemographics.csv and tabulatedVotes.csv where present, the AudioWAV clips)."""
    root = Path(root)
    wavs = visible(require_dir(root, "CREMA-D", "AudioWAV").glob("*.wav"))
    return [p for p in (root / DEMOGRAPHICS, root / VOTES) if p.is_file()], wavs


def prepare_cremad(root: Path, out: Path, classes: str = DEFAULT_CLASSES) -> PrepReport:
    """Parse a CREMA-D tree ``root`` (layout, labels, votes: the module docstring) into the data dir ``out``."""
    return run_prep(SPEC, root, out, classes=classes)


def parse_name(path: Path) -> tuple[dict[str, str] | None, str | None]:
    """``1001_DFA_ANG_XX.wav`` -> ({actor, sentence, emotion, level}, None), or (None, why it is not CREMA-D's)."""
    return parse_file_name(path.stem, FILE_NAME, NAMING, KNOWN_FIELDS)


def read_demographics(path: Path) -> dict[str, str]:
    """ActorID -> ``M``/``F`` from VideoDemographics.csv ({} when the file is absent)."""
    if not path.is_file():
        return {}
    rows = read_csv(path, ("ActorID", "Sex"))
    return {row["ActorID"]: SEX.get(row["Sex"].lower(), "U") for _, row in rows}


def read_voice_votes(path: Path, report: PrepReport) -> dict[str, str] | None:
    """Clip stem -> sertk vote string from tabulatedVotes.csv's voice-only rows (None without the file)."""
    if not path.is_file():
        return None
    rows = read_csv(path, ("fileName", *VOTE_COLUMNS))
    votes: dict[str, str] = {}
    bad: list[str] = []
    for line, row in rows:
        try:
            mode = int(row[""]) // 100000
            counts = {code: int(row[column]) for column, code in VOTE_COLUMNS.items()}
        except (KeyError, ValueError):
            bad.append(f"{path}:{line}")
            continue
        if mode == VOICE_ONLY and row["fileName"] not in votes:
            votes[row["fileName"]] = " ".join(code for code, n in counts.items() for _ in range(n))
    if bad:
        report.notes.append(
            f"{len(bad)} rows of {path.name} have no row index or non-integer counts, ignored (first {bad[0]})"
        )
    return votes


def build(
    root: Path, report: PrepReport, classes: list[str], class_map: dict[str, str]
) -> tuple[dict[str, dict[str, str]], dict]:
    sexes = read_demographics(root / DEMOGRAPHICS)
    votes = read_voice_votes(root / VOTES, report)

    def candidate(path: Path, fields: dict[str, str]) -> Candidate:
        return Candidate.from_file(
            path,
            f"{ID_PREFIX}{fields['actor']}",
            sexes.get(fields["actor"], "U"),
            EMOTIONS[fields["emotion"]],
            text=SENTENCES[fields["sentence"]],
            votes=None if votes is None else votes.get(path.stem, ""),
        )

    candidates = candidates_from_names(report, input_files(root)[1], parse_name, candidate)
    tables = build_tables(report, candidates, class_map)
    unknown_sex = sorted({s for u, s in tables["utt2spk"].items() if tables["utt2gender"][u] == "U"})
    if unknown_sex:
        report.notes.append(f"{len(unknown_sex)} actors have no sex in {DEMOGRAPHICS} (utt2gender U)")
    if votes is None:
        report.notes.append(f"no {VOTES}: no utt2votes")
    else:
        empty = sum(1 for v in tables["utt2votes"].values() if not v)
        if empty:
            report.notes.append(
                f"{empty} kept clips have no voice-only row in {VOTES.name} (empty utt2votes)"
            )
    return finish(report, tables, root, classes, class_map)


SPEC = CorpusSpec.of(sys.modules[__name__])
