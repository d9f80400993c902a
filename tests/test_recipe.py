"""Recipe smoke tests: the demo run.sh end to end on the tiny synthetic corpus (1 epoch, 1 fold, CPU), its
rerun, the SSL recipe, a grid, `sertk train --arch` inside the recipe dir and the scripts' option errors."""

import json

import pytest
import torch
import yaml
from recipes import QUICK, RESULT_KEYS, fails, run, run_command


def test_demo_run_generates_synthetic_corpus_and_scores(demo_run):
    recipe, out = demo_run
    log = out.stdout + out.stderr
    assert "generating a SYNTHETIC iemocap-format corpus" in log
    assert "SYNTHETIC demo: training conf/demo/crnn_discriminative.yaml" in log
    for stage in range(8):
        assert f"Stage {stage}:" in log
    results = json.loads((recipe / "exp" / "crnn_discriminative" / "results.json").read_text())
    assert RESULT_KEYS <= set(results)
    assert results["synthetic"] is True and results["protocol"] == "kfold"
    assert results["provenance"]["experiment"]
    assert [f["name"] for f in results["folds"]] == ["fold1"]
    assert 0.0 <= results["mean"]["ua"] <= 1.0
    report = (recipe / "exp" / "crnn_discriminative" / "RESULTS.md").read_text()
    assert "SYNTHETIC" in report
    for png in ("confusion.png", "learning_curves.png"):
        assert (recipe / "exp" / "crnn_discriminative" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    replay = (recipe / "exp" / "crnn_discriminative" / "replay.sh").read_text()
    assert "sertk train" in replay


def test_rerun_from_stage_3_reuses_finished_work(demo_run):
    recipe, _ = demo_run
    best = recipe / "exp" / "crnn_discriminative" / "fold1" / "best.pt"
    mtime = best.stat().st_mtime_ns
    out = run(
        recipe,
        "run.sh",
        "--stage",
        "3",
        "--synth-size",
        "tiny",
        *QUICK,
    )
    log = out.stdout + out.stderr
    assert "Stage 3:" in log and "Stage 2:" not in log
    assert "up to date for this data and feature config" in log and "results.json: up to date" in log
    job_log = (recipe / "exp" / "crnn_discriminative" / "log" / "fold1.log").read_text()
    assert "fold1: up to date" in job_log and "posteriors up to date" in job_log
    assert best.stat().st_mtime_ns == mtime


def test_ssl_recipe_end_to_end_dumped_and_on_the_fly(demo_run, tmp_path_factory):
    """run_ssl.sh with a checkpoint the test writes (a tiny random wav2vec2): the layer dump + SUPERB's
    downstream end to end, then the on-the-fly config's dump and training on the same data and folds (its
    eval, package and infer: tests/test_ssl_onthefly.py)."""
    from helpers import tiny_ssl_checkpoint

    recipe, _ = demo_run
    checkpoint = tiny_ssl_checkpoint(tmp_path_factory.mktemp("ssl") / "wav2vec2-tiny")
    common = (
        "--iemocap-root",
        str(recipe / "corpus" / "iemocap"),
        "--ssl-checkpoint",
        str(checkpoint),
        *QUICK,
    )
    run(recipe, "run_ssl.sh", *common)
    results = json.loads((recipe / "exp" / "ssl" / "results.json").read_text())
    assert results["protocol"] == "loso-session" and results["synthetic"] is True
    assert len(results["folds"]) == 1 and results["folds"][0]["n"] > 0
    feat = yaml.safe_load((recipe / "dump" / "ssl" / "ssl" / "feat.yaml").read_text())
    assert feat["config"]["checkpoint"] == str(checkpoint) and feat["config"]["layers"] == [0, 1, 2]
    config = yaml.safe_load((recipe / "exp" / "ssl" / "config.yaml").read_text())
    assert config["model"]["num_layers"] == 3 and config["train"]["lr"] == 1.0e-4
    onthefly = ("--feat", "wave", "--train-config", "conf/ssl/onthefly.yaml", "--tag", "onthefly")
    run(recipe, "run_ssl.sh", *common, "--stage", "3", "--stop-stage", "5", *onthefly)
    replay = (recipe / "exp" / "ssl_onthefly" / "replay.sh").read_text()
    assert f"--ssl-encoder {recipe / 'dump' / 'ssl' / 'ssl.yaml'}" in replay
    assert (recipe / "dump" / "ssl" / "wave" / "feat.yaml").is_file()
    best = torch.load(recipe / "exp" / "ssl_onthefly" / "fold1" / "best.pt", weights_only=True)
    assert best["feat"] == "wave" and not [k for k in best["model"] if k.startswith("encoder.")]


def test_ssl_recipe_needs_a_checkpoint(recipe_copy):
    assert "--feat ssl needs --ssl-checkpoint PATH" in fails(recipe_copy, "run_ssl.sh")


def test_crnn_grid_runs_variants_and_compares(demo_run):
    """The grid end to end: two rows (the baseline and one variant, CPU-sized configs written here) x two
    folds as one jobs file of four fold jobs, each logged under its exp, then the table; --system names
    the grid's data, exp dirs and table (as lstm_attention's improvised set does)."""
    recipe, _ = demo_run
    demo = yaml.safe_load((recipe / "conf" / "demo" / "crnn_discriminative.yaml").read_text())
    focal = {**demo, "loss": {"name": "focal", "gamma": 2.0}, "paper": {"ua": 0.663, "wa": 0.655}}
    (recipe / "conf" / "crnn_discriminative" / "tiny_focal.yaml").write_text(yaml.safe_dump(focal))
    run(  # on the synthetic corpus demo_run made, so the baseline row trains the demo config
        recipe,
        "run_crnn_discriminative_grid.sh",
        "--grid",
        "tiny_focal",
        "--synth-size",
        "tiny",
        *QUICK,
        "--folds",
        "1 2",
        "--nj",
        "2",
        "--protocol",
        "loso-session",
        "--system",
        "crnn_grid",
    )
    jobs = (recipe / "exp" / "crnn_grid_table2_loso-session.jobs").read_text().splitlines()
    names = [line.split("\t")[0] for line in jobs]
    rows = ("crnn_grid_loso-session", "crnn_grid_tiny_focal_loso-session")
    assert names == [f"exp/{row}/log/fold{k}" for row in rows for k in (1, 2)]
    for row in rows:
        for k in (1, 2):
            assert (recipe / "exp" / row / "log" / f"fold{k}.log").read_text().endswith(" s\n")
        results = json.loads((recipe / "exp" / row / "results.json").read_text())
        assert results["protocol"] == "loso-session" and len(results["folds"]) == 2
    table = (recipe / "exp" / "crnn_grid_table2_loso-session.md").read_text()
    assert "| **crnn_discriminative" in table or "| crnn_discriminative |" in table
    assert (recipe / "data" / "crnn_grid" / "folds_loso-session.json").is_file()
    assert "tiny_focal" in table and "| 66.3 | 65.5 |" in table  # the paper's numbers beside sertk's
    assert (recipe / "exp" / "crnn_grid_table2_loso-session_confusions.png").is_file()


def test_sertk_train_arch_defaults_inside_recipe_dir(demo_run):
    """`sertk train --arch attn-pool` after stage 4 finds conf/, data/, dump/ and exp/ of its system."""
    recipe, _ = demo_run
    corpus = recipe / "corpus" / "iemocap"
    run(
        recipe,
        "run_attention_pooling_cnn.sh",
        "--iemocap-root",
        str(corpus),
        "--stop-stage",
        "4",
        "--nj",
        "1",
    )
    run_command(
        ["sertk", "train", "--arch", "attn-pool", "--epochs", "1", "--fold", "2", "--device", "cpu"], recipe
    )
    fold_dir = recipe / "exp" / "attention_pooling_cnn" / "fold2"
    assert (fold_dir / "best.pt").is_file() and (fold_dir / "metrics.csv").is_file()
    experiment = json.loads((recipe / "exp" / "attention_pooling_cnn" / "experiment.json").read_text())
    assert experiment["arch"] == "attn-pool" and experiment["protocol"] == "loso-speaker-noval"


@pytest.mark.parametrize(
    "args, message",
    [
        (("--stage", "foo"), "--stage must be a non-negative integer, got 'foo'"),
        (("--stop-stage", "2x"), "--stop-stage must be a non-negative integer"),
        (("--nosuch", "1"), "unknown option --nosuch"),
        (("--tag",), "option --tag needs a value"),
        (("--tag", "--stage", "3"), "option --tag needs a value (got the option --stage)"),
        (("stray",), "unexpected argument stray"),
    ],
)
def test_recipe_options_fail_in_one_line(recipe_copy, args, message):
    assert message in fails(recipe_copy, "run.sh", *args)


def test_grid_keeps_each_variants_tag_and_config(recipe_copy):
    assert "--tag is set per variant" in fails(recipe_copy, "run_crnn_discriminative_grid.sh", "--tag", "x")
    assert "--train-config is set per variant" in fails(
        recipe_copy, "run_crnn_discriminative_grid.sh", "--train-config", "conf/x.yaml"
    )
    assert "no config conf/crnn_discriminative/nope.yaml" in fails(
        recipe_copy, "run_crnn_discriminative_grid.sh", "--grid", "nope"
    )
    assert "--system: this grid runs several systems" in fails(recipe_copy, "run_all.sh", "--system", "x")


def test_relative_corpus_root_is_the_callers(demo_run, tmp_path):
    """--iemocap-root given relative to where the user stands, not to egs/iemocap."""
    recipe, _ = demo_run
    caller = recipe.parent.parent  # the repository root, as the README runs recipes
    relative = (recipe / "corpus" / "iemocap").relative_to(caller)
    out = run_command(
        ["bash", str(recipe / "run_lstm_attention.sh"), "--iemocap-root", str(relative), "--stop-stage", "1"],
        cwd=caller,
    )
    assert f"using iemocap at {caller / relative}" in out.stdout
