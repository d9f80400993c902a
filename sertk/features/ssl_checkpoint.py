"""Local self-supervised speech checkpoints as one interface: waves -> all L + 1 hidden states.

Two kinds of checkpoint, both read from disk only (nothing is ever downloaded; Hugging Face offline mode is
forced before ``transformers`` is imported and every load passes ``local_files_only=True``):

- a Hugging Face model dir (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``, optionally
  sharded with an ``.index.json``) of a wav2vec2, HuBERT, WavLM, data2vec-audio or Whisper model, loaded
  with ``transformers`` (Whisper: the encoder only, plus its ``preprocessor_config.json`` for the log-Mel);
- a torchaudio weight file: the state dict of a ``torchaudio.models`` builder (what the
  ``torchaudio.pipelines`` bundles download), named by ``torchaudio_builder`` (and ``torchaudio_args``).

A backend's ``forward(waves (B, N), lengths (B,))`` returns the L + 1 hidden states, each (B, T, D):
index 0 is the transformer's input (CNN features + convolutional positional embedding, after the input
LayerNorm of post-LN models), index l the output of transformer layer l, with the library's own
convention (no extra final LayerNorm: in transformers 5 and torchaudio the last hidden state of a pre-LN
"large" model is the last layer's output, before the encoder's final LayerNorm).
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sertk.errors import SertkError
from sertk.masking import frame_mask

SAMPLE_RATE = 16000
# model_type in config.json -> the transformers class that holds the encoder we need.
HF_MODELS = {
    "wav2vec2": "Wav2Vec2Model",
    "hubert": "HubertModel",
    "wavlm": "WavLMModel",
    "data2vec-audio": "Data2VecAudioModel",
    # Encoder-only class: from_pretrained reads just the encoder tensors of a full Whisper checkpoint.
    "whisper": "WhisperForAudioClassification",
}
HF_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Parameters a checkpoint may lack without changing any hidden state: the training-time mask embedding of
# the wav2vec2 family and the (unused) classification head of WhisperForAudioClassification.
_UNUSED_PARAMETERS = ("masked_spec_embed", "projector.", "classifier.")
TORCHAUDIO_BUILDERS = (
    "wav2vec2_model",
    "wav2vec2_base",
    "wav2vec2_large",
    "wav2vec2_large_lv60k",
    "wav2vec2_xlsr_300m",
    "wav2vec2_xlsr_1b",
    "wav2vec2_xlsr_2b",
    "hubert_base",
    "hubert_large",
    "hubert_xlarge",
    "wavlm_model",
    "wavlm_base",
    "wavlm_large",
)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def conv_frames(num_samples: int, conv: list[tuple[int, int]]) -> int:
    """Frames out of a stack of unpadded 1-D convs [(kernel, stride), ...]: n -> floor((n - k) / s) + 1 each."""
    n = num_samples
    for kernel, stride in conv:
        n = (n - kernel) // stride + 1 if n >= kernel else 0
    return n


class Backend(nn.Module, abc.ABC):
    """A loaded encoder. Subclasses set the attributes below and implement ``num_frames`` and ``forward``.

    ``frame_stride``: samples per output frame; frames are shift-equivariant on that grid (a chunk starting
    at sample m * frame_stride gives frames m, m + 1, ... of the whole). ``window``: the fixed input length
    in samples (Whisper), or None. ``pads_exactly``: a zero-padded row with its lengths gives the valid
    frames of the utterance alone; when False, rows must have equal lengths. ``normalize_eps``: the variance
    floor of the library's waveform normalisation.

    In ``train()`` mode (fine-tuning) a backend applies its dropout only: the randomness the libraries add
    on top, SpecAugment-style masking of the hidden states (transformers' ``apply_spec_augment``) and
    LayerDrop, is switched off at load. sertk's own augmentation lives in the experiment's ``input``
    section and is seeded; the libraries' masking draws from numpy's global generator, and a dropped layer
    would change the list of hidden states the layer weights are learnt over.
    """

    num_hidden: int
    hidden_dim: int
    frame_stride: int
    window: int | None = None
    pads_exactly: bool = True
    normalize_default: bool = False
    normalize_eps: float = 1e-7

    @abc.abstractmethod
    def num_frames(self, num_samples: int) -> int:
        """Output frames for an input of ``num_samples`` samples."""

    @abc.abstractmethod
    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """(B, S) waves, lengths (B,) -> num_hidden states (the layers' input, then each layer's output), (B, T, D)."""


class HfWav2Vec2Family(Backend):
    """wav2vec2, HuBERT, WavLM and data2vec-audio from ``transformers``; frames from config.json's conv stack.

    Padding masks: a conv stack with GroupNorm (the "base" models: feat_extract_norm "group") normalises
    each channel over the whole input, so padding changes every frame; data2vec-audio's stack of positional
    convs lets padded frames leak into the last valid ones even with an attention mask. Those run on
    unpadded rows (``pads_exactly`` False); LayerNorm stacks take an attention mask.
    """

    def __init__(self, model: nn.Module, do_normalize: bool | None) -> None:
        super().__init__()
        self.model = model
        cfg = model.config
        cfg.apply_spec_augment = False  # read at every forward: no hidden-state masking in train() mode
        cfg.layerdrop = 0.0
        self.conv = list(zip(cfg.conv_kernel, cfg.conv_stride, strict=True))
        self.frame_stride = int(torch.tensor([s for _, s in self.conv]).prod())
        self.num_hidden = cfg.num_hidden_layers + 1
        self.hidden_dim = cfg.hidden_size
        norm = getattr(cfg, "feat_extract_norm", "layer")
        self.pads_exactly = norm == "layer" and cfg.model_type != "data2vec-audio"
        self.normalize_default = norm == "layer" if do_normalize is None else do_normalize
        self.normalize_eps = 1e-7  # Wav2Vec2FeatureExtractor: (x - mean) / sqrt(var + 1e-7)

    def num_frames(self, num_samples: int) -> int:
        return conv_frames(num_samples, self.conv)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        mask = frame_mask(lengths, waves.shape[1]).long() if self.pads_exactly else None
        return list(self.model(waves, attention_mask=mask, output_hidden_states=True).hidden_states)


class HfWhisperEncoder(Backend):
    """Whisper's encoder on its log-Mel input, computed here in torch from the checkpoint's preprocessor.

    Log-Mel as WhisperFeatureExtractor: the chunk zero-padded to the window (``n_samples``, 30 s), periodic
    Hann STFT (n_fft 400, hop 160, centred, reflect padding), last frame dropped, power through its Slaney
    Mel filters, log10 floored at 1e-10, clipped at (max - 8), then (x + 4) / 4. The encoder always sees
    the full window (1500 frames at 50 Hz); the frames of n samples are the first ceil(floor(n / hop) / 2),
    those whose Mel frames are centred inside the signal (conv2 has stride 2, padding 1).
    """

    def __init__(self, encoder: nn.Module, feature_extractor: Any, path: Path) -> None:
        super().__init__()
        self.encoder = encoder
        self.encoder.layerdrop = 0.0  # copied from encoder_layerdrop at construction; read in forward
        self.hop = int(feature_extractor.hop_length)
        self.n_fft = int(feature_extractor.n_fft)
        self.window = int(feature_extractor.n_samples)
        strides = encoder.conv1.stride[0] * encoder.conv2.stride[0]
        mel_frames = encoder.config.max_source_positions * strides
        if self.window // self.hop != mel_frames:
            raise SertkError(
                f"{path / 'preprocessor_config.json'}: a {self.window}-sample window gives "
                f"{self.window // self.hop} Mel frames, the encoder takes {mel_frames}"
            )
        self.frame_stride = self.hop * strides
        self.num_hidden = encoder.config.encoder_layers + 1
        self.hidden_dim = encoder.config.d_model
        self.pads_exactly = True  # every chunk is zero-padded to the window anyway
        mel = torch.as_tensor(feature_extractor.mel_filters, dtype=torch.float32)
        self.register_buffer("mel_filters", mel, persistent=False)
        self.register_buffer("stft_window", torch.hann_window(self.n_fft), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        return (num_samples // self.hop + 1) // 2

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, window) zero-padded waves -> (B, n_mels, window // hop) Whisper log-Mel input."""
        stft = torch.stft(waves, self.n_fft, self.hop, window=self.stft_window, return_complex=True)
        power = stft[..., :-1].abs().square()
        log_spec = (self.mel_filters.T @ power).clamp(min=1e-10).log10()
        floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
        return (torch.maximum(log_spec, floor) + 4.0) / 4.0

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        padded = F.pad(waves, (0, self.window - waves.shape[1]))
        return list(self.encoder(self.log_mel(padded), output_hidden_states=True).hidden_states)


class TorchaudioWav2Vec2(Backend):
    """A ``torchaudio.models`` Wav2Vec2Model (wav2vec2, HuBERT, WavLM): the same L + 1 states as transformers.

    torchaudio's ``extract_features`` returns the L layer outputs only; here the transformer's input
    (``Transformer._preprocess``: positional conv, and the input LayerNorm of post-LN models) is kept as
    state 0 and the layers are run as ``get_intermediate_outputs`` runs them. A GroupNorm conv stack
    (``extractor_mode: group_norm``) cannot be padded, as for transformers.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        layers = model.feature_extractor.conv_layers
        self.conv = [(int(layer.kernel_size), int(layer.stride)) for layer in layers]
        self.frame_stride = int(torch.tensor([s for _, s in self.conv]).prod())
        self.num_hidden = len(model.encoder.transformer.layers) + 1
        self.wavlm = any(
            hasattr(layer.attention, "rel_attn_embed") for layer in model.encoder.transformer.layers
        )
        self.hidden_dim = model.encoder.feature_projection.projection.out_features
        group_norm = any(isinstance(m, nn.GroupNorm) for m in model.feature_extractor.modules())
        self.pads_exactly = not group_norm
        # torchaudio's bundles normalise the waveform exactly for their LayerNorm conv stacks
        # (large-lv60k, XLS-R, HuBERT large/xlarge, WavLM large), with F.layer_norm's eps.
        self.normalize_default = not group_norm
        self.normalize_eps = 1e-5

    def num_frames(self, num_samples: int) -> int:
        return conv_frames(num_samples, self.conv)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        feats, frame_lengths = self.model.feature_extractor(waves, lengths if self.pads_exactly else None)
        x, attention_mask = self.model.encoder._preprocess(feats, frame_lengths)
        padding = None
        if self.wavlm and attention_mask is not None:
            # torchaudio's WavLM attention asserts attention_mask is None and masks keys by a padding mask
            # instead (its extract_features with lengths fails on that assert).
            padding, attention_mask = ~frame_mask(frame_lengths, x.shape[1]), None
        transformer = self.model.encoder.transformer
        x = transformer._preprocess(x)
        states, position_bias = [x], None
        for layer in transformer.layers:
            x, position_bias = layer(x, attention_mask, position_bias=position_bias, key_padding_mask=padding)
            states.append(x)
        return states


def _offline_transformers():
    """Import transformers with the Hugging Face hub forced offline and its progress bars off."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    try:
        import transformers
    except ImportError:
        raise SertkError(
            "feature ssl: Hugging Face model dirs need the transformers package (pip install 'sertk[ssl]')"
        ) from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _weight_files(path: Path) -> list[Path]:
    """The weight files of a Hugging Face model dir (shards included), in a fixed order."""
    for name in HF_WEIGHTS:
        if (path / name).is_file():
            if not name.endswith(".index.json"):
                return [path / name]
            index = path / name
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError) as err:
                raise SertkError(f"{index}: not a weight index ({_first_line(err)})") from None
            missing = [s for s in shards if not (path / s).is_file()]
            if missing:
                raise SertkError(f"{index}: shard {missing[0]} not found")
            return [index] + [path / s for s in shards]
    raise SertkError(f"{path}: no weights in this model dir (expected {' or '.join(HF_WEIGHTS[::2])})")


