"""Frame-level low-level descriptors (LLDs): the IS09 emotion set (32 dims) and rlc's 17-dim set, batched in torch.

Both follow openSMILE's definitions (IS09 emotion challenge configuration, Schuller et al. 2009; the
component definitions in the openSMILE documentation), written from those definitions: per-frame
pre-emphasis, Hamming window, |FFT| -> 26 HTK Mel bands -> log -> DCT-II -> lifter 22 for MFCC 1-12;
RMS or log energy of the windowed frame; zero-crossing rate of the raw frame; pitch and voicing from
``sertk.features.pitch``. Smoothing (3-frame moving average) and deltas (+-2-frame regression) treat each
utterance's first and last valid frame as its edges, so a row of a padded batch equals the utterance alone.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch

from sertk.errors import SertkError
from sertk.features.base import FeatureExtractor
from sertk.features.frames import (
    analysis_window,
    dct_matrix,
    frame_signal,
    frame_sums,
    mel_filterbank,
    next_power_of_two,
    num_frames,
    preemphasize,
)
from sertk.features.pitch import acf_voicing, cepstral_f0, is09_f0_contour, robust_acf_pitch
from sertk.masking import frame_mask

PITCH_TRACKERS = ("is09", "acf")
# HTK/openSMILE floor the Mel magnitudes before the log (cMfcc melFloor).
MEL_FLOOR = 1e-8
ENERGY_FLOOR = 1e-10


@dataclass
class LldConfig:
    """Options shared by both LLD sets; the defaults are the IS09 emotion set's.

    pitch: ``is09`` (cepstral F0 + ACF voicing on the 25 ms frame, openSMILE-compatible) or ``acf`` (the
    robust long-window tracker of ``sertk.features.pitch``). voicing_threshold: F0 is 0 below it (IS09:
    0.55 on the ACF voicing probability; acf: on the normalised ACF peak). acf_* fields only affect the
    acf tracker; it analyses the signal resampled to acf_sample_rate (8 kHz keeps every harmonic up to
    3.9 kHz, plenty for periodicity up to f0_max, at half the cost of 16 kHz; measured: the same V/UV
    accuracy and F0 errors on glides 70-450 Hz; 4 kHz made octave errors). f0_delay_frames: the F0 column at frame t is the F0 found at frame t - f0_delay_frames (0
    before the first); IS09 uses 1 because openSMILE's cPitchACF emits F0 one frame after its voicing
    probability (measured: its V/UV decision at frame t equals voiceProb[t - 1] >= 0.55 on 99% of frames).
    smooth_window: frames in the moving average (1 = none).
    """

    sample_rate: int = 16000
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97
    num_mel_bins: int = 26
    low_freq: float = 0.0
    high_freq: float = 8000.0
    num_ceps: int = 12
    lifter: float = 22.0
    pitch: str = "is09"
    voicing_threshold: float = 0.55
    f0_min: float = 52.0
    f0_max: float = 500.0
    acf_window_ms: float = 50.0
    acf_silence_threshold: float = 0.03
    acf_octave_cost: float = 0.01
    acf_neighbour_frames: int = 5
    acf_sample_rate: int = 8000
    f0_delay_frames: int = 0
    smooth_window: int = 3
    delta_window: int = 2

    def __post_init__(self) -> None:
        if self.pitch not in PITCH_TRACKERS:
            raise ValueError(f"pitch must be one of {list(PITCH_TRACKERS)}, got {self.pitch!r}")
        if self.sample_rate <= 0 or self.num_mel_bins <= 0 or self.num_ceps <= 0:
            raise ValueError("sample_rate, num_mel_bins and num_ceps must be positive")
        if self.num_ceps >= self.num_mel_bins:
            raise ValueError(f"num_ceps ({self.num_ceps}) must be below num_mel_bins ({self.num_mel_bins})")
        if self.frame_shift_ms <= 0 or self.frame_length_ms < self.frame_shift_ms:
            raise ValueError("need 0 < frame_shift_ms <= frame_length_ms")
        if self.acf_window_ms < self.frame_length_ms:
            raise ValueError("acf_window_ms must be at least frame_length_ms")
        if not 4 * self.f0_max <= self.acf_sample_rate <= self.sample_rate:
            raise ValueError(f"need 4 f0_max <= acf_sample_rate <= sample_rate, got {self.acf_sample_rate}")
        for ms in (self.frame_length_ms, self.frame_shift_ms):
            # Frames must fall on whole samples at both rates, so the two analyses stay aligned.
            if abs(self.acf_sample_rate * ms / 1000 - round(self.acf_sample_rate * ms / 1000)) > 1e-9:
                raise ValueError(
                    f"{ms} ms is not a whole number of samples at acf_sample_rate {self.acf_sample_rate}"
                )
        if not 0.0 <= self.preemphasis < 1.0:
            raise ValueError(f"preemphasis must be in [0, 1), got {self.preemphasis}")
        if not 0 < self.f0_min < self.f0_max <= self.sample_rate / 4:
            raise ValueError(f"need 0 < f0_min < f0_max <= sample_rate/4, got {self.f0_min}, {self.f0_max}")
        if not 0.0 <= self.low_freq < self.high_freq <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= low_freq < high_freq <= Nyquist, got {self.low_freq}, {self.high_freq}"
            )
        if self.smooth_window < 1 or self.smooth_window % 2 == 0:
            raise ValueError(f"smooth_window must be odd and >= 1, got {self.smooth_window}")
        if self.delta_window < 1 or self.acf_neighbour_frames < 1:
            raise ValueError("delta_window and acf_neighbour_frames must be >= 1")
        if self.f0_delay_frames < 0:
            raise ValueError(f"f0_delay_frames must be >= 0, got {self.f0_delay_frames}")


@dataclass
class Is09Config(LldConfig):
    """IS09 emotion LLDs: 25 ms / 10 ms, cepstral F0 one frame late (as openSMILE's), smoothing, deltas."""

    f0_delay_frames: int = 1


@dataclass
class Rlc17Config(LldConfig):
    """rlc's 17 LLDs (rlc_gca_lstm.md section 4.1): 25 ms / 5 ms, robust ACF pitch.

    hnr_min_db / hnr_max_db clip HNR = 10 log10(r / (1 - r)), which diverges as r -> 0 or 1.
    """

    frame_shift_ms: float = 5.0
    pitch: str = "acf"
    voicing_threshold: float = 0.45
    f0_min: float = 60.0
    hnr_min_db: float = -20.0
    hnr_max_db: float = 40.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hnr_min_db >= self.hnr_max_db:
            raise ValueError("need hnr_min_db < hnr_max_db")


def zero_crossing_rate(waves: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T) zero-crossing rate of the raw frames [starts[t], starts[t] + length) of (B, N) waves.

    openSMILE cMZcr's definition (IS09_emotion.conf ``is09_mzcr``, ``zcr = 1`` on the un-emphasised
    ``is09_frames``): in a frame x_0 … x_{L−1}, sample i = 1 … L−2 counts when x_{i−1} x_i < 0, or when
    x_i = 0 and x_{i−1} x_{i+1} <= 0; ZCR = count / L. So a run of exact zeros (digital silence, the
    quietest stretches of 16-bit recordings) counts every sample: such a frame has ZCR (L − 2) / L, not 0.
    That convention is what separated ours from openSMILE on real speech (r 0.81 with a sign-change count).
    """
    sign = torch.sign(waves)
    before, here, after = sign[:, :-2], sign[:, 1:-1], sign[:, 2:]
    crossing = (before * here < 0) | ((here == 0) & (before * after <= 0))
    # crossing[:, j] is sample j + 1, so a frame's samples s + 1 … s + L − 2 are crossing[:, s : s + L − 2].
    return frame_sums(crossing, starts, length - 2) / length


def harmonics_to_noise_db(r: torch.Tensor, low_db: float, high_db: float) -> torch.Tensor:
    """HNR = 10 log10(r / (1 - r)) dB of a normalised ACF peak r, clipped to [low_db, high_db].

    Boersma (1993): r is the harmonic share of the energy, 1 - r the noise's; the ratio diverges as
    r -> 0 or 1, so r is kept inside [1e-6, 1 - 1e-6] first (±60 dB, beyond any sensible clip).
    """
    r = r.clamp(1e-6, 1 - 1e-6)
    return (10.0 * torch.log10(r / (1.0 - r))).clamp(low_db, high_db)


def _edge_padded(x: torch.Tensor, frame_counts: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, T + 2 pad, D): frames before 0 repeat frame 0 and frames from frame_counts[b] on repeat row b's last
    valid frame, so each utterance's own edges are repeated (openSMILE's edge convention)."""
    total, dim = x.shape[1], x.shape[2]
    last_index = (frame_counts - 1).clamp(0, max(total - 1, 0))
    last = x.gather(1, last_index[:, None, None].expand(-1, 1, dim))
    valid = frame_mask(frame_counts, total)[..., None]
    x = torch.where(valid, x, last)
    return torch.cat([x[:, :1].expand(-1, pad, -1), x, last.expand(-1, pad, -1)], dim=1)


