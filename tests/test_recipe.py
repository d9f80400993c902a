"""Recipe smoke tests: every egs/iemocap/run_*.sh end to end on the tiny synthetic corpus (1 epoch, 1 fold, CPU)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import slurm
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
# The one-system recipes (the grids and run_all.sh train many systems: test_crnn_grid_runs_... covers them).
RECIPES = sorted(
    p.name
    for p in (REPO / "egs" / "iemocap").glob("run_*.sh")
    if not p.name.endswith("_grid.sh") and p.name != "run_all.sh"
)
# One epoch of one fold on CPU: every recipe end to end in seconds.
QUICK = ("--epochs", "1", "--folds", "1", "--nj", "1", "--device", "cpu")
RESULT_KEYS = {"system", "protocol", "classes", "synthetic", "folds", "mean", "std", "pooled"}


def _env() -> dict:
    env = dict(os.environ)
    env.pop("IEMOCAP", None)
    # The recipe's path.sh finds `sertk` on PATH when the copy has no .venv next to it.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    return env


def _run_command(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(command, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(command)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _run(recipe_dir: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """A recipe script, run from the repository root as the README does."""
    return _run_command(["bash", str(recipe_dir / script), *args], cwd=recipe_dir.parent.parent)


@pytest.fixture(scope="module")
def recipe_copy(tmp_path_factory) -> Path:
    """A copy of egs/iemocap (outputs stay out of the repository) plus one tiny synthetic corpus."""
    root = tmp_path_factory.mktemp("recipe")
    shutil.copytree(REPO / "egs", root / "egs", symlinks=True)
    recipe = root / "egs" / "iemocap"
    for sub in ("data", "dump", "exp", "corpus"):
        shutil.rmtree(recipe / sub, ignore_errors=True)
    return recipe


@pytest.fixture(scope="module")
def demo_run(recipe_copy):
    """run.sh without IEMOCAP: stage 0 generates the corpus, the demo config trains."""
    out = _run(
        recipe_copy,
        "run.sh",
        "--synth-size",
        "tiny",
        *QUICK,
    )
    # The sequential (--nj 1) fold1's posteriors, kept apart: later tests may retrain exp/crnn_discriminative.
    shutil.copy(
        recipe_copy / "exp" / "crnn_discriminative" / "fold1" / "posteriors.tsv", _sequential(recipe_copy)
    )
    return recipe_copy, out


def _sequential(recipe: Path) -> Path:
    return recipe.parent.parent / "sequential_fold1_posteriors.tsv"


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
    out = _run(
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


@pytest.mark.parametrize(
    "script",
    [r for r in RECIPES if r not in ("run_crnn_discriminative.sh", "run_ssl.sh")],
)
def test_each_system_recipe_end_to_end(demo_run, script):
    recipe, _ = demo_run
    corpus = recipe / "corpus" / "iemocap"
    out = _run(
        recipe,
        script,
        "--iemocap-root",
        str(corpus),
        *QUICK,
    )
    exp = next(
        line.split("score: ")[1].split(" ->")[0]
        for line in (out.stdout + out.stderr).splitlines()
        if "Stage 7: score: " in line
    )
    results = json.loads((recipe / exp / "results.json").read_text())
    assert RESULT_KEYS <= set(results)
    assert results["synthetic"] is True
    assert len(results["folds"]) == 1 and results["folds"][0]["n"] > 0


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
    _run(recipe, "run_ssl.sh", *common)
    results = json.loads((recipe / "exp" / "ssl" / "results.json").read_text())
    assert results["protocol"] == "loso-session" and results["synthetic"] is True
    assert len(results["folds"]) == 1 and results["folds"][0]["n"] > 0
    feat = yaml.safe_load((recipe / "dump" / "ssl" / "ssl" / "feat.yaml").read_text())
    assert feat["config"]["checkpoint"] == str(checkpoint) and feat["config"]["layers"] == [0, 1, 2]
    config = yaml.safe_load((recipe / "exp" / "ssl" / "config.yaml").read_text())
    assert config["model"]["num_layers"] == 3 and config["train"]["lr"] == 1.0e-4
    onthefly = ("--feat", "wave", "--train-config", "conf/ssl/onthefly.yaml", "--tag", "onthefly")
    _run(recipe, "run_ssl.sh", *common, "--stage", "3", "--stop-stage", "5", *onthefly)
    replay = (recipe / "exp" / "ssl_onthefly" / "replay.sh").read_text()
    assert f"--ssl-encoder {recipe / 'dump' / 'ssl' / 'ssl.yaml'}" in replay
    assert (recipe / "dump" / "ssl" / "wave" / "feat.yaml").is_file()
    best = torch.load(recipe / "exp" / "ssl_onthefly" / "fold1" / "best.pt", weights_only=True)
    assert best["feat"] == "wave" and not [k for k in best["model"] if k.startswith("encoder.")]


def test_ssl_recipe_needs_a_checkpoint(recipe_copy):
    assert "--feat ssl needs --ssl-checkpoint PATH" in _fails(recipe_copy, "run_ssl.sh")


def test_crnn_grid_runs_variants_and_compares(demo_run):
    """The grid end to end: two rows (the baseline and one variant, CPU-sized configs written here) x two
    folds as one jobs file of four fold jobs, each logged under its exp, then the table; --system names
    the grid's data, exp dirs and table (as lstm_attention's improvised set does)."""
    recipe, _ = demo_run
    demo = yaml.safe_load((recipe / "conf" / "demo" / "crnn_discriminative.yaml").read_text())
    focal = {**demo, "loss": {"name": "focal", "gamma": 2.0}, "paper": {"ua": 0.663, "wa": 0.655}}
    (recipe / "conf" / "crnn_discriminative" / "tiny_focal.yaml").write_text(yaml.safe_dump(focal))
    _run(  # on the synthetic corpus demo_run made, so the baseline row trains the demo config
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
    _run(
        recipe,
        "run_attention_pooling_cnn.sh",
        "--iemocap-root",
        str(corpus),
        "--stop-stage",
        "4",
        "--nj",
        "1",
    )
    _run_command(
        ["sertk", "train", "--arch", "attn-pool", "--epochs", "1", "--fold", "2", "--device", "cpu"], recipe
    )
    fold_dir = recipe / "exp" / "attention_pooling_cnn" / "fold2"
    assert (fold_dir / "best.pt").is_file() and (fold_dir / "metrics.csv").is_file()
    experiment = json.loads((recipe / "exp" / "attention_pooling_cnn" / "experiment.json").read_text())
    assert experiment["arch"] == "attn-pool" and experiment["protocol"] == "loso-speaker-noval"


def _fails(recipe: Path, script: str, *args: str) -> str:
    out = subprocess.run(
        ["bash", str(recipe / script), *args],
        cwd=recipe,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


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
    assert message in _fails(recipe_copy, "run.sh", *args)


def test_grid_keeps_each_variants_tag_and_config(recipe_copy):
    assert "--tag is set per variant" in _fails(recipe_copy, "run_crnn_discriminative_grid.sh", "--tag", "x")
    assert "--train-config is set per variant" in _fails(
        recipe_copy, "run_crnn_discriminative_grid.sh", "--train-config", "conf/x.yaml"
    )
    assert "no config conf/crnn_discriminative/nope.yaml" in _fails(
        recipe_copy, "run_crnn_discriminative_grid.sh", "--grid", "nope"
    )
    assert "--system: this grid runs several systems" in _fails(recipe_copy, "run_all.sh", "--system", "x")


def test_relative_corpus_root_is_the_callers(demo_run, tmp_path):
    """--iemocap-root given relative to where the user stands, not to egs/iemocap."""
    recipe, _ = demo_run
    caller = recipe.parent.parent  # the repository root, as the README runs recipes
    relative = (recipe / "corpus" / "iemocap").relative_to(caller)
    out = _run_command(
        ["bash", str(recipe / "run_lstm_attention.sh"), "--iemocap-root", str(relative), "--stop-stage", "1"],
        cwd=caller,
    )
    assert f"using iemocap at {caller / relative}" in out.stdout


@pytest.mark.parametrize(
    "corpus, protocol, whole",
    [
        ("emodb", "loso-speaker-nextval", True),
        ("msp-podcast", "official", True),
        ("ravdess", "speaker-kfold", False),
        ("crema-d", "speaker-kfold", False),
    ],
)
def test_every_corpus_recipe(recipe_copy, corpus, protocol, whole):
    """egs/<corpus>/run.sh on its tiny synthetic layout with the corpus's usual protocol (stages 0-2 for the
    corpora whose later stages are the shared pipeline's, end to end for the others)."""
    recipe = recipe_copy.parent / corpus
    out = _run(recipe, "run.sh", "--synth-size", "tiny", *QUICK, *(() if whole else ("--stop-stage", "2")))
    assert "generating a SYNTHETIC" in out.stdout
    system = next(p.name for p in (recipe / "data").iterdir() if p.is_dir())
    folds = json.loads((recipe / "data" / system / "folds.json").read_text())
    assert folds["protocol"] == protocol and folds["folds"]
    if whole:
        results = json.loads((recipe / "exp" / system / "results.json").read_text())
        assert results["protocol"] == protocol and results["synthetic"] is True
        assert results["folds"][0]["n"] > 0