def file_digest(paths: list[Path]) -> str:
    """sha256 over the bytes of ``paths`` (each prefixed by its name), the fingerprint a dump records."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SertkError(f"{path}: cannot read JSON ({_first_line(err)})") from None
    if not isinstance(data, dict):
        raise SertkError(f"{path}: expected a JSON object")
    return data


def hf_dir_files(path: Path) -> list[Path]:
    """The files a Hugging Face model dir is read from: config.json, its weights (shards and index
    included), preprocessor_config.json when present; what its sha256 and a package's copy cover."""
    _hf_model_type(path)
    files = [path / "config.json", *_weight_files(path)]
    if (path / "preprocessor_config.json").is_file():
        files.append(path / "preprocessor_config.json")
    return files


def _hf_model_type(path: Path) -> str:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise SertkError(f"{path}: not a Hugging Face model dir (no config.json)")
    model_type = _read_json(config_path).get("model_type")
    if model_type not in HF_MODELS:
        raise SertkError(
            f"{config_path}: model_type {model_type!r} is not a supported speech encoder "
            f"(supported: {', '.join(HF_MODELS)})"
        )
    return model_type


def load_hf_dir(path: Path) -> tuple[Backend, list[Path]]:
    """The backend of a local Hugging Face model dir and the files it was read from."""
    model_type = _hf_model_type(path)
    files = hf_dir_files(path)
    preprocessor = path / "preprocessor_config.json"
    if preprocessor.is_file():
        prep = _read_json(preprocessor)
        rate = prep.get("sampling_rate", SAMPLE_RATE)
        if rate != SAMPLE_RATE:
            raise SertkError(f"{preprocessor}: sampling_rate {rate}, sertk's ssl feature reads 16 kHz audio")
    elif model_type == "whisper":
        raise SertkError(f"{path}: no preprocessor_config.json (Whisper's log-Mel input is defined there)")
    transformers = _offline_transformers()
    cls = getattr(transformers, HF_MODELS[model_type])
    try:
        # Shape mismatches come back in the loading info (and are refused below) instead of as a
        # multi-line report.
        model, info = cls.from_pretrained(
            str(path.resolve()),
            local_files_only=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            dtype=torch.float32,
        )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise SertkError(f"{path}: cannot load the {model_type} checkpoint ({_first_line(err)})") from None
    missing = sorted(k for k in info["missing_keys"] if not any(u in k for u in _UNUSED_PARAMETERS))
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", []))
    if missing or mismatched:
        first = missing[0] if missing else mismatched[0]
        raise SertkError(
            f"{path}: the weights do not match config.json's {model_type} model "
            f"({len(missing)} missing, {len(mismatched)} of another shape, first {first})"
        )
    if model_type == "whisper":
        feature_extractor = transformers.WhisperFeatureExtractor.from_pretrained(
            str(path.resolve()), local_files_only=True
        )
        return HfWhisperEncoder(model.encoder, feature_extractor, path).eval(), files
    do_normalize = prep.get("do_normalize") if preprocessor.is_file() else None
    return HfWav2Vec2Family(model, do_normalize).eval(), files


