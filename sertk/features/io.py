"""Feature dir writers (HDF5, Kaldi ark/scp) and the readers for both.

A feature dir holds ``feats.h5`` (one (T, D) dataset per utterance id, float32, or float16 where the feature
stores half precision (``--feat ssl``); file attributes ``feat``,
``config`` (JSON) and ``dim``) or ``feats.ark`` + ``feats.scp`` (kaldiio), and always ``feat.yaml``
(``{feat: name, config: {...}}``), ``utt2num_frames`` and its provenance record ``feats.provenance.json``,
written last (see ``sertk.provenance``): a dir without a valid record is an unfinished dump.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import kaldiio
import numpy as np
import yaml

from sertk import provenance
from sertk.data.datadir import read_table
from sertk.errors import SertkError

FORMATS = ("hdf5", "ark")
H5_NAME = "feats.h5"
ARK_NAME = "feats.ark"
SCP_NAME = "feats.scp"
RECORD = "feats.provenance.json"


class Hdf5Writer:
    """Writes one dataset per utterance into ``feats.h5``; the feature name and config are file attributes."""

    def __init__(self, path: Path, feat: str, config: dict, dim: int) -> None:
        self.file = h5py.File(path, "w")
        self.file.attrs["feat"] = feat
        self.file.attrs["config"] = json.dumps(config, sort_keys=True)
        self.file.attrs["dim"] = dim

    def write(self, utt: str, feats: np.ndarray) -> None:
        self.file.create_dataset(utt, data=feats)

    def close(self) -> None:
        self.file.close()


class ArkWriter:
    """Appends Kaldi binary matrices to ``feats.ark`` and writes ``feats.scp`` (sorted by id) on close.

    ``scp_ark_path`` is where the ark will live once the dump is renamed into place, so Kaldi tools can
    read the scp; ``load_features`` uses only the offsets, so a moved feature dir stays readable.
    """

    def __init__(self, ark_path: Path, scp_path: Path, scp_ark_path: Path) -> None:
        self.fd = open(ark_path, "wb")
        self.scp_path = scp_path
        self.scp_ark_path = scp_ark_path
        self.offsets: dict[str, int] = {}

    def write(self, utt: str, feats: np.ndarray) -> None:
        # The scp offset points just past "<utt> ", at the binary header of the matrix.
        self.offsets[utt] = self.fd.tell() + len(utt.encode()) + 1
        # Kaldi matrices are float32 or float64: half-precision features are widened (same values).
        kaldiio.save_ark(self.fd, {utt: feats.astype(np.float32) if feats.dtype == np.float16 else feats})

    def close(self) -> None:
        self.fd.close()
        lines = [f"{utt} {self.scp_ark_path}:{self.offsets[utt]}\n" for utt in sorted(self.offsets)]
        self.scp_path.write_text("".join(lines))


def _check_feat_dir(feat_dir: Path) -> str:
    """The format of a finished feature dir; SertkError if it is missing or unfinished."""
    if not feat_dir.is_dir():
        raise SertkError(f"{feat_dir}: feature dir not found (run sertk feats first)")
    if not (feat_dir / RECORD).is_file():
        raise SertkError(f"{feat_dir}: feature dump is incomplete (no {RECORD}; run sertk feats first)")
    if (feat_dir / H5_NAME).is_file():
        return "hdf5"
    if (feat_dir / SCP_NAME).is_file() and (feat_dir / ARK_NAME).is_file():
        return "ark"
    raise SertkError(f"{feat_dir}: neither {H5_NAME} nor {ARK_NAME} + {SCP_NAME} found")


def _scp_offsets(feat_dir: Path) -> dict[str, int]:
    offsets = {}
    scp = feat_dir / SCP_NAME
    for utt, value in read_table(scp).items():
        try:
            offsets[utt] = int(value.rpartition(":")[2])
        except ValueError:
            raise SertkError(f"{scp}: entry {utt} has no ark offset ({value!r})") from None
    return offsets


def _missing(feat_dir: Path, utts: list[str], have) -> None:
    missing = [u for u in utts if u not in have]
    if missing:
        raise SertkError(
            f"{feat_dir}: {len(missing)} utterance(s) not in the feature dump, first {missing[0]} "
            "(was it skipped by sertk feats, or dumped from another data dir?)"
        )


def load_features(
    feat_dir: str | Path, utts: list[str] | None = None, dtype: type | None = np.float32
) -> dict[str, np.ndarray]:
    """Features of ``utts`` (all, sorted by id, when None) as (T, D) arrays, from either format.

    Arrays are float32 by default; ``dtype=None`` keeps the stored dtype (a float16 HDF5 dump stays half
    the size in memory).
    """
    feat_dir = Path(feat_dir)
    fmt = _check_feat_dir(feat_dir)
    if fmt == "hdf5":
        path = feat_dir / H5_NAME
        try:
            with h5py.File(path, "r") as f:
                names = sorted(f) if utts is None else list(utts)
                _missing(feat_dir, names, f)
                return {u: f[u][()] if dtype is None else f[u][()].astype(dtype, copy=False) for u in names}
        except OSError as err:
            raise SertkError(f"{path}: cannot read HDF5 ({err})") from None
    offsets = _scp_offsets(feat_dir)
    names = sorted(offsets) if utts is None else list(utts)
    _missing(feat_dir, names, offsets)
    ark = feat_dir / ARK_NAME
    out = {}
    try:
        for u in names:
            matrix = kaldiio.load_mat(f"{ark}:{offsets[u]}")
            out[u] = np.asarray(matrix) if dtype is None else np.asarray(matrix, dtype=dtype)
    except (OSError, ValueError) as err:
        raise SertkError(f"{ark}: cannot read features ({err})") from None
    return out


class FeatureReader:
    """Random access to a finished feature dir (either format), opened once: ``read(utt, start, stop)``."""

    def __init__(self, feat_dir: str | Path) -> None:
        self.dir = Path(feat_dir)
        self.format = _check_feat_dir(self.dir)
        self.counts = {u: int(n) for u, n in read_table(self.dir / "utt2num_frames").items()}
        self._h5 = None
        if self.format == "hdf5":
            try:
                self._h5 = h5py.File(self.dir / H5_NAME, "r")
            except OSError as err:
                raise SertkError(f"{self.dir / H5_NAME}: cannot read HDF5 ({err})") from None
            self.dim = int(self._h5.attrs["dim"])
        else:
            self._offsets = _scp_offsets(self.dir)
            self.dim = feature_info(self.dir)["dim"]

    def check(self, utts: list[str]) -> None:
        _missing(self.dir, utts, self.counts)

    def read(self, utt: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``start:stop`` of ``utt`` as float32 (only that slice is read from HDF5)."""
        try:
            if self._h5 is not None:
                return self._h5[utt][start:stop].astype(np.float32, copy=False)
            mat = kaldiio.load_mat(f"{self.dir / ARK_NAME}:{self._offsets[utt]}")
            return np.asarray(mat[start:stop], dtype=np.float32)
        except KeyError:
            raise SertkError(f"{self.dir}: utterance {utt} not in the feature dump") from None
        except (OSError, ValueError) as err:
            raise SertkError(f"{self.dir}: cannot read features of {utt} ({err})") from None

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


