"""``sertk export``: TorchScript and ONNX networks agree with PyTorch on new batch and time sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_package import CLASSES, write_checkpoint

import sertk.deploy.export as export_module
from sertk.deploy.export import build_network, export_model, frame_rule
from sertk.deploy.package import load_models
from sertk.errors import SertkError
from sertk.features import build_feature
from sertk.models.gca_lstm import GcaLstm

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


def padded_batch(seed=7, rows=4, frames=91):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([frames, 50, 13, 70][:rows])
    feats = 6.0 + 2.0 * torch.randn(rows, frames, 40, generator=gen)
    return feats * (torch.arange(frames)[None, :] < lengths[:, None])[..., None], lengths


def reference(fold, feats, lengths):
    package = load_models(fold)[0]
    with torch.no_grad():
        x = package.normalizer(feats, lengths)
        return package.build()(x, lengths).softmax(-1).numpy()


@pytest.mark.parametrize("arch", ["crnn-att", "attn-pool"])
def test_torchscript_export_matches_pytorch(tmp_path, arch):
    write_checkpoint(tmp_path / "fold1", arch=arch)
    delta = export_model(tmp_path / "fold1", tmp_path / "net.pt", fmt="torchscript")
    assert delta < 1e-4
    net = torch.jit.load(tmp_path / "net.pt")
    feats, lengths = padded_batch()
    np.testing.assert_allclose(
        net(feats, lengths).detach().numpy(), reference(tmp_path / "fold1", feats, lengths), atol=1e-5
    )
    meta = json.loads((tmp_path / "net.pt.json").read_text())
    assert meta["classes"] == CLASSES and meta["export_format"] == "torchscript"
    assert meta["inputs"] == {"feats": ["batch", "time", 40], "lengths": ["batch"]}
    assert meta["outputs"] == {"posteriors": ["batch", 4]}


@pytest.mark.parametrize("arch", ["crnn-att", "attn-pool"])
def test_onnx_export_matches_pytorch(tmp_path, arch):
    onnxruntime = pytest.importorskip("onnxruntime")
    write_checkpoint(tmp_path / "fold1", arch=arch)
    export_model(tmp_path / "fold1", tmp_path / "net.onnx", fmt="onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["feats", "lengths"]
    assert [o.name for o in session.get_outputs()] == ["posteriors"]
    feats, lengths = padded_batch(rows=3, frames=140)
    got = session.run(None, {"feats": feats.numpy(), "lengths": lengths.numpy()})[0]
    np.testing.assert_allclose(got, reference(tmp_path / "fold1", feats, lengths), atol=1e-5)


def test_waveform_torchscript_includes_the_feature_transform(tmp_path):
    write_checkpoint(tmp_path / "fold1")
    export_model(tmp_path / "fold1", tmp_path / "wave.pt", fmt="torchscript", from_waveform=True)
    net = torch.jit.load(tmp_path / "wave.pt")
    waves = 0.1 * torch.randn(2, 12000, generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([12000, 7000])
    waves[1, 7000:] = 0
    extractor = build_feature("logmel40", {"num_mel_bins": 40})
    feats = extractor.compute(waves, lengths)
    frames = torch.tensor([extractor.num_frames(12000), extractor.num_frames(7000)])
    expected = reference(
        tmp_path / "fold1",
        feats * (torch.arange(feats.shape[1])[None, :] < frames[:, None])[..., None],
        frames,
    )
    np.testing.assert_allclose(net(waves, lengths).detach().numpy(), expected, atol=1e-5)
    assert json.loads((tmp_path / "wave.pt.json").read_text())["inputs"]["waves"] == ["batch", "samples"]


def test_rlc_exports_with_stacked_lstm_and_refuses_gca_lstm(tmp_path):
    write_checkpoint(tmp_path / "lstm", arch="rlc", model_opts={"recurrent": "lstm"})
    assert export_model(tmp_path / "lstm", tmp_path / "lstm.pt") < 1e-4
    write_checkpoint(tmp_path / "gca", arch="rlc")
    with pytest.raises(SertkError, match="rlc: does not export: its GcaLstm loops over the steps"):
        export_model(tmp_path / "gca", tmp_path / "gca.pt")
    assert not (tmp_path / "gca.pt").exists()


def test_parity_check_catches_a_loop_traced_at_a_fixed_length(tmp_path, monkeypatch):
    """Without the refusal, GCA-LSTM's step loop is unrolled to the traced length: the shorter check batch fails.

    (The longer one alone passes this untrained model, whose posteriors are all about 1/4.)
    """
    monkeypatch.setattr(GcaLstm, "traceable", True)
    write_checkpoint(tmp_path / "gca", arch="rlc")
    with pytest.raises(
        SertkError, match=r"rlc: does not export to torchscript \(RuntimeError: .*out of range"
    ):
        export_model(tmp_path / "gca", tmp_path / "gca.pt")
    assert not (tmp_path / "gca.pt").exists()


def test_unexportable_requests_are_one_line_errors(tmp_path):
    pytest.importorskip("onnxruntime")
    write_checkpoint(tmp_path / "exp" / "fold1")
    write_checkpoint(tmp_path / "exp" / "fold2")
    with pytest.raises(SertkError, match="does not export to onnx"):
        export_model(tmp_path / "exp" / "fold1", tmp_path / "w.onnx", fmt="onnx", from_waveform=True)
    assert not (tmp_path / "w.onnx").exists()
    with pytest.raises(SertkError, match="holds 2 models"):
        export_model(tmp_path / "exp", tmp_path / "x.pt")
    with pytest.raises(SertkError, match="--format tflite"):
        export_model(tmp_path / "exp" / "fold1", tmp_path / "x.pt", fmt="tflite")


@pytest.mark.parametrize(
    "arch, input_opts",
    [
        ("crnn-att", {"max_frames": 91, "pad": "fixed"}),
        ("attn-pool", {"segment_frames": 91, "segment_scaling": "minmax-mulaw"}),
    ],
)
def test_exported_network_sees_what_model_batch_gives(tmp_path, arch, input_opts):
    """Fixed padding and per-segment scaling happen inside the graph exactly as in sertk eval's batches."""
    from sertk.inputs.batch import model_batch
    from sertk.inputs.featureset import MemoryFrames, build_feature_set

    write_checkpoint(tmp_path / "fold1", arch=arch, **input_opts)
    export_model(tmp_path / "fold1", tmp_path / "net.pt", fmt="torchscript")
    net = torch.jit.load(tmp_path / "net.pt")
    feats, lengths = padded_batch(rows=3, frames=91)
    package = load_models(tmp_path / "fold1")[0]
    arrays = [feats[i, : int(n)].numpy() for i, n in enumerate(lengths)]
    fset = build_feature_set(MemoryFrames(arrays), ["a", "b", "c"], [0, 0, 0], package.input, training=False)
    x, n, _ = model_batch(fset, torch.arange(3), torch.device("cpu"), package.normalizer)
    with torch.no_grad():
        expected = package.build()(x, n).softmax(-1).numpy()
        got = net(feats, lengths).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_parity_gap_above_1e_4_writes_nothing(tmp_path, monkeypatch):
    """A parity check's max |Δ| of 2e-4 refuses the export and writes nothing; 5e-5 writes the network."""
    write_checkpoint(tmp_path / "fold1")
    for delta in (2e-4, 5e-5):
        result = (b"network", delta, [(5, 173, 40), (2, 61, 40)])
        monkeypatch.setattr(export_module, "traced_with_parity", lambda *args, r=result: r)
        if delta > 1e-4:
            with pytest.raises(SertkError, match=r"differs from PyTorch by 0.0002 \(> 0.0001\)"):
                export_model(tmp_path / "fold1", tmp_path / "net.pt")
            assert not (tmp_path / "net.pt").exists() and not (tmp_path / "net.pt.json").exists()
        else:
            assert export_model(tmp_path / "fold1", tmp_path / "net.pt") == delta
            assert (tmp_path / "net.pt").read_bytes() == b"network"
            assert json.loads((tmp_path / "net.pt.json").read_text())["parity_max_abs_diff"] == delta


