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

Randomness: copy c draws its noise file, offset, SNR and RIR from a generator seeded by
(``--seed``, sha256(c)), uniformly over the sorted list of usable files, so the output does not depend on
``--nj`` or on the order of the work. Noise shorter than the utterance is repeated from a random offset.

A rerun with the same inputs and options is skipped ("up to date"); any change redoes the whole dir: the
records are withdrawn first, the new dir is built in a temp dir and published with ``publish_dir``, and the
records are written last, so an interrupted run leaves nothing a rerun would trust.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sertk.augment.perturb import add_noise_at_snr, normalize_rir, reverberate, speed_perturb
from sertk.augment.sources import SourceFile, find_noise_files, find_rir_files, load_sources, read_source
from sertk.data.datadir import DATA_FILES, DataDir, read_data_dir, write_data_dir
from sertk.data.folds import PARTS, check_folds, read_folds
from sertk.errors import SertkError
from sertk.features.audio import audio_info, read_audio
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
from sertk.utils import atomic_write_text, batch_results, console, fresh_tmp_dir, publish_dir, write_json

# Bump when the audio a given input and option set produces changes, so old outputs are redone.
VERSION = 1
STAGE = "augment"
# Padded samples per batch: ~30 s of 16 kHz audio, as the feature dump batches.
BATCH_SAMPLES = 500_000
# A noise or RIR pick that cannot be read (or is silent) is drawn again this many times before the copy
# is given up.
MAX_DRAWS = 8
# The largest |sample| a 16-bit file holds: louder copies are scaled down to it rather than clipped.
PEAK = 32767 / 32768
WAV_DIR = "wav"
LOG_NAME = "augment.tsv"
OWNED = {*DATA_FILES, "spk2utt", "corpus.json", "folds.json", LOG_NAME, WAV_DIR}


@dataclass(frozen=True)
class AugmentOptions:
    """What ``sertk augment`` makes: speed factors, a noise dir with an SNR range, a RIR dir, the seed."""

    speeds: tuple[float, ...] = ()
    noise: Path | None = None
    snr: tuple[float, float] = (0.0, 15.0)
    rir: Path | None = None
    seed: int = 0

    @property
    def prefixes(self) -> list[str]:
        """The id prefix of each copy an utterance gets: copy ids are ``<prefix>-<utt>``."""
        return (
            [speed_prefix(f) for f in self.speeds]
            + (["noise"] if self.noise is not None else [])
            + (["rir"] if self.rir is not None else [])
        )

    def to_json(self) -> dict:
        options: dict = {"speed": list(self.speeds), "seed": self.seed}
        if self.noise is not None:
            options.update(noise=str(self.noise), snr=list(self.snr))
        if self.rir is not None:
            options["rir"] = str(self.rir)
        return options


def speed_prefix(factor: float) -> str:
    """Kaldi's prefix of a speed copy: ``sp0.9``, ``sp1.1`` (``%g`` of the factor)."""
    return f"sp{factor:g}"


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


def copy_rng(seed: int, copy: str) -> np.random.Generator:
    """The generator of one copy: seeded by (seed, sha256 of its id), whatever the order of the work."""
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(copy.encode()).digest()[:8], "little")])


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