def test_augment_speed_and_specaug_train_on_copies_of_training_utterances_only(demo_run):
    recipe, _ = demo_run
    corpus = recipe / "corpus" / "iemocap"
    out = _run(
        recipe, "run_lstm_attention.sh", "--iemocap-root", str(corpus), "--augment", "speed,specaug", *QUICK
    )
    assert "Stage 4: augment: data/lstm_attention -> data/lstm_attention_aug-speed-specaug" in out.stdout
    folds = json.loads((recipe / "data" / "lstm_attention_aug-speed-specaug" / "folds.json").read_text())
    original = json.loads((recipe / "data" / "lstm_attention" / "folds.json").read_text())
    for fold, base in zip(folds["folds"], original["folds"], strict=True):
        assert fold["valid"] == base["valid"] and fold["test"] == base["test"]
        copies = {u for u in fold["train"] if u.startswith("sp")}
        assert copies == {f"sp{f}-{u}" for f in ("0.9", "1.1") for u in base["train"]}
    exp = recipe / "exp" / "lstm_attention_aug-speed-specaug"
    config = __import__("yaml").safe_load((exp / "config.yaml").read_text())
    assert config["input"]["specaugment"]["freq_masks"] == 2
    assert json.loads((exp / "results.json").read_text())["folds"][0]["n"] == len(
        original["folds"][0]["test"]
    )