def load_torchaudio_file(path: Path, builder: str, args: dict[str, Any]) -> Backend:
    """The backend of a torchaudio weight file: ``torchaudio.models.<builder>(**args)`` + its state dict.

    The state dict is loaded strictly except for ``aux.*`` (the CTC head of the ASR bundles), which is
    dropped: only the encoder's hidden states are used.
    """
    if builder not in TORCHAUDIO_BUILDERS:
        raise SertkError(
            f"torchaudio_builder: unknown builder {builder!r} (known: {', '.join(TORCHAUDIO_BUILDERS)})"
        )
    if not path.is_file():
        raise SertkError(f"{path}: torchaudio weight file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types (pickle, zip, unpickling errors)
        raise SertkError(f"{path}: cannot read a torch state dict ({_first_line(err)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SertkError(
            f"{path}: expected a state dict (parameter name -> tensor), as torch.save(model.state_dict())"
        )
    import torchaudio.models

    try:
        model = getattr(torchaudio.models, builder)(**{**args, "aux_num_out": None})
    except (TypeError, ValueError) as err:
        raise SertkError(
            f"torchaudio_args: torchaudio.models.{builder} rejects them ({_first_line(err)})"
        ) from None
    state = {k: v for k, v in state.items() if not k.startswith("aux.")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or reshaped:
        first = (missing or unexpected or reshaped)[0]
        raise SertkError(
            f"{path}: not a state dict of torchaudio.models.{builder} with these torchaudio_args "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(reshaped)} of another shape, first {first})"
        )
    model.load_state_dict(state)
    return TorchaudioWav2Vec2(model).eval()