# ------------------------------------------------------------------------------------------- the audio


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    """A mono 16-bit PCM wav, with the standard library: libsndfile's close fsyncs every file, which cost
    more than making the copies (2 s for 444 files here); the whole dir is published at once anyway."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.astype("<i2").tobytes())


def pad_rows(rows: list[torch.Tensor], width: int | None = None) -> torch.Tensor:
    """1-D tensors as one zero-padded (B, width) batch (width: the longest row if not given)."""
    batch = torch.zeros(len(rows), width if width is not None else max(len(r) for r in rows))
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row
    return batch


@dataclass
class CopyMaker:
    """Makes every copy of a batch of source utterances and writes them under ``wav_dir``."""

    options: AugmentOptions
    noise: list[SourceFile]
    rirs: list[SourceFile]
    wav_dir: Path
    _rir_cache: dict = field(default_factory=dict, repr=False)

    def make(self, job: tuple[int, list[tuple[str, str]]]) -> dict:
        """One batch (sample rate, [(utt, wav path)]) -> {"copies", "errors", "bad_sources", "scaled", "items"}."""
        rate, items = job
        result: dict = {"copies": [], "errors": [], "bad_sources": {}, "scaled": 0, "items": len(items)}
        waves, utts = [], []
        for utt, path in items:
            try:
                waves.append(torch.from_numpy(read_audio(path, rate)[0]))
                utts.append(utt)
            except SertkError as err:
                result["errors"].append(str(err))
        if not waves:
            return result
        lengths = torch.tensor([len(w) for w in waves])
        batch = pad_rows(waves)
        with torch.inference_mode():
            for factor in self.options.speeds:
                out, out_lengths = speed_perturb(batch, lengths, rate, factor)
                rows = [(row, f"speed={factor:g}") for row in range(len(utts))]
                self._write_rows(result, speed_prefix(factor), "speed", utts, rows, out, out_lengths, rate)
            if self.noise:
                self._add_noise(result, batch, lengths, utts, rate)
            if self.rirs:
                self._reverberate(result, batch, lengths, utts, rate)
        return result

    def _picks(self, result: dict, kind: str, utts: list[str], pick) -> list[tuple[int, tuple]]:
        """(row, pick(generator of the copy, row)) for every row whose ``kind`` copy found a usable file."""
        chosen = []
        for row, utt in enumerate(utts):
            picked = pick(copy_rng(self.options.seed, f"{kind}-{utt}"), row)
            if picked is None:
                result["errors"].append(
                    f"{kind}-{utt}: no readable, non-silent {kind} file in {MAX_DRAWS} draws; copy skipped"
                )
            else:
                chosen.append((row, picked))
        return chosen

    def _add_noise(
        self, result: dict, batch: torch.Tensor, lengths: torch.Tensor, utts: list[str], rate: int
    ) -> None:
        def pick(rng: np.random.Generator, row: int) -> tuple | None:
            snr = float(rng.uniform(*self.options.snr))
            found = self._pick_noise(rng, int(lengths[row]), rate, result)
            return None if found is None else (snr, *found)

        chosen = self._picks(result, "noise", utts, pick)
        if not chosen:
            return
        index = torch.tensor([row for row, _ in chosen])
        noise = pad_rows([torch.from_numpy(segment) for _, (_, segment, _) in chosen], batch.shape[1])
        snrs = torch.tensor([snr for _, (snr, _, _) in chosen])
        noisy = add_noise_at_snr(batch[index], noise, lengths[index], snrs)
        rows = [(row, f"{detail} snr={snr:.2f}") for row, (snr, _, detail) in chosen]
        self._write_rows(result, "noise", "noise", utts, rows, noisy, lengths[index], rate)

    def _pick_noise(
        self, rng: np.random.Generator, n: int, rate: int, result: dict
    ) -> tuple[np.ndarray, str] | None:
        """A noise segment of n samples (repeated from a random offset if the file is shorter) and its detail."""
        for _ in range(MAX_DRAWS):
            source = self.noise[int(rng.integers(len(self.noise)))]
            total = source.frames_at(rate)
            offset = int(rng.integers(0, total - n + 1)) if total >= n else int(rng.integers(0, total))
            try:
                if total >= n:
                    segment = read_source(source, rate, offset, n)
                else:
                    segment = np.roll(read_source(source, rate), -offset)
            except SertkError as err:
                result["bad_sources"][str(source.path)] = str(err)
                continue
            if len(segment) == 0 or not np.any(segment):
                result["bad_sources"][str(source.path)] = f"{source.path}: silent or empty noise segment"
                continue
            return np.resize(segment, n).astype(np.float32), f"noise={source.name} offset={offset}"
        return None

    def _reverberate(
        self, result: dict, batch: torch.Tensor, lengths: torch.Tensor, utts: list[str], rate: int
    ) -> None:
        chosen = self._picks(result, "rir", utts, lambda rng, row: self._pick_rir(rng, rate, result))
        if not chosen:
            return
        index = torch.tensor([row for row, _ in chosen])
        rirs = pad_rows([h for _, (h, _, _) in chosen])
        delays = torch.tensor([delay for _, (_, delay, _) in chosen])
        wet = reverberate(batch[index], lengths[index], rirs, delays)
        rows = [(row, f"rir={name} delay={delay}") for row, (_, delay, name) in chosen]
        self._write_rows(result, "rir", "rir", utts, rows, wet, lengths[index], rate)

    def _pick_rir(
        self, rng: np.random.Generator, rate: int, result: dict
    ) -> tuple[torch.Tensor, int, str] | None:
        """A unit-energy impulse response, its direct-path index and its name."""
        for _ in range(MAX_DRAWS):
            source = self.rirs[int(rng.integers(len(self.rirs)))]
            key = (source.path, rate)
            if key not in self._rir_cache:
                try:
                    wave = torch.from_numpy(read_source(source, rate))
                except SertkError as err:
                    result["bad_sources"][str(source.path)] = str(err)
                    continue
                if not bool(wave.any()):
                    result["bad_sources"][str(source.path)] = f"{source.path}: silent impulse response"
                    continue
                if len(self._rir_cache) >= 512:  # RIRs are short; 512 of them stay well under 100 MB
                    self._rir_cache.clear()
                self._rir_cache[key] = normalize_rir(wave)
            h, delay = self._rir_cache[key]
            return h, delay, source.name
        return None

    def _write_rows(
        self,
        result: dict,
        prefix: str,
        kind: str,
        utts: list[str],
        rows: list[tuple[int, str]],
        out: torch.Tensor,
        lengths: torch.Tensor,
        rate: int,
    ) -> None:
        """Write row i of ``out`` (its first lengths[i] samples) as the copy ``<prefix>-<utt of rows[i]>``."""
        for i, (row, detail) in enumerate(rows):
            samples = out[i, : int(lengths[i])].numpy()
            peak = float(np.abs(samples).max()) if len(samples) else 0.0
            if (
                peak > PEAK
            ):  # louder than 16 bits hold: scale the copy (speech and noise alike: the SNR stays)
                samples = samples * (PEAK / peak)
                result["scaled"] += 1
            pcm = np.round(samples * 32768).astype(np.int16)
            copy = f"{prefix}-{utts[row]}"
            write_wav(self.wav_dir / f"{copy}.wav", pcm, rate)
            result["copies"].append(
                {
                    "copy": copy,
                    "source": utts[row],
                    "kind": kind,
                    "samples": len(pcm),
                    "rate": rate,
                    "detail": detail,
                }
            )


_worker_maker: CopyMaker | None = None


def _init_worker(maker: CopyMaker) -> None:
    global _worker_maker
    torch.set_num_threads(1)
    _worker_maker = maker


def _worker_make(job: tuple[int, list[tuple[str, str]]]) -> dict:
    return _worker_maker.make(job)


def plan_batches(
    wavs: dict[str, str], batch_samples: int = BATCH_SAMPLES
) -> tuple[list[tuple[int, list[tuple[str, str]]]], list[str]]:
    """Length-sorted batches (sample rate, [(utt, path)]) of about ``batch_samples`` padded samples, one rate
    per batch, and one message per utterance whose header is unreadable."""
    infos, errors = {}, []
    for utt, path in wavs.items():
        try:
            info = audio_info(path, 16000)
            infos[utt] = (info.sample_rate, info.num_samples)
        except SertkError as err:
            errors.append(str(err))
    batches: list[tuple[int, list[tuple[str, str]]]] = []
    current: list[tuple[str, str]] = []
    current_rate = None
    for utt in sorted(infos, key=lambda u: (*infos[u], u)):
        rate, n = infos[utt]
        # Sorted ascending, so this utterance is the longest and sets the padded width of the batch.
        if current and (rate != current_rate or (len(current) + 1) * n > batch_samples):
            batches.append((current_rate, current))
            current = []
        current_rate = rate
        current.append((utt, wavs[utt]))
    if current:
        batches.append((current_rate, current))
    return batches, errors


def _run_batches(
    maker: CopyMaker, batches: list[tuple[int, list[tuple[str, str]]]], errors: list[str], nj: int
) -> tuple[list[dict], dict[str, str], int]:
    """Make every batch (in-process or in ``nj`` spawned workers); (copies, bad noise/RIR files, scaled)."""
    for message in errors:
        console.print(f"skipped {message}", markup=False)
    made: list[dict] = []
    bad: dict[str, str] = {}
    scaled = 0
    columns = (TextColumn("augment"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    pool = batch_results(maker.make, _worker_make, batches, nj, _init_worker, (maker,))
    with pool as results, Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("augment", total=sum(len(items) for _, items in batches))
        for result in results:
            made.extend(result["copies"])
            for message in result["errors"]:
                progress.console.print(f"skipped {message}", markup=False)
            for path, message in result["bad_sources"].items():
                if path not in bad:
                    progress.console.print(f"skipped {message}", markup=False)
                    bad[path] = message
            errors.extend(result["errors"])
            scaled += result["scaled"]
            progress.advance(task, result["items"])
    return sorted(made, key=lambda c: c["copy"]), bad, scaled


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
        made, late_bad, scaled = _run_batches(maker, batches, errors, nj)
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