def _same_posteriors(fold_dir: Path, reference: Path) -> None:
    """Same utterances, labels and predictions as the ``reference`` posteriors.tsv, scores within 1e-4."""
    rows = [
        [line.split("\t") for line in path.read_text().splitlines()[1:]]
        for path in (fold_dir / "posteriors.tsv", reference)
    ]
    assert [r[:3] for r in rows[0]] == [r[:3] for r in rows[1]] and rows[0]
    scores = [np.array([[float(x) for x in r[3:]] for r in part]) for part in rows]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-4)


# A `sertk` ahead of the real one on PATH whose training of fold2 dies while the file $CRASH exists: one
# fold's job fails, as a crashed or killed job on a cluster would.
CRASHING_SERTK = """#!/usr/bin/env bash
if [ -e "${CRASH}" ] && [ "$1" = train ] && [[ " $* " == *" --fold fold2 "* ]]; then
  echo "planted crash of fold2" >&2; exit 3
fi
exec %s "$@"
"""


def test_nproc_reaches_every_fold_job_and_the_replay(demo_run, tmp_path):
    """--nproc N: each fold job's sertk train runs data-parallel over N processes, and replay.sh says so."""
    recipe, _ = demo_run
    jobs = tmp_path / "n2.jobs"
    out = _run(
        recipe,
        "run.sh",
        "--stage",
        "5",
        "--stop-stage",
        "6",
        "--tag",
        "n2",
        *QUICK,
        "--nproc",
        "2",
        "--jobs-out",
        str(jobs),
    )
    assert "planned; 1 of 1 fold(s) to train: fold1" in " ".join((out.stdout + out.stderr).split())
    (line,) = jobs.read_text().splitlines()
    name, command = line.split("\t")
    assert name == "exp/crnn_discriminative_n2/log/fold1" and "--nproc 2" in command
    assert "--planned" in command and "sertk eval" in command
    assert "--nproc 2" in (recipe / "exp" / "crnn_discriminative_n2" / "replay.sh").read_text()