def moving_average(x: torch.Tensor, frame_counts: torch.Tensor, window: int) -> torch.Tensor:
    """Centred moving average over ``window`` frames of (B, T, D), edges repeated (openSMILE cContourSmoother)."""
    if window == 1:
        return x
    half, total = window // 2, x.shape[1]
    padded = _edge_padded(x, frame_counts, half)
    return sum(padded[:, k : k + total] for k in range(window)) / window


def voiced_moving_average(x: torch.Tensor, voiced: torch.Tensor, frame_counts: torch.Tensor, window: int):
    """Moving average over voiced frames only, 0 on unvoiced frames (openSMILE's noZeroSma behaviour)."""
    if window == 1:
        return torch.where(voiced, x, torch.zeros_like(x))
    weight = voiced.to(x.dtype)
    total = moving_average(x * weight, frame_counts, window)
    count = moving_average(weight, frame_counts, window)
    return torch.where(voiced, total / count.clamp_min(1.0 / window), torch.zeros_like(x))


def regression_deltas(x: torch.Tensor, frame_counts: torch.Tensor, window: int) -> torch.Tensor:
    """d_t = sum_k k (x_{t+k} - x_{t-k}) / (2 sum_k k^2), k = 1..window, edges repeated (HTK Eq. 5.16)."""
    total = x.shape[1]
    padded = _edge_padded(x, frame_counts, window)
    norm = 2.0 * sum(k * k for k in range(1, window + 1))
    centre = window
    return (
        sum(
            k * (padded[:, centre + k : centre + k + total] - padded[:, centre - k : centre - k + total])
            for k in range(1, window + 1)
        )
        / norm
    )


