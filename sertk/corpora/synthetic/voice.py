"""The source-filter speech synthesiser behind every synthetic corpus: emotion-dependent prosody.

``render(duration, target, voice, room, rng)`` speaks ``duration`` seconds of nonsense syllables in
``voice`` with the prosody ``target`` (see ``PROSODY_FIELDS``): Klatt-style formant synthesis, a Rosenberg
glottal pulse train with an F0 contour, time-varying formant resonators, frication and breath noise, the
``room`` impulse response and background noise. Emotion moves F0 level and range, tempo, loudness, spectral
tilt (glottal closing speed), jitter and breathiness relative to the speaker's neutral voice, so that the
main classes are learnable but confusable like real ones (hap/exc near ang, sad near neu).

Each step below draws from ``rng`` in a fixed order, so a clip is a pure function of its seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as scipy_fft
from scipy import signal

SAMPLE_RATE = 16000

# Emotion prosody relative to the speaker's neutral voice, for the five basic classes:
# F0 shift (semitones), F0 range (semitones, std of syllable accents), tempo (syllable-rate factor),
# loudness (dB), glottal closing phase (fraction of the period: shorter = abrupt closure = flatter
# spectral tilt), jitter (relative period perturbation), breathiness (aspiration noise / voiced source).
PROSODY_FIELDS = ("f0_shift", "f0_range", "tempo", "loudness", "closing", "jitter", "breathiness")
BASE_PROSODY = {
    "neu": (0.0, 1.8, 1.00, 0.0, 0.30, 0.006, 0.08),
    "ang": (4.0, 2.8, 1.12, 7.0, 0.12, 0.018, 0.04),
    "hap": (3.8, 3.8, 1.08, 4.5, 0.20, 0.010, 0.07),
    "exc": (4.6, 4.2, 1.14, 5.5, 0.17, 0.012, 0.06),
    "sad": (-1.6, 1.1, 0.82, -3.8, 0.40, 0.010, 0.22),
}
# The other codes sound like mixtures of the basic ones. IEMOCAP's xxx turns mix their raters' votes
# (synthetic/iemocap.py); elsewhere xxx (no agreement) is a fixed blend.
MIXTURES = {
    "fru": {"ang": 0.45, "neu": 0.55},
    "sur": {"exc": 0.8, "ang": 0.2},
    "fea": {"exc": 0.5, "sad": 0.5},
    "dis": {"ang": 0.6, "sad": 0.4},
    "oth": {"neu": 0.5, "ang": 0.25, "sad": 0.25},
    "cal": {"neu": 0.75, "sad": 0.25},
    "bor": {"neu": 0.4, "sad": 0.6},
    "con": {"ang": 0.35, "neu": 0.65},
    "xxx": {"neu": 0.4, "ang": 0.2, "hap": 0.2, "sad": 0.2},
}
# Per-utterance spread around the class target (same order): wide enough that classes overlap. F0 range and
# jitter vary by a factor exp(N(0, s)), the others by adding N(0, s).
PROSODY_SPREAD = np.array([3.0, 0.3, 0.1, 4.5, 0.06, 0.3, 0.05])
MULTIPLICATIVE = np.array([False, True, False, False, False, True, False])
# Vowel formant targets F1-F3 (Hz) of an adult male voice (Peterson & Barney 1952): i e a o u ae uh.
VOWELS = np.array(
    [[270, 2290, 3010], [530, 1840, 2480], [730, 1090, 2440], [570, 840, 2410],
     [300, 870, 2240], [660, 1720, 2410], [640, 1190, 2390]], float
)  # fmt: skip
BANDWIDTHS = np.array([70.0, 100.0, 130.0, 180.0, 250.0])
HOP = 128  # frame-wise formant filtering: hop, window (2 hops, Hann: sums to one) and FFT size
FFT_SIZE = 1024
FRICATION_FILTER = signal.butter(2, [2200, 6500], btype="bandpass", fs=SAMPLE_RATE)
BREATH_FILTER = signal.butter(2, [400, 3000], btype="bandpass", fs=SAMPLE_RATE)
NEUTRAL_LEVEL_DB = -28.0  # RMS of a neutral turn, dBFS


@dataclass(frozen=True)
class Voice:
    """A speaker's neutral voice."""

    f0: float  # base F0, Hz
    tract: float  # vocal-tract scale of the formant frequencies
    level_db: float  # loudness relative to the corpus's neutral level
    tempo: float  # syllable-rate factor
    breath: float  # breathiness added to every turn


@dataclass(frozen=True)
class Prosody:
    """One clip's prosody (PROSODY_FIELDS), drawn around its class target."""

    f0_shift: float
    f0_range: float
    tempo: float
    loudness: float
    closing: float
    jitter: float
    breathiness: float


