"""``--feat ssl`` on tiny random checkpoints written in every supported format: equality with the reference
library's forward, the layer axis, exact frame counts, seamless chunking, one-line errors, offline loading,
and a dump end to end."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import h5py
import numpy as np
import pytest
import safetensors.torch
import soundfile
import torch
import torchaudio.models
import transformers
import yaml
from torchaudio.models.wav2vec2.utils import import_huggingface_model

from sertk.config import to_dict
from sertk.data.datadir import write_data_dir
from sertk.errors import SertkError
from sertk.features import build_feature
from sertk.features.dump import dump_features
from sertk.features.io import load_features
from sertk.features.ssl import (
    SslConfig,
    SslFeatures,
    _resolve_layers,
    layer_layout,
    normalize_waveforms,
    plan_chunks,
)
from sertk.features.ssl_checkpoint import conv_frames, file_digest, hf_dir_files, load_torchaudio_file

# transformers' WavLM attention mixes a float attention mask with a boolean padding mask (its own code).
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
RATE = 16000
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16, 16),
    conv_kernel=(10, 3),
    conv_stride=(5, 2),
    conv_bias=True,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    layerdrop=0.0,
)
# Each kind: its transformers config/model classes and the options that make it tiny.
HF_KINDS = {
    "wav2vec2-group": ("Wav2Vec2Config", "Wav2Vec2Model", {"feat_extract_norm": "group"}),
    "wav2vec2-layer": (
        "Wav2Vec2Config",
        "Wav2Vec2Model",
        {"feat_extract_norm": "layer", "do_stable_layer_norm": True},
    ),
    "hubert-group": ("HubertConfig", "HubertModel", {"feat_extract_norm": "group"}),
    "wavlm-group": (
        "WavLMConfig",
        "WavLMModel",
        {"feat_extract_norm": "group", "num_buckets": 16, "max_bucket_distance": 20},
    ),
    "wavlm-layer": (
        "WavLMConfig",
        "WavLMModel",
        {
            "feat_extract_norm": "layer",
            "do_stable_layer_norm": True,
            "num_buckets": 16,
            "max_bucket_distance": 20,
        },
    ),
    "data2vec-audio": (
        "Data2VecAudioConfig",
        "Data2VecAudioModel",
        {"num_conv_pos_embeddings": 3, "conv_pos_kernel_size": 5},
    ),
}
WHISPER_WINDOW_S = 2  # max_source_positions 100 -> 200 Mel frames -> a 2 s window instead of 30 s


def _waves(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero-padded batch of noisy tones."""
    gen = torch.Generator().manual_seed(seed)
    waves = torch.zeros(len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        t = torch.arange(n) / RATE
        waves[row, :n] = 0.3 * torch.sin(2 * torch.pi * (150 + 50 * row) * t) + 0.05 * torch.randn(
            n, generator=gen
        )
    return waves, torch.tensor(lengths)


def _hf_model(kind: str, **overrides):
    config_name, model_name, options = HF_KINDS[kind]
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(**{**TINY, **options, **overrides})
    return getattr(transformers, model_name)(config).eval()


def _save_hf(model, path: Path, normalize: bool | None = None, safetensors: bool = True) -> Path:
    if safetensors:
        model.save_pretrained(path)
    else:  # transformers 5 writes only safetensors; older checkpoints come as pytorch_model.bin
        model.config.save_pretrained(path)
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    if normalize is not None:
        transformers.Wav2Vec2FeatureExtractor(do_normalize=normalize).save_pretrained(path)
    return path


def _tiny_whisper(path: Path) -> tuple[torch.nn.Module, transformers.WhisperFeatureExtractor]:
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        max_source_positions=50 * WHISPER_WINDOW_S,
        max_target_positions=16,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    model = transformers.WhisperForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    extractor = transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=WHISPER_WINDOW_S)
    extractor.save_pretrained(path)
    return model.model.encoder, extractor


def _reference_hf(model, wave: torch.Tensor, normalize: bool) -> torch.Tensor:
    """(L + 1, T, D) hidden states of one utterance: transformers' own preprocessing and forward."""
    values = transformers.Wav2Vec2FeatureExtractor(do_normalize=normalize)(
        wave.numpy(), sampling_rate=RATE, return_tensors="pt"
    ).input_values
    with torch.no_grad():
        return torch.stack(model(values, output_hidden_states=True).hidden_states)[:, 0]


def _extract(checkpoint, **options) -> SslFeatures:
    """float32 features; rows of any length share padded calls, so the padding masks are exercised."""
    config = {"checkpoint": str(checkpoint), "dtype": "float32", "max_padding": 0.9, **options}
    return build_feature("ssl", config)


def _split(feats: torch.Tensor, num_layers: int) -> torch.Tensor:
    """(T, L·D) -> (L, T, D)."""
    return feats.reshape(feats.shape[0], num_layers, -1).transpose(0, 1)


