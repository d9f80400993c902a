"""The one way every corpus prep runs: provenance first, the data dir built aside, published at the end.

``run_prep(spec, root, out, classes, **options)``:

1. checks the options and ``--classes`` and lists the corpus's label and audio files (a root that is not
   the corpus's layout fails here, before anything is written);
2. computes the prep record (``sertk.provenance``): content digest of the label files (and of the
   ``SYNTHETIC_CORPUS.txt`` marker), size+mtime digest of the audio files, every option, the corpus
   module's ``VERSION``. If ``out`` holds the same record and its tables are untouched, nothing is done;
3. otherwise refuses an ``out`` that holds files sertk does not write into data dirs (a user's file is
   never replaced), builds the data dir in a fresh temp dir beside ``out`` and renames it onto ``out``;
4. writes ``out/prep.provenance.json`` last. An interrupted prep leaves the old ``out`` (and its record)
   as it was, or no ``out`` at all: never a half-written data dir under the final name.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
from pathlib import Path
from typing import Any

from sertk.corpora.common import (
    SYNTHETIC_MARKER,
    CorpusSpec,
    PrepReport,
    class_spec_text,
    parse_class_spec,
    print_outcome,
)
from sertk.data.datadir import DATA_FILES, write_data_dir
from sertk.errors import SertkError
from sertk.provenance import (
    Record,
    check,
    code_versions,
    files_digest,
    record_path,
    stat_digest,
    write_record,
)
from sertk.utils import console, fresh_tmp_dir, publish_dir

# Beside the tables, what sertk itself writes into a data dir (legacy recipe markers included).
OWNED_NAMES = ("spk2utt", "corpus.json", ".done")
OWNED_PATTERNS = ("folds*.json", "folds*.done", "*.provenance.json")
# Left behind by an interrupted atomic write (sertk.utils.atomic_path): ".<name>.tmp<pid>".
ATOMIC_TMP = re.compile(r"\..+\.tmp\d+")


def is_prep_output(entry: Path) -> bool:
    """True for a file that sertk writes into a data dir, so that a new prep may replace it."""
    if entry.is_dir() and not entry.is_symlink():
        return False
    name = entry.name
    if name in DATA_FILES or name in OWNED_NAMES or ATOMIC_TMP.fullmatch(name):
        return True
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in OWNED_PATTERNS)


def check_output_dir(out: Path) -> None:
    """SertkError unless ``out`` is absent, empty or holds only what a prep may replace."""
    if out.is_dir():
        foreign = sorted(e.name for e in out.iterdir() if not is_prep_output(e))
        if foreign:
            what = f"{len(foreign)} files" if len(foreign) > 1 else "a file"
            raise SertkError(
                f"{out}: holds {what} sertk prep did not write ({foreign[0]}, ...); choose another data dir"
            )
    elif out.exists():
        raise SertkError(f"{out}: exists and is not a directory; choose another data dir")


def prep_options(spec: CorpusSpec, options: dict[str, Any]) -> dict[str, Any]:
    """The corpus's options with defaults filled in; SertkError for an unknown option or value."""
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        known = ", ".join(spec.options) or "none"
        raise SertkError(f"prep {spec.name}: unknown option(s) {', '.join(unknown)} (its options: {known})")
    chosen = {}
    for name, (default, allowed) in spec.options.items():
        value = options.get(name, default)
        if allowed is not None and value not in allowed:
            flag = "--" + name.replace("_", "-")
            raise SertkError(f"{flag} {value!r}: expected one of {', '.join(map(str, allowed))}")
        chosen[name] = value
    return chosen


def prep_record(spec: CorpusSpec, root: Path, classes: str, options: dict[str, Any]) -> Record:
    """The provenance record a prep of ``root`` with these options would write (cheap: no audio is read)."""
    labels, audio = spec.input_files(root)
    if (root / SYNTHETIC_MARKER).is_file():
        labels = [*labels, root / SYNTHETIC_MARKER]
    return Record(
        stage="prep",
        inputs={"labels": files_digest(labels, base=root), "audio": stat_digest(audio)},
        options={"corpus": spec.name, "root": str(root), "classes": classes, **options},
        code=code_versions(prep=f"{spec.name}/{spec.version}"),
    )


def run_prep(
    spec: CorpusSpec, root: Path, out: Path, classes: str | None = None, **options: Any
) -> PrepReport:
    """Prepare ``root`` (a ``spec.name`` tree) into the data dir ``out``, or reuse ``out`` if up to date."""
    root, out = Path(root).absolute(), Path(out).absolute()
    chosen = prep_options(spec, options)
    class_list, class_map = parse_class_spec(classes or spec.default_classes, spec.label_codes)
    record = prep_record(spec, root, class_spec_text(class_list, class_map), chosen)
    report = PrepReport(out=out, corpus=spec.title, synthetic=(root / SYNTHETIC_MARKER).is_file())
    where = record_path(out, "prep")
    reasons = check(where, record)
    if not reasons:
        return _reused(report, out)
    if where.exists():
        console.print(f"prep: redoing {out}: {'; '.join(reasons)}", markup=False, soft_wrap=True)
    check_output_dir(out)
    tmp = fresh_tmp_dir(out)
    try:
        try:
            tables, meta = spec.build(root, report, class_list, class_map, **chosen)
        finally:
            print_outcome(report)
        try:
            write_data_dir(tmp, tables, meta)
        except OSError as err:
            raise SertkError(f"{out}: cannot write the data dir ({err.strerror or err})") from None
        written = sorted(p.name for p in tmp.iterdir())
        publish_dir(tmp, out, owned=is_prep_output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # Stamped after the rename: output stamps name the files by their final path.
    write_record(where, record, outputs=[out / name for name in written])
    return report


def _reused(report: PrepReport, out: Path) -> PrepReport:
    """The report of an up-to-date data dir, from its corpus.json."""
    try:
        meta = json.loads((out / "corpus.json").read_text())
    except (OSError, ValueError):
        meta = {}
    counts = meta.get("counts") if isinstance(meta, dict) else None
    report.up_to_date = True
    report.class_counts = dict(counts) if isinstance(counts, dict) else {}
    report.kept = sum(v for v in report.class_counts.values() if isinstance(v, int))
    return report
