"""Lexical features: word vectors of a data dir's transcripts from a user-supplied word2vec file (rlc_gca_lstm.md §3.4).

The embedding file is word2vec's text format (an optional ``N D`` header line, then ``word v1 ... vD`` per
line) or its binary format (header ``N D\\n``, then per word ``word`` + space + D little-endian float32,
optionally followed by a newline). Nothing is ever downloaded. Transcripts are lowercased and cut into
words of letters, digits and inner apostrophes (``don't``); punctuation and brackets are dropped, so the
IEMOCAP mark ``[LAUGHTER]`` becomes the word ``laughter``. Out-of-vocabulary words are skipped; an
utterance without any known word gets one zero vector, so every utterance has at least one step.
"""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from sertk.errors import SertkError

NAME = "lexical"
VERSION = 1  # bump when the vectors a transcript gives change (tokenising, OOV handling)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


@dataclass
class LexicalConfig:
    """The YAML of ``--feat lexical``: the embedding file and its format (auto: ``.bin`` = binary, else text)."""

    embeddings: str = ""
    format: Literal["auto", "text", "binary"] = "auto"

    def __post_init__(self) -> None:
        if not self.embeddings:
            raise ValueError("embeddings: the path of a word2vec text or binary file is required")


def tokenize(text: str) -> list[str]:
    """Lowercased words of a transcript; punctuation, brackets and other symbols are dropped."""
    return _WORD.findall(text.lower())


def _header(line: bytes) -> tuple[int, int] | None:
    fields = line.split()
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        return int(fields[0]), int(fields[1])
    return None


def _read_text(path: Path, vocab: set[str] | None) -> dict[str, np.ndarray]:
    vectors: dict[str, np.ndarray] = {}
    dim = None
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and _header(raw) is not None:
                dim = _header(raw)[1]
                continue
            if not raw.strip():
                continue
            word, _, rest = raw.rstrip(b"\r\n").partition(b" ")
            values = rest.split()
            if dim is None:
                dim = len(values)
            if len(values) != dim or dim == 0:
                raise SertkError(
                    f"{path}:{number}: expected a word and {dim} numbers, got {len(values)} numbers"
                )
            try:
                text = word.decode("utf-8")
            except UnicodeDecodeError:
                raise SertkError(
                    f"{path}:{number}: word is not UTF-8 (a binary file? set format: binary)"
                ) from None
            if vocab is not None and text not in vocab:
                continue
            try:
                vectors[text] = np.array([float(v) for v in values], dtype=np.float32)
            except ValueError:
                raise SertkError(f"{path}:{number}: non-numeric vector value") from None
    if dim is None:
        raise SertkError(f"{path}: empty embedding file")
    vectors[""] = np.zeros(dim, dtype=np.float32)  # carries D even when no word is kept
    return vectors


def _read_binary(path: Path, vocab: set[str] | None) -> dict[str, np.ndarray]:
    vectors: dict[str, np.ndarray] = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        end = data.find(b"\n")
        header = _header(data[:end]) if end > 0 else None
        if header is None:
            raise SertkError(f"{path}: binary word2vec file must start with a 'N D' header line")
        count, dim = header
        pos, size = end + 1, 4 * dim
        for index in range(count):
            while pos < len(data) and data[pos : pos + 1] in (b"\n", b" "):
                pos += 1
            space = data.find(b" ", pos)
            if space < 0 or space + 1 + size > len(data):
                raise SertkError(f"{path}: truncated at word {index + 1} of {count}")
            word = data[pos:space].decode("utf-8", errors="replace")
            if vocab is None or word in vocab:
                vectors[word] = np.frombuffer(data[space + 1 : space + 1 + size], dtype="<f4").copy()
            pos = space + 1 + size
    vectors[""] = np.zeros(dim, dtype=np.float32)
    return vectors


def read_embeddings(
    path: str | Path, fmt: str = "auto", vocab: set[str] | None = None
) -> dict[str, np.ndarray]:
    """Word -> (D,) float32 vector of a word2vec file, keeping only ``vocab`` when given.

    The empty word maps to the zero vector, so the dimension is known even when no word of ``vocab`` is
    in the file. Keeping only the needed words keeps a 3.6 GB GoogleNews file out of memory.
    """
    path = Path(path)
    if not path.is_file():
        raise SertkError(f"{path}: embedding file not found (give a word2vec text or binary file)")
    if path.stat().st_size == 0:
        raise SertkError(f"{path}: empty embedding file")
    if fmt == "auto":
        fmt = "binary" if path.suffix == ".bin" else "text"
    if fmt not in ("text", "binary"):
        raise SertkError(f"{path}: unknown embedding format {fmt!r} (auto, text or binary)")
    return _read_binary(path, vocab) if fmt == "binary" else _read_text(path, vocab)


def sentence_vectors(text: str, vectors: dict[str, np.ndarray]) -> np.ndarray:
    """(K, D) vectors of a transcript's known words in order; one zero row when none is known."""
    rows = [vectors[w] for w in tokenize(text) if w in vectors]
    return np.stack(rows) if rows else vectors[""][None, :].copy()