@pytest.mark.parametrize("kind", list(HF_KINDS))
def test_hf_dir_equals_transformers_forward(kind, tmp_path, one_thread):
    model = _hf_model(kind)
    normalize = kind.endswith("layer")  # as the real checkpoints: LayerNorm conv stacks normalise
    extractor = _extract(_save_hf(model, tmp_path / kind, normalize=normalize))
    assert extractor.cfg.normalize_waveform is normalize
    assert extractor.cfg.layers == [0, 1, 2] and extractor.cfg.layer_dim == 32 and extractor.dim == 96
    lengths = [4000, 2500, 1237]
    waves, lens = _waves(lengths)
    feats = extractor.compute(waves, lens)
    assert feats.dtype == torch.float32 and feats.shape == (3, extractor.num_frames(4000), 96)
    for row, n in enumerate(lengths):
        reference = _reference_hf(model, waves[row, :n], normalize)
        frames = extractor.num_frames(n)
        assert frames == reference.shape[1] == int(model._get_feat_extract_output_lengths(n))
        assert torch.allclose(_split(feats[row, :frames], 3), reference, atol=2e-5), kind
        assert not feats[row, frames:].any()


def test_pytorch_bin_loads_like_safetensors(tmp_path, one_thread):
    model = _hf_model("hubert-group")
    waves, lens = _waves([3000])
    a = _extract(_save_hf(model, tmp_path / "st")).compute(waves, lens)
    b = _extract(_save_hf(model, tmp_path / "bin", safetensors=False)).compute(waves, lens)
    assert (tmp_path / "bin" / "pytorch_model.bin").is_file()
    assert torch.equal(a, b)


def test_ctc_and_legacy_checkpoints_load(tmp_path, one_thread):
    # A fine-tuned *ForCTC dir (weights under "wav2vec2.", plus lm_head) and one with the old
    # weight-norm names of the positional conv (weight_g / weight_v) give the encoder's states.
    torch.manual_seed(0)
    ctc = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**TINY, vocab_size=10)).eval()
    ctc.save_pretrained(tmp_path / "ctc")
    waves, lens = _waves([3000])
    with torch.no_grad():
        reference = torch.cat(ctc.wav2vec2(waves, output_hidden_states=True).hidden_states, dim=-1)
    assert torch.allclose(_extract(tmp_path / "ctc").compute(waves, lens), reference, atol=1e-6)
    state = {k: v.contiguous() for k, v in ctc.state_dict().items()}
    prefix = "wav2vec2.encoder.pos_conv_embed.conv."
    state[prefix + "weight_g"] = state.pop(prefix + "parametrizations.weight.original0")
    state[prefix + "weight_v"] = state.pop(prefix + "parametrizations.weight.original1")
    ctc.config.save_pretrained(tmp_path / "legacy")
    safetensors.torch.save_file(state, tmp_path / "legacy" / "model.safetensors", metadata={"format": "pt"})
    assert torch.allclose(_extract(tmp_path / "legacy").compute(waves, lens), reference, atol=1e-6)


def test_padding_policy_follows_the_conv_norm(tmp_path, one_thread):
    pads = {k: _extract(_save_hf(_hf_model(k), tmp_path / k)).encoder.backend.pads_exactly for k in HF_KINDS}
    assert pads == {
        "wav2vec2-group": False,
        "wav2vec2-layer": True,
        "hubert-group": False,
        "wavlm-group": False,
        "wavlm-layer": True,
        "data2vec-audio": False,
    }
    # Planted: batching a GroupNorm model with padding (as if it took an attention mask) changes the
    # shorter row, which is why such models run on unpadded rows.
    model = _hf_model("wav2vec2-group")
    extractor = _extract(_save_hf(model, tmp_path / "planted"))
    extractor.encoder.backend.pads_exactly = True
    waves, lens = _waves([4000, 2500])
    feats = extractor.compute(waves, lens)
    reference = _reference_hf(model, waves[1, :2500], normalize=False)
    assert not torch.allclose(_split(feats[1, : reference.shape[1]], 3), reference, atol=1e-3)


