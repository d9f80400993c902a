"""Provenance: a stage reuses its output only when what it was made from is unchanged (records, not markers)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import crash_in_epoch, make_feature_dir, make_recipe, run, write_conf, write_folds_file

from sertk import provenance
from sertk.data.datadir import read_table, write_table
from sertk.errors import SertkError
from sertk.evaluate.inference import EvalOptions, evaluate
from sertk.evaluate.score import score_experiment
from sertk.utils import atomic_path

pytestmark = pytest.mark.usefixtures("toy_arch")


def test_record_key_and_differences():
    a = provenance.Record("feats", {"wav.scp": "sha256:1"}, {"config": {"bins": 40}})
    b = provenance.Record("feats", {"wav.scp": "sha256:2"}, {"config": {"bins": 64}})
    assert (
        a.key != b.key
        and a.key == provenance.Record("feats", {"wav.scp": "sha256:1"}, {"config": {"bins": 40}}).key
    )
    assert provenance.differences(a, b) == ["inputs.wav.scp changed", "options.config.bins 40 -> 64"]


def test_the_key_covers_stage_inputs_options_and_code_and_nothing_informative():
    base = provenance.Record(
        "feats", {"wav.scp": "sha256:1"}, {"bins": 40}, {"sertk": "1", "extractor": "a/1"}
    )
    changed = [
        provenance.Record("eval", base.inputs, base.options, base.code),
        provenance.Record("feats", {"wav.scp": "sha256:2"}, base.options, base.code),
        provenance.Record("feats", base.inputs, {"bins": 64}, base.code),
        provenance.Record("feats", base.inputs, base.options, {"sertk": "1", "extractor": "a/2"}),
    ]
    assert all(other.key != base.key for other in changed)
    informative = provenance.Record(
        "feats", base.inputs, base.options, base.code, outputs={"x": "stat:1:2"}, made={"time": "now"}
    )
    assert informative.key == base.key


def test_downstream_refuses_an_upstream_output_rewritten_after_its_record(tmp_path):
    out = tmp_path / "feats.h5"
    out.write_bytes(b"1234")
    path = tmp_path / "feats.provenance.json"
    record = provenance.write_record(path, provenance.Record("feats", {"a": "sha256:1"}), [out])
    assert provenance.recorded_key(path, "the dump") == record.key
    out.write_bytes(b"12345")
    with pytest.raises(SertkError, match=r"the dump was modified since it was made \(feats.h5\)"):
        provenance.recorded_key(path, "the dump")


def test_a_json_file_that_is_not_a_sertk_record_is_no_record(tmp_path):
    path = tmp_path / "feats.provenance.json"
    record = provenance.write_record(path, provenance.Record("feats", {"a": "sha256:1"}))
    assert provenance.read_record(path).key == record.key
    foreign = json.loads(path.read_text()) | {"format": "other-tool/1"}
    path.write_text(json.dumps(foreign))
    assert provenance.read_record(path) is None
    assert provenance.check(path, record) == ["unreadable provenance record"]


def test_json_digest_is_the_sha256_of_canonical_json():
    # Sorted keys, no whitespace: the same mapping in another order has the same digest.
    canonical = hashlib.sha256(b'{"a":[1,2],"b":{"c":"x","d":null}}').hexdigest()
    assert provenance.json_digest({"b": {"d": None, "c": "x"}, "a": [1, 2]}) == "sha256:" + canonical
    assert provenance.json_digest({"a": [2, 1], "b": {"c": "x", "d": None}}) != "sha256:" + canonical


def test_files_digest_names_each_file(tmp_path):
    (tmp_path / "utt2emo").write_text("u1 neu\n")
    (tmp_path / "utt2spk").write_text("u1 neu\n")
    # The same contents under another name are another input.
    emo = provenance.files_digest([tmp_path / "utt2emo"], base=tmp_path)
    assert provenance.files_digest([tmp_path / "utt2spk"], base=tmp_path) != emo


def test_check_detects_a_rewritten_output(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("x")
    record = provenance.Record("demo", {"a": "sha256:0"})
    provenance.write_record(tmp_path / "demo.provenance.json", record, [out])
    assert provenance.check(tmp_path / "demo.provenance.json", record) == []
    out.write_text("xy")
    assert provenance.check(tmp_path / "demo.provenance.json", record) == [
        "out.txt modified since it was made"
    ]
    assert provenance.check(tmp_path / "none.provenance.json", record) == ["no provenance record"]
    (tmp_path / "bad.provenance.json").write_text("{")
    assert provenance.check(tmp_path / "bad.provenance.json", record) == ["unreadable provenance record"]


def test_stat_digest_sees_size_and_mtime(tmp_path):
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"1234")
    before = provenance.stat_digest([wav])
    os.utime(wav, ns=(1, 1))
    assert provenance.stat_digest([wav]) != before
    stamped = provenance.stat_digest([wav])
    wav.write_bytes(b"12345")  # a copy that kept the old mtime (cp -p, rsync -t): only the size tells
    os.utime(wav, ns=(1, 1))
    assert provenance.stat_digest([wav]) != stamped


def test_changed_config_stops_train_unless_overwrite(tmp_path):
    recipe = make_recipe(tmp_path)
    exp = tmp_path / "exp"
    run(recipe, exp, epochs=1)
    write_conf(recipe["conf"], {"lr": 0.02})
    with pytest.raises(SertkError, match=r"options\.config\.train\.lr 0\.01 -> 0\.02.*--overwrite"):
        run(recipe, exp, fold="1", epochs=1)
    old = (exp / "fold1" / "best.pt").read_bytes()
    run(recipe, exp, fold="1", epochs=1, overwrite=True)
    assert (exp / "fold1" / "best.pt").read_bytes() != old
    # The other fold was trained under the old config: its outputs are gone, never mixed in.
    assert not (exp / "fold2" / "best.pt").exists() and not (exp / "fold2" / "train.provenance.json").exists()
    assert json.loads((exp / "experiment.json").read_text())["provenance_key"]


def test_changed_labels_folds_or_features_are_named(tmp_path):
    recipe = make_recipe(tmp_path)
    exp = tmp_path / "exp"
    run(recipe, exp, fold="1", epochs=1)
    emo = read_table(recipe["data"] / "utt2emo")
    first = sorted(emo)[0]
    emo[first] = "sad" if emo[first] != "sad" else "neu"
    write_table(recipe["data"] / "utt2emo", emo)
    with pytest.raises(SertkError, match=r"inputs\.data changed"):
        run(recipe, exp, fold="1", epochs=1)

    recipe = make_recipe(tmp_path / "b")
    exp = tmp_path / "exp_b"
    run(recipe, exp, fold="1", epochs=1)
    folds = json.loads(recipe["folds"].read_text())["folds"]
    folds[0]["train"], folds[0]["valid"] = folds[0]["train"][1:], folds[0]["valid"] + folds[0]["train"][:1]
    write_folds_file(recipe["data"], folds)
    with pytest.raises(SertkError, match=r"inputs\.folds changed"):
        run(recipe, exp, fold="1", epochs=1)

    recipe = make_recipe(tmp_path / "c")
    exp = tmp_path / "exp_c"
    run(recipe, exp, fold="1", epochs=1)
    import h5py

    with h5py.File(recipe["feats"] / "feats.h5") as f:
        arrays = {u: f[u][()] + 1.0 for u in f}
    shutil.rmtree(recipe["feats"])
    make_feature_dir(recipe["feats"], arrays)
    with pytest.raises(SertkError, match=r"inputs\.feats changed"):
        run(recipe, exp, fold="1", epochs=1)


def test_a_modified_checkpoint_is_not_trusted(tmp_path):
    recipe = make_recipe(tmp_path)
    exp = tmp_path / "exp"
    run(recipe, exp, fold="1", epochs=1)
    (exp / "fold1" / "best.pt").write_bytes((exp / "fold1" / "best.pt").read_bytes())
    with pytest.raises(SertkError, match="best.pt modified since it was made"):
        run(recipe, exp, fold="1", epochs=1)


def test_resume_continues_only_the_same_provenance(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path)
    exp = tmp_path / "exp"
    with monkeypatch.context() as patch:
        crash_in_epoch(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            run(recipe, exp, fold="1")
    assert not (exp / "fold1" / "train.provenance.json").exists()
    emo = read_table(recipe["data"] / "utt2votes")
    emo[sorted(emo)[0]] = "neu neu neu"
    write_table(recipe["data"] / "utt2votes", emo)
    with pytest.raises(SertkError, match="other inputs"):
        run(recipe, exp, fold="1", resume=True)
    summary = run(recipe, exp, fold="1", resume=True, overwrite=True)[0]
    assert summary["epochs"] == 3


def test_eval_and_score_skip_when_up_to_date_and_refuse_mixed_folds(tmp_path):
    recipe = make_recipe(tmp_path)
    exp = tmp_path / "exp"
    run(recipe, exp, epochs=1)
    assert len(evaluate(exp)) == 2
    mtime = (exp / "fold1" / "posteriors.tsv").stat().st_mtime_ns
    assert evaluate(exp) == []  # both folds up to date
    assert (exp / "fold1" / "posteriors.tsv").stat().st_mtime_ns == mtime
    first = score_experiment(exp)
    assert (
        first["provenance"]["experiment"]
        == json.loads((exp / "experiment.json").read_text())["provenance_key"]
    )
    assert score_experiment(exp) == first  # skipped: read back
    # A fold from another experiment (other config) copied in is refused by score.
    write_conf(recipe["conf"], {"lr": 0.02})
    other = tmp_path / "other"
    run(recipe, other, fold="2", epochs=1)
    evaluate(other, EvalOptions(fold="2"))
    shutil.rmtree(exp / "fold2")
    shutil.copytree(other / "fold2", exp / "fold2")
    with pytest.raises(SertkError, match="fold2: trained in another experiment"):
        score_experiment(exp)


def test_score_marks_unknown_provenance(tmp_path):
    from test_score import make_exp

    exp = make_exp(tmp_path, synthetic=None)
    results = score_experiment(exp)
    assert results["synthetic"] is None
    assert "provenance unknown" in (exp / "RESULTS.md").read_text().lower()
    assert np.isfinite(results["mean"]["ua"])


def _tiny_data(tmp_path):
    import soundfile

    from sertk.data.datadir import write_data_dir

    wavs = {}
    for i in range(3):
        path = tmp_path / f"u{i}.wav"
        soundfile.write(path, np.random.default_rng(i).normal(0, 0.1, 8000 + 800 * i), 16000)
        wavs[f"u{i}"] = str(path)
    tables = {"wav.scp": wavs, "utt2spk": dict.fromkeys(wavs, "s"), "utt2emo": dict.fromkeys(wavs, "neu")}
    write_data_dir(tmp_path / "data", tables, {"classes": ["neu", "sad"], "synthetic": True})
    return tmp_path / "data", wavs


def test_feats_redone_when_audio_changes_under_the_same_wav_scp(tmp_path):
    import soundfile

    from sertk.features.dump import dump_features

    data, wavs = _tiny_data(tmp_path)
    out = tmp_path / "dump"
    assert not dump_features(data, out)["reused"]
    assert dump_features(data, out)["reused"]
    soundfile.write(wavs["u1"], np.zeros(9000), 16000)  # regenerated corpus: same ids and paths
    assert not dump_features(data, out)["reused"]


def test_feats_redone_when_the_extractor_version_changes(tmp_path, monkeypatch):
    from sertk.features.dump import dump_features
    from sertk.features.fbank import KaldiFbank

    data, _ = _tiny_data(tmp_path)
    out = tmp_path / "dump"
    assert not dump_features(data, out)["reused"]
    monkeypatch.setattr(KaldiFbank, "version", KaldiFbank.version + 1)  # the numbers it makes changed
    assert not dump_features(data, out)["reused"]


def test_feats_refuse_to_replace_a_dir_holding_a_users_files(tmp_path):
    from sertk.features.dump import dump_features

    data, _ = _tiny_data(tmp_path)
    out = tmp_path / "dump"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SertkError, match=r"holds files sertk did not write \(notes.txt\)"):
        dump_features(data, out)
    assert (out / "notes.txt").read_text() == "mine"


def test_folds_skip_when_up_to_date_and_redo_on_new_options(tmp_path):
    from helpers import make_recipe as recipe_dir
    from typer.testing import CliRunner

    from sertk.cli import app

    recipe = recipe_dir(tmp_path)
    out = recipe["data"] / "kfold.json"
    runner = CliRunner()
    args = ["folds", str(recipe["data"]), str(out), "--protocol", "kfold", "--ratios", "0.6,0.2,0.2"]
    assert runner.invoke(app, args).exit_code == 0
    first = out.read_text()
    mtime = out.stat().st_mtime_ns
    result = runner.invoke(app, args)
    assert "up to date" in result.output and out.stat().st_mtime_ns == mtime
    assert runner.invoke(app, [*args, "--seed", "1"]).exit_code == 0
    assert out.read_text() != first


def test_a_feature_name_keeps_its_promise_without_a_yaml():
    """--feat spec-logpow8k alone is the 8 kHz spectrogram (512 bins), not spec-logpow's 4 kHz (256)."""
    from sertk.features import build_feature

    assert build_feature("spec-logpow8k").dim == 512 and build_feature("spec-logpow").dim == 256
    assert build_feature("spec-logpow8k", {"max_freq_hz": 4000.0}).dim == 256


def test_an_interrupted_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    """atomic_path: the final name sees the new bytes only when the block finishes, never a half write."""
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            assert tmp != target and tmp.parent == target.parent
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
