"""Every CLI option reaches the function that does the work: each command runs with non-default values for
all of its options while that function is replaced by a recorder, and the recorded arguments are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sertk.cli import app


@pytest.fixture
def calls(monkeypatch):
    """``record(module, name)`` replaces ``module.name`` by a recorder; ``calls[name]`` = (args, kwargs)."""
    seen: dict = {}

    def record(module, name, result=None):
        def recorder(*args, **kwargs):
            seen[name] = (args, kwargs)
            return result

        monkeypatch.setattr(module, name, recorder)

    seen["record"] = record
    return seen


def run(*args: str) -> None:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_feats_options(calls):
    import sertk.features.dump as dump

    calls["record"](dump, "dump_features")
    run("feats", "d", "o", "--feat", "mfcc", "--feat-config", "f.yaml", "--format", "ark", "--nj", "3",
        "--device", "cuda")  # fmt: skip
    args, kwargs = calls["dump_features"]
    assert args == (Path("d"), Path("o"))
    assert kwargs == {"feat": "mfcc", "feat_config": Path("f.yaml"), "fmt": "ark", "nj": 3, "device": "cuda"}


def test_train_options(calls):
    import sertk.train.run as train_run

    calls["record"](train_run, "train")
    run("train", "--arch", "rlc", "--train-config", "c.yaml", "--data", "d", "--feats", "f", "--folds", "k.json",
        "--fold", "1 3", "--exp", "e", "--epochs", "7", "--precision", "bf16", "--device", "cpu", "--resume",
        "--overwrite", "--lexical-feats", "lx", "--memory-gb", "2.5", "--set", "train.lr=0.01", "--set",
        "input.crop=[1, 2]", "--ssl-encoder", "s.yaml", "--nproc", "2", "--plan", "--planned")  # fmt: skip
    (opts,), _ = calls["train"]
    assert (opts.arch, opts.train_config, opts.data, opts.feats, opts.folds, opts.exp) == (
        "rlc", Path("c.yaml"), Path("d"), Path("f"), Path("k.json"), Path("e"),
    )  # fmt: skip
    assert (opts.fold, opts.epochs, opts.precision, opts.device) == ("1 3", 7, "bf16", "cpu")
    assert opts.resume and opts.overwrite and opts.plan and opts.planned
    assert (opts.lexical_feats, opts.memory_gb, opts.ssl_encoder, opts.nproc) == (
        Path("lx"),
        2.5,
        Path("s.yaml"),
        2,
    )
    assert opts.overrides == {"train.lr": 0.01, "input.crop": [1, 2]}


def test_train_defaults_leave_the_config_in_charge(calls):
    import sertk.train.run as train_run

    calls["record"](train_run, "train")
    run("train")
    (opts,), _ = calls["train"]
    assert opts.arch is None and opts.epochs is None and opts.precision is None and opts.overrides == {}
    assert opts.fold == "all" and opts.device == "auto" and not opts.resume and not opts.overwrite
    assert opts.memory_gb == 8.0 and opts.nproc == 1 and not opts.plan and not opts.planned
    run("train", "--resume")  # one flag alone: each reaches its own field
    (opts,), _ = calls["train"]
    assert opts.resume and not opts.overwrite


def test_eval_options_and_the_attention_plots(calls):
    import sertk.evaluate.attention as attention
    import sertk.evaluate.inference as inference

    calls["record"](inference, "evaluate")
    calls["record"](attention, "plot_attention")
    run("eval", "e", "--fold", "2", "--device", "cpu", "--checkpoint", "last.pt", "--tta", "vtlp",
        "--plot-attention", "4")  # fmt: skip
    (exp, opts), _ = calls["evaluate"]
    assert exp == Path("e") and (opts.fold, opts.device, opts.checkpoint, opts.tta) == (
        "2",
        "cpu",
        "last.pt",
        "vtlp",
    )
    assert calls["plot_attention"] == (
        (Path("e"), 4),
        {"fold": "2", "device": "cpu", "checkpoint": "last.pt"},
    )
    run("eval", "e")  # tta "config": the experiment's own input.tta; no plots
    (_, opts), _ = calls["evaluate"]
    assert opts.tta is None and opts.checkpoint == "best.pt" and opts.fold == "all"


def test_eval_on_another_corpus(calls):
    import sertk.evaluate.cross as cross

    calls["record"](cross, "evaluate_cross")
    run("eval", "e", "--data", "od", "--feats", "of", "--out", "o", "--tta", "none")
    (exp, data, feats, out, opts), _ = calls["evaluate_cross"]
    assert (exp, data, feats, out, opts.tta) == (Path("e"), Path("od"), Path("of"), Path("o"), "none")


def test_dispatch_options(calls):
    import sertk.dispatch as dispatch

    calls["record"](dispatch, "dispatch")
    run("dispatch", "j.jobs", "--cmd", "slurm", "--nj", "3", "--slurm-config", "s.yaml", "--log-dir", "L",
        "--gpus-per-job", "2")  # fmt: skip
    assert calls["dispatch"] == ((Path("j.jobs"), "slurm", 3, Path("L"), Path("s.yaml"), 2), {})


def test_infer_export_and_package_options(calls):
    import sertk.deploy.export as export
    import sertk.deploy.infer as infer
    import sertk.deploy.package as package

    calls["record"](infer, "infer")
    run("infer", "m", "a.wav", "b", "--out", "p.tsv", "--format", "tsv", "--window", "3", "--hop", "1.5",
        "--batch-size", "7", "--device", "cpu")  # fmt: skip
    (model, inputs, out, opts), _ = calls["infer"]
    assert (model, inputs, out) == (Path("m"), [Path("a.wav"), Path("b")], Path("p.tsv"))
    assert (opts.fmt, opts.window, opts.hop, opts.batch_size, opts.device) == ("tsv", 3.0, 1.5, 7, "cpu")
    calls["record"](export, "export_model")
    run("export", "m", "n.onnx", "--format", "onnx", "--from-waveform")
    assert calls["export_model"] == ((Path("m"), Path("n.onnx")), {"fmt": "onnx", "from_waveform": True})
    calls["record"](package, "make_package")
    run("package", "exp/fold1", "pkg")
    assert calls["make_package"] == ((Path("exp/fold1"), Path("pkg")), {})


def test_compare_options(calls):
    import sertk.evaluate.compare as compare

    calls["record"](compare, "compare_experiments", result="table")
    run("compare", "a", "b", "--out", "t.md", "--title", "T", "--html", "r.html", "--baseline", "a",
        "--bootstrap", "50", "--seed", "3", "--test", "sign-flip", "--alpha", "0.01")  # fmt: skip
    (exps, out), kwargs = calls["compare_experiments"]
    assert exps == [Path("a"), Path("b")] and out == Path("t.md")
    assert kwargs["title"] == "T" and kwargs["html"] == Path("r.html")
    opts = kwargs["options"]
    assert (opts.baseline, opts.n_boot, opts.seed, opts.test, opts.alpha) == ("a", 50, 3, "sign-flip", 0.01)


def test_augment_and_synth_options(calls):
    import sertk.augment.offline as offline
    import sertk.corpora.synthetic as synthetic

    calls["record"](offline, "augment_data_dir")
    run("augment", "d", "k.json", "o", "--speed", "0.9,1.1", "--noise", "n", "--snr", "5:10", "--rir", "r",
        "--seed", "4", "--nj", "2")  # fmt: skip
    args, kwargs = calls["augment_data_dir"]
    assert args == (Path("d"), Path("k.json"), Path("o"))
    assert kwargs["speeds"] == (0.9, 1.1) and kwargs["snr"] == (5.0, 10.0)
    assert (kwargs["noise"], kwargs["rir"], kwargs["seed"], kwargs["nj"]) == (Path("n"), Path("r"), 4, 2)
    summary = {"layout": "emodb", "utterances": 1, "hours": 0.0, "speakers": 1, "root": "c"}
    calls["record"](synthetic, "generate_corpus", result=summary)
    run("synth", "c", "--corpus", "emodb", "--size", "small", "--seed", "5", "--nj", "2")
    assert calls["generate_corpus"] == (
        (Path("c"),),
        {"size": "small", "seed": 5, "nj": 2, "corpus": "emodb"},
    )


def test_prep_options_and_the_iemocap_variable(calls, monkeypatch):
    import sertk.corpora as corpora

    class Report:
        def summary(self):
            return "prepared"

    calls["record"](corpora, "prepare", result=Report())
    run("prep", "iemocap", "root", "out", "--classes", "neu,ang", "--style", "impro")
    assert calls["prepare"] == (
        ("iemocap", Path("root"), Path("out")),
        {"classes": "neu,ang", "style": "impro"},
    )
    run("prep", "ravdess", "root", "--include-song")
    assert calls["prepare"] == (
        ("ravdess", Path("root"), Path("data/ravdess")), {"classes": None, "include_song": True},
    )  # fmt: skip
    monkeypatch.setenv("IEMOCAP", "/corpora/IEMOCAP_full_release")
    run("prep")
    assert calls["prepare"] == (
        ("iemocap", Path("/corpora/IEMOCAP_full_release"), Path("data/iemocap")),
        {"classes": None},
    )
