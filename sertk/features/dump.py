"""``sertk feats``: compute a feature type for every utterance of a data dir into a feature dir.

Utterances are sorted by length and grouped into batches of about ``BATCH_SAMPLES`` samples, so a batch
wastes little on padding and each torch call (framing, FFT, Mel matmul) runs over many frames at once.
With ``nj`` > 1, ``nj`` threads of this process read and compute batches (one torch intra-op thread each:
torch, numpy and libsndfile release the GIL inside their kernels, where nearly all the time goes), and
this thread alone writes the single ``feats.h5`` / ``feats.ark`` in batch order, so the output is the same
for every ``nj``. Threads replace the spawned worker processes of earlier versions: each of those paid
~2.5 CPU-s importing torch, which made ``--nj 2`` slower than ``--nj 1`` on dumps of a few minutes of
CPU, and pickled every feature array back to the parent. Batches are handed out in order with at most
``2 nj`` in flight, which balances the threads and bounds the memory held by finished batches.
"""

from __future__ import annotations

import collections
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sertk import provenance
from sertk.config import load_config, to_dict
from sertk.data.datadir import read_data_dir, read_table, write_table
from sertk.errors import SertkError
from sertk.features import build_feature, lexical
from sertk.features.audio import audio_info, read_audio
from sertk.features.base import FeatureExtractor
from sertk.features.io import (
    ARK_NAME,
    FORMATS,
    H5_NAME,
    RECORD,
    SCP_NAME,
    ArkWriter,
    Hdf5Writer,
    encode_frames,
)
from sertk.utils import (
    atomic_write_text,
    check_replaceable,
    console,
    fresh_tmp_dir,
    publish_dir,
    resolve_device,
)

# About 0.5 M samples (~30 s of 16 kHz audio) per batch: enough frames (~3000) that per-batch overhead
# (reading, padding, trimming, ~100 torch calls) vanishes; extractors whose working set outgrows the
# cache at that size compute in smaller passes themselves (the LLDs: ``chunk_samples``). Measured for
# logmel40 end to end: 256 k-sample batches cost 9% more CPU (twice the per-batch overhead).
BATCH_SAMPLES = 500_000


def compute_batch(
    extractor: FeatureExtractor, items: list[tuple[str, str]], device: torch.device | None = None
) -> dict:
    """Read and compute one batch of (utt, wav path) on ``device`` (default CPU); unreadable or too-short
    files become messages. Each utterance's frames come back in the feature's storage dtype
    (``encode_frames``), as a dump holds them and as ``sertk infer`` must see them to match training."""
    waves, utts, errors = [], [], []
    downmixed = resampled = 0
    for utt, path in items:
        try:
            wave, was_downmixed, was_resampled = read_audio(path, extractor.sample_rate)
        except SertkError as err:
            errors.append(str(err))
            continue
        if extractor.num_frames(len(wave)) == 0:
            errors.append(f"{path}: too short for one frame ({len(wave)} samples)")
            continue
        waves.append(wave)
        utts.append(utt)
        downmixed += was_downmixed
        resampled += was_resampled
    feats = []
    if waves:
        lengths = [len(w) for w in waves]
        batch = np.zeros((len(waves), max(lengths)), dtype=np.float32)
        for row, wave in enumerate(waves):
            batch[row, : len(wave)] = wave
        with torch.inference_mode():
            waves_in = torch.from_numpy(batch).to(device or "cpu")
            out = (
                extractor.compute(waves_in, torch.tensor(lengths, device=waves_in.device))
                .float()
                .cpu()
                .numpy()
            )
        dtype = extractor.storage_dtype
        feats = [encode_frames(out[row, : extractor.num_frames(n)], dtype) for row, n in enumerate(lengths)]
    return {
        "feats": list(zip(utts, feats, strict=True)),
        "errors": errors,
        "downmixed": downmixed,
        "resampled": resampled,
        "items": len(items),
    }


