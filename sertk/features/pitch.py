"""Pitch trackers and voicing measures for the LLD feature sets, batched over (B, T) frames in torch.

Two trackers share the voicing measures here:

- ``is09``: openSMILE's IS09 scheme (cPitchACF): voicing probability = the highest autocorrelation peak
  at lags for F0 in [f0_min, f0_max] over the lag-0 value of the 25 ms analysis frame; F0 = the highest
  real-cepstrum peak in the same quefrency range; F0 = 0 where voicing < the threshold. Compatible, but
  with a 25 ms frame a 100 Hz voice has only 2.5 periods under a Hamming window, so the ACF peak falls
  off and the cepstral peak is weak below ~150 Hz.
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


def frame_mask(num_frames: torch.Tensor, total: int) -> torch.Tensor:
    """(B, T) bool: True for frames t < num_frames[b]."""
    return torch.arange(total, device=num_frames.device)[None, :] < num_frames[:, None]


def autocorrelation(frames: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Linear (not circular) autocorrelation of the last axis for lags 0..max_lag, via one real FFT."""
    length = frames.shape[-1]
    n_fft = 1 << math.ceil(math.log2(length + max_lag + 1))
    power = torch.fft.rfft(frames, n=n_fft).abs().square()
    return torch.fft.irfft(power, n=n_fft)[..., : max_lag + 1]


def _peak_candidates(acf: torch.Tensor, lag_min: int, lag_max: int) -> torch.Tensor:
    """Bool mask over lags: local maxima of ``acf`` strictly inside [lag_min, lag_max]."""
    left = acf[..., 1:-1] > acf[..., :-2]
    right = acf[..., 1:-1] >= acf[..., 2:]
    peaks = torch.zeros_like(acf, dtype=torch.bool)
    peaks[..., 1:-1] = left & right
    lags = torch.arange(acf.shape[-1], device=acf.device)
    peaks &= (lags >= lag_min) & (lags <= lag_max)
    return peaks


def acf_voicing(acf: torch.Tensor, sample_rate: int, f0_min: float, f0_max: float) -> torch.Tensor:
    """Voicing probability: highest ACF peak at lags for F0 in [f0_min, f0_max] over ACF(0), in [0, 1].

    openSMILE cPitchACF's voiceProb, as defined in its documentation; 0 where no peak exists.
    """
    lag_min = int(math.floor(sample_rate / f0_max))
    lag_max = min(int(math.ceil(sample_rate / f0_min)), acf.shape[-1] - 2)
    peaks = _peak_candidates(acf, lag_min, lag_max)
    best = torch.where(peaks, acf, torch.full_like(acf, -math.inf)).amax(dim=-1)
    energy = acf[..., 0]
    prob = torch.where(energy > 0, best / energy.clamp_min(1e-20), torch.zeros_like(best))
    return prob.nan_to_num(0.0, posinf=0.0, neginf=0.0).clamp(0.0, 1.0)


def cepstral_f0(spectrum_power: torch.Tensor, n_fft: int, sample_rate: int, f0_min: float, f0_max: float):
    """F0 (Hz) from the highest real-cepstrum peak at quefrencies for F0 in [f0_min, f0_max].

    The IS09 tracker (openSMILE cAcf with cepstrum=1 feeding cPitchACF): cepstrum = IFFT(log |X|^2).
    """
    cepstrum = torch.fft.irfft(torch.log(spectrum_power.clamp_min(1e-20)), n=n_fft)
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
    voiced where r >= voicing_threshold and its 25 ms RMS is at least silence_threshold times the
    utterance's largest frame RMS (a per-utterance reference, so batching cannot change it).
    """
    batch, total_samples = waves.shape
    sample_index = torch.arange(total_samples, device=waves.device)
    waves = waves * (sample_index[None, :] < lengths[:, None])
    # Centre each long window on its 25 ms frame: frame t spans [t*S, t*S+L), so the window starts
    # (W-L)/2 earlier. Zeros outside the utterance, as for an utterance processed alone.
    left = (window_length - frame_length) // 2
    need = (total_frames - 1) * frame_shift + window_length
    padded = torch.nn.functional.pad(waves, (left, max(0, need - left - total_samples)))
    frames = padded.unfold(-1, window_length, frame_shift)[:, :total_frames]
    frames = frames - frames.mean(dim=-1, keepdim=True)
    window = torch.hann_window(window_length, periodic=False, dtype=waves.dtype, device=waves.device)
    max_lag = min(int(math.ceil(sample_rate / f0_min)) + 1, window_length // 2)
    acf = autocorrelation(frames * window, max_lag)
    window_acf = autocorrelation(window, max_lag)
    norm = (acf / acf[..., :1].clamp_min(1e-20)) / (window_acf / window_acf[0])
    lag_min = int(math.floor(sample_rate / f0_max))
    peaks = _peak_candidates(norm, lag_min, max_lag - 1)
    lag, found = _best_peak(norm, peaks, sample_rate, f0_min, octave_cost)
    period, r = _parabolic(norm, lag)

    core = padded.unfold(-1, frame_length, frame_shift)[:, :total_frames, left : left + frame_length]
    rms = core.square().mean(dim=-1).sqrt()
    valid = frame_mask(num_frames, total_frames)
    loudest = torch.where(valid, rms, torch.zeros_like(rms)).amax(dim=-1, keepdim=True)
    audible = rms >= silence_threshold * loudest
    voiced = valid & found & audible & (r >= voicing_threshold) & (acf[..., 0] > 0)

    # Octave check: a frame whose period is about double or half the median of its voiced
    # neighbours takes instead the best peak within 20% of that median period.
    median = _local_median(period, voiced, neighbour_radius)
    octave_off = voiced & torch.isfinite(median) & ((period / median).log2().abs() > 0.6)
    lags = torch.arange(norm.shape[-1], device=norm.device, dtype=norm.dtype)
    near = (lags - median.nan_to_num(0.0).unsqueeze(-1)).abs() <= 0.2 * median.nan_to_num(0.0).unsqueeze(-1)
    repick = torch.where(peaks & near, norm, torch.full_like(norm, -math.inf))
    alt_lag = repick.argmax(dim=-1)
    alt_ok = octave_off & torch.isfinite(repick.amax(dim=-1))
    alt_period, alt_r = _parabolic(norm, alt_lag)
    period = torch.where(alt_ok, alt_period, period)
    r = torch.where(alt_ok, alt_r, r)

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
