"""SSL layers on the fly: the ``wave`` feature, ssl-pool with its encoder inside (frozen or fine-tuned),
checkpoints without frozen weights, provenance of the encoder checkpoint, eval / package / infer of such
models, and the float16 frame store of dumped layers.

One tiny random wav2vec2 checkpoint (tests/helpers.py ``tiny_ssl_checkpoint``) and 24 PCM_16 wavs of
0.5-1.2 s serve every test; training runs 1-2 epochs on CPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile
import torch
import yaml
from helpers import make_feature_dir, tiny_ssl_checkpoint, write_folds_file

from sertk.data.datadir import read_data_dir, write_data_dir
from sertk.deploy.export import export_model
from sertk.deploy.infer import infer
from sertk.deploy.package import make_package, read_package
from sertk.errors import SertkError
from sertk.evaluate.inference import evaluate
from sertk.features.dump import dump_features
from sertk.features.io import FeatureReader, load_features
from sertk.inputs.batch import norm_stats
from sertk.inputs.config import InputConfig
from sertk.inputs.featureset import MemoryFrames, StreamFrames, build_feature_set, load_frames
from sertk.models import build_model
from sertk.models.predict import utterance_posteriors
from sertk.models.ssl_pool import SslPool
from sertk.models.trained import TrainedModel
from sertk.train.run import TrainOptions, train

RATE = 16000
CLASSES = ["neu", "hap", "ang", "sad"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """24 PCM_16 wavs (class c: a 120 + 60c Hz tone in noise), a data dir, one fold, a checkpoint and the
    wave (int16) and ssl (float32, so the on-the-fly comparison is exact) dumps."""
    root = tmp_path_factory.mktemp("onthefly")
    rng = np.random.default_rng(0)
    wavs, utt2spk, utt2emo = {}, {}, {}
    (root / "wav").mkdir()
    for i in range(24):
        emo = CLASSES[i % 4]
        utt = f"Ses0{1 + i % 2}F_{emo}{i:02d}"
        n = int(rng.integers(8000, 19200))
        t = np.arange(n) / RATE
        wave = 0.3 * np.sin(2 * np.pi * (120 + 60 * (i % 4)) * t) + 0.05 * rng.standard_normal(n)
        path = root / "wav" / f"{utt}.wav"
        soundfile.write(path, wave, RATE, subtype="PCM_16")
        wavs[utt], utt2spk[utt], utt2emo[utt] = str(path), utt[:6], emo
    data = root / "data"
    meta = {"classes": CLASSES, "class_map": {c: c for c in CLASSES}, "synthetic": True}
    write_data_dir(data, {"wav.scp": wavs, "utt2spk": utt2spk, "utt2emo": utt2emo}, meta)
    utts = sorted(wavs)
    folds = [{"name": "fold1", "train": utts[:16], "valid": utts[16:20], "test": utts[20:]}]
    checkpoint = tiny_ssl_checkpoint(root / "ckpt")
    (root / "ssl.yaml").write_text(yaml.safe_dump({"checkpoint": str(checkpoint), "dtype": "float32"}))
    dump_features(data, root / "dump" / "wave", feat="wave")
    dump_features(data, root / "dump" / "ssl", feat="ssl", feat_config=root / "ssl.yaml")
    return {
        "root": root,
        "data": data,
        "folds": write_folds_file(data, folds),
        "checkpoint": checkpoint,
        "encoder_yaml": root / "ssl.yaml",
        "utts": utts,
    }


def _conf(path: Path, feat: str = "wave", train_opts: dict | None = None, model: dict | None = None) -> Path:
    config = {
        "arch": "ssl-pool",
        "feat": feat,
        "model": {"projection_dim": 8, **(model or {})},
        "train": {"lr": 1.0e-2, "batch_size": 4, "epochs": 2, "patience": 0, "seed": 1} | (train_opts or {}),
        "input": {"normalize": "none"},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _train(corpus, exp: Path, conf: Path, feat: str = "wave", **kwargs) -> list[dict]:
    opts = TrainOptions(
        train_config=conf,
        data=corpus["data"],
        feats=corpus["root"] / "dump" / feat,
        folds=corpus["folds"],
        exp=exp,
        device="cpu",
        ssl_encoder=corpus["encoder_yaml"] if feat == "wave" else None,
        **kwargs,
    )
    return train(opts)


def _encoder_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's own weights, as the encoder's state dict names them."""
    from sertk.features.ssl import SslConfig, load_encoder

    encoder, _ = load_encoder(SslConfig(checkpoint=str(checkpoint)))
    return encoder.state_dict()


