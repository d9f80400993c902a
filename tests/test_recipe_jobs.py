"""Recipe smoke tests: fold jobs (data-parallel, in parallel, a crashed fold retried, on a real Slurm
cluster) against the demo's sequential run, and every other corpus's run.sh."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import slurm
from recipes import QUICK, recipe_env, run, run_command, same_posteriors, sequential


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
    out = run(recipe, "run.sh", "--synth-size", "tiny", *QUICK, *(() if whole else ("--stop-stage", "2")))
    assert "generating a SYNTHETIC" in out.stdout
    system = next(p.name for p in (recipe / "data").iterdir() if p.is_dir())
    folds = json.loads((recipe / "data" / system / "folds.json").read_text())
    assert folds["protocol"] == protocol and folds["folds"]
    if whole:
        results = json.loads((recipe / "exp" / system / "results.json").read_text())
        assert results["protocol"] == protocol and results["synthetic"] is True
        assert results["folds"][0]["n"] > 0


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
    out = run(
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
    env = recipe_env()
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
    same_posteriors(exp / "fold1", sequential(recipe))
    replay = (exp / "replay.sh").read_text()
    assert "--fold '1 2'" in replay and "--planned" not in replay
    trained = {n: (exp / "fold1" / n).stat().st_mtime_ns for n in ("best.pt", "train.provenance.json")}

    (tmp_path / "crash").unlink()
    run_command(["bash", str(recipe / "run.sh"), *args, "--stop-stage", "5"], recipe, env)
    jobs = (exp / "log" / "train_eval.jobs").read_text()
    assert "sertk train" in jobs and "sertk eval" not in jobs
    assert "fold1: up to date" in (exp / "log" / "fold1.log").read_text()
    assert (exp / "fold2" / "best.pt").is_file() and not (exp / "fold2" / "posteriors.tsv").exists()
    run_command(["bash", str(recipe / "run.sh"), *args, "--stage", "6"], recipe, env)
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
        env = {**recipe_env(), "SLURM_CONF": env["SLURM_CONF"]}
        out = run_command(
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
    same_posteriors(exp / "fold1", sequential(recipe))