class CappedFrames:
    """A feature type whose frame count stops at 50 frames: not 1 + (samples - first) // shift."""

    sample_rate = 16000

    def num_frames(self, n):
        return min(50, max(0, 1 + (n - 400) // 160))


def test_frame_rule_reads_kaldi_framing_and_refuses_other_counts():
    # logmel40: 25 ms frames (400 samples) every 10 ms (160 samples) at 16 kHz.
    assert frame_rule(build_feature("logmel40", {"num_mel_bins": 40})) == (400, 160)
    with pytest.raises(SertkError, match="not of the form"):
        frame_rule(CappedFrames())


def test_waveform_rows_shorter_than_one_frame_are_scored_on_one_frame(tmp_path):
    """200 samples hold no 400-sample frame: the network scores the row's first (padded) frame, not 0 frames
    (which would be 0/0 in the masked means)."""
    write_checkpoint(tmp_path / "fold1")
    # The module that gets traced (test_waveform_torchscript_includes_the_feature_transform traces it).
    net, names, _ = build_network(load_models(tmp_path / "fold1")[0], from_waveform=True)
    assert names == ["waves", "lengths"]
    waves = 0.1 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(5))
    waves[1, 200:] = 0
    lengths = torch.tensor([4000, 200])
    feats = build_feature("logmel40", {"num_mel_bins": 40}).compute(waves, lengths)
    frames = torch.tensor([1 + (4000 - 400) // 160, 1])
    expected = reference(
        tmp_path / "fold1",
        feats * (torch.arange(feats.shape[1])[None, :] < frames[:, None])[..., None],
        frames,
    )
    with torch.no_grad():
        got = net(waves, lengths).numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, atol=1e-5)