@pytest.fixture(scope="module")
def frozen_exp(corpus):
    exp = corpus["root"] / "exp" / "frozen"
    _train(corpus, exp, _conf(corpus["root"] / "frozen.yaml"))
    return exp


def test_wave_dump_holds_the_pcm_samples_exactly(corpus, tmp_path):
    out = corpus["root"] / "dump" / "wave"
    counts = {
        u: int(n) for u, n in (line.split() for line in (out / "utt2num_frames").read_text().splitlines())
    }
    with h5py.File(out / "feats.h5", "r") as f:
        assert f.attrs["dim"] == 1 and f[corpus["utts"][0]].dtype == np.int16
    values = load_features(out)
    utts = corpus["utts"]
    store = load_frames(out, utts, 2**30)
    assert store.flat.dtype == torch.int16  # 2 bytes a sample in memory too
    fset = build_feature_set(store, utts, [0] * len(utts), InputConfig(), training=False)
    batch, lengths = fset.batch(torch.arange(len(utts)))
    for row, (utt, path) in enumerate(sorted(read_data_dir(corpus["data"])["wav.scp"].items())):
        wave = soundfile.read(path, dtype="float32")[0]
        assert counts[utt] == len(wave) == lengths[row]  # a frame is a sample: every count exact
        assert values[utt].dtype == np.float32 and np.array_equal(values[utt][:, 0], wave)
        assert batch.dtype == torch.float32 and torch.equal(
            batch[row, : len(wave), 0], torch.from_numpy(wave)
        )
    # float16 storage and the ark format (float32 values) hold the same samples within their precision.
    conf = tmp_path / "wave16.yaml"
    conf.write_text("dtype: float16\n")
    dump_features(corpus["data"], tmp_path / "half", feat="wave", feat_config=conf)
    dump_features(corpus["data"], tmp_path / "ark", feat="wave", fmt="ark")
    utt = corpus["utts"][3]
    assert load_features(tmp_path / "half", dtype=None)[utt].dtype == np.float16
    assert np.allclose(load_features(tmp_path / "half")[utt], values[utt], atol=2e-4)
    assert np.array_equal(load_features(tmp_path / "ark")[utt], values[utt])


def test_onthefly_model_equals_the_dumped_path(corpus, one_thread):
    """The encoder inside the model gives the posteriors of ssl-pool on the dumped layers (same weights)."""
    torch.manual_seed(0)
    dumped = build_model("ssl-pool", {"num_layers": 3, "projection_dim": 8}, 96, 4).eval()
    with torch.no_grad():
        dumped.layer_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    onthefly = build_model(
        "ssl-pool", {"projection_dim": 8, "encoder": {"checkpoint": str(corpus["checkpoint"])}}, 1, 4
    )
    # The dumped model's state has no encoder keys: strict loading takes the encoder from its checkpoint.
    onthefly.load_state_dict(dumped.state_dict())
    onthefly.eval()
    utts = corpus["utts"]
    posteriors = []
    for feat, model in (("ssl", dumped), ("wave", onthefly)):
        store = load_frames(corpus["root"] / "dump" / feat, utts, 2**30)
        fset = build_feature_set(store, utts, [0] * len(utts), InputConfig(), training=False)
        posteriors.append(utterance_posteriors(model, fset, torch.device("cpu"), batch_size=5).scores)
    assert posteriors[0].shape == (24, 4) and posteriors[0].std(dim=0).min() > 1e-3  # not constant
    assert torch.allclose(posteriors[0], posteriors[1], atol=1e-5)


