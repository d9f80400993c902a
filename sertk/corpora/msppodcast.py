"""MSP-Podcast preparation: the MSP-Podcast corpus (releases 1.x) -> a Kaldi-style data dir.

Corpus layout (Lotfian and Busso, 2019, IEEE Trans. Affective Computing 10(4))::

    <root>/
      Audios/MSP-PODCAST_0001_0008.wav ...   speaking turns of podcasts, 16 kHz mono
      Labels/labels_consensus.csv            one row per turn (below)
      Labels/labels_detailed.csv, Transcripts/, ...   not read

labels_consensus.csv columns: FileName (``MSP-PODCAST_0001_0008.wav``), EmoClass (the consensus category),
EmoAct, EmoVal, EmoDom (mean arousal, valence, dominance ratings, 1-7), SpkrID (a number, or ``Unknown``),
Gender (Male, Female, Unknown), Split_Set (Train, Development, Test1, Test2; Test3 in newer releases, whose
labels may be withheld). A row with a malformed field or a FileName seen before is reported and skipped;
a row without EmoClass (withheld labels) is filtered and counted.

Labels -> sertk codes (contempt keeps a code of its own):

========  ==================  ====
EmoClass  emotion             code
========  ==================  ====
A         angry               ang
S         sad                 sad
H         happy               hap
U         surprise            sur
F         fear                fea
D         disgust             dis
C         contempt            con
N         neutral             neu
O         other               oth
X         no agreement        xxx
========  ==================  ====

Tables: utt2vad is ``EmoVal EmoAct EmoDom`` (valence arousal dominance, as for IEMOCAP, but on the 1-7
scale), utt2gender ``M``/``F``/``U``. utt2session holds the official partition (Split_Set): MSP-Podcast
has no sessions, and its usual protocol is the partitions (``sertk.data.protocols_corpora``). No text,
no votes (the per-rater labels are not read).

Ids: speaker ``msp0127`` (SpkrID zero-padded to 4 digits), utterance ``msp0127-MSP-PODCAST_0001_0008``.
A turn of an ``Unknown`` speaker is its own speaker, ``msp-MSP-PODCAST_0001_0008`` (Kaldi's convention for
unknown speakers): two such turns are never taken for one speaker.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sertk.corpora.common import (
    Candidate,
    CorpusSpec,
    PrepReport,
    build_tables,
    finish,
    read_csv,
    require_dir,
    visible,
)
from sertk.corpora.run import run_prep

NAME = "msp-podcast"
ID_PREFIX = "msp"
TITLE = "MSP-Podcast"
VERSION = 1
DEFAULT_CLASSES = "neu,hap,ang,sad"
EMOTIONS = {
    "A": "ang", "S": "sad", "H": "hap", "U": "sur", "F": "fea",
    "D": "dis", "C": "con", "N": "neu", "O": "oth", "X": "xxx",
}  # fmt: skip
LABEL_CODES = ("neu", "hap", "ang", "sad", "sur", "fea", "dis", "con", "oth", "xxx")
COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")
LABELS = Path("Labels") / "labels_consensus.csv"
GENDERS = {"male": "M", "female": "F"}


def input_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(labels_consensus.csv, every file in Audios/)."""
    root = Path(root)
    audio = visible(require_dir(root, "MSP-Podcast", "Audios").iterdir())
    require_dir(root, "MSP-Podcast", "Labels")
    return [root / LABELS], audio


def prepare_msppodcast(root: Path, out: Path, classes: str = DEFAULT_CLASSES) -> PrepReport:
    """Parse an MSP-Podcast tree ``root`` (layout and label table: the module docstring) into ``out``."""
    return run_prep(SPEC, root, out, classes=classes)


def speaker_and_utt(spkr_id: str, stem: str) -> tuple[str, str] | None:
    """(speaker, utterance id) for a SpkrID, or None when it is neither a number nor ``Unknown``."""
    if spkr_id.lower() == "unknown":
        utt = f"{ID_PREFIX}-{stem}"
        return utt, utt
    if not spkr_id.isdigit():
        return None
    speaker = f"{ID_PREFIX}{int(spkr_id):04d}"
    return speaker, f"{speaker}-{stem}"


def parse_row(row: dict[str, str]) -> tuple[dict[str, str] | None, str | None]:
    """One labels_consensus.csv row -> ({speaker, utt, label, vad, partition, gender}, None) or (None, why)."""
    name = row["FileName"]
    if not name or any(c.isspace() for c in name):
        return None, f"FileName {name!r} is empty or has whitespace"
    if row["EmoClass"] and row["EmoClass"] not in EMOTIONS:
        return None, f"{name}: unknown EmoClass {row['EmoClass']!r} (known: {' '.join(EMOTIONS)})"
    ids = speaker_and_utt(row["SpkrID"], Path(name).stem)
    if ids is None:
        return None, f"{name}: SpkrID {row['SpkrID']!r} is neither a number nor Unknown"
    if not row["Split_Set"] or any(c.isspace() for c in row["Split_Set"]):
        return None, f"{name}: Split_Set {row['Split_Set']!r} is empty or has whitespace"
    vad = ""
    if row["EmoClass"]:
        try:
            vad = " ".join(f"{float(row[c]):.4f}" for c in ("EmoVal", "EmoAct", "EmoDom"))
        except ValueError:
            return None, f"{name}: EmoVal/EmoAct/EmoDom are not numbers"
    speaker, utt = ids
    return {
        "speaker": speaker,
        "utt": utt,
        "label": EMOTIONS.get(row["EmoClass"], ""),
        "vad": vad,
        "partition": row["Split_Set"],
        "gender": GENDERS.get(row["Gender"].lower(), "U"),
    }, None


def build(
    root: Path, report: PrepReport, classes: list[str], class_map: dict[str, str]
) -> tuple[dict[str, dict[str, str]], dict]:
    labels = root / LABELS
    rows = read_csv(labels, COLUMNS)
    candidates = []
    first: dict[str, int] = {}
    withheld = 0
    for line, row in rows:
        report.total += 1
        fields, reason = parse_row(row)
        if fields is None:
            report.problem(f"{labels}:{line}: {reason}")
            continue
        if row["FileName"] in first:
            report.problem(
                f"{labels}:{line}: {row['FileName']}: listed again (first on line {first[row['FileName']]})"
            )
            continue
        first[row["FileName"]] = line
        withheld += not fields["label"]
        candidates.append(
            Candidate(
                utt=fields["utt"],
                wav=root / "Audios" / row["FileName"],
                speaker=fields["speaker"],
                gender=fields["gender"],
                label=fields["label"],
                where=f"{labels}:{line}",
                vad=fields["vad"],
                session=fields["partition"],
            )
        )
    tables = build_tables(report, candidates, class_map)
    if withheld:
        report.notes.append(f"{withheld} rows have no EmoClass (labels withheld) and were filtered")
    unknown = sum(1 for u, s in tables["utt2spk"].items() if u == s)
    if unknown:
        report.notes.append(f"{unknown} kept turns have an Unknown speaker (each its own speaker id)")
    parts: dict[str, int] = {}
    for part in tables.get("utt2session", {}).values():
        parts[part] = parts.get(part, 0) + 1
    if parts:
        report.notes.append(
            "partitions (utt2session): " + ", ".join(f"{p} {n}" for p, n in sorted(parts.items()))
        )
    return finish(report, tables, root, classes, class_map)


SPEC = CorpusSpec.of(sys.modules[__name__])
