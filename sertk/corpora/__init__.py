"""Corpus preps, registered by name: ``sertk prep NAME ROOT DATA`` runs ``prepare(NAME, ROOT, DATA)``.

One module per corpus, each with a ``prepare_<corpus>()`` whose docstring (and the module's) describes the
corpus layout as distributed and the table that maps its labels to sertk's class codes. Every prep runs
through ``sertk.corpora.run.run_prep``: the same provenance check, wav checks, problem report and
publish-at-the-end for every corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sertk.corpora import cremad, emodb, iemocap, msppodcast, ravdess
from sertk.corpora.common import CorpusSpec, PrepReport
from sertk.corpora.run import run_prep
from sertk.errors import SertkError

CORPORA: dict[str, CorpusSpec] = {
    "iemocap": iemocap.SPEC,
    "emodb": emodb.SPEC,
    "ravdess": ravdess.SPEC,
    "crema-d": cremad.SPEC,
    "msp-podcast": msppodcast.SPEC,
}


def corpus_spec(name: str) -> CorpusSpec:
    """The registered corpus ``name``; SertkError listing the known names otherwise."""
    if name not in CORPORA:
        raise SertkError(f"unknown corpus {name!r} (known: {', '.join(CORPORA)})")
    return CORPORA[name]


def prepare(name: str, root: Path, out: Path, classes: str | None = None, **options: Any) -> PrepReport:
    """Prepare the ``name`` corpus at ``root`` into the data dir ``out`` (``classes``: the corpus default)."""
    return run_prep(corpus_spec(name), root, out, classes=classes, **options)


__all__ = ["CORPORA", "PrepReport", "corpus_spec", "prepare"]