def compute_batches(
    extractor: FeatureExtractor,
    batches: list[list[tuple[str, str]]],
    nj: int,
    device: torch.device | None = None,
) -> Iterator[dict]:
    """``compute_batch`` of every batch, in order, on ``nj`` threads (the caller sets torch's thread count)."""
    if nj == 1:
        yield from (compute_batch(extractor, batch, device) for batch in batches)
        return
    pool = ThreadPoolExecutor(nj, thread_name_prefix="sertk-feats")
    try:
        pending: collections.deque = collections.deque()
        for batch in batches:
            pending.append(pool.submit(compute_batch, extractor, batch, device))
            if len(pending) >= 2 * nj:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def plan_batches(
    wavs: dict[str, str], extractor: FeatureExtractor, batch_samples: int = BATCH_SAMPLES
) -> tuple[list[list[tuple[str, str]]], list[str]]:
    """Length-sorted batches of (utt, path) of about ``batch_samples`` padded samples, and header errors."""
    lengths, errors = {}, []
    for utt, path in wavs.items():
        try:
            lengths[utt] = audio_info(path, extractor.sample_rate).target_samples
        except SertkError as err:
            errors.append(str(err))
    batches: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for utt in sorted(lengths, key=lambda u: (lengths[u], u)):
        # Sorted ascending, so this utterance is the longest and sets the padded width of the batch.
        if current and (len(current) + 1) * lengths[utt] > batch_samples:
            batches.append(current)
            current = []
        current.append((utt, wavs[utt]))
    if current:
        batches.append(current)
    return batches, errors


# Everything a feature dump dir holds; publish_dir replaces an existing dir only if it holds nothing else.
DUMP_FILES = {H5_NAME, ARK_NAME, SCP_NAME, "feat.yaml", "utt2num_frames", RECORD, ".done"}


def _owned(entry: Path) -> bool:
    return entry.name in DUMP_FILES


def _source_table(data: Path, table: str, missing: str) -> Path:
    path = Path(data) / table
    if not path.is_file():
        raise SertkError(f"{data}: {missing}")
    return path


def feats_record(data: Path, feat: str, extractor: FeatureExtractor, fmt: str) -> provenance.Record:
    """What an acoustic dump is made from: wav.scp, its audio files (size + mtime), feature config, version."""
    wav_scp = _source_table(data, "wav.scp", "not a data dir (no wav.scp)")
    wavs = read_table(wav_scp)
    return provenance.Record(
        stage="feats",
        inputs={"wav.scp": provenance.file_digest(wav_scp), "audio": provenance.stat_digest(wavs.values())},
        options={"feat": feat, "config": to_dict(extractor.cfg), "format": fmt},
        code=provenance.code_versions(extractor=f"{type(extractor).__name__}/{type(extractor).version}"),
    )


def _reused(out: Path, start: float) -> dict:
    """The summary of a dump that is already complete for this data and config (nothing recomputed)."""
    utterances, frames = _count_frames(out)
    console.print(f"{out}: up to date for this data and feature config ({utterances} utterances), skipping")
    seconds = time.perf_counter() - start
    return {
        "utterances": utterances,
        "frames": frames,
        "skipped": 0,
        "seconds": seconds,
        "out": str(out),
        "reused": True,
    }


def _open_writer(tmp: Path, out: Path, fmt: str, feat: str, config: dict, dim: int) -> Hdf5Writer | ArkWriter:
    if fmt == "hdf5":
        return Hdf5Writer(tmp / H5_NAME, feat, config, dim)
    return ArkWriter(tmp / ARK_NAME, tmp / SCP_NAME, out.resolve() / ARK_NAME)


