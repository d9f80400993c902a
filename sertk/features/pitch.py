"""Pitch trackers and voicing measures for the LLD feature sets, batched over (B, T) frames in torch.

Two trackers share the voicing measures here:

- ``is09``: openSMILE's IS09 scheme (cPitchACF): voicing probability = the highest peak of the
  autocorrelation's magnitude at lags for F0 in [f0_min, f0_max] over the lag-0 value of the 25 ms
  analysis frame; F0 = the highest peak of the cepstrum IFFT(ln(1 + |X|^2)) in the same quefrency range;
  F0 = 0 where voicing < the threshold (the LLD sets delay F0 by one frame, as openSMILE's output is).
  Matches openSMILE, but with a 25 ms frame a 100 Hz voice has only 2.5 periods under a Hamming window,
  so as a tracker it is weak below ~150 Hz.
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

from sertk.features.frames import analysis_window, fast_fft_size, frame_signal, frame_sums
from sertk.masking import frame_mask


def autocorrelation(frames: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Linear (not circular) autocorrelation of the last axis for lags 0..max_lag, via one real FFT."""
    n_fft = fast_fft_size(frames.shape[-1] + max_lag + 1)
    return _padded_autocorrelation(torch.nn.functional.pad(frames, (0, n_fft - frames.shape[-1])), max_lag)


def _padded_autocorrelation(padded: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Autocorrelation for lags 0..max_lag of frames already zero-padded to at least length + max_lag + 1."""
    spectrum = torch.fft.rfft(padded)
    power = spectrum.real.square() + spectrum.imag.square()
    return torch.fft.irfft(power, n=padded.shape[-1])[..., : max_lag + 1]


def _peak_candidates(acf: torch.Tensor, lag_min: int, lag_max: int) -> torch.Tensor:
    """Bool mask over lags: local maxima of ``acf`` strictly inside [lag_min, lag_max]."""
    first, last = max(lag_min, 1), min(lag_max, acf.shape[-1] - 2)
    band = acf[..., first : last + 1]
    peaks = (band > acf[..., first - 1 : last]) & (band >= acf[..., first + 1 : last + 2])
    return torch.nn.functional.pad(peaks, (first, acf.shape[-1] - last - 1))


def acf_voicing(acf: torch.Tensor, sample_rate: int, f0_min: float, f0_max: float) -> torch.Tensor:
    """Voicing probability: highest peak of |ACF| at lags for F0 in [f0_min, f0_max] over ACF(0), in [0, 1].

    openSMILE cPitchACF's voiceProb on cAcf's output, which holds the autocorrelation's magnitude: a strong
    negative lobe (a formant's half period) counts as much as a positive peak. Measured against openSMILE
    2.6's IS09 output frame by frame (the signed ACF gives 0.40 where openSMILE gives 0.57 on a 100 Hz
    vowel). 0 where no peak exists.
    """
    lag_min = int(math.floor(sample_rate / f0_max))
    lag_max = min(int(math.ceil(sample_rate / f0_min)), acf.shape[-1] - 2)
    magnitude = acf.abs()
    peaks = _peak_candidates(magnitude, lag_min, lag_max)
    best = torch.where(peaks, magnitude, torch.zeros_like(magnitude)).amax(dim=-1)
    energy = acf[..., 0]
    prob = torch.where(energy > 0, best / energy.clamp_min(1e-20), torch.zeros_like(best))
    return prob.nan_to_num(0.0, posinf=0.0, neginf=0.0).clamp(0.0, 1.0)


def cepstral_f0(spectrum_power: torch.Tensor, n_fft: int, sample_rate: int, f0_min: float, f0_max: float):
    """F0 (Hz) from the highest cepstrum peak at quefrencies for F0 in [f0_min, f0_max].

    The IS09 tracker (openSMILE cAcf with cepstrum=1, usePower=1, feeding cPitchACF): cepstrum =
    IFFT(ln(1 + |X|^2)), the ``1 +`` matching openSMILE's output to 0.5% (checked on its cepstrum level);
    it depends on the absolute scale of the input, here waves in [-1, 1] as openSMILE reads them.
    """
    cepstrum = torch.fft.irfft(torch.log1p(spectrum_power), n=n_fft)
    q_min = int(math.floor(sample_rate / f0_max))
    q_max = min(int(math.ceil(sample_rate / f0_min)), n_fft // 2 - 1)
    band = cepstrum[..., q_min : q_max + 1]
    quefrency = band.argmax(dim=-1) + q_min
    return sample_rate / quefrency.to(spectrum_power.dtype)


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
):
    """F0 (Hz, 0 when unvoiced) and normalised ACF peak r in [0, 1] per frame, each (B, T).

    Boersma (1993) Eq. 9: r(tau) = r_a(tau) / r_w(tau), the signal's autocorrelation divided by the
    window's; r of the chosen peak is the periodicity used for voicing probability and HNR. A frame is
    voiced where r >= voicing_threshold and the RMS of its central quarter (about 6 ms around the frame
    centre, so onsets and offsets are judged alike at the centre) is at least silence_threshold times the
    utterance's largest such RMS (a per-utterance reference, so batching cannot change it).
    """
    batch, total_samples = waves.shape
    waves = waves * frame_mask(lengths, total_samples)
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


def synthetic_voice(
    f0: torch.Tensor,
    sample_rate: int = 16000,
    noise: torch.Tensor | None = None,
    formants: tuple[tuple[float, float], ...] = ((600.0, 80.0), (1400.0, 120.0), (2600.0, 160.0)),
    seed: int = 0,
) -> torch.Tensor:
    """A speech-like test signal with a known F0 contour: harmonics through formant resonators.

    f0: (N,) per-sample F0 in Hz, 0 where unvoiced; noise: (N,) bool, frication noise where True. The
    source is a sum of harmonics with amplitude 1/h (a -6 dB/octave glottal tilt) up to 0.45 sample_rate,
    each following the contour by phase accumulation, so the true F0 of every sample is exactly f0[n];
    the formants are two-pole resonators (centre, bandwidth in Hz); frication is high-passed white noise
    added after them. Peak-normalised to 0.5.
    """
    import scipy.signal

    f0 = f0.double()
    harmonics = torch.arange(1, int(0.45 * sample_rate / max(float(f0[f0 > 0].min()), 1.0)) + 2)
    harmonics = harmonics.double()[:, None]
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sample_rate
    audible = (harmonics * f0[None, :] < 0.45 * sample_rate) & (f0[None, :] > 0)
    source = (torch.sin(harmonics * phase[None, :]) / harmonics * audible).sum(0)
    signal = source.numpy()
    for centre, bandwidth in formants:
        radius = math.exp(-math.pi * bandwidth / sample_rate)
        theta = 2 * math.pi * centre / sample_rate
        a = [1.0, -2 * radius * math.cos(theta), radius * radius]
        signal = scipy.signal.lfilter([sum(a)], a, signal)
    out = torch.from_numpy(signal)
    if noise is not None:
        # Frication: white noise high-passed above ~2.5 kHz, as in /s/-like sounds, not formant-shaped.
        generator = torch.Generator().manual_seed(seed)
        white = torch.randn(f0.shape, generator=generator, dtype=torch.float64).numpy()
        b, a = scipy.signal.butter(4, 2500.0 / (sample_rate / 2), btype="highpass")
        hiss = torch.from_numpy(scipy.signal.lfilter(b, a, white))
        out = out + 0.2 * out.abs().max() * hiss * noise
    return (0.5 * out / out.abs().max().clamp_min(1e-12)).float()