def test_frozen_encoder_stays_frozen_in_train_mode(corpus):
    cfg = {"projection_dim": 8, "encoder": {"checkpoint": str(corpus["checkpoint"])}}
    model = build_model("ssl-pool", cfg, 1, 4)
    assert model.cfg.num_layers == 3 and model.cfg.encoder["layers"] == [0, 1, 2]
    assert len(model.cfg.encoder["checkpoint_sha256"]) == 64  # pinned: a rebuilt model refuses other weights
    grad_modes = []  # whether the encoder ran with autograd on: a frozen one builds no graph
    model.encoder.backend.register_forward_pre_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    model.train()
    assert not model.encoder.training and not any(p.requires_grad for p in model.encoder.parameters())
    waves = 0.1 * torch.randn(2, 12000)
    lengths = torch.tensor([12000, 9000])
    model(waves[..., None], lengths).sum().backward()
    assert model.layer_logits.grad is not None
    assert all(p.grad is None for p in model.encoder.parameters()) and not any(grad_modes)
    model.set_finetune(True)
    assert model.encoder.training and all(p.requires_grad for p in model.encoder.parameters())
    model(waves[..., None], lengths).sum().backward()
    hf = model.encoder.backend.model  # from the first conv to the last layer, gradients reach the encoder
    assert grad_modes[-1] and hf.feature_extractor.conv_layers[0].conv.weight.grad is not None
    assert hf.encoder.layers[-1].feed_forward.output_dense.weight.grad is not None
    model.eval()
    assert not model.encoder.training


def test_frozen_training_keeps_the_checkpoint_weights_out_of_checkpoints(corpus, frozen_exp, one_thread):
    fold = frozen_exp / "fold1"
    for name in ("best.pt", "checkpoint.pt"):
        state = torch.load(fold / name, weights_only=True)
        assert state["model"] and not [k for k in state["model"] if k.startswith("encoder.")]
        assert state["model_config"]["encoder"]["checkpoint"] == str(corpus["checkpoint"].resolve())
    trained = TrainedModel.from_checkpoint(fold / "best.pt")
    model = trained.build()  # strict: every downstream key is there, the encoder comes from the checkpoint
    reference = _encoder_state(corpus["checkpoint"])
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in reference.items())
    initial = build_model("ssl-pool", trained.model_config, 1, 4)  # seed-independent: compare to training
    assert not torch.equal(model.projection.weight, initial.projection.weight)
    experiment = json.loads((frozen_exp / "experiment.json").read_text())
    assert experiment["encoder"]["sha256"].startswith("sha256:")
    record = json.loads((frozen_exp / "experiment.provenance.json").read_text())
    assert record["inputs"]["encoder"] == experiment["encoder"]["sha256"]


def test_training_on_the_fly_equals_training_on_the_dumped_layers(corpus, frozen_exp, tmp_path, one_thread):
    """Same seed, same config: the frozen on-the-fly run ends with the dumped (float32) run's weights."""
    _train(corpus, tmp_path / "dumped", _conf(tmp_path / "dumped.yaml", feat="ssl"), feat="ssl")
    dumped = torch.load(tmp_path / "dumped" / "fold1" / "best.pt", weights_only=True)
    onthefly = torch.load(frozen_exp / "fold1" / "best.pt", weights_only=True)
    assert dumped["epoch"] == onthefly["epoch"] and set(dumped["model"]) == set(onthefly["model"])
    for key, value in dumped["model"].items():
        assert torch.allclose(onthefly["model"][key], value, atol=1e-4), key