def _finish(tmp: Path, out: Path, meta: dict, record: provenance.Record, fmt: str) -> None:
    """Write feat.yaml, then the provenance record (stamping the dump files), and swap ``tmp`` onto ``out``."""
    atomic_write_text(tmp / "feat.yaml", yaml.safe_dump(meta, sort_keys=False))
    names = [H5_NAME] if fmt == "hdf5" else [ARK_NAME, SCP_NAME]
    outputs = [tmp / n for n in [*names, "feat.yaml", "utt2num_frames"]]
    provenance.write_record(tmp / RECORD, record, outputs)
    provenance.remove_record(out / RECORD)
    publish_dir(tmp, out, _owned)


def _count_frames(out: Path) -> tuple[int, int]:
    frames = [int(n) for n in (Path(out) / "utt2num_frames").read_text().split()[1::2]]
    return len(frames), sum(frames)


def dump_features(
    data: Path,
    out: Path,
    feat: str = "logmel40",
    feat_config: Path | None = None,
    fmt: str = "hdf5",
    nj: int = 1,
    device: str = "cpu",
) -> dict:
    """Compute feature ``feat`` for every utterance of data dir ``data`` into feature dir ``out``.

    ``device``: cpu, cuda or auto. On a GPU (SSL extraction) one process feeds it and ``nj`` is not used;
    the device is not part of the dump's provenance (it changes float rounding only, like another CPU).
    Returns ``{"utterances", "frames", "skipped", "seconds", "out"}`` (``skipped``: utterances left out
    because their audio was unreadable or shorter than one frame) plus ``"reused"``: True when ``out`` was
    already complete for the same feature config and nothing was computed.
    """
    start = time.perf_counter()
    data, out = Path(data), Path(out)
    if fmt not in FORMATS:
        raise SertkError(f"unknown feature format {fmt!r} (known: {', '.join(FORMATS)})")
    if nj < 1:
        raise SertkError(f"--nj must be at least 1, got {nj}")
    torch_device = resolve_device(device)
    check_replaceable(out, _owned)
    if feat == lexical.NAME:
        return dump_lexical(data, out, feat_config, fmt)
    if torch_device.type != "cpu" and nj > 1:
        console.print(
            f"{out}: computing on {torch_device} in one process (--nj {nj} applies to CPU extraction)"
        )
        nj = 1
    extractor = build_feature(feat, feat_config)
    config = to_dict(extractor.cfg)
    meta = {"feat": feat, "config": config}
    record = feats_record(data, feat, extractor, fmt)
    if not provenance.check(out / RECORD, record):
        return _reused(out, start)
    wavs = read_data_dir(data)["wav.scp"]
    if not wavs:
        raise SertkError(f"{data / 'wav.scp'}: no utterances")
    batches, errors = plan_batches(wavs, extractor, BATCH_SAMPLES)

    tmp = fresh_tmp_dir(out)
    try:
        summary = _compute_into(tmp, out, batches, errors, extractor, (feat, config, fmt), nj, torch_device)
        if summary["utterances"] == 0:
            raise SertkError(
                f"{data}: no utterance could be computed ({len(errors)} failed, first: {errors[0]})"
            )
        _finish(tmp, out, meta, record, fmt)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    seconds = time.perf_counter() - start
    console.print(
        f"{out}: {summary['utterances']} utterances, {summary['frames']} frames of {feat} "
        f"(dim {extractor.dim}, {fmt}), {len(errors)} skipped, {summary['downmixed']} downmixed, "
        f"{summary['resampled']} resampled, {seconds:.1f} s"
    )
    return {
        "utterances": summary["utterances"],
        "frames": summary["frames"],
        "skipped": len(errors),
        "seconds": seconds,
        "out": str(out),
        "reused": False,
    }


