"""Data-parallel training (sertk train --nproc 2, gloo on CPU) against one process with the same global batch.

The 2-process run must end with the weights, batch norm statistics and metrics.csv of the 1-process run
(float tolerance: sums are split over ranks), including random transforms (white noise, SpecAugment, random
crop, mixup) and class-weighted loss on unequal shards (batch 7 -> 4 + 3 rows), both batch norms synced; an
interrupted 2-process run resumed with --resume ends the same; rank 0 alone writes. The launcher on its own, on
a stand-in script: torchrun's environment per rank, who speaks, the first failed rank and stopping the rest.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from ddp_toys import BatchNormToy
from helpers import ToyModel, make_recipe, run, write_conf

from sertk.errors import SertkError
from sertk.models import MODELS, SYSTEMS
from sertk.train.launch import in_distributed_job, relaunch, wait_all

ENTRY = Path(__file__).with_name("ddp_entry.py")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    recipe = make_recipe(tmp_path_factory.mktemp("ddp"), per_class=8)  # fold1: 18 train rows
    write_conf(
        recipe["conf"],
        train_opts={"optimizer": "sgd", "lr": 0.1, "batch_size": 7, "epochs": 3, "class_weights": "balanced"},
        input_opts={
            "max_frames": 20,
            "crop": "random",
            "specaugment": {"freq_masks": 1, "freq_width": 2, "time_masks": 1, "time_width": 3},
            "mixup": {"alpha": 0.4, "prob": 0.5},
        },
    )
    text = recipe["conf"].read_text().replace("arch: toy\n", "arch: toy-bn\n")
    recipe["conf"].write_text(text.replace("dropout: 0.2", "dropout: 0.0"))
    return recipe


def train_processes(recipe, exp: Path, nproc: int, *extra: str, env: dict | None = None):
    """The real command line through tests/ddp_entry.py (sertk's CLI with the toy archs registered)."""
    args = [sys.executable, str(ENTRY), "train", "--train-config", str(recipe["conf"]), "--fold", "1"]
    for key in ("data", "feats", "folds"):
        args += [f"--{key}", str(recipe[key])]
    args += ["--exp", str(exp), "--device", "cpu", "--nproc", str(nproc), *extra]
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    full_env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(args, capture_output=True, text=True, env=full_env, timeout=120)


@pytest.fixture(scope="module")
def one_process(recipe, tmp_path_factory):
    exp = tmp_path_factory.mktemp("one") / "exp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(MODELS, "toy-bn", BatchNormToy)
        mp.setitem(SYSTEMS, "toy-bn", "toy_system")
        run(recipe, exp, fold="1")
    return exp / "fold1"


def metrics(fold_dir: Path) -> list[dict]:
    with open(fold_dir / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def assert_same_training(fold_dir: Path, reference: Path, epochs: int = 3) -> None:
    for name in ("checkpoint.pt", "best.pt"):
        got = torch.load(fold_dir / name, weights_only=True)["model"]
        want = torch.load(reference / name, weights_only=True)["model"]
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=f"{name} {key}")
    got, want = metrics(fold_dir), metrics(reference)
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == [float(e + 1) for e in range(epochs)]
    for g, w in zip(got, want, strict=True):
        for key in w:
            assert g[key] == pytest.approx(w[key], rel=1e-5, abs=2e-6), (g["epoch"], key)


def test_two_processes_interrupted_and_resumed_train_like_one(recipe, one_process, tmp_path):
    """Epoch 1 under 2 ranks, rank 0 killed in epoch 2, then --resume for epochs 2-3: the 1-process run."""
    exp, writers = tmp_path / "exp", tmp_path / "writers.log"
    logged = {"SERTK_TEST_WRITERS": str(writers)}
    crashed = train_processes(recipe, exp, 2, env={**logged, "SERTK_TEST_CRASH_EPOCH": "2"})
    assert crashed.returncode == 1
    last = crashed.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "rank 0 failed" in last, crashed.stderr[-2000:]
    assert "Traceback" not in crashed.stderr  # rank 1, stopped by the launcher, adds no noise
    assert [r["epoch"] for r in metrics(exp / "fold1")] == [1.0]
    resumed = train_processes(recipe, exp, 2, "--resume", env=logged)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("resuming after epoch 1") == 1  # every rank resumes; one speaks
    assert_same_training(exp / "fold1", one_process)
    ranks = {line.split()[0] for line in writers.read_text().splitlines()}
    assert ranks == {"0"}, "only rank 0 may write checkpoints, metrics and provenance records"
    # The comparison is between trained models, not two untouched initialisations.
    trained = torch.load(one_process / "checkpoint.pt", weights_only=True)["model"]
    torch.manual_seed(3)
    init = BatchNormToy(ToyModel.Config(hidden=16, dropout=0.0), 6, 4).state_dict()
    assert not torch.allclose(trained["proj.weight"], init["proj.weight"])
    assert int(trained["frame_norm.num_batches_tracked"]) == 3 * 3  # 3 epochs of 18 rows: 7 + 7 + 4


def test_crnn_att_with_torch_batch_norm_trains_like_one_process(recipe, tmp_path):
    """A real arch whose nn.BatchNorm2d normalise over padded maps: converted to the synced batch norm."""
    conf = tmp_path / "crnn.yaml"
    write_conf(conf, train_opts={"optimizer": "sgd", "lr": 0.05, "batch_size": 7, "epochs": 2})
    config = yaml.safe_load(conf.read_text())
    config["arch"], config["model"] = "crnn-att", {"conv_channels": [4, 4], "dropout": 0.0, "lstm_cells": 4}
    conf.write_text(yaml.safe_dump(config))
    crnn = {**recipe, "conf": conf}
    run(crnn, tmp_path / "one", fold="1")
    result = train_processes(crnn, tmp_path / "two", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_training(tmp_path / "two" / "fold1", tmp_path / "one" / "fold1", epochs=2)


# What relaunch runs as each rank (standing in for ``sertk train ...``): it records the rendezvous environment
# in rank<RANK>.json, says one line on stdout and one on stderr, then sleeps and exits as RANK_ACTIONS says.
RANK_SCRIPT = """
import json, os, sys, time
rank = os.environ["RANK"]
keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")
with open(os.path.join(os.environ["RANK_DIR"], f"rank{rank}.json"), "w") as f:
    json.dump({k: os.environ.get(k) for k in keys}, f)
print(f"rank {rank} out", flush=True)
print(f"rank {rank} err", file=sys.stderr, flush=True)
sleep, code = json.loads(os.environ["RANK_ACTIONS"])[int(rank)]
time.sleep(sleep)
sys.exit(code)
"""


def relaunch_script(monkeypatch, tmp_path: Path, nproc: int, actions: list[tuple[float, int]]) -> None:
    """relaunch(nproc) of RANK_SCRIPT: this process's command line is made ``python -c RANK_SCRIPT``."""
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-c", RANK_SCRIPT])
    monkeypatch.setattr(sys, "argv", ["sertk", "train"])
    monkeypatch.setenv("RANK_DIR", str(tmp_path))
    monkeypatch.setenv("RANK_ACTIONS", json.dumps(actions))
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    relaunch(nproc)


def test_relaunch_gives_each_rank_torchruns_environment_and_lets_rank_0_speak(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    relaunch_script(monkeypatch, tmp_path, 2, [(0, 0), (0, 0)])
    env = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in range(2):
        assert env[r]["RANK"] == env[r]["LOCAL_RANK"] == str(r)
        assert env[r]["WORLD_SIZE"] == env[r]["LOCAL_WORLD_SIZE"] == "2"
        assert env[r]["MASTER_ADDR"] == "127.0.0.1"
        # 2 ranks share the cores: cpu_count // 2 threads each (at least 1)
        assert env[r]["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert env[0]["MASTER_PORT"] == env[1]["MASTER_PORT"] and 0 < int(env[0]["MASTER_PORT"]) < 65536
    out, err = capfd.readouterr()
    assert "rank 0 out" in out and "rank 0 err" in err  # rank 0 on this terminal
    assert "rank 1" not in out + err  # the others kept quiet while all went well
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # a user's own setting is kept
    relaunch_script(monkeypatch, tmp_path, 1, [(0, 0)])
    assert json.loads((tmp_path / "rank0.json").read_text())["OMP_NUM_THREADS"] == "5"


def test_relaunch_reports_a_failed_rank_with_its_output_and_stops_the_others(tmp_path, monkeypatch, capfd):
    """Rank 1 fails at once while rank 0 would sleep 30 s: rank 0 is stopped, rank 1's kept output shown."""
    start = time.monotonic()
    with pytest.raises(SertkError, match=r"--nproc 2: rank 1 failed \(exit status 3\); others stopped"):
        relaunch_script(monkeypatch, tmp_path, 2, [(30, 0), (0, 3)])
    assert time.monotonic() - start < 15
    assert "rank 1 out\nrank 1 err\n" in capfd.readouterr().err


def test_relaunch_waits_for_every_rank_not_just_the_first_to_finish(tmp_path, monkeypatch):
    with pytest.raises(SertkError, match=r"rank 1 failed \(exit status 4\)"):
        relaunch_script(monkeypatch, tmp_path, 2, [(0, 0), (0.5, 4)])


def test_relaunch_refuses_fewer_than_one_process():
    with pytest.raises(SertkError, match=r"--nproc 0: must be >= 1"):
        relaunch(0)


def test_wait_all_returns_the_lowest_failed_rank_a_signal_included():
    """Rank 0 killed by SIGKILL (exit status -9), rank 1 exit 3: rank 0's failure is the one reported."""
    procs = [subprocess.Popen(["bash", "-c", "kill -9 $$"]), subprocess.Popen(["bash", "-c", "exit 3"])]
    for proc in procs:
        proc.wait()
    assert wait_all(procs) == (0, -9)
    assert wait_all([subprocess.Popen(["true"]) for _ in range(2)]) is None


def test_a_distributed_job_has_both_rank_and_world_size(monkeypatch):
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert not in_distributed_job()
    monkeypatch.setenv("RANK", "0")  # RANK alone (some other tool's variable) is no torch.distributed job
    assert not in_distributed_job()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert in_distributed_job()
    monkeypatch.delenv("RANK")
    assert not in_distributed_job()
