"""Feature dir writers (HDF5, Kaldi ark/scp) and the readers for both.

A feature dir holds ``feats.h5`` (one (T, D) dataset per utterance id in the feature's storage dtype:
float32, float16 (``--feat ssl``) or int16 16-bit PCM (``--feat wave``); file attributes ``feat``,
``config`` (JSON) and ``dim``) or ``feats.ark`` + ``feats.scp`` (kaldiio, always float32), and always
``feat.yaml`` (``{feat: name, config: {...}}``), ``utt2num_frames`` and its provenance record
``feats.provenance.json``, written last (see ``sertk.provenance``): a dir without a valid record is an
unfinished dump. Readers return float32 values (``decode_frames``) unless asked for the stored dtype.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import kaldiio
import numpy as np
import torch
import yaml

from sertk import provenance
from sertk.data.datadir import read_table
from sertk.errors import SertkError

FORMATS = ("hdf5", "ark")
H5_NAME = "feats.h5"
ARK_NAME = "feats.ark"
SCP_NAME = "feats.scp"
RECORD = "feats.provenance.json"
STORAGE_DTYPES = ("float32", "float16", "int16")
# int16 storage holds 16-bit PCM samples: the value is sample / 32768, exactly what a PCM_16 wav reads as.
PCM_SCALE = 1.0 / 32768


def encode_frames(frames: np.ndarray, dtype: str) -> np.ndarray:
    """float32 features in a storage dtype: a cast, or for int16 PCM rint(x * 32768) clipped to int16.

    PCM audio read as x / 32768 (``sertk.features.audio``) round-trips exactly; resampled or float audio is
    quantised to 16 bits (error at most 2^-16) and clipped to [-1, 32767 / 32768].
    """
    if dtype not in STORAGE_DTYPES:
        raise SertkError(f"storage dtype {dtype!r}: expected one of {', '.join(STORAGE_DTYPES)}")
    if dtype == "int16":
        return np.clip(np.rint(frames * 32768.0), -32768, 32767).astype(np.int16)
    return frames.astype(dtype, copy=False)


def decode_frames(frames):
    """Stored frames (a numpy array or a torch tensor) as float32 values: int16 PCM / 32768, halves widened."""
    if isinstance(frames, torch.Tensor):
        values = frames.float()
        return values * PCM_SCALE if frames.dtype == torch.int16 else values
    values = frames.astype(np.float32, copy=False)
    return values * np.float32(PCM_SCALE) if frames.dtype == np.int16 else values


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
        # Kaldi matrices are float32 or float64: half-precision and PCM features are stored as their values.
        kaldiio.save_ark(self.fd, {utt: feats if feats.dtype == np.float64 else decode_frames(feats)})

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


def _values(stored: np.ndarray, dtype: type) -> np.ndarray:
    """Stored frames as ``dtype``: PCM decoded to its values first, floats cast directly (float64 stays exact)."""
    values = decode_frames(stored) if stored.dtype == np.int16 else stored
    return values.astype(dtype, copy=False)


def load_features(
    feat_dir: str | Path, utts: list[str] | None = None, dtype: type | None = np.float32
) -> dict[str, np.ndarray]:
    """Features of ``utts`` (all, sorted by id, when None) as (T, D) arrays, from either format.

    Arrays hold float32 values by default (``decode_frames``, then ``dtype``); ``dtype=None`` keeps the
    stored dtype (a float16 HDF5 dump stays half the size in memory, int16 PCM stays integer).
    """
    feat_dir = Path(feat_dir)
    fmt = _check_feat_dir(feat_dir)
    if fmt == "hdf5":
        path = feat_dir / H5_NAME
        try:
            with h5py.File(path, "r") as f:
                names = sorted(f) if utts is None else list(utts)
                _missing(feat_dir, names, f)
                return {u: f[u][()] if dtype is None else _values(f[u][()], dtype) for u in names}
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
            out[u] = np.asarray(matrix) if dtype is None else _values(np.asarray(matrix), dtype)
    except (OSError, ValueError) as err:
        raise SertkError(f"{ark}: cannot read features ({err})") from None
    return out


class FeatureReader:
    """Random access to a finished feature dir (either format), opened once: ``read(utt, start, stop)``.

    ``read`` gives float32 values; ``stored_dtype`` and ``read_into`` give the dump's own dtype, so a
    frame store can hold float16 layers or int16 samples at their stored size.
    """

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
        """Frames ``start:stop`` of ``utt`` as float32 values (only that slice is read from HDF5)."""
        return decode_frames(self._read(utt, start, stop))

    def stored_dtype(self, utt: str) -> np.dtype:
        """The dtype ``utt`` is stored in (always float32 in an ark)."""
        if self._h5 is None:
            return np.dtype(np.float32)
        try:
            return self._h5[utt].dtype
        except KeyError:
            raise SertkError(f"{self.dir}: utterance {utt} not in the feature dump") from None

    def read_into(self, utt: str, out: np.ndarray) -> None:
        """All frames of ``utt`` written into ``out`` (len(out) rows), straight from HDF5 without a copy."""
        if self._h5 is None:
            out[...] = self._read(utt, 0, None)
            return
        try:
            self._h5[utt].read_direct(out)
        except KeyError:
            raise SertkError(f"{self.dir}: utterance {utt} not in the feature dump") from None
        except (OSError, ValueError, TypeError) as err:
            raise SertkError(f"{self.dir}: cannot read features of {utt} ({err})") from None

    def _read(self, utt: str, start: int, stop: int | None) -> np.ndarray:
        try:
            if self._h5 is not None:
                return self._h5[utt][start:stop]
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
