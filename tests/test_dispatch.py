"""sertk dispatch: jobs files, the local engine (N at a time, pinned cores and GPUs, logs, failures) and the
Slurm engine, against a fake sbatch and, where the machine has Slurm, a real single-node cluster."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import slurm

from sertk.dispatch import SlurmConfig, core_slots, dispatch, gpu_slots, job_exit, read_jobs, sbatch_command
from sertk.errors import SertkError

REPO = Path(__file__).resolve().parents[1]
# A job that marks itself started, then waits (up to ~3 s) for the other job's mark: it can succeed only if
# both run at the same time.
WAIT_FOR = (
    "touch {me}.started; for _ in $(seq 60); do [ -e {other}.started ] && exit 0; sleep 0.05; done; exit 9"
)


def write_jobs(path: Path, jobs: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}\t{command}\n" for name, command in jobs.items()))
    return path


def waiting_pair(tmp_path: Path) -> Path:
    marks = tmp_path / "marks"
    marks.mkdir()
    return write_jobs(
        tmp_path / "pair.jobs",
        {
            "a": WAIT_FOR.format(me=marks / "a", other=marks / "b"),
            "b": WAIT_FOR.format(me=marks / "b", other=marks / "a"),
        },
    )


def test_local_runs_nj_jobs_at_the_same_time(tmp_path):
    jobs = waiting_pair(tmp_path)
    dispatch(jobs, "local", 2)
    for name in ("a", "b"):
        assert job_exit(tmp_path / f"{name}.log") == 0


def test_local_runs_no_more_than_nj_at_a_time(tmp_path):
    """With --nj 1 the first job waits for a job that has not started, so it times out; the second then
    finds the first's mark and succeeds."""
    jobs = waiting_pair(tmp_path)
    with pytest.raises(SertkError, match=r"pair.jobs: 1 of 2 jobs failed: a \(rerun"):
        dispatch(jobs, "local", 1)
    assert job_exit(tmp_path / "a.log") == 9 and job_exit(tmp_path / "b.log") == 0


def test_logs_hold_header_output_and_trailer(tmp_path):
    jobs = write_jobs(tmp_path / "x.jobs", {"hello": "echo out; echo err >&2"})
    dispatch(jobs, "local", 1, log_dir=tmp_path / "logs")
    lines = (tmp_path / "logs" / "hello.log").read_text().splitlines()
    assert lines[0] == "# echo out; echo err >&2"
    assert lines[1].startswith(f"# host {os.uname().nodename}, started ")
    assert lines[2:4] == ["out", "err"]
    assert lines[4].startswith("# exit 0 after ") and len(lines) == 5


def test_failed_jobs_are_reported_with_their_logs_and_exit_non_zero(tmp_path):
    jobs = write_jobs(tmp_path / "x.jobs", {"ok": "true", "bad": "exit 3", "v/log/worse": "kill -9 $$"})
    out = subprocess.run(
        [sys.executable, "-m", "sertk.cli", "dispatch", str(jobs), "--cmd", "local", "--nj", "2"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="300"),
    )
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert f"failed: bad (exit 3): see {tmp_path / 'bad.log'}" in text
    assert f"failed: v/log/worse (exit 137): see {tmp_path / 'v' / 'log' / 'worse.log'}" in text
    assert "2 of 3 jobs failed: bad, v/log/worse" in text and "Traceback" not in text


AFFINITY_JOB = "grep Cpus_allowed_list /proc/self/status; echo threads=$OMP_NUM_THREADS,$MKL_NUM_THREADS gpu=$CUDA_VISIBLE_DEVICES"


def cpus_of(log: Path) -> set[int]:
    """The cores in a ``Cpus_allowed_list: 0-1,3`` line."""
    spec = next(line for line in log.read_text().splitlines() if line.startswith("Cpus_allowed_list"))
    cores = set()
    for part in spec.split(":")[1].strip().split(","):
        lo, _, hi = part.partition("-")
        cores |= set(range(int(lo), int(hi or lo) + 1))
    return cores


def test_local_pins_each_job_to_its_cores_threads_and_gpu(tmp_path, monkeypatch):
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs two cores to give two jobs disjoint shares")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    jobs = write_jobs(tmp_path / "x.jobs", {"j0": AFFINITY_JOB, "j1": AFFINITY_JOB})
    dispatch(jobs, "local", 2)
    share = len(cores) // 2
    got = [cpus_of(tmp_path / f"j{i}.log") for i in range(2)]
    assert got == [set(cores[:share]), set(cores[share : 2 * share])]
    assert f"threads={share},{share} gpu=3" in (tmp_path / "j0.log").read_text()
    assert f"threads={share},{share} gpu=5" in (tmp_path / "j1.log").read_text()


def test_data_parallel_jobs_get_that_many_gpus_each(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    jobs = write_jobs(tmp_path / "x.jobs", {"j0": AFFINITY_JOB, "j1": AFFINITY_JOB})
    dispatch(jobs, "local", 2, gpus_per_job=2)
    assert "gpu=0,1\n" in (tmp_path / "j0.log").read_text()
    assert "gpu=2,3\n" in (tmp_path / "j1.log").read_text()
    assert gpu_slots([], 2, 2) == [None, None]
    assert gpu_slots(["0", "1", "2"], 2, 2) == ["0,1", "2,0"]  # more GPUs asked than there are: shared


def test_core_slots_share_cores_evenly_or_round_robin():
    assert core_slots([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3]]
    assert core_slots([4, 7], 3) == [[4], [7], [4]]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a echo hi\n", "x.jobs:1: expected NAME<TAB>command"),
        ("# comment\n\na\t \n", "x.jobs:3: expected NAME<TAB>command"),
        ("../up\ttrue\n", "x.jobs:1: job name '../up'"),
        ("a\ttrue\na\tfalse\n", "x.jobs:2: job name a is used twice"),
        ("# nothing\n", "x.jobs: no jobs"),
    ],
)
def test_bad_jobs_files_fail_in_one_line(tmp_path, text, message):
    (tmp_path / "x.jobs").write_text(text)
    with pytest.raises(SertkError, match=message.replace("(", r"\(")):
        read_jobs(tmp_path / "x.jobs")