@dataclass
class Syllables:
    """Syllable timing of one clip and, per sample, the syllable it is in."""

    starts: np.ndarray
    durations: np.ndarray
    pauses: np.ndarray  # silence after each syllable (phrase ends)
    index: np.ndarray  # per sample
    pos: np.ndarray  # per sample: 0..1 inside the syllable, >1 in the pause after it
    speaking: np.ndarray  # per sample


def draw_voice(gender: str, rng: np.random.Generator) -> Voice:
    """A random adult voice of ``gender`` (``F`` or ``M``)."""
    f0 = rng.uniform(180, 240) if gender == "F" else rng.uniform(100, 140)
    tract = rng.uniform(1.12, 1.22) if gender == "F" else rng.uniform(0.94, 1.04)
    return Voice(f0, tract, rng.normal(0, 1.5), rng.uniform(0.92, 1.08), rng.uniform(0.0, 0.06))


def base_weights(code: str) -> dict[str, float]:
    """A label as weights over the basic classes (itself, or its mixture)."""
    return {code: 1.0} if code in BASE_PROSODY else MIXTURES[code]


def blend(bases: dict[str, float]) -> np.ndarray:
    """The weighted mean of BASE_PROSODY over ``bases`` (basic class -> weight)."""
    total = sum(bases.values())
    return sum(np.array(BASE_PROSODY[c]) * w / total for c, w in bases.items())


def prosody_target(weights: dict[str, float]) -> np.ndarray:
    """The prosody target of labels mixed by ``weights`` (label -> weight)."""
    bases: dict[str, float] = {}
    for code, weight in weights.items():
        for base, w in base_weights(code).items():
            bases[base] = bases.get(base, 0.0) + weight * w
    return blend(bases)


def label_target(code: str, strength: float = 1.0) -> np.ndarray:
    """The prosody target of a label; ``strength`` > 1 moves it further from neutral (RAVDESS's strong)."""
    target = prosody_target({code: 1.0})
    neutral = np.array(BASE_PROSODY["neu"])
    return neutral + (target - neutral) * strength


def room_response(rng: np.random.Generator) -> np.ndarray:
    """A room impulse response: the direct path plus a short exponentially decaying tail."""
    rt60 = rng.uniform(0.15, 0.35)
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    tail = rng.normal(0, 1, t.size) * np.exp(-6.9 * t / rt60)
    tail *= 10 ** (-rng.uniform(12, 18) / 20) / np.sqrt(np.sum(tail**2))
    tail[:40] = 0.0  # first reflections arrive a few ms after the direct sound
    tail[0] = 1.0
    return tail