def test_eval_package_and_infer_an_onthefly_model(corpus, frozen_exp, tmp_path, one_thread):
    evaluate(frozen_exp)
    lines = (frozen_exp / "fold1" / "posteriors.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    eval_scores = {row[0]: [float(x) for x in row[3:]] for row in (line.split("\t") for line in lines[1:])}
    assert header[3:] == CLASSES and len(eval_scores) == 4
    make_package(frozen_exp / "fold1", tmp_path / "pkg")
    # The package carries its own copy of the encoder and names it relatively: it still works moved.
    shutil.move(tmp_path / "pkg", tmp_path / "moved")
    copies = sorted(p.name for p in (tmp_path / "moved").iterdir())
    assert copies[0].startswith("encoder-") and copies[1:] == ["manifest.json", "weights.pt"]
    manifest = json.loads((tmp_path / "moved" / "manifest.json").read_text())
    assert manifest["model_config"]["encoder"]["checkpoint"] == copies[0]
    assert read_package(tmp_path / "moved").encoder["checkpoint"] == str(
        (tmp_path / "moved" / copies[0]).resolve()
    )
    wavs = read_data_dir(corpus["data"])["wav.scp"]
    records = infer(tmp_path / "moved", [Path(wavs[u]) for u in eval_scores], out=tmp_path / "preds.jsonl")
    for record in records:
        scores = [record["posteriors"][c] for c in CLASSES]
        assert np.allclose(scores, eval_scores[record["utt"]], atol=1e-5)
    with pytest.raises(SertkError, match="runs a pretrained SSL encoder"):
        export_model(tmp_path / "moved", tmp_path / "net.pt")


def test_an_ensemble_package_shares_one_encoder_copy(corpus, frozen_exp, tmp_path):
    for fold in ("fold1", "fold2"):  # two fold models of one encoder
        (tmp_path / "exp" / fold).mkdir(parents=True)
        shutil.copy(frozen_exp / "fold1" / "best.pt", tmp_path / "exp" / fold)
    make_package(tmp_path / "exp", tmp_path / "ens")
    top = sorted(p.name for p in (tmp_path / "ens").iterdir())
    assert top[0].startswith("encoder-") and top[1:] == ["ensemble.json", "fold1", "fold2"]
    for fold in ("fold1", "fold2"):
        manifest = json.loads((tmp_path / "ens" / fold / "manifest.json").read_text())
        assert manifest["model_config"]["encoder"]["checkpoint"] == f"../{top[0]}"
        assert sorted(p.name for p in (tmp_path / "ens" / fold).iterdir()) == ["manifest.json", "weights.pt"]
    make_package(tmp_path / "exp", tmp_path / "ens")  # replacing its own output, encoder copy included


def test_finetune_trains_the_encoder_at_its_own_lr(corpus, one_thread):
    # The CNN feature encoder gets lr 0 (frozen in effect), the transformer 1e-3, the downstream 1e-2:
    # a finetune flag that is ignored, or groups that do not reach the optimiser, fail below.
    groups = [
        {"prefix": "encoder.backend.model.feature_extractor.", "lr": 0.0},
        {"prefix": "encoder.", "lr": 1.0e-3},
    ]
    conf = _conf(
        corpus["root"] / "finetune.yaml", train_opts={"finetune": True, "param_groups": groups, "epochs": 1}
    )
    exp = corpus["root"] / "exp" / "finetune"
    _train(corpus, exp, conf)
    checkpoint = torch.load(exp / "fold1" / "checkpoint.pt", weights_only=True)
    state = checkpoint["model"]
    reference = _encoder_state(corpus["checkpoint"])
    tuned = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    assert set(tuned) == set(reference)  # fine-tuned weights are saved
    conv = [k for k in reference if k.startswith("backend.model.feature_extractor.")]
    others = [k for k in reference if k not in conv and reference[k].is_floating_point()]
    assert conv and all(torch.equal(tuned[k], reference[k]) for k in conv)
    assert any(not torch.equal(tuned[k], reference[k]) for k in others)
    lrs = [g["lr"] for g in checkpoint["optimizer"]["param_groups"]]
    sizes = [len(g["params"]) for g in checkpoint["optimizer"]["param_groups"]]
    assert lrs == [0.0, 1.0e-3, 1.0e-2] and sizes[0] == len(conv) and sizes[2] == 5
    model = TrainedModel.from_checkpoint(exp / "fold1" / "best.pt").build()
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in tuned.items())


def test_finetune_needs_an_encoder(corpus):
    conf = _conf(corpus["root"] / "ft_dumped.yaml", feat="ssl", train_opts={"finetune": True})
    with pytest.raises(SertkError, match="train.finetune: this ssl-pool reads dumped layers"):
        _train(corpus, corpus["root"] / "exp" / "ft_dumped", conf, feat="ssl")


