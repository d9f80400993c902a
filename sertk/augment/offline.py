"""``sertk augment``: a data dir whose folds train on perturbed copies of their training utterances.

``augment_data_dir(data, folds, out, speeds, noise, snr, rir, seed, nj)`` writes OUT, a normal data dir
(``sertk feats OUT dump/...`` dumps it like any other)::

    OUT/wav.scp utt2spk utt2emo ... spk2utt corpus.json   every table of DATA, originals plus copies
    OUT/wav/<copy>.wav                                    the copies: mono 16-bit PCM at the source's rate
    OUT/folds.json                                        FOLDS with each train part grown by its copies
    OUT/augment.tsv                                       copy<TAB>source<TAB>kind<TAB>parameters
    OUT/folds.provenance.json  OUT/augment.provenance.json   written last (``sertk.provenance``)

Copies and their ids (Kaldi's prefixes):

- ``sp<f>-<utt>`` for each ``--speed`` factor f, formatted ``%g`` (``sp0.9-``, ``sp1.1-``): speed
  perturbation, Ko et al. 2015. ``--speed 0.9,1.1`` is Kaldi's 3-way perturbation (originals + two
  speeds); a factor 1.0 is ignored, the originals are always kept.
- ``noise-<utt>``: one copy with one noise segment added at SNR ~ U[lo, hi] dB (``--snr lo:hi``; MUSAN,
  Snyder et al. 2015). ``sertk.augment.perturb.add_noise_at_snr`` defines the SNR.
- ``rir-<utt>``: one copy convolved with one room impulse response (Ko et al. 2017), aligned on its direct
  path and kept at the input's energy (``sertk.augment.perturb.reverberate``).

Each copy applies one perturbation to the original, so the data grows by a predictable factor
(1 + speeds + noise + rir for a training utterance). Combinations come from chaining, as Kaldi chains data
dirs: ``sertk augment OUT OUT/folds.json OUT2 --noise DIR`` perturbs the copies too (``noise-sp0.9-<utt>``).

A copy keeps the source's speaker, label, votes and every other table value; ``utt2dur`` is recomputed for
speed copies (noise and RIR copies keep the length). Unlike Kaldi, which also prefixes speaker ids (its
speaker adaptation sees a faster speaker as another one), the speaker is kept: speakers define the
``loso-*`` folds, and a copy must stay on its source's side of them. Only utterances in the train part of
at least one fold get copies, and fold f's train part gains the copies of f's own train utterances only;
valid and test parts are unchanged (``check_augmented_folds`` asserts this before anything is written).

Randomness: each copy draws its noise file, offset and SNR, or its RIR, from a generator seeded by
(``--seed``, sha256 of its id), so the output does not depend on ``--nj`` (``sertk.augment.copies``).

A rerun with the same inputs and options is skipped ("up to date"); any change redoes the whole dir: the
records are withdrawn first, the new dir is built in a temp dir and published with ``publish_dir``, and the
records are written last, so an interrupted run leaves nothing a rerun would trust.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from sertk.augment.copies import AugmentOptions, CopyMaker, plan_batches, run_batches, speed_prefix
from sertk.augment.sources import find_noise_files, find_rir_files, load_sources
from sertk.data.datadir import DATA_FILES, DataDir, read_data_dir, write_data_dir
from sertk.data.folds import PARTS, check_folds, read_folds
from sertk.errors import SertkError
from sertk.provenance import (
    Record,
    check,
    code_versions,
    file_digest,
    files_digest,
    record_path,
    remove_record,
    stat_digest,
    write_record,
)
from sertk.utils import atomic_write_text, console, fresh_tmp_dir, publish_dir, write_json

# Bump when the audio a given input and option set produces changes, so old outputs are redone.
VERSION = 1
STAGE = "augment"
WAV_DIR = "wav"
LOG_NAME = "augment.tsv"
OWNED = {*DATA_FILES, "spk2utt", "corpus.json", "folds.json", LOG_NAME, WAV_DIR}


def parse_speeds(text: str) -> tuple[float, ...]:
    """``"0.9,1.1"`` -> (0.9, 1.1); 1.0 is dropped (the originals are kept anyway); empty -> ()."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise SertkError(f"--speed {text!r}: expected factors like 0.9,1.1") from None
    bad = [v for v in values if not 0.5 <= v <= 2.0]
    if bad:
        raise SertkError(f"--speed {text!r}: factors must lie in [0.5, 2], got {bad[0]:g}")
    speeds = tuple(v for v in values if v != 1.0)
    if len({speed_prefix(v) for v in speeds}) != len(speeds):
        raise SertkError(f"--speed {text!r}: a factor appears twice")
    return speeds