def _compute_into(
    tmp: Path,
    out: Path,
    batches: list[list[tuple[str, str]]],
    errors: list[str],
    extractor: FeatureExtractor,
    what: tuple[str, dict, str],
    nj: int,
    device: torch.device,
) -> dict:
    """Compute all batches (on ``nj`` threads) and write them into ``tmp`` in order; appends to errors.

    ``what``: (feat, config, format)."""
    feat, config, fmt = what
    for message in errors:
        console.print(f"skipped {message}")
    writer = _open_writer(tmp, out, fmt, feat, config, extractor.dim)
    num_frames: dict[str, str] = {}
    counts = {"downmixed": 0, "resampled": 0}
    total = sum(len(b) for b in batches)
    columns = (TextColumn("feats"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    threads = torch.get_num_threads()
    # One job is one core: each of the nj threads runs its torch ops on itself, without intra-op threads.
    torch.set_num_threads(1)
    results = compute_batches(extractor, batches, nj, device)
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("feats", total=total)
            for result in results:
                for utt, feats in result["feats"]:
                    writer.write(utt, feats)
                    num_frames[utt] = str(len(feats))
                for message in result["errors"]:
                    progress.console.print(f"skipped {message}")
                errors.extend(result["errors"])
                counts["downmixed"] += result["downmixed"]
                counts["resampled"] += result["resampled"]
                progress.advance(task, result["items"])
    finally:
        results.close()
        torch.set_num_threads(threads)
        writer.close()
    write_table(tmp / "utt2num_frames", num_frames)
    return {
        "utterances": len(num_frames),
        "frames": sum(int(n) for n in num_frames.values()),
        **counts,
    }


def dump_lexical(data: Path, out: Path, feat_config: Path | None, fmt: str = "hdf5") -> dict:
    """``--feat lexical``: the word vectors of every transcript in ``data``'s ``text`` as (K, D) features.

    The same feature dir as an acoustic dump (``utt2num_frames`` counts words), fingerprinted by the
    ``text`` table instead of ``wav.scp``; see ``sertk.features.lexical`` for tokens and OOV words.
    """
    start = time.perf_counter()
    if feat_config is None:
        raise SertkError("--feat lexical needs --feat-config naming the embedding file (embeddings: PATH)")
    cfg = load_config(lexical.LexicalConfig, feat_config)
    config = to_dict(cfg)
    meta = {"feat": lexical.NAME, "config": config}
    text = _source_table(data, "text", "no text table, the transcripts lexical features are made from")
    record = provenance.Record(
        stage="feats",
        inputs={"text": provenance.file_digest(text), "embeddings": provenance.stat_digest([cfg.embeddings])},
        options={"feat": lexical.NAME, "config": config, "format": fmt},
        code=provenance.code_versions(extractor=f"lexical/{lexical.VERSION}"),
    )
    if not provenance.check(out / RECORD, record):
        return _reused(out, start)
    texts = read_data_dir(data)["text"]
    vocab = {w for line in texts.values() for w in lexical.tokenize(line)}
    vectors = lexical.read_embeddings(cfg.embeddings, cfg.format, vocab)
    dim = len(vectors[""])
    tmp = fresh_tmp_dir(out)
    try:
        writer = _open_writer(tmp, out, fmt, lexical.NAME, config, dim)
        num_words, empty = {}, 0
        try:
            for utt in sorted(texts):
                rows = lexical.sentence_vectors(texts[utt], vectors)
                writer.write(utt, rows)
                num_words[utt] = str(len(rows))
                empty += not rows.any()
        finally:
            writer.close()
        write_table(tmp / "utt2num_frames", num_words)
        _finish(tmp, out, meta, record, fmt)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    known = len(vocab & vectors.keys())
    total = sum(int(n) for n in num_words.values())
    console.print(
        f"{out}: {len(num_words)} utterances, {total} word vectors (dim {dim}, {fmt}); {known} of "
        f"{len(vocab)} distinct words in {cfg.embeddings}, {empty} utterances without a known word"
    )
    seconds = time.perf_counter() - start
    return {
        "utterances": len(num_words),
        "frames": total,
        "skipped": 0,
        "seconds": seconds,
        "out": str(out),
        "reused": False,
    }