def test_a_changed_checkpoint_invalidates_the_experiment(corpus, tmp_path, one_thread):
    checkpoint = tiny_ssl_checkpoint(tmp_path / "ckpt")
    encoder_yaml = tmp_path / "ssl.yaml"
    encoder_yaml.write_text(f"checkpoint: {checkpoint}\n")
    conf = _conf(tmp_path / "conf.yaml", train_opts={"epochs": 1})
    opts = dict(train_config=conf, data=corpus["data"], feats=corpus["root"] / "dump" / "wave")
    opts |= dict(folds=corpus["folds"], exp=tmp_path / "exp", device="cpu", ssl_encoder=encoder_yaml)
    train(TrainOptions(**opts))
    assert train(TrainOptions(**opts))[0]["epochs"] == 1  # unchanged: the fold is up to date
    tiny_ssl_checkpoint(checkpoint, seed=1)  # other weights under the same path
    with pytest.raises(SertkError, match=r"other inputs \(inputs.encoder changed\)"):
        train(TrainOptions(**opts))
    with pytest.raises(SertkError, match="is not the pinned checkpoint_sha256"):
        TrainedModel.from_checkpoint(tmp_path / "exp" / "fold1" / "best.pt").build()


def test_layer_count_comes_from_the_dump_and_is_checked(corpus, tmp_path):
    exp = tmp_path / "exp"
    _train(corpus, exp, _conf(tmp_path / "c.yaml", feat="ssl", train_opts={"epochs": 1}), feat="ssl")
    assert TrainedModel.from_checkpoint(exp / "fold1" / "best.pt").model_config["num_layers"] == 3
    assert yaml.safe_load((exp / "config.yaml").read_text())["model"]["num_layers"] == 3
    bad = _conf(tmp_path / "bad.yaml", feat="ssl", model={"num_layers": 4})
    with pytest.raises(SertkError, match="num_layers: 4, but the ssl dump holds 3 layer"):
        _train(corpus, tmp_path / "bad", bad, feat="ssl")
    paths = {"data": corpus["data"], "folds": corpus["folds"], "device": "cpu"}
    with pytest.raises(SertkError, match="feat wave: ssl-pool needs model.encoder"):
        wave = corpus["root"] / "dump" / "wave"
        train(
            TrainOptions(train_config=_conf(tmp_path / "w.yaml"), feats=wave, exp=tmp_path / "noenc", **paths)
        )
    with pytest.raises(SertkError, match="use feat wave, not ssl"):
        conf, feats = _conf(tmp_path / "s.yaml", feat="ssl"), corpus["root"] / "dump" / "ssl"
        encoder = corpus["encoder_yaml"]
        train(TrainOptions(train_config=conf, feats=feats, exp=tmp_path / "x", ssl_encoder=encoder, **paths))


def test_use_layers_and_relu_read_one_layer(corpus):
    model = build_model(
        "ssl-pool", {"num_layers": 3, "use_layers": [-1], "activation": "relu", "projection_dim": 2}, 6, 2
    )
    assert model.layer_logits.shape == (1,)
    with torch.no_grad():
        model.projection.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        model.projection.bias.zero_()
        model.head.weight.copy_(torch.eye(2))
        model.head.bias.zero_()
    # Layers [l0 | l1 | l2] of 2 dims; only l2 = [3, 5] counts, relu([3, -5]) = [3, 0].
    feats = torch.tensor([[[9.0, 9.0, 7.0, 7.0, 3.0, 5.0]]])
    assert model(feats, torch.tensor([1]))[0].tolist() == [3.0, 0.0]
    with pytest.raises(SertkError, match="use_layers: distinct positions in 0..2"):
        build_model("ssl-pool", {"num_layers": 3, "use_layers": [3]}, 6, 2)


