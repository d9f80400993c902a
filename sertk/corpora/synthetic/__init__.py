"""Synthetic corpora in the exact layouts of the real ones, for running every stage without the real data.

``generate_corpus(out, size, seed, nj, corpus)`` writes a small tree in the layout of ``corpus`` (a name of
the prep registry): the real file naming and label files, and speech-like audio from one source-filter
synthesiser (``synthetic.voice``) whose prosody follows each clip's label. One module per layout plans the
tree (``plan_tree(size, seed)``): ``iemocap`` (sizes tiny, small, full), ``emodb``, ``ravdess``, ``cremad``,
``msppodcast`` (tiny, small). Each tiny tree has enough speakers, and every class in each speaker group,
for its corpus's usual protocol to have every class in every fold's training part.

Every tree carries a top-level ``SYNTHETIC_CORPUS.txt``: ``sertk prep`` detects synthetic trees by that file
and every result computed from them is marked synthetic. The audio is 16 kHz mono whatever the real
corpus's rate (RAVDESS is 48 kHz).
"""

from __future__ import annotations

from pathlib import Path

from sertk.corpora.synthetic import cremad, emodb, iemocap, msppodcast, ravdess
from sertk.corpora.synthetic.iemocap import synthesize
from sertk.corpora.synthetic.iemocap_plan import PUBLISHED_COUNTS, SIZES, CorpusSize, UttPlan, plan_corpus
from sertk.corpora.synthetic.tree import existing_tree, write_tree
from sertk.errors import SertkError

LAYOUTS = {
    "iemocap": iemocap,
    "emodb": emodb,
    "ravdess": ravdess,
    "crema-d": cremad,
    "msp-podcast": msppodcast,
}


def generate_corpus(
    out: Path, size: str = "tiny", seed: int = 0, nj: int = 1, corpus: str = "iemocap"
) -> dict:
    """Write the synthetic ``corpus`` tree at ``out`` and return its summary.

    The tree is built in a temporary sibling and renamed onto ``out`` at the end; if ``out`` already holds
    the same tree (layout, size, seed, generator version) it is left as it is.
    """
    if corpus not in LAYOUTS:
        raise SertkError(f"--corpus {corpus!r}: no synthetic layout (known: {', '.join(LAYOUTS)})")
    layout = LAYOUTS[corpus]
    if size not in layout.SIZES:
        raise SertkError(
            f"unknown synthetic corpus size {size!r} for {corpus}; choose one of {', '.join(layout.SIZES)}"
        )
    if nj < 1:
        raise SertkError(f"--nj must be at least 1, got {nj}")
    out = Path(out)
    existing = existing_tree(out, corpus, size, seed)
    if existing is not None:
        return existing
    return write_tree(out, corpus, layout.TITLE, layout.plan_tree(size, seed), (size, seed, nj))


__all__ = [
    "LAYOUTS",
    "PUBLISHED_COUNTS",
    "SIZES",
    "CorpusSize",
    "UttPlan",
    "generate_corpus",
    "plan_corpus",
    "synthesize",
]