def test_slurm_config_unknown_key_is_an_error(tmp_path):
    (tmp_path / "slurm.yaml").write_text("partition: gpu\ngpus: 1\n")
    jobs = write_jobs(tmp_path / "x.jobs", {"a": "true"})
    with pytest.raises(SertkError, match=r"slurm.yaml: unknown key\(s\) gpus"):
        dispatch(jobs, "slurm", 1, slurm_config=tmp_path / "slurm.yaml")


def test_sbatch_options_come_from_the_slurm_config(tmp_path):
    cfg = SlurmConfig(partition="gpu", gpus_per_job=1, cpus_per_task=4, time="2:00:00", mem="16G")
    cfg.extra_args = ["--qos=short"]
    words = sbatch_command(cfg, 10, 3, tmp_path / "x.slurm.sh", tmp_path, "sertk-x")
    assert words[:4] == ["sbatch", "--parsable", "--array=0-9%3", "--job-name=sertk-x"]
    for option in ("--partition=gpu", "--gres=gpu:1", "--cpus-per-task=4", "--time=2:00:00", "--mem=16G"):
        assert option in words
    assert words[-2:] == ["--qos=short", str(tmp_path / "x.slurm.sh")]


# A stand-in for sbatch that runs every task of the --array it is given, one after another, as Slurm would
# (SLURM_ARRAY_TASK_ID, SLURM_CPUS_PER_TASK, the --chdir), after recording its arguments.
FAKE_SBATCH = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "${FAKE_SBATCH_ARGS}"
script=${!#}
for arg in "$@"; do
  case "${arg}" in
    --array=*) range=${arg#--array=}; range=${range%%%*}; last=${range#0-} ;;
    --chdir=*) cd "${arg#--chdir=}" || exit 1 ;;
    --cpus-per-task=*) export SLURM_CPUS_PER_TASK=${arg#--cpus-per-task=} ;;
  esac
done
echo 42
for i in $(seq 0 "${last}"); do SLURM_ARRAY_TASK_ID=${i} bash "${script}"; done
"""


FAKE_SQUEUE = """#!/usr/bin/env bash
[ "$*" = "-h -r -j 42 -o %i" ] || { echo "fake squeue: unexpected arguments $*" >&2; exit 2; }
"""


def run_slurm_jobs(tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    """``sertk dispatch --cmd slurm`` of two good jobs and a failing one, from ``tmp_path/work``."""
    (tmp_path / "work").mkdir()
    jobs = write_jobs(
        tmp_path / "x.jobs",
        {
            "one": "pwd; echo threads=$OMP_NUM_THREADS task=$SLURM_ARRAY_TASK_ID",
            "two": "exit 4",
            "v/three": "true",
        },
    )
    (tmp_path / "slurm.yaml").write_text("cpus_per_task: 1\ntime: '0:05:00'\nextra_args: [--comment=sertk]\n")
    command = [sys.executable, "-m", "sertk.cli", "dispatch", str(jobs), "--cmd", "slurm", "--nj", "2"]
    command += ["--slurm-config", str(tmp_path / "slurm.yaml")]
    env = dict(env, PYTHONPATH=str(REPO), COLUMNS="300")
    return subprocess.run(
        command, cwd=tmp_path / "work", capture_output=True, text=True, env=env, timeout=120
    )


def check_slurm_run(tmp_path: Path, out: subprocess.CompletedProcess) -> None:
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"failed: two (exit 4): see {tmp_path / 'two.log'}" in out.stderr
    assert "1 of 3 jobs failed: two" in out.stderr
    one = (tmp_path / "one.log").read_text().splitlines()
    assert one[0].startswith("# pwd; echo") and one[1].startswith("# host ")
    assert one[2:4] == [str(tmp_path / "work"), "threads=1 task=0"]
    assert job_exit(tmp_path / "one.log") == 0 and job_exit(tmp_path / "v" / "three.log") == 0


def test_slurm_engine_submits_one_array_to_sbatch(tmp_path):
    """The submission path against a fake sbatch (the real one: the next test)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    (bin_dir / "squeue").write_text(FAKE_SQUEUE)  # the fake sbatch ran every task before it returned
    (bin_dir / "squeue").chmod(0o755)
    env = dict(
        os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_SBATCH_ARGS=str(tmp_path / "args")
    )
    out = run_slurm_jobs(tmp_path, env)
    check_slurm_run(tmp_path, out)
    args = (tmp_path / "args").read_text().splitlines()
    assert "--array=0-2%2" in args and f"--chdir={tmp_path / 'work'}" in args
    assert "--comment=sertk" in args and "--time=0:05:00" in args and args[-1] == str(tmp_path / "x.slurm.sh")


@pytest.mark.skipif(slurm.missing_reason() is not None, reason=str(slurm.missing_reason()))
def test_slurm_engine_on_a_real_single_node_cluster(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("jobs")
    with slurm.cluster(tmp_path_factory.mktemp("slurm")) as env:
        out = run_slurm_jobs(tmp_path, env)
    check_slurm_run(tmp_path, out)
    assert list(tmp_path.glob("slurm-*_2.out")), "sbatch's own output files go beside the jobs file"
