"""Making the copies of ``sertk augment``: per-copy random draws, batched perturbation, 16-bit wav files.

``CopyMaker.make((rate, [(utt, wav)]))`` reads one length-sorted batch of source utterances, computes every
copy with the batched ops of ``sertk.augment.perturb`` and writes ``<wav_dir>/<copy>.wav``; ``run_batches``
runs the batches in this process or in ``--nj`` spawned workers behind one progress bar.

Copy c draws its noise file, offset and SNR, or its RIR, from ``copy_rng(seed, c)``: numpy's generator seeded
by (seed, the first 8 bytes of sha256(c)), uniformly over the sorted list of usable files, so the draws do
not depend on the batch or the worker a copy lands in; the batches are planned from the data alone, so
``--nj`` never changes a file (another ``BATCH_SAMPLES`` changes FFT lengths, hence rounding: <= 1 LSB). A noise segment starts at a uniform offset; a noise shorter than the
utterance is repeated from a random offset. A drawn file that cannot be read or is silent is reported,
counted and drawn again (``MAX_DRAWS`` times at most, then the copy is skipped with a message). A copy whose
peak exceeds what 16 bits hold is scaled down as a whole (speech and noise alike, so its SNR stays).
"""

from __future__ import annotations

import hashlib
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sertk.augment.perturb import add_noise_at_snr, normalize_rir, reverberate, speed_perturb
from sertk.augment.sources import SourceFile, read_source
from sertk.errors import SertkError
from sertk.features.audio import audio_info, read_audio
from sertk.utils import batch_results, console

# Padded samples per batch: ~30 s of 16 kHz audio, as the feature dump batches.
BATCH_SAMPLES = 500_000
# A noise or RIR pick that cannot be read (or is silent) is drawn again this many times before the copy
# is given up.
MAX_DRAWS = 8
# The largest |sample| a 16-bit file holds: louder copies are scaled down to it rather than clipped.
PEAK = 32767 / 32768


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


def copy_rng(seed: int, copy: str) -> np.random.Generator:
    """The generator of one copy: seeded by (seed, sha256 of its id), whatever the order of the work."""
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(copy.encode()).digest()[:8], "little")])


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
    wavs: dict[str, str], batch_samples: int | None = None
) -> tuple[list[tuple[int, list[tuple[str, str]]]], list[str]]:
    """Length-sorted batches (sample rate, [(utt, path)]) of about ``batch_samples`` padded samples, one rate
    per batch, and one message per utterance whose header is unreadable."""
    batch_samples = BATCH_SAMPLES if batch_samples is None else batch_samples
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


def run_batches(
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
