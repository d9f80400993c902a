"""Pitch trackers and voicing measures for the LLD feature sets, batched over (B, T) frames in torch.

Two trackers share the voicing measures here:

- ``is09``: openSMILE's IS09 scheme (cAcf + cPitchACF) on the 25 ms analysis frame: voicing probability
  from the autocorrelation's magnitude (``acf_voicing``), raw F0 from the first clear peak of the cepstrum
  IFFT(ln(1 + |X|^2)) (``cepstral_peak_f0``), F0 = 0 where voicing < the threshold, then cPitchACF's
  contour rules (``is09_f0_contour``); the LLD sets delay the result by one frame, as openSMILE emits it.
  Equal to openSMILE 2.6 frame by frame (tests/test_lld_opensmile.py), but with a 25 ms frame a 100 Hz
  voice has only 2.5 periods under a Hamming window, so as a tracker it is weak below ~150 Hz.
- ``acf``: a longer window (default 50 ms, Hann) centred on each frame, normalised by the window's own
  autocorrelation (Boersma 1993, "Accurate short-term analysis of the fundamental frequency and the
  harmonics-to-noise ratio of a sampled sound", Eq. 9), peaks refined by parabolic interpolation, an
  octave cost favouring the shortest plausible period (Boersma's R - OctaveCost * log2(MinPitch * tau)),
  then a neighbour check that re-picks the peak nearest the local median period where a frame is an
  octave off its voiced neighbours. No Viterbi: every step is a masked tensor operation.
"""

from __future__ import annotations

import math

import torch
import torchaudio.functional

from sertk.features.frames import analysis_window, fast_fft_size, frame_signal, frame_sums
from sertk.masking import frame_mask