def test_float16_dump_stays_float16_in_the_frame_store(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        f"u{i}": rng.standard_normal((int(rng.integers(5, 40)), 24)).astype(np.float16) for i in range(9)
    }
    make_feature_dir(tmp_path / "half", arrays, feat="ssl", config={"layers": [0, 1, 2], "layer_dim": 8})
    widened = {u: x.astype(np.float32) for u, x in arrays.items()}
    make_feature_dir(tmp_path / "full", widened, feat="ssl", config={"layers": [0, 1, 2], "layer_dim": 8})
    utts = sorted(arrays)
    frames = sum(len(x) for x in arrays.values())
    half = load_frames(tmp_path / "half", utts, budget_bytes=2 * 24 * (frames + 1))  # fits only at 2 bytes
    full = load_frames(tmp_path / "full", utts, budget_bytes=2**30)
    assert isinstance(half, MemoryFrames) and half.flat.dtype == torch.float16
    assert half.nbytes == 2 * 24 * (frames + 1) == full.nbytes // 2
    sets = [
        build_feature_set(s, utts, [0] * 9, InputConfig(max_frames=30), training=False) for s in (half, full)
    ]
    index = torch.tensor([4, 0, 7])
    batch_half, lengths = sets[0].batch(index)
    batch_full, _ = sets[1].batch(index)
    assert batch_half.dtype == torch.float32 and torch.equal(batch_half, batch_full)
    assert not batch_half[1, lengths[1] :].any()
    for a, b in zip(norm_stats(sets[0]), norm_stats(sets[1]), strict=True):
        assert torch.equal(a, b)
    # Beyond the budget the split streams from the dump, still as float32 values.
    streamed = load_frames(tmp_path / "half", utts, budget_bytes=100)
    assert isinstance(streamed, StreamFrames)
    stream_set = build_feature_set(streamed, utts, [0] * 9, InputConfig(max_frames=30), training=False)
    assert torch.equal(stream_set.batch(index)[0], batch_full)
    reader = FeatureReader(tmp_path / "half")
    assert reader.stored_dtype("u1") == np.float16 and reader.read("u1").dtype == np.float32
    reader.close()


def test_feats_device_is_checked(corpus, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SertkError, match="--device cuda: CUDA is not available"):
        dump_features(corpus["data"], tmp_path / "x", feat="wave", device="cuda")


def test_an_averaging_encoder_gives_one_layer(corpus):
    cfg = {"projection_dim": 4, "encoder": {"checkpoint": str(corpus["checkpoint"]), "average_layers": True}}
    model = build_model("ssl-pool", cfg, 1, 4).eval()
    assert model.cfg.num_layers == 1 and model.layer_logits.shape == (1,)
    waves, lengths = 0.1 * torch.randn(2, 9000), torch.tensor([9000, 7000])
    hidden, frames = model.encoder(waves, lengths)
    with torch.no_grad():
        want = model.head(model.pooling(model.projection(hidden.mean(dim=2)), frames))
        torch.testing.assert_close(model(waves[..., None], lengths), want)


def test_the_wave_dump_must_be_16_khz_and_the_checkpoint_path_becomes_absolute(corpus, monkeypatch):
    monkeypatch.chdir(corpus["checkpoint"].parent)
    cfg = SslPool.Config(encoder={"checkpoint": corpus["checkpoint"].name})
    fitted = SslPool.fit_to_features(cfg, "wave", {"sample_rate": 16000})
    assert fitted.encoder["checkpoint"] == str(corpus["checkpoint"].resolve())
    with pytest.raises(SertkError, match="model.encoder reads 16000 Hz audio, the wave dump holds 8000 Hz"):
        SslPool.fit_to_features(cfg, "wave", {"sample_rate": 8000})


def test_weights_once_fine_tuned_stay_in_the_state(corpus):
    cfg = {"projection_dim": 4, "encoder": {"checkpoint": str(corpus["checkpoint"])}}
    tuned = build_model("ssl-pool", cfg, 1, 4)
    tuned.set_finetune(True)
    tuned.set_finetune(False)  # frozen again later: the tuned weights are still not the checkpoint's
    state = tuned.state_dict()
    assert any(key.startswith("encoder.") for key in state)
    loaded = build_model("ssl-pool", cfg, 1, 4)
    loaded.load_state_dict(state)
    assert loaded.encoder_in_state and any(key.startswith("encoder.") for key in loaded.state_dict())