def feature_record_key(feat_dir: str | Path) -> str:
    """The provenance key of a finished feature dump (what downstream records name it by)."""
    return provenance.recorded_key(Path(feat_dir) / RECORD, "feature dump")


def feature_info(feat_dir: str | Path) -> dict:
    """``{"feat", "config", "dim", "format"}`` of a finished feature dir."""
    feat_dir = Path(feat_dir)
    fmt = _check_feat_dir(feat_dir)
    meta_path = feat_dir / "feat.yaml"
    try:
        meta = yaml.safe_load(meta_path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SertkError(f"{meta_path}: cannot read ({err})") from None
    if not isinstance(meta, dict) or "feat" not in meta:
        raise SertkError(f"{meta_path}: expected a mapping with keys feat and config")
    if fmt == "hdf5":
        try:
            with h5py.File(feat_dir / H5_NAME, "r") as f:
                dim = int(f.attrs["dim"])
        except (OSError, KeyError) as err:
            raise SertkError(f"{feat_dir / H5_NAME}: cannot read HDF5 ({err})") from None
    else:
        offsets = _scp_offsets(feat_dir)
        first = min(offsets, key=offsets.get)
        dim = int(kaldiio.load_mat(f"{feat_dir / ARK_NAME}:{offsets[first]}").shape[1])
    return {"feat": meta["feat"], "config": meta.get("config", {}), "dim": dim, "format": fmt}