def autocorrelation(frames: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Linear (not circular) autocorrelation of the last axis for lags 0..max_lag, via one real FFT."""
    n_fft = fast_fft_size(frames.shape[-1] + max_lag + 1)
    return _padded_autocorrelation(torch.nn.functional.pad(frames, (0, n_fft - frames.shape[-1])), max_lag)


def _padded_autocorrelation(padded: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Autocorrelation for lags 0..max_lag of frames already zero-padded to at least length + max_lag + 1."""
    spectrum = torch.fft.rfft(padded)
    # |X|^2 as X·conj(X) in place: already the complex input irfft wants (imaginary part exactly 0), so no
    # separate real power tensor and no copy of it into a complex one (13% faster, identical output).
    spectrum.mul_(spectrum.conj())
    return torch.fft.irfft(spectrum, n=padded.shape[-1])[..., : max_lag + 1]


def _peak_candidates(acf: torch.Tensor, lag_min: int, lag_max: int) -> torch.Tensor:
    """Bool mask over lags: local maxima of ``acf`` strictly inside [lag_min, lag_max]."""
    first, last = max(lag_min, 1), min(lag_max, acf.shape[-1] - 2)
    band = acf[..., first : last + 1]
    peaks = (band > acf[..., first - 1 : last]) & (band >= acf[..., first + 1 : last + 2])
    return torch.nn.functional.pad(peaks, (first, acf.shape[-1] - last - 1))


def _lag_range(sample_rate: int, f0_min: float, f0_max: float, size: int) -> tuple[int, int]:
    """openSMILE cPitchACF's first and last lag: int(1 / (f0_max · T)) in its float arithmetic, which is
    one below sample_rate / f0_max when that is an integer (31 for 500 Hz at 16 kHz, checked frame by
    frame), so ceil(sample_rate / f0_max) − 1; the last is sample_rate / f0_min or size − 1."""
    first = max(int(math.ceil(sample_rate / f0_max)) - 1, 1)
    return first, min(int(math.ceil(sample_rate / f0_min)), size - 1)


def acf_voicing(acf: torch.Tensor, sample_rate: int, f0_min: float, f0_max: float) -> torch.Tensor:
    """IS09 voicing probability from the first half of the ACF (lags 0 … K − 1), in [0, 1].

    openSMILE cPitchACF's voicingProb on cAcf's output, which holds the autocorrelation's MAGNITUDE a
    (so a formant's negative lobe counts like a positive peak): the largest a_τ over the lags τ of
    ``_lag_range`` where a rises (a_{τ−1} < a_τ), or at the last lag, over a_0; 0 where a_0 = 0. Equal to
    openSMILE 2.6's voiceProb on every frame when given its own ACF level.
    """
    magnitude = acf.abs()
    first, last = _lag_range(sample_rate, f0_min, f0_max, acf.shape[-1])
    band = magnitude[..., first : last + 1]
    counted = band > magnitude[..., first - 1 : last]
    counted[..., -1] = True
    best = torch.where(counted, band, torch.zeros_like(band)).amax(dim=-1)
    energy = acf[..., 0]
    prob = torch.where(energy > 0, best / energy.clamp_min(1e-20), torch.zeros_like(best))
    return prob.nan_to_num(0.0, posinf=0.0, neginf=0.0).clamp(0.0, 1.0)


def cepstral_f0(spectrum_power: torch.Tensor, n_fft: int, sample_rate: int, f0_min: float, f0_max: float):
    """Raw IS09 F0 (Hz) per frame from the power spectrum |X|^2 of its n_fft-point DFT, 0 where none.

    openSMILE cAcf with cepstrum=1, usePower=1: c = IFFT(ln(1 + |X|^2)) at quefrencies 0 … n_fft/2 − 1 (the
    ``1 +`` matches openSMILE's cepstrum level to 0.5%, and makes it depend on the input scale, waves in
    [-1, 1] as openSMILE reads them), then ``cepstral_peak_f0``.
    """
    cepstrum = torch.fft.irfft(torch.log1p(spectrum_power), n=n_fft)[..., : n_fft // 2]
    return cepstral_peak_f0(cepstrum, sample_rate, f0_min, f0_max)


def cepstral_peak_f0(cepstrum: torch.Tensor, sample_rate: int, f0_min: float, f0_max: float) -> torch.Tensor:
    """F0 = sample_rate / q at the first clear cepstral peak q, 0 where there is none; (..., K) -> (...).

    openSMILE cPitchACF's pitchPeak: with q0 the first lag of ``_lag_range`` (31 for 500 Hz at 16 kHz), the
    threshold is 0.6 (max_{q > q0} c_q + mean_{all q} |c_q|), and q is the FIRST strict local maximum
    q >= q0 + 2 (up to sample_rate / f0_min and K − 2) above it. The band's highest value is no
    substitute: on low voices it often sits at the band's low edge, where the spectral envelope's own
    cepstrum is still large, and gives F0 = f0_max.
    """
    size = cepstrum.shape[-1]
    skip = _lag_range(sample_rate, f0_min, f0_max, size)[0] + 1
    q_max = min(int(math.ceil(sample_rate / f0_min)), size - 2)
    threshold = 0.6 * (cepstrum[..., skip:].amax(dim=-1) + cepstrum.abs().mean(dim=-1))
    band = cepstrum[..., skip + 1 : q_max + 1]
    peaks = (
        (band > threshold.unsqueeze(-1))
        & (band > cepstrum[..., skip:q_max])
        & (band > cepstrum[..., skip + 2 : q_max + 2])
    )
    quefrency = (peaks.to(torch.uint8).argmax(dim=-1) + skip + 1).to(cepstrum.dtype)
    return torch.where(peaks.any(dim=-1), sample_rate / quefrency, torch.zeros_like(quefrency))


def _jump_corrected(pitches: list[float]) -> list[float]:
    """One row's voiced F0 values in order, each outside (0.6, 1.4) x the running mean replaced by it."""
    corrected, mean = [], pitches[0]
    for pitch in pitches:
        inside = 0.6 * mean < pitch < 1.4 * mean
        corrected.append(pitch if inside else mean)
        # The mean follows every raw value, three times slower after a jump.
        mean += (0.3 if inside else 0.1) * (pitch - mean)
    return corrected


def is09_f0_contour(f0: torch.Tensor, frame_counts: torch.Tensor) -> torch.Tensor:
    """openSMILE cPitchACF's F0 contour rules on raw F0 (B, T) (0 = unvoiced), per row.

    1. A voiced frame whose F0 is outside (0.6, 1.4) times the running mean of the row's voiced F0 so far
       takes that mean (the mean starts at the first voiced F0 and moves 30% of the way to each new raw
       value, 10% after a jump): octave errors become the running mean.
    2. A voiced frame between two unvoiced frames becomes unvoiced.
    3. F0 at t becomes the mean of t and t − 1 where both are voiced.
    openSMILE also emits the result one frame late; the LLD sets apply that as ``f0_delay_frames``.
    Frames past a row's ``frame_counts`` are treated as unvoiced, so a row never sees its padding.
    """
    total = f0.shape[1]
    f0 = torch.where(frame_mask(frame_counts.to(f0.device), total), f0, torch.zeros_like(f0))
    voiced = f0 > 0
    corrected = f0.clone()
    for row in range(f0.shape[0]):
        index = voiced[row].nonzero().squeeze(1)
        if index.numel():
            values = _jump_corrected(f0[row, index].tolist())
            corrected[row, index] = torch.tensor(values, dtype=f0.dtype, device=f0.device)
    before = torch.nn.functional.pad(voiced, (1, 0))[:, :total]
    after = torch.nn.functional.pad(voiced, (0, 1))[:, 1:]
    corrected = corrected.masked_fill(voiced & ~before & ~after, 0.0)
    previous = torch.nn.functional.pad(corrected, (1, 0))[:, :total]
    both = (corrected > 0) & (previous > 0)
    return torch.where(both, 0.5 * (corrected + previous), corrected)


def _parabolic(acf: torch.Tensor, lag: torch.Tensor):
    """Sub-sample peak position and height by a parabola through lags lag-1, lag, lag+1."""
    lag = lag.clamp(1, acf.shape[-1] - 2)
    a = acf.gather(-1, (lag - 1).unsqueeze(-1)).squeeze(-1)
    b = acf.gather(-1, lag.unsqueeze(-1)).squeeze(-1)
    c = acf.gather(-1, (lag + 1).unsqueeze(-1)).squeeze(-1)
    curvature = a - 2 * b + c
    shift = torch.where(curvature < 0, 0.5 * (a - c) / curvature.clamp_max(-1e-12), torch.zeros_like(b))
    shift = shift.clamp(-0.5, 0.5)
    height = b - 0.25 * (a - c) * shift
    return lag.to(acf.dtype) + shift, height


def _best_peak(
    norm_acf: torch.Tensor, peaks: torch.Tensor, sample_rate: int, f0_min: float, octave_cost: float
):
    """Lag index of the peak maximising r(tau) - octave_cost * log2(f0_min * tau / sample_rate)."""
    lags = torch.arange(norm_acf.shape[-1], device=norm_acf.device, dtype=norm_acf.dtype)
    cost = octave_cost * torch.log2((f0_min * lags / sample_rate).clamp_min(1e-6))
    score = torch.where(peaks, norm_acf - cost, torch.full_like(norm_acf, -math.inf))
    return score.argmax(dim=-1), torch.isfinite(score.amax(dim=-1))


def _local_median(values: torch.Tensor, valid: torch.Tensor, radius: int) -> torch.Tensor:
    """Median of ``values`` over valid frames within +-radius; NaN where no valid neighbour exists."""
    masked = torch.where(valid, values, torch.full_like(values, math.nan))
    padded = torch.nn.functional.pad(masked, (radius, radius), value=math.nan)
    windows = padded.unfold(-1, 2 * radius + 1, 1)
    return windows.nanmedian(dim=-1).values


def _resampled_rows(waves: torch.Tensor, lengths: torch.Tensor, rate: int, new_rate: int):
    """Each row's own samples resampled (torchaudio's windowed sinc) and zero-padded again, with the new
    lengths: row by row, so a row of a batch is bit for bit the utterance resampled alone."""
    rows = [
        torchaudio.functional.resample(wave[: int(n)], rate, new_rate)
        for wave, n in zip(waves, lengths.tolist(), strict=True)
    ]
    new_lengths = torch.tensor([len(row) for row in rows], device=lengths.device)
    width = -(-waves.shape[1] * new_rate // rate)
    return torch.stack([torch.nn.functional.pad(row, (0, width - len(row))) for row in rows]), new_lengths


def robust_acf_pitch(
    waves: torch.Tensor,
    lengths: torch.Tensor,
    num_frames: torch.Tensor,
    total_frames: int,
    sample_rate: int,
    frame_length: int,
    frame_shift: int,
    window_length: int,
    f0_min: float,
    f0_max: float,
    voicing_threshold: float,
    silence_threshold: float,
    octave_cost: float,
    neighbour_radius: int,
    analysis_rate: int | None = None,
):
    """F0 (Hz, 0 when unvoiced) and normalised ACF peak r in [0, 1] per frame, each (B, T).

    Boersma (1993) Eq. 9: r(tau) = r_a(tau) / r_w(tau), the signal's autocorrelation divided by the
    window's; r of the chosen peak is the periodicity used for voicing probability and HNR. A frame is
    voiced where r >= voicing_threshold and the RMS of its central quarter (about 6 ms around the frame
    centre, so onsets and offsets are judged alike at the centre) is at least silence_threshold times the
    utterance's largest such RMS (a per-utterance reference, so batching cannot change it). With
    ``analysis_rate`` the waves are first resampled to it and every length scaled alike (frames must fall
    on whole samples at both rates).
    """
    waves = waves * frame_mask(lengths, waves.shape[1])
    if analysis_rate is not None and analysis_rate != sample_rate:
        waves, lengths = _resampled_rows(waves, lengths, sample_rate, analysis_rate)
        scale = analysis_rate / sample_rate
        frame_length, frame_shift = round(frame_length * scale), round(frame_shift * scale)
        window_length, sample_rate = round(window_length * scale), analysis_rate
    batch, total_samples = waves.shape
    # Centre each long window on its 25 ms frame: frame t spans [t*S, t*S+L), so the window starts
    # (W-L)/2 earlier. Zeros outside the utterance, as for an utterance processed alone.
    left = (window_length - frame_length) // 2
    need = (total_frames - 1) * frame_shift + window_length
    padded = torch.nn.functional.pad(waves, (left, max(0, need - left - total_samples)))
    frames = frame_signal(padded, window_length, frame_shift)[:, :total_frames]
    window = analysis_window("hann", window_length, dtype=waves.dtype, device=waves.device)
    max_lag = min(int(math.ceil(sample_rate / f0_min)) + 1, window_length // 2)
    # Mean-removed, windowed frames written straight into the FFT's zero-padded buffer, each mean from
    # one cumulative sum: no intermediate (B, T, window) copies.
    starts = torch.arange(total_frames, device=waves.device) * frame_shift
    means = frame_sums(padded, starts, window_length) / window_length
    buffer = frames.new_empty(batch, total_frames, fast_fft_size(window_length + max_lag + 1))
    buffer[..., window_length:] = 0.0
    torch.sub(frames, means.unsqueeze(-1), out=buffer[..., :window_length]).mul_(window)
    acf = _padded_autocorrelation(buffer, max_lag)
    window_acf = autocorrelation(window, max_lag)
    norm = acf * (window_acf[0] / window_acf) / acf[..., :1].clamp_min(1e-20)
    lag_min = int(math.floor(sample_rate / f0_max))
    peaks = _peak_candidates(norm, lag_min, max_lag - 1)
    lag, found = _best_peak(norm, peaks, sample_rate, f0_min, octave_cost)
    period, r = _parabolic(norm, lag)

    # Central-quarter RMS from one cumulative sum of squares (float64: no cancellation).
    core = frame_length // 4
    rms = (frame_sums(waves.square(), starts + (frame_length - core) // 2, core).clamp_min(0) / core).sqrt()
    valid = frame_mask(num_frames, total_frames)
    loudest = torch.where(valid, rms, torch.zeros_like(rms)).amax(dim=-1, keepdim=True)
    audible = rms >= silence_threshold * loudest
    voiced = valid & found & audible & (r >= voicing_threshold) & (acf[..., 0] > 0)

    # Octave check: a frame whose period is about double or half the median of its voiced
    # neighbours takes instead the best peak within 20% of that median period.
    # Only the few octave-off frames are re-examined, gathered into (K, lags).
    median = _local_median(period, voiced, neighbour_radius)
    octave_off = voiced & torch.isfinite(median) & ((period / median).log2().abs() > 0.6)
    off_norm, off_median = norm[octave_off], median[octave_off].unsqueeze(-1)
    lags = torch.arange(norm.shape[-1], device=norm.device, dtype=norm.dtype)
    near = (lags - off_median).abs() <= 0.2 * off_median
    repick = torch.where(peaks[octave_off] & near, off_norm, torch.full_like(off_norm, -math.inf))
    alt_period, alt_r = _parabolic(off_norm, repick.argmax(dim=-1))
    alt_ok = torch.isfinite(repick.amax(dim=-1))
    period[octave_off] = torch.where(alt_ok, alt_period, period[octave_off])
    r[octave_off] = torch.where(alt_ok, alt_r, r[octave_off])

    r = torch.where(valid & found & (acf[..., 0] > 0), r, torch.zeros_like(r)).clamp(0.0, 1.0)
    f0 = torch.where(voiced, sample_rate / period.clamp_min(1.0), torch.zeros_like(period))
    return f0, r