class _LldBase(FeatureExtractor):
    """The framing, spectral and pitch front end both LLD sets share."""

    # Padded samples per pass through the front end and pitch tracker: at 256 k (16 s of 16 kHz audio)
    # its frames, spectra and ACFs stay in cache; one thread, per second of audio, 48 s passes measured
    # 1.65x (rlc17) and 1.9x (is09) slower, 4-8 s passes no faster than 16 s.
    chunk_samples = 256_000

    def __init__(self, cfg: LldConfig) -> None:
        super().__init__(cfg)
        self.frame_length = round(cfg.sample_rate * cfg.frame_length_ms / 1000)
        self.frame_shift = round(cfg.sample_rate * cfg.frame_shift_ms / 1000)
        self.acf_window = round(cfg.sample_rate * cfg.acf_window_ms / 1000)
        if self.frame_length < 16 or self.frame_shift < 1:
            raise SertkError(f"lld: a frame of {self.frame_length} samples is too short")
        if cfg.sample_rate / cfg.f0_min > self.frame_length - 2 and cfg.pitch == "is09":
            raise SertkError(
                f"lld: f0_min {cfg.f0_min} Hz has a period longer than the {cfg.frame_length_ms} ms frame"
            )
        self.fft_size = next_power_of_two(self.frame_length)
        self.window = analysis_window("hamming", self.frame_length).float()
        self.mel_matrix = mel_filterbank(
            cfg.num_mel_bins, self.fft_size, cfg.sample_rate, cfg.low_freq, cfg.high_freq
        )
        self.dct_matrix = dct_matrix(cfg.num_mel_bins, cfg.num_ceps, cfg.lifter).float()
        self.parseval = torch.full((self.fft_size // 2 + 1,), 2.0)
        self.parseval[0] = self.parseval[-1] = 1.0

    def num_frames(self, num_samples: int) -> int:
        return num_frames(num_samples, self.frame_length, self.frame_shift)

    def compute(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, dim) LLDs of a zero-padded batch in [-1, 1], in passes of about ``chunk_samples``."""
        rows = max(1, self.chunk_samples // max(int(waves.shape[1]), 1))
        parts = [
            self._lld(waves[i : i + rows], lengths[i : i + rows]) for i in range(0, waves.shape[0], rows)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @abc.abstractmethod
    def _lld(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The feature set's LLDs of one pass."""

    def _front_end(self, waves: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unsmoothed per-frame descriptors, each (B, T) or (B, T, num_ceps), plus the frame counts."""
        cfg = self.cfg
        waves = waves.float()
        lengths = lengths.to(waves.device).long()
        device = waves.device
        if waves.shape[1] < self.frame_length:
            waves = torch.nn.functional.pad(waves, (0, self.frame_length - waves.shape[1]))
        waves = waves * frame_mask(lengths, waves.shape[1])
        frames = frame_signal(waves, self.frame_length, self.frame_shift)
        total = frames.shape[1]
        frame_counts = num_frames(lengths, self.frame_length, self.frame_shift)

        starts = torch.arange(total, device=device) * self.frame_shift
        zcr = zero_crossing_rate(waves, starts, self.frame_length)

        # Pre-emphasis inside each frame, its first sample against itself (openSMILE cVectorPreemphasis),
        # written straight into the zero-padded FFT buffer (saves rfft's own pad-and-copy pass).
        padded = frames.new_empty(*frames.shape[:2], self.fft_size)
        padded[..., self.frame_length :] = 0.0
        windowed = preemphasize(frames, cfg.preemphasis, out=padded[..., : self.frame_length])
        windowed.mul_(self.window.to(device))

        spectrum = torch.fft.rfft(padded)
        # |X|^2 as re^2 + im^2: torch.abs on complex computes a hypot and is several times slower.
        power = spectrum.real.square().addcmul_(spectrum.imag, spectrum.imag)
        # Parseval: sum_n x_n^2 = sum_k c_k |X_k|^2 / N (c = 1 at DC and Nyquist, else 2), a matvec over the
        # spectrum instead of another pass over the frames.
        mean_square = (power @ self.parseval.to(device)) / (self.fft_size * self.frame_length)
        spectrum = power.sqrt()
        mel = (spectrum @ self.mel_matrix.to(device)).clamp_min(MEL_FLOOR).log()
        mfcc = mel @ self.dct_matrix.to(device)

        if cfg.pitch == "is09":
            acf = torch.fft.irfft(power, n=self.fft_size)[..., : self.fft_size // 2]
            voicing = acf_voicing(acf, cfg.sample_rate, cfg.f0_min, cfg.f0_max)
            f0 = cepstral_f0(power, self.fft_size, cfg.sample_rate, cfg.f0_min, cfg.f0_max)
            f0 = torch.where(voicing >= cfg.voicing_threshold, f0, torch.zeros_like(f0))
            f0 = is09_f0_contour(f0, frame_counts)
        else:
            f0, voicing = robust_acf_pitch(
                waves,
                lengths,
                frame_counts,
                total,
                cfg.sample_rate,
                self.frame_length,
                self.frame_shift,
                self.acf_window,
                cfg.f0_min,
                cfg.f0_max,
                cfg.voicing_threshold,
                cfg.acf_silence_threshold,
                cfg.acf_octave_cost,
                cfg.acf_neighbour_frames,
                cfg.acf_sample_rate,
            )
        if cfg.f0_delay_frames:
            f0 = torch.nn.functional.pad(f0, (cfg.f0_delay_frames, 0))[:, :total]
        return {
            "num_frames": frame_counts,
            "zcr": zcr,
            "mean_square": mean_square,
            "mfcc": mfcc,
            "f0": f0,
            "voicing": voicing,
        }


class Is09Lld(_LldBase):
    """The 32 IS09 emotion LLDs: 16 descriptors smoothed by a 3-frame moving average, then their deltas.

    Dimensions: 0 zcr, 1 rms energy, 2 F0 (Hz, 0 unvoiced), 3 voicing probability, 4-15 MFCC 1-12, then
    16-31 the +-2-frame regression deltas of 0-15 in the same order (Schuller et al. 2009, IS09 emotion
    challenge; openSMILE columns pcm_zcr_sma, pcm_RMSenergy_sma, F0_sma, voiceProb_sma, pcm_fftMag_mfcc_sma).
    """

    version = 3  # 2: openSMILE's ZCR, voicing lag range, F0 contour rules; 3: the acf tracker at 8 kHz
    Config = Is09Config
    names = ["zcr", "rms_energy", "f0", "voicing_prob"] + [f"mfcc{i}" for i in range(1, 13)]

    @property
    def dim(self) -> int:
        return 2 * (4 + self.cfg.num_ceps)

    def _lld(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, 32) smoothed IS09 LLDs and their deltas of a zero-padded batch in [-1, 1]."""
        lld = self._front_end(waves, lengths)
        base = torch.cat(
            [
                torch.stack([lld["zcr"], lld["mean_square"].sqrt(), lld["f0"], lld["voicing"]], dim=-1),
                lld["mfcc"],
            ],
            dim=-1,
        )
        smoothed = moving_average(base, lld["num_frames"], self.cfg.smooth_window)
        deltas = regression_deltas(smoothed, lld["num_frames"], self.cfg.delta_window)
        return torch.cat([smoothed, deltas], dim=-1)


class Rlc17Lld(_LldBase):
    """rlc's 17 LLDs (rlc_gca_lstm.md section 4.1, after ComParE), each smoothed by a 3-frame moving average.

    Dimensions: 0-11 MFCC 1-12, 12 log energy ln(sum of squares of the windowed frame, floored at 1e-10),
    13 voicing probability (normalised ACF peak r), 14 HNR = 10 log10(r / (1 - r)) dB clipped to
    [hnr_min_db, hnr_max_db], 15 log F0 = ln(F0 / Hz) on voiced frames and 0 on unvoiced frames (as
    openSMILE's F0final: log F0 exists only where there is an F0; smoothed over voiced neighbours only, so
    unvoiced zeros never pull it down), 16 zero-crossing rate.
    """

    version = 3  # 2: openSMILE's ZCR (and the is09 tracker's rules); 3: the acf tracker at 8 kHz
    Config = Rlc17Config
    names = [f"mfcc{i}" for i in range(1, 13)] + ["log_energy", "voicing_prob", "hnr_db", "log_f0", "zcr"]

    @property
    def dim(self) -> int:
        return self.cfg.num_ceps + 5

    def _lld(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, 17) smoothed rlc LLDs of a zero-padded batch in [-1, 1]."""
        cfg = self.cfg
        lld = self._front_end(waves, lengths)
        hnr = harmonics_to_noise_db(lld["voicing"], cfg.hnr_min_db, cfg.hnr_max_db)
        log_energy = (lld["mean_square"] * self.frame_length).clamp_min(ENERGY_FLOOR).log()
        voiced = lld["f0"] > 0
        log_f0 = torch.where(voiced, lld["f0"].clamp_min(1.0).log(), torch.zeros_like(lld["f0"]))
        rest = torch.cat(
            [lld["mfcc"], torch.stack([log_energy, lld["voicing"], hnr, lld["zcr"]], dim=-1)], dim=-1
        )
        rest = moving_average(rest, lld["num_frames"], cfg.smooth_window)
        log_f0 = voiced_moving_average(
            log_f0[..., None], voiced[..., None], lld["num_frames"], cfg.smooth_window
        )
        return torch.cat([rest[..., :-1], log_f0, rest[..., -1:]], dim=-1)