def test_standard_conv_stack_frame_count(tmp_path, one_thread):
    # transformers' default conv stack (7 layers, kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2) with
    # narrow channels: frames = floor((n - 400) / 320) + 1, 0 below 400 samples.
    model = _hf_model(
        "wav2vec2-group",
        conv_dim=(8,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
    )
    extractor = _extract(_save_hf(model, tmp_path / "w2v"))
    for n in (0, 399, 400, 719, 720, 721, 16000, 16001, 50_123):
        assert extractor.num_frames(n) == ((n - 400) // 320 + 1 if n >= 400 else 0), n
    for n in (400, 720, 16000, 16319):
        waves, lens = _waves([n])
        assert extractor.compute(waves, lens).shape[1] == (n - 400) // 320 + 1


def test_layer_subset_order_and_average(tmp_path, one_thread):
    model = _hf_model("wavlm-layer")
    checkpoint = _save_hf(model, tmp_path / "wavlm", normalize=False)
    waves, lens = _waves([3000, 2000])
    reference = _reference_hf(model, waves[1, :2000], normalize=False)
    frames = reference.shape[1]
    subset = _extract(checkpoint, layers=[-1, 0])
    assert subset.cfg.layers == [2, 0] and subset.dim == 64
    feats = subset.compute(waves, lens)[1, :frames]
    # Planted wrong-layer bugs (off by one index, reversed order) would fail these two lines.
    assert torch.allclose(feats[:, :32], reference[2], atol=2e-5)
    assert torch.allclose(feats[:, 32:], reference[0], atol=2e-5)
    average = _extract(checkpoint, layers=[1, 2], average_layers=True)
    assert average.dim == 32 and layer_layout(to_dict(average.cfg)) == (1, 32)
    assert torch.allclose(average.compute(waves, lens)[1, :frames], reference[1:].mean(dim=0), atol=2e-5)
    assert layer_layout(to_dict(subset.cfg)) == (2, 32)
    # compute keeps FeatureExtractor's float32 promise (export's waveform path); the dump stores float16.
    half = build_feature("ssl", {"checkpoint": str(checkpoint)})
    assert half.compute(waves, lens).dtype == torch.float32 and half.storage_dtype == "float16"


def _torchaudio_args(num_layers: int = 2, mode: str = "layer_norm", pre_ln: bool = True, **extra) -> dict:
    return {
        "extractor_mode": mode,
        "extractor_conv_layer_config": [[16, 10, 5], [16, 3, 2]],
        "extractor_conv_bias": True,
        "encoder_embed_dim": 32,
        "encoder_projection_dropout": 0.0,
        "encoder_pos_conv_kernel": 16,
        "encoder_pos_conv_groups": 2,
        "encoder_num_layers": num_layers,
        "encoder_num_heads": 2,
        "encoder_attention_dropout": 0.0,
        "encoder_ff_interm_features": 64,
        "encoder_ff_interm_dropout": 0.0,
        "encoder_dropout": 0.0,
        "encoder_layer_norm_first": pre_ln,
        "encoder_layer_drop": 0.0,
        **extra,
    }


@pytest.mark.parametrize("builder", ["wav2vec2_model", "wavlm_model"])
def test_torchaudio_file_equals_torchaudio_forward(builder, tmp_path, one_thread):
    extra = {"encoder_num_buckets": 16, "encoder_max_distance": 20} if builder == "wavlm_model" else {}
    args = _torchaudio_args(**extra)
    torch.manual_seed(0)
    # An ASR bundle's file: the CTC head (aux) is in the state dict and is dropped on loading.
    model = getattr(torchaudio.models, builder)(**args, aux_num_out=5).eval()
    torch.save(model.state_dict(), tmp_path / "model.pth")
    extractor = _extract(tmp_path / "model.pth", torchaudio_builder=builder, torchaudio_args=args)
    assert extractor.cfg.normalize_waveform is True  # LayerNorm conv stack, as torchaudio's bundles
    lengths = [4000, 2200]
    waves, lens = _waves(lengths)
    feats = extractor.compute(waves, lens)
    for row, n in enumerate(lengths):
        wave = torch.nn.functional.layer_norm(waves[row : row + 1, :n], (n,))
        with torch.no_grad():
            layers, _ = model.extract_features(wave)
            conv, _ = model.feature_extractor(wave, None)
            final = model.encoder(conv)  # the encoder output: the last layer after the final LayerNorm
            got = _split(feats[row, : layers[0].shape[1]], 3)
            last_normed = model.encoder.transformer.layer_norm(got[2])
        assert extractor.num_frames(n) == layers[0].shape[1]
        for layer in (1, 2):
            assert torch.allclose(got[layer], layers[layer - 1][0], atol=2e-5)
        assert torch.allclose(last_normed, final[0], atol=2e-5)


@pytest.mark.parametrize("kind", ["wav2vec2-group", "wavlm-layer", "hubert-group"])
def test_torchaudio_and_hf_formats_give_the_same_states(kind, tmp_path, one_thread):
    # The same weights in both formats (torchaudio's import_huggingface_model) give the same L + 1 states,
    # layer 0 (the transformer's input) included.
    model = _hf_model(kind)
    imported = import_huggingface_model(model).eval()
    torch.save(imported.state_dict(), tmp_path / "imported.pth")
    wavlm = kind.startswith("wavlm")
    extra = {"encoder_num_buckets": 16, "encoder_max_distance": 20} if wavlm else {}
    group = kind.endswith("group")
    args = _torchaudio_args(mode="group_norm" if group else "layer_norm", pre_ln=not group, **extra)
    builder = "wavlm_model" if wavlm else "wav2vec2_model"
    options = {"normalize_waveform": False}
    from_torchaudio = _extract(
        tmp_path / "imported.pth", torchaudio_builder=builder, torchaudio_args=args, **options
    )
    from_hf = _extract(_save_hf(model, tmp_path / "hf"), **options)
    waves, lens = _waves([4000, 2600])
    assert torch.allclose(from_torchaudio.compute(waves, lens), from_hf.compute(waves, lens), atol=2e-5)


def test_whisper_encoder_equals_transformers(tmp_path, one_thread):
    encoder, reference_extractor = _tiny_whisper(tmp_path / "whisper")
    extractor = _extract(tmp_path / "whisper", overlap_seconds=0.5)  # the default 4 s exceeds the 2-s window
    assert extractor.cfg.layers == [0, 1, 2] and extractor.cfg.normalize_waveform is False
    lengths = [RATE * WHISPER_WINDOW_S, 20_000, 5_003]
    waves, lens = _waves(lengths)
    feats = extractor.compute(waves, lens)
    backend = extractor.encoder.backend
    for row, n in enumerate(lengths):
        inputs = reference_extractor(
            waves[row, :n].numpy(), sampling_rate=RATE, return_tensors="pt"
        ).input_features
        padded = torch.nn.functional.pad(waves[row : row + 1, :n], (0, backend.window - n))
        assert torch.allclose(backend.log_mel(padded), inputs, atol=1e-4)
        with torch.no_grad():
            reference = torch.stack(encoder(inputs, output_hidden_states=True).hidden_states)[:, 0]
        frames = extractor.num_frames(n)
        assert frames == -(-(n // 160) // 2)  # ceil(floor(n / hop) / 2)
        assert torch.allclose(_split(feats[row, :frames], 3), reference[:, :frames], atol=1e-4)
    assert extractor.num_frames(RATE * WHISPER_WINDOW_S) == 50 * WHISPER_WINDOW_S


class _Grid:
    """A stand-in backend with the standard conv stack's frame grid."""

    frame_stride = 320

    def num_frames(self, n: int) -> int:
        return conv_frames(n, [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2)


def test_plan_chunks_tiles_the_frames():
    grid = _Grid()
    chunk, overlap = 5 * RATE, 50  # 5 s chunks, 1 s overlap
    for n in [400, 5 * RATE, 5 * RATE + 1, 9 * RATE + 77, 13 * RATE, 31 * RATE + 319, 60 * RATE + 5]:
        plan = plan_chunks(n, grid, chunk, overlap)
        assert plan[0][2] == 0 and plan[-1][3] == grid.num_frames(n) and plan[-1][1] == n
        for k, (start, end, keep_from, keep_to) in enumerate(plan):
            assert start % 320 == 0 and end - start <= chunk and keep_to > keep_from
            offset, frames = start // 320, grid.num_frames(end - start)
            assert offset <= keep_from and keep_to <= offset + frames  # kept frames exist in the chunk
            if k:
                assert keep_from == plan[k - 1][3] and keep_from - offset >= overlap // 2
            if k < len(plan) - 1:
                assert offset + frames - keep_to >= overlap // 2


def test_plan_chunks_by_hand():
    # Standard conv stack: floor((n - 400) / 320) + 1 frames. 5 s chunks = 249 frames, 50 overlap -> hop 199.
    grid, chunk = _Grid(), 5 * RATE
    assert plan_chunks(chunk, grid, chunk, 50) == [(0, chunk, 0, 249)]  # exactly one chunk's length
    # 143680 = 199 * 320 + 80000 samples: the second chunk ends at the end, no third one.
    assert plan_chunks(143_680, grid, chunk, 50) == [(0, 80_000, 0, 224), (63_680, 143_680, 224, 448)]
    # 144077 samples (449 frames): starts 0, 199 and ceil(64077 / 320) = 201; the seams halve each overlap,
    # (0 + 199 + 249) // 2 = 224 and (199 + 201 + 249) // 2 = 324.
    assert plan_chunks(144_077, grid, chunk, 50) == [
        (0, 80_000, 0, 224),
        (63_680, 143_680, 224, 324),
        (64_320, 144_077, 324, 449),
    ]


def test_waveform_normalisation_by_hand():
    # Row 0: 1, 2, 3 -> mean 2, variance 2/3; row 1: constant -> 0 (eps keeps it finite); padding stays 0.
    waves = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 4.0, 7.0, 7.0]])
    out = normalize_waveforms(waves, torch.tensor([3, 2]), eps=1e-5)
    scale = (2 / 3 + 1e-5) ** -0.5
    torch.testing.assert_close(out, torch.tensor([[-scale, 0.0, scale, 0.0], [0.0, 0.0, 0.0, 0.0]]))


def test_layer_choices_and_config_ranges_are_checked():
    assert _resolve_layers([0, -1, 1], 3, "ckpt") == [0, 2, 1]
    with pytest.raises(SertkError, match=r"layers: each hidden state at most once, got \[1, -2\]"):
        _resolve_layers([1, -2], 3, "ckpt")
    with pytest.raises(SertkError, match=r"ckpt has hidden states 0..2"):
        _resolve_layers([-4], 3, "ckpt")
    with pytest.raises(ValueError, match=r"max_padding must be in \[0, 1\), got 1.0"):
        SslConfig(checkpoint="x", max_padding=1.0)
    with pytest.raises(ValueError, match="overlap_seconds must be in"):
        SslConfig(checkpoint="x", overlap_seconds=30.0)


def test_calls_hold_at_most_batch_samples_and_skip_rows_without_a_frame(tmp_path, one_thread):
    extractor = _extract(_save_hf(_hf_model("wav2vec2-layer"), tmp_path / "w2v"), max_padding=0.9)
    encoder = extractor.encoder
    pieces = [(row, 0, 1000, 0, 1) for row in range(3)]
    encoder.batch_samples = 3000
    assert [len(g) for g in encoder._groups(pieces)] == [3]
    encoder.batch_samples = 2999  # (2 + 1) x 1000 samples no longer fit
    assert [len(g) for g in encoder._groups(pieces)] == [2, 1]
    with pytest.raises(SertkError, match=r"layer_dim: .* has 32-dim hidden states, the config says 31"):
        _extract(tmp_path / "w2v", layer_dim=31)
    calls = []
    forward = encoder.backend.forward
    encoder.backend.forward = lambda waves, lengths: calls.append(lengths.tolist()) or forward(waves, lengths)
    assert encoder.num_frames(5) == 0  # a 5-sample row has no frame and runs no call
    hidden, frames = encoder(torch.randn(2, 1000), torch.tensor([1000, 5]))
    assert calls == [[1000]] and frames.tolist() == [encoder.num_frames(1000), 0]
    assert not hidden[1].any()


def test_padded_calls_waste_at_most_max_padding(tmp_path, one_thread):
    encoder = _extract(_save_hf(_hf_model("wav2vec2-layer"), tmp_path / "w2v"), max_padding=0.1).encoder
    pieces = [(row, 0, n, 0, 1) for row, n in enumerate([1000, 3000, 1050, 2900, 1099, 5000])]
    groups = [[p[2] for p in group] for group in encoder._groups(pieces)]
    assert groups == [[1000, 1050, 1099], [2900, 3000], [5000]]
    encoder.max_padding = 0.9
    assert [len(g) for g in encoder._groups(pieces)] == [6]
    encoder.backend.pads_exactly = False  # a GroupNorm model: equal lengths only
    assert [len(g) for g in encoder._groups(pieces + [(6, 0, 1050, 0, 1)])] == [1, 2, 1, 1, 1, 1]


def test_chunking_is_seamless_where_the_receptive_field_fits(tmp_path, one_thread):
    # Layer 0 (convs + a 16-frame positional conv) sees 0.01 s of context, well inside the 0.04 s
    # overlap: chunked equals unchunked at every frame. Layers 1-2 attend globally, so they cannot.
    model = _hf_model("wav2vec2-layer")
    checkpoint = _save_hf(model, tmp_path / "w2v", normalize=True)
    waves, lens = _waves([12_345, 7_000])
    whole = _extract(checkpoint).compute(waves, lens)
    options = {"max_chunk_seconds": 0.1, "overlap_seconds": 0.04}
    chunked = _extract(checkpoint, **options)
    assert len(plan_chunks(12_345, chunked.encoder.backend, 1600, chunked.encoder.overlap_frames)) > 5
    feats = chunked.compute(waves, lens)
    assert feats.shape == whole.shape and chunked.num_frames(12_345) == whole.shape[1]
    assert torch.allclose(feats[..., :32], whole[..., :32], atol=1e-5)
    # Planted: chunks without overlap put seams right next to kept frames; layer 0 then breaks there.
    seamed = _extract(checkpoint, max_chunk_seconds=0.1, overlap_seconds=0.0).compute(waves, lens)
    assert seamed.shape == whole.shape
    assert (seamed[..., :32] - whole[..., :32]).abs().max() > 1e-3


def test_torchaudio_without_layers_chunks_exactly(tmp_path, one_thread):
    args = _torchaudio_args(num_layers=0)
    torch.manual_seed(0)
    torch.save(torchaudio.models.wav2vec2_model(**args, aux_num_out=None).state_dict(), tmp_path / "m.pth")
    options = {"torchaudio_builder": "wav2vec2_model", "torchaudio_args": args}
    waves, lens = _waves([9_001, 4_000])
    whole = _extract(tmp_path / "m.pth", **options).compute(waves, lens)
    chunked = _extract(tmp_path / "m.pth", max_chunk_seconds=0.05, overlap_seconds=0.03, **options)
    assert torch.allclose(chunked.compute(waves, lens), whole, atol=1e-5)


def _check_frames_from_their_chunk(extractor: SslFeatures, wave: torch.Tensor) -> int:
    """Every stitched frame equals the frame of the chunk that owns it, computed alone; returns #chunks."""
    encoder = extractor.encoder
    n = wave.shape[0]
    feats = extractor.compute(wave[None], torch.tensor([n]))[0]
    assert feats.shape[0] == extractor.num_frames(n)
    plan = plan_chunks(n, encoder.backend, encoder.chunk_samples, encoder.overlap_frames)
    for start, end, keep_from, keep_to in plan:
        alone = extractor.compute(wave[None, start:end], torch.tensor([end - start]))[0]
        offset = start // encoder.backend.frame_stride
        assert torch.allclose(
            feats[keep_from:keep_to], alone[keep_from - offset : keep_to - offset], atol=1e-5
        )
    return len(plan)


def test_stitched_frames_come_from_their_own_chunk(tmp_path, one_thread):
    # Catches off-by-one frame offsets and wrong seams on a model whose layers attend globally.
    model = _hf_model("wavlm-layer")
    extractor = _extract(_save_hf(model, tmp_path / "wavlm"), max_chunk_seconds=0.1, overlap_seconds=0.03)
    extractor.encoder.normalize = False  # normalising the whole utterance would differ from each chunk's
    waves, _ = _waves([11_111])
    assert _check_frames_from_their_chunk(extractor, waves[0]) >= 6


def test_whisper_chunks_beyond_its_window(tmp_path, one_thread):
    _tiny_whisper(tmp_path / "whisper")
    extractor = _extract(tmp_path / "whisper", max_chunk_seconds=30.0, overlap_seconds=0.5)
    assert extractor.encoder.chunk_samples == RATE * WHISPER_WINDOW_S  # capped at the window
    waves, _ = _waves([int(5.3 * RATE)])
    assert _check_frames_from_their_chunk(extractor, waves[0]) == 4
    assert extractor.num_frames(int(5.3 * RATE)) == 265


def _one_line(err: pytest.ExceptionInfo, *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_checkpoint_errors_are_one_line(tmp_path, one_thread):
    with pytest.raises(SertkError) as err:
        _extract(tmp_path / "nowhere")
    _one_line(err, "nowhere", "not found")
    with pytest.raises(SertkError) as err:
        _extract("facebook/wav2vec2-base")  # a hub id is never fetched
    _one_line(err, "facebook/wav2vec2-base", "nothing is downloaded")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SertkError) as err:
        _extract(tmp_path / "empty")
    _one_line(err, "empty", "no config.json")
    model = _hf_model("wav2vec2-group")
    bare = tmp_path / "bare"
    model.config.save_pretrained(bare)
    with pytest.raises(SertkError) as err:
        _extract(bare)
    _one_line(err, "bare", "no weights")
    bert = tmp_path / "bert"
    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(bert)
    with pytest.raises(SertkError) as err:
        _extract(bert)
    _one_line(err, "config.json", "'bert'", "not a supported speech encoder")
    # Wrong model type: a HuBERT config.json over WavLM weights of another width.
    mixed = _save_hf(_hf_model("wavlm-group", hidden_size=48), tmp_path / "mixed")
    _hf_model("hubert-group").config.save_pretrained(mixed)
    with pytest.raises(SertkError) as err:
        _extract(mixed)
    _one_line(err, "mixed", "do not match", "hubert")
    whisper = tmp_path / "whisper"
    _tiny_whisper(whisper)
    with pytest.raises(SertkError) as err:  # the default 4 s overlap does not fit in its 2-s window
        _extract(whisper)
    _one_line(err, "overlap_seconds", "2-s chunks")
    (whisper / "preprocessor_config.json").unlink()
    with pytest.raises(SertkError) as err:
        _extract(whisper, overlap_seconds=0.5)
    _one_line(err, "whisper", "preprocessor_config.json")
    with pytest.raises(SertkError) as err:
        _extract(tmp_path / "bare" / "config.json")
    _one_line(err, "config.json", "torchaudio_builder")
    with pytest.raises(SertkError) as err:
        _extract(_save_hf(model, tmp_path / "ok"), layers=[0, 9])
    _one_line(err, "layers", "0..2")


def test_torchaudio_errors_are_one_line(tmp_path, one_thread):
    args = _torchaudio_args()
    torch.manual_seed(0)
    torch.save(torchaudio.models.wav2vec2_model(**args, aux_num_out=None).state_dict(), tmp_path / "m.pth")
    with pytest.raises(SertkError) as err:
        _extract(tmp_path / "m.pth", torchaudio_builder="wav2vec3_base")
    _one_line(err, "torchaudio_builder", "wav2vec3_base", "wavlm_base")
    with pytest.raises(SertkError) as err:  # the real base architecture is not what the file holds
        _extract(tmp_path / "m.pth", torchaudio_builder="hubert_base")
    _one_line(err, "m.pth", "hubert_base", "missing")
    with pytest.raises(SertkError) as err:
        _extract(
            tmp_path / "m.pth",
            torchaudio_builder="wav2vec2_model",
            torchaudio_args={**args, "encoder_embed_dim": 48},
        )
    _one_line(err, "m.pth", "of another shape")
    with pytest.raises(SertkError) as err:
        _extract(tmp_path / "m.pth", torchaudio_builder="wav2vec2_model", torchaudio_args={"colour": 1})
    _one_line(err, "torchaudio_args", "wav2vec2_model")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(SertkError) as err:
        _extract(tmp_path / "junk.pth", torchaudio_builder="wav2vec2_model", torchaudio_args=args)
    _one_line(err, "junk.pth", "cannot read")
    with pytest.raises(SertkError) as err:
        _extract(
            tmp_path / "m.pth",
            torchaudio_builder="wav2vec2_model",
            torchaudio_args=args,
            checkpoint_sha256="ab" * 32,
        )
    _one_line(err, "m.pth", "checkpoint_sha256")
    with pytest.raises(SertkError) as err:
        _extract(
            tmp_path / "m.pth",
            torchaudio_builder="wav2vec2_model",
            torchaudio_args=args,
            overlap_seconds=30.0,
        )
    _one_line(err, "overlap_seconds", "max_chunk_seconds")


def test_loading_never_touches_the_network(tmp_path, monkeypatch, one_thread):
    checkpoint = _save_hf(_hf_model("wavlm-layer"), tmp_path / "wavlm", normalize=True)
    _tiny_whisper(tmp_path / "whisper")

    def refuse(*args, **kwargs):
        raise AssertionError("network access while loading a checkpoint")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for path in (checkpoint, tmp_path / "whisper"):
        extractor = _extract(path, overlap_seconds=0.5)
        waves, lens = _waves([3000])
        assert extractor.compute(waves, lens).shape[1] == extractor.num_frames(3000)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


def _data_dir(root: Path, lengths: dict[str, int]) -> Path:
    waves, _ = _waves(list(lengths.values()))
    wav_scp, utt2spk, utt2emo = {}, {}, {}
    for row, (utt, n) in enumerate(lengths.items()):
        path = root / "wav" / f"{utt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, waves[row, :n].numpy(), RATE, subtype="FLOAT")
        wav_scp[utt], utt2spk[utt], utt2emo[utt] = str(path), utt.split("_")[0], "neu"
    data = root / "data"
    write_data_dir(data, {"wav.scp": wav_scp, "utt2spk": utt2spk, "utt2emo": utt2emo}, {"classes": ["neu"]})
    return data


def test_dump_stores_half_precision_layers_and_records_the_layout(tmp_path, one_thread):
    model = _hf_model("wav2vec2-group")
    checkpoint = _save_hf(model, tmp_path / "w2v")
    lengths = {"Ses01F_a": 6000, "Ses01F_b": 3100, "Ses01M_c": 9000}
    data = _data_dir(tmp_path, lengths)
    conf = tmp_path / "ssl.yaml"
    conf.write_text(yaml.safe_dump({"checkpoint": str(checkpoint), "layers": [0, 2]}))
    out = tmp_path / "dump"
    summary = dump_features(data, out, feat="ssl", feat_config=conf)
    assert summary["utterances"] == 3 and not summary["reused"]
    meta = yaml.safe_load((out / "feat.yaml").read_text())
    assert meta["feat"] == "ssl" and meta["config"]["layers"] == [0, 2] and meta["config"]["layer_dim"] == 32
    assert len(meta["config"]["checkpoint_sha256"]) == 64 and layer_layout(meta["config"]) == (2, 32)
    with h5py.File(out / "feats.h5", "r") as f:
        assert f["Ses01F_b"].dtype == np.float16 and f.attrs["dim"] == 64
    feats = load_features(out)
    assert feats["Ses01M_c"].dtype == np.float32
    assert load_features(out, dtype=None)["Ses01M_c"].dtype == np.float16
    for utt in lengths:
        wave = torch.from_numpy(soundfile.read(data.parent / "wav" / f"{utt}.wav", dtype="float32")[0])
        reference = _reference_hf(model, wave, normalize=False)[[0, 2]]
        stored = torch.from_numpy(feats[utt].reshape(-1, 2, 32)).transpose(0, 1)
        assert stored.shape == reference.shape
        assert torch.allclose(stored, reference, atol=2e-3 * reference.abs().max())  # float16 rounding
    assert dump_features(data, out, feat="ssl", feat_config=conf)["reused"]
    # Other weights under the same path change the sha256, so the dump is redone.
    _save_hf(_hf_model("wav2vec2-group", initializer_range=0.5), checkpoint)
    assert not dump_features(data, out, feat="ssl", feat_config=conf)["reused"]
    ark = tmp_path / "ark"
    dump_features(data, ark, feat="ssl", feat_config=conf, fmt="ark")
    from_ark = load_features(ark)
    assert from_ark["Ses01F_a"].shape == (conv_frames(6000, [(10, 5), (3, 2)]), 64)
    assert np.array_equal(from_ark["Ses01F_a"], load_features(out)["Ses01F_a"])


def test_encoder_module_backpropagates_through_chunks(tmp_path, one_thread):
    # The nn.Module an on-the-fly trainer (or fine-tuning) would call: gradients reach the encoder's
    # weights through padding, chunking and stitching.
    checkpoint = _save_hf(_hf_model("wav2vec2-layer"), tmp_path / "w2v")
    extractor = _extract(checkpoint, max_chunk_seconds=0.1, overlap_seconds=0.03)
    encoder = extractor.encoder
    waves, lens = _waves([4000, 2500])
    hidden, frame_lengths = encoder(waves, lens)
    assert hidden.shape == (2, extractor.num_frames(4000), 3, 32) and hidden.requires_grad
    assert frame_lengths.tolist() == [extractor.num_frames(4000), extractor.num_frames(2500)]
    hidden[:, :, 2].sum().backward()
    grads = [p.grad for p in encoder.backend.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert encoder.backend.model.encoder.layers[-1].feed_forward.output_dense.weight.grad.abs().sum() > 0


def test_ssl_reads_16_khz_only():
    """Every supported encoder was trained on 16 kHz: another sample_rate is refused, not resampled silently."""
    from sertk.config import from_dict
    from sertk.errors import SertkError
    from sertk.features.ssl import SslConfig

    with pytest.raises(SertkError, match="reads 16000 Hz"):
        from_dict(SslConfig, {"checkpoint": "x", "sample_rate": 8000})


def test_sharded_checkpoints_list_the_index_and_each_shard_once(tmp_path):
    path = tmp_path / "sharded"
    _hf_model("wav2vec2-group").save_pretrained(path, max_shard_size="60KB")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and len(index["weight_map"]) > len(shards)  # shards hold several tensors each
    files = hf_dir_files(path)
    assert files == [path / "config.json", path / "model.safetensors.index.json", *(path / s for s in shards)]
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(path)
    assert hf_dir_files(path)[-1] == path / "preprocessor_config.json"
    (path / shards[-1]).unlink()
    with pytest.raises(SertkError, match=f"index.json: shard {shards[-1]} not found"):
        hf_dir_files(path)


def test_the_checkpoint_digest_covers_each_files_name_and_bytes(tmp_path):
    a, b = tmp_path / "config.json", tmp_path / "model.bin"
    a.write_bytes(b"{}")
    b.write_bytes(b"\x00\x01" * 10)
    want = hashlib.sha256(b"config.json\0{}" + b"model.bin\0" + b"\x00\x01" * 10).hexdigest()
    assert file_digest([a, b]) == want


def test_incomplete_or_foreign_weights_are_refused(tmp_path, one_thread):
    model = _hf_model("wav2vec2-group")
    lacking = _save_hf(model, tmp_path / "lacking")
    state = safetensors.torch.load_file(lacking / "model.safetensors")
    del state["encoder.layers.0.attention.q_proj.weight"]
    safetensors.torch.save_file(state, lacking / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        SertkError, match=r"do not match .* \(1 missing, 0 of another shape, first encoder.layers"
    ):
        _extract(lacking)
    rate = _save_hf(model, tmp_path / "rate")
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=8000).save_pretrained(rate)
    with pytest.raises(SertkError, match="sampling_rate 8000, sertk's ssl feature reads 16 kHz audio"):
        _extract(rate)
    # Hidden-state masking (SpecAugment in transformers) is off even where config.json turns it on.
    masked = _save_hf(
        _hf_model("wav2vec2-group", apply_spec_augment=True, mask_time_prob=0.5), tmp_path / "m"
    )
    assert _extract(masked).encoder.backend.model.config.apply_spec_augment is False


def test_torchaudio_files_must_be_tensors_of_a_known_builder(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2), "step": 3}, path)
    with pytest.raises(SertkError, match=r"weights.pt: expected a state dict \(parameter name -> tensor\)"):
        load_torchaudio_file(path, "wav2vec2_base", {})
    # conv_tasnet_base is a torchaudio.models builder, but not of a speech encoder.
    with pytest.raises(SertkError, match="torchaudio_builder: unknown builder 'conv_tasnet_base'"):
        load_torchaudio_file(path, "conv_tasnet_base", {})