def test_parallel_fold_jobs_match_sequential_and_a_rerun_retries_only_the_failed_fold(demo_run, tmp_path):
    """--cmd local --nj 2: one job per fold with its own log; fold1 equals the sequential (--nj 1) run's; a
    crashed fold2 is reported with its log, and the rerun (stage 5, then 6-7 alone) trains only fold2."""
    recipe, _ = demo_run
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sertk").write_text(CRASHING_SERTK % (Path(sys.executable).parent / "sertk"))
    (bin_dir / "sertk").chmod(0o755)
    env = _env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["CRASH"] = str(tmp_path / "crash")
    (tmp_path / "crash").touch()
    args = ("--stage", "5", "--tag", "nj2", "--cmd", "local", *QUICK, "--folds", "1 2", "--nj", "2")
    out = subprocess.run(
        ["bash", str(recipe / "run.sh"), *args],
        cwd=recipe,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    exp = recipe / "exp" / "crnn_discriminative_nj2"
    assert out.returncode != 0
    assert f"failed: fold2 (exit 3): see {Path('exp/crnn_discriminative_nj2/log/fold2.log')}" in out.stderr
    assert "1 of 2 jobs failed: fold2" in out.stderr
    assert "planted crash of fold2" in (exp / "log" / "fold2.log").read_text()
    assert not (exp / "fold2" / "best.pt").exists()
    # fold1, trained in its own job beside fold2's, gives what the sequential run of the same config gave.
    # (its scores within float tolerance: one thread per job instead of two sums in another order).
    _same_posteriors(exp / "fold1", _sequential(recipe))
    replay = (exp / "replay.sh").read_text()
    assert "--fold '1 2'" in replay and "--planned" not in replay
    trained = {n: (exp / "fold1" / n).stat().st_mtime_ns for n in ("best.pt", "train.provenance.json")}

    (tmp_path / "crash").unlink()
    _run_command(["bash", str(recipe / "run.sh"), *args, "--stop-stage", "5"], recipe, env)
    jobs = (exp / "log" / "train_eval.jobs").read_text()
    assert "sertk train" in jobs and "sertk eval" not in jobs
    assert "fold1: up to date" in (exp / "log" / "fold1.log").read_text()
    assert (exp / "fold2" / "best.pt").is_file() and not (exp / "fold2" / "posteriors.tsv").exists()
    _run_command(["bash", str(recipe / "run.sh"), *args, "--stage", "6"], recipe, env)
    jobs = (exp / "log" / "train_eval.jobs").read_text()
    assert "sertk train" not in jobs and "sertk eval" in jobs
    assert {n: (exp / "fold1" / n).stat().st_mtime_ns for n in trained} == trained
    results = json.loads((exp / "results.json").read_text())
    assert [f["name"] for f in results["folds"]] == ["fold1", "fold2"] and results["folds"][1]["n"] > 0


@pytest.mark.skipif(slurm.missing_reason() is not None, reason=str(slurm.missing_reason()))
def test_recipe_stages_5_and_6_on_a_real_slurm_cluster(demo_run, tmp_path_factory):
    recipe, _ = demo_run
    (recipe / "conf" / "slurm_test.yaml").write_text("cpus_per_task: 1\ntime: '0:10:00'\n")
    args = ("--stage", "5", "--stop-stage", "6", "--tag", "slurm", *QUICK, "--nj", "2")
    with slurm.cluster(tmp_path_factory.mktemp("slurm")) as env:
        env = {**_env(), "SLURM_CONF": env["SLURM_CONF"]}
        out = _run_command(
            [
                "bash",
                str(recipe / "run.sh"),
                *args,
                "--cmd",
                "slurm",
                "--slurm-config",
                "conf/slurm_test.yaml",
            ],
            recipe,
            env,
        )
    assert "1 jobs as one Slurm array, at most 2 at a time" in out.stdout + out.stderr
    exp = recipe / "exp" / "crnn_discriminative_slurm"
    assert (exp / "log" / "fold1.log").read_text().splitlines()[-1].startswith("# exit 0 after")
    _same_posteriors(exp / "fold1", _sequential(recipe))