def _resonator_response(freqs: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Complex response on the FFT grid of cascaded two-pole resonators with unit DC gain (Klatt 1980, eq. 2).

    freqs, bandwidths: (frames, K) Hz -> (frames, FFT_SIZE // 2 + 1). The K denominators
    1 - 2r cos(2 pi F / fs) z^-1 + r^2 z^-2 are multiplied into one polynomial per frame, whose values on the
    unit circle are its zero-padded FFT: one FFT per frame instead of K complex divisions per bin.
    """
    r = np.exp(-np.pi * bandwidths / SAMPLE_RATE)
    c = 2 * r * np.cos(2 * np.pi * freqs / SAMPLE_RATE)
    den = np.zeros((freqs.shape[0], 2 * freqs.shape[1] + 1))
    den[:, 0] = 1.0
    for k in range(freqs.shape[1]):
        order = 2 * k + 1
        previous = den[:, : order + 1].copy()
        den[:, 1 : order + 1] -= c[:, k, None] * previous[:, :order]
        den[:, 2 : order + 2] += (r[:, k] ** 2)[:, None] * previous[:, :order]
    gain = np.prod(1 - c + r**2, axis=1)
    return gain[:, None] / scipy_fft.rfft(den, FFT_SIZE)


def _vocal_tract(excitation: np.ndarray, formants: np.ndarray) -> np.ndarray:
    """Filter with formants moving frame by frame: windowed frames, FFT, resonator response, overlap-add.

    formants: (frames, 5) Hz at frame i centred on sample i * HOP. Frame-wise filtering in the frequency
    domain keeps the time-varying filter vectorised (a sample-wise lfilter cannot change its poles).
    """
    n = excitation.size
    frames = formants.shape[0]  # at least n / HOP + 1, so the frames cover every sample
    # Sample s sits at padded[HOP + s], so frame i (padded[i*HOP : i*HOP + 2*HOP]) is centred on s = i*HOP.
    padded = np.zeros((frames + 1) * HOP)
    padded[HOP : HOP + n] = excitation
    window = np.hanning(2 * HOP + 1)[:-1]  # periodic Hann: 50 % overlap-add sums to one
    idx = np.arange(frames)[:, None] * HOP + np.arange(2 * HOP)[None, :]
    spectra = scipy_fft.rfft(padded[idx] * window, FFT_SIZE)
    spectra *= _resonator_response(formants, np.broadcast_to(BANDWIDTHS, formants.shape))
    blocks = scipy_fft.irfft(spectra, FFT_SIZE).reshape(frames, FFT_SIZE // HOP, HOP)
    out = np.zeros((frames + FFT_SIZE // HOP) * HOP)
    for j in range(FFT_SIZE // HOP):
        out[j * HOP : (j + frames) * HOP] += blocks[:, j].reshape(-1)
    return out[HOP : HOP + n]


def draw_prosody(target: np.ndarray, voice: Voice, rng: np.random.Generator) -> Prosody:
    """The clip's prosody: the class target plus per-clip spread, combined with the speaker's voice."""
    noise = rng.normal(0, 1, len(PROSODY_FIELDS)) * PROSODY_SPREAD
    p = np.where(MULTIPLICATIVE, target * np.exp(noise), target + noise)
    f0_shift, f0_range, tempo, loud_db, closing, jitter, breath = p
    return Prosody(
        f0_shift=f0_shift,
        f0_range=f0_range,
        tempo=max(0.6, tempo * voice.tempo),
        loudness=loud_db,
        closing=float(np.clip(closing, 0.06, 0.5)),
        jitter=jitter,
        breathiness=float(np.clip(breath + voice.breath, 0.0, 0.5)),
    )


def draw_syllables(duration: float, t: np.ndarray, tempo: float, rng: np.random.Generator) -> Syllables:
    """Syllables grouped in phrases of 3-9, separated by pauses (longer when slow); silence at both ends."""
    rate = 4.3 * tempo
    count = int(duration * rate * 1.5) + 8
    durations = rng.gamma(8.0, 1.0 / (8.0 * rate), count)
    pauses = np.zeros(count)
    phrase_ends = np.cumsum(rng.integers(3, 10, count))
    phrase_ends = phrase_ends[phrase_ends < count] - 1
    pauses[phrase_ends] = rng.uniform(0.12, 0.45, phrase_ends.size) / tempo
    lead, trail = rng.uniform(0.05, 0.2, 2)
    starts = lead + np.concatenate([[0.0], np.cumsum(durations + pauses)[:-1]])
    keep = max(1, int(np.sum(starts + durations <= duration - trail)))
    starts, durations, pauses = starts[:keep], durations[:keep], pauses[:keep]
    durations[-1] = min(durations[-1], max(0.05, duration - trail - starts[-1]))
    index = np.maximum(np.searchsorted(starts, t, side="right") - 1, 0)
    pos = (t - starts[index]) / durations[index]
    speaking = (t >= starts[0]) & (pos <= 1.0)
    return Syllables(starts, durations, pauses, index, pos, speaking)


def draw_envelopes(syl: Syllables, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(syllable stress, voiced amplitude, noise amplitude): a consonant onset, then the vowel nucleus."""
    stress = np.exp(rng.normal(0, 0.3, syl.starts.size))
    unvoiced = rng.uniform(size=syl.starts.size) < 0.5
    pos, i = syl.pos, syl.index
    onset = np.sin(np.pi * np.clip(pos / 0.25, 0, 1)) * (pos < 0.25)
    nucleus = np.sin(np.pi * np.clip((pos - 0.2) / 0.8, 0, 1)) ** 0.7
    voiced_amp = syl.speaking * stress[i] * (nucleus + 0.4 * onset * ~unvoiced[i])
    noise_amp = syl.speaking * stress[i] * 0.35 * onset * unvoiced[i]
    return stress, voiced_amp, noise_amp


def draw_f0(
    t: np.ndarray,
    syl: Syllables,
    stress: np.ndarray,
    base_f0: float,
    prosody: Prosody,
    rng: np.random.Generator,
) -> np.ndarray:
    """F0 (Hz): per-syllable accents plus declination within each phrase, interpolated; jitter per ~5 ms."""
    keep = syl.starts.size
    phrase = np.concatenate([[0], np.cumsum(syl.pauses > 0)[:-1]])
    first = np.searchsorted(phrase, phrase)
    last = np.searchsorted(phrase, phrase, side="right") - 1
    in_phrase = (np.arange(keep) - first) / np.maximum(last - first, 1)
    accents = rng.normal(0, prosody.f0_range, keep) + 1.5 - 3.0 * in_phrase + 0.6 * np.log(stress) / 0.3
    semitones = prosody.f0_shift + np.interp(t, syl.starts + 0.55 * syl.durations, accents)
    blocks = rng.normal(0, prosody.jitter, t.size // 80 + 1)
    f0 = base_f0 * 2 ** (semitones / 12) * (1 + np.repeat(blocks, 80)[: t.size])
    return np.clip(f0, 60, 600)


def glottal_source(
    f0: np.ndarray, voiced_amp: np.ndarray, base_f0: float, prosody: Prosody, rng: np.random.Generator
) -> np.ndarray:
    """Rosenberg glottal pulses from a phase accumulator (the derivative adds lip radiation), aspiration."""
    n = f0.size
    phase = np.cumsum(f0 / SAMPLE_RATE) % 1.0
    opening, closing = 0.45, prosody.closing
    pulse = np.where(
        phase < opening,
        0.5 * (1 - np.cos(np.pi * phase / opening)),
        np.where(phase < opening + closing, np.cos(0.5 * np.pi * (phase - opening) / closing), 0.0),
    )
    source = np.diff(pulse, prepend=0.0) * SAMPLE_RATE / base_f0
    shimmer = np.exp(np.repeat(rng.normal(0, 2 * prosody.jitter, n // 80 + 1), 80)[:n])
    aspiration = rng.normal(0, 1, n) * (0.3 + pulse) * prosody.breathiness * 3.0
    return voiced_amp * (source * shimmer + aspiration)


def articulate(
    excitation: np.ndarray, noise_amp: np.ndarray, syl: Syllables, tract: float, rng: np.random.Generator
) -> np.ndarray:
    """Formants gliding between per-syllable vowel targets (scaled by the tract), plus frication noise."""
    n = excitation.size
    vowels = VOWELS[rng.integers(0, len(VOWELS), syl.starts.size)]
    centres = syl.starts + 0.6 * syl.durations
    frame_t = np.arange(n // HOP + 2) * HOP / SAMPLE_RATE
    formants = np.empty((frame_t.size, 5))
    for k in range(3):
        formants[:, k] = np.interp(frame_t, centres, vowels[:, k])
    formants[:, 3], formants[:, 4] = 3300.0, 4400.0
    formants *= tract
    formants = np.minimum(formants, 0.45 * SAMPLE_RATE)
    speech = _vocal_tract(excitation, formants)
    return speech + signal.lfilter(*FRICATION_FILTER, rng.normal(0, 1, n)) * noise_amp * 4.0


def breath_envelope(t: np.ndarray, syl: Syllables, rng: np.random.Generator) -> np.ndarray:
    """Inhalation in about half of the pauses between phrases."""
    i = syl.index
    in_pause = (syl.pos > 1.0) & (t >= syl.starts[0])
    pause_pos = np.clip((t - syl.starts[i] - syl.durations[i]) / np.maximum(syl.pauses[i], 1e-3), 0, 1)
    breathes = rng.uniform(size=syl.starts.size) < 0.5
    return in_pause * breathes[i] * np.sin(np.pi * pause_pos) ** 2


def mix(
    speech: np.ndarray,
    active: np.ndarray,
    breath_env: np.ndarray,
    room: np.ndarray,
    level_db: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Room, level (RMS of the active samples at ``level_db`` dBFS), breath and background noise."""
    n = speech.size
    speech = signal.fftconvolve(speech, room)[:n]
    level = np.sqrt(np.mean(speech[active] ** 2)) if active.any() else np.sqrt(np.mean(speech**2))
    speech *= 10 ** (level_db / 20) / max(level, 1e-9)
    breath_noise = signal.lfilter(*BREATH_FILTER, rng.normal(0, 1, n))
    speech += breath_noise * breath_env * 10 ** ((NEUTRAL_LEVEL_DB - 14) / 20)
    background = signal.lfilter([1.0], [1.0, -0.9], rng.normal(0, 1, n))
    speech += background * 10 ** (rng.uniform(-62, -54) / 20) / np.std(background)
    peak = np.max(np.abs(speech))
    if peak > 0.97:  # a very loud turn: scale down rather than clip
        speech *= 0.97 / peak
    return speech


def render(
    duration: float, target: np.ndarray, voice: Voice, room: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``duration`` seconds of speech as float64 in [-1, 1) with prosody around ``target``, in ``voice``."""
    prosody = draw_prosody(target, voice, rng)
    t = np.arange(int(round(duration * SAMPLE_RATE))) / SAMPLE_RATE
    syl = draw_syllables(duration, t, prosody.tempo, rng)
    stress, voiced_amp, noise_amp = draw_envelopes(syl, rng)
    f0 = draw_f0(t, syl, stress, voice.f0, prosody, rng)
    speech = articulate(
        glottal_source(f0, voiced_amp, voice.f0, prosody, rng), noise_amp, syl, voice.tract, rng
    )
    breath_env = breath_envelope(t, syl, rng)
    level_db = NEUTRAL_LEVEL_DB + prosody.loudness + voice.level_db
    return mix(speech, voiced_amp + noise_amp > 0.1, breath_env, room, level_db, rng)
