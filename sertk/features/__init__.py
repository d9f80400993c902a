"""Feature types by name: ``FEATURES`` maps a ``--feat`` name to its ``FeatureExtractor`` class.

Adding a feature type is one line here; its ``Config`` dataclass fields are the keys of its YAML file.
"""

from __future__ import annotations

from pathlib import Path

from sertk.config import from_dict, read_yaml
from sertk.errors import SertkError
from sertk.features.base import FeatureExtractor
from sertk.features.fbank import KaldiFbank
from sertk.features.lld import Is09Lld, Rlc17Lld
from sertk.features.spectrogram import LogPowerSpectrogram, MuLawSpectrogram
from sertk.features.ssl import SslFeatures
from sertk.features.wave import Waveform

FEATURES: dict[str, type[FeatureExtractor]] = {
    "logmel40": KaldiFbank,
    "lld-is09": Is09Lld,
    "lld-rlc17": Rlc17Lld,
    "spec-li2018": MuLawSpectrogram,
    "spec-logpow": LogPowerSpectrogram,
    "spec-logpow8k": LogPowerSpectrogram,  # the same with max_freq_hz 8000 (conf/feats/spec-logpow8k.yaml)
    "ssl": SslFeatures,  # hidden layers of a local wav2vec2/HuBERT/WavLM/data2vec/Whisper checkpoint
    "wave": Waveform,  # the samples themselves, for models that run an SSL encoder on the fly
}
# A name that is another name's class with other defaults: what the name promises holds without a YAML
# (``--feat spec-logpow8k`` alone must not write the 4 kHz spectrogram under the 8 kHz name).
NAME_DEFAULTS: dict[str, dict] = {"spec-logpow8k": {"max_freq_hz": 8000.0}}


def build_feature(name: str, config: dict | str | Path | None = None) -> FeatureExtractor:
    """Build the feature extractor ``name`` from a config mapping, a YAML path, or its defaults (None)."""
    if name not in FEATURES:
        raise SertkError(f"unknown feature {name!r} (known: {', '.join(sorted(FEATURES))})")
    cls = FEATURES[name]
    defaults = NAME_DEFAULTS.get(name, {})
    if isinstance(config, (str, Path)):
        cfg = from_dict(cls.Config, {**defaults, **read_yaml(config)}, where=str(config))
    else:
        cfg = from_dict(cls.Config, {**defaults, **dict(config or {})}, where=f"feature {name}")
    return cls(cfg)