def parse_snr(text: str) -> tuple[float, float]:
    """``"0:15"`` -> (0.0, 15.0) (SNR ~ U[0, 15] dB); ``"10"`` -> (10.0, 10.0)."""
    parts = text.split(":")
    try:
        low, high = (float(parts[0]), float(parts[-1])) if len(parts) <= 2 else (None, None)
    except ValueError:
        low = high = None
    if low is None or high is None or low > high:
        raise SertkError(f"--snr {text!r}: expected LOW:HIGH in dB with LOW <= HIGH, like 0:15")
    return low, high


# ------------------------------------------------------------------------------------------------ folds


def augment_folds(folds: dict, copies_of: dict[str, list[str]]) -> dict:
    """``folds`` with each fold's train part grown by the copies of its own train utterances."""
    out = json.loads(json.dumps(folds))
    for fold in out["folds"]:
        fold["train"] = sorted(fold["train"] + [c for u in fold["train"] for c in copies_of.get(u, ())])
    return out


def check_augmented_folds(original: dict, augmented: dict, source_of: dict[str, str]) -> None:
    """Raise RuntimeError unless every fold's valid and test parts are unchanged and its train part is the
    original train part plus exactly the copies (``source_of``: copy -> source) of those utterances."""
    names = [f["name"] for f in original["folds"]]
    if [f["name"] for f in augmented["folds"]] != names:
        raise RuntimeError("augment: the augmented folds are not the original folds")
    for old, new in zip(original["folds"], augmented["folds"], strict=True):
        for part in PARTS:
            if part != "train" and new[part] != old[part]:
                raise RuntimeError(f"augment: {old['name']}.{part} changed")
        train = set(old["train"])
        wanted = train | {c for c, s in source_of.items() if s in train}
        if set(new["train"]) != wanted or len(new["train"]) != len(wanted):
            leaked = sorted(c for c in new["train"] if c not in train and source_of.get(c) not in train)
            what = (
                f"holds {leaked[0]}, a copy of an utterance outside its train part" if leaked else "is wrong"
            )
            raise RuntimeError(f"augment: {old['name']}.train {what}")


# ------------------------------------------------------------------------------------------- the stage


def _owned(entry: Path) -> bool:
    return entry.name in OWNED or entry.name.endswith(".provenance.json")


def _data_digest(data: Path) -> str:
    names = [*DATA_FILES, "spk2utt", "corpus.json"]
    return files_digest([data / n for n in names if (data / n).is_file()], base=data)


def _training_utterances(data: DataDir, folds: dict, options: AugmentOptions) -> list[str]:
    """The utterances in the train part of at least one fold; SertkError if a copy id is taken or unusable."""
    sources = sorted({u for fold in folds["folds"] for u in fold["train"]})
    taken = data["wav.scp"]
    clash = next((f"{p}-{u}" for u in sources for p in options.prefixes if f"{p}-{u}" in taken), None)
    if clash is not None:
        raise SertkError(f"{data.path / 'wav.scp'}: already holds {clash}, the id a copy would get")
    bad_id = next((u for u in sources if "/" in u), None)
    if bad_id is not None:
        raise SertkError(f"{data.path / 'wav.scp'}: id {bad_id!r} contains '/', which cannot name a wav file")
    return sources


def _withdraw(out: Path, reasons: list[str]) -> None:
    """Before a rewrite: refuse an OUT holding others' files, say why it is redone, remove its records.

    With the records gone, an interrupted run leaves an OUT that no rerun trusts."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise SertkError(f"{out}: exists and is not a directory; choose another OUT")
        foreign = sorted(e.name for e in out.iterdir() if not _owned(e))
        if foreign:
            raise SertkError(
                f"{out}: exists and holds files sertk augment did not write ({foreign[0]}); choose another OUT"
            )
        console.print(f"{out}: redoing ({'; '.join(reasons)})", markup=False)
    remove_record(record_path(out, STAGE))
    remove_record(record_path(out / "folds.json"))


def _wanted_record(data: DataDir, folds_path: Path, options: AugmentOptions, sources: list[str]) -> Record:
    wavs = data["wav.scp"]
    inputs = {
        "data": _data_digest(data.path),
        "audio": stat_digest(wavs[u] for u in sources),
        "folds": file_digest(folds_path),
    }
    if options.noise is not None:
        inputs["noise"] = stat_digest(find_noise_files(options.noise))
    if options.rir is not None:
        inputs["rir"] = stat_digest(find_rir_files(options.rir))
    return Record(stage=STAGE, inputs=inputs, options=options.to_json(), code=code_versions(augment=VERSION))


def _summary_line(summary: dict) -> str:
    kinds = ", ".join(f"{n} {k}" for k, n in summary["copies"].items()) or "none"
    return (
        f"{summary['out']}: {summary['originals']} originals + {sum(summary['copies'].values())} copies "
        f"({kinds}) of {summary['sources']} training utterances; {summary['skipped']} skipped, "
        f"{summary['scaled']} scaled down to fit 16 bits; {summary['bad_noise']} noise and "
        f"{summary['bad_rir']} RIR files skipped as unreadable or silent; {summary['seconds']:.1f} s "
        f"({summary['sources'] / max(summary['seconds'], 1e-9):.1f} utt/s)"
    )


def _write_outputs(
    tmp: Path,
    out: Path,
    data: DataDir,
    folds: dict,
    folds_path: Path,
    options: AugmentOptions,
    made: list[dict],
    summary: dict,
) -> None:
    """The data dir tables, folds.json and augment.tsv of the copies in ``made``, into ``tmp``."""
    tables = {name: dict(table) for name, table in data.tables.items()}
    for copy in made:
        for name, table in data.tables.items():
            if copy["source"] in table:
                tables[name][copy["copy"]] = table[copy["source"]]
        tables["wav.scp"][copy["copy"]] = str(out / WAV_DIR / f"{copy['copy']}.wav")
        if copy["kind"] == "speed" and "utt2dur" in tables:
            tables["utt2dur"][copy["copy"]] = f"{copy['samples'] / copy['rate']:.4f}"
    meta = {
        **data.meta,
        "augment": {
            "data": str(data.path),
            "folds": str(folds_path),
            **options.to_json(),
            "summary": summary,
        },
    }
    written = write_data_dir(tmp, tables, meta)
    source_of = {c["copy"]: c["source"] for c in made}
    copies_of: dict[str, list[str]] = {}
    for copy, source in source_of.items():
        copies_of.setdefault(source, []).append(copy)
    augmented = augment_folds(folds, copies_of)
    augmented["augment"] = {"folds": str(folds_path), "copies": len(made)}
    check_augmented_folds(folds, augmented, source_of)
    check_folds(augmented, written, where=str(out / "folds.json"))
    write_json(tmp / "folds.json", augmented)
    rows = "".join(f"{c['copy']}\t{c['source']}\t{c['kind']}\t{c['detail']}\n" for c in made)
    atomic_write_text(tmp / LOG_NAME, "copy\tsource\tkind\tparameters\n" + rows)


def augment_data_dir(
    data: Path,
    folds: Path,
    out: Path,
    speeds: tuple[float, ...] = (),
    noise: Path | None = None,
    snr: tuple[float, float] = (0.0, 15.0),
    rir: Path | None = None,
    seed: int = 0,
    nj: int = 1,
) -> dict:
    """Write OUT: DATA plus perturbed copies of the training utterances of FOLDS (see the module docstring).

    Returns ``{"out", "originals", "sources", "copies": {kind: n}, "skipped", "scaled", "bad_noise",
    "bad_rir", "seconds", "reused"}``; ``reused`` is True when OUT was up to date and nothing was made.
    """
    start = time.perf_counter()
    data, folds, out = Path(data).resolve(), Path(folds).resolve(), Path(out).resolve()
    if nj < 1:
        raise SertkError(f"--nj must be at least 1, got {nj}")
    if not speeds and noise is None and rir is None:
        raise SertkError("augment: nothing to do (give --speed, --noise or --rir)")
    if out == data:
        raise SertkError(f"{out}: the output must be a new data dir, not DATA itself")
    if folds.parent == out:
        raise SertkError(f"{folds}: the folds must not live inside OUT, which is rewritten")
    options = AugmentOptions(
        speeds=tuple(speeds),
        noise=Path(noise).resolve() if noise is not None else None,
        snr=(float(snr[0]), float(snr[1])),
        rir=Path(rir).resolve() if rir is not None else None,
        seed=seed,
    )
    source_data = read_data_dir(data)
    source_folds = read_folds(folds, source_data)
    sources = _training_utterances(source_data, source_folds, options)
    record_file = record_path(out, STAGE)
    wanted = _wanted_record(source_data, folds, options, sources)
    reasons = check(record_file, wanted)
    if not reasons:
        summary = read_data_dir(out).meta.get("augment", {}).get("summary", {})
        console.print(f"{out}: up to date (same data, folds, noise/RIR files and options), skipping")
        return {**summary, "seconds": time.perf_counter() - start, "reused": True}
    _withdraw(out, reasons)

    noise_files, bad_noise = load_sources(options.noise, "noise")
    rir_files, bad_rir = load_sources(options.rir, "rir")
    tmp = fresh_tmp_dir(out)
    try:
        (tmp / WAV_DIR).mkdir()
        maker = CopyMaker(options, noise_files, rir_files, tmp / WAV_DIR)
        batches, errors = plan_batches({u: source_data["wav.scp"][u] for u in sources})
        made, late_bad, scaled = run_batches(maker, batches, errors, nj)
        summary = {
            "out": str(out),
            "originals": len(source_data.utts),
            "sources": len(sources),
            "copies": {kind: sum(c["kind"] == kind for c in made) for kind in ("speed", "noise", "rir")},
            "skipped": len(errors),
            "scaled": scaled,
            # Files bad at the header scan, plus those whose data failed (or was silent) when drawn.
            "bad_noise": len(bad_noise) + len(late_bad.keys() & {str(f.path) for f in noise_files}),
            "bad_rir": len(bad_rir) + len(late_bad.keys() & {str(f.path) for f in rir_files}),
        }
        _write_outputs(tmp, out, source_data, source_folds, folds, options, made, summary)
        publish_dir(tmp, out, _owned)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    outputs = [out / n for n in sorted(OWNED) if (out / n).exists()]
    folds_record = Record(stage="folds", inputs={"folds": wanted.inputs["folds"], "augment": wanted.key})
    write_record(record_path(out / "folds.json"), folds_record, [out / "folds.json"])
    write_record(record_file, wanted, outputs)
    summary["seconds"] = time.perf_counter() - start
    console.print(_summary_line(summary), markup=False)
    return {**summary, "reused": False}
