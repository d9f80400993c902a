"""sertk dispatch: jobs files, the local engine (N at a time, pinned cores and GPUs, logs, failures) and the
Slurm engine, against a fake sbatch and, where the machine has Slurm, a real single-node cluster."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import slurm

from sertk.dispatch import (
    Job,
    SlurmConfig,
    array_queued,
    core_slots,
    dispatch,
    gpu_slots,
    job_exit,
    read_jobs,
    sbatch_command,
    slurm_script,
    visible_gpus,
)
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


def test_trailer_counts_the_seconds_the_job_ran(tmp_path):
    """A 0.6 s job rounds to at least 1 s, and to no more than the whole dispatch took."""
    jobs = write_jobs(tmp_path / "x.jobs", {"nap": "sleep 0.6"})
    start = time.monotonic()
    dispatch(jobs, "local", 1)
    took = time.monotonic() - start
    trailer = (tmp_path / "nap.log").read_text().splitlines()[-1]
    seconds = int(trailer.removeprefix("# exit 0 after ").removesuffix(" s"))
    assert 1 <= seconds <= round(took)


def test_jobs_run_where_dispatch_was_called_and_read_no_stdin(tmp_path):
    """The job's cat must see end of file at once (not dispatch's own stdin), and pwd the caller's directory,
    not the log directory."""
    (tmp_path / "work").mkdir()
    jobs = write_jobs(tmp_path / "x.jobs", {"j": "cat; pwd"})
    out = subprocess.run(
        [sys.executable, "-m", "sertk.cli", "dispatch", str(jobs), "--log-dir", str(tmp_path / "logs")],
        cwd=tmp_path / "work",
        input="dispatch's stdin\n",
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "logs" / "j.log").read_text().splitlines()[2:-1] == [str(tmp_path / "work")]


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


def test_a_lone_job_gets_every_core_however_large_nj(tmp_path, monkeypatch):
    """--nj 2 with one job: one slot, so the job has all the cores and a thread for each."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", path_without_nvidia_smi())
    cores = sorted(os.sched_getaffinity(0))
    jobs = write_jobs(tmp_path / "x.jobs", {"only": AFFINITY_JOB})
    dispatch(jobs, "local", 2)
    assert cpus_of(tmp_path / "only.log") == set(cores)
    assert f"threads={len(cores)},{len(cores)} gpu=\n" in (tmp_path / "only.log").read_text()


def path_without_nvidia_smi() -> str:
    """PATH with bash and coreutils but no nvidia-smi (in case the machine has one)."""
    dirs = [d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "nvidia-smi").exists()]
    return os.pathsep.join(dirs)


def stub_tools(bin_dir: Path, scripts: dict[str, str]) -> Path:
    """Executable stand-ins (name -> script text) in a new ``bin_dir``, to put first on PATH."""
    bin_dir.mkdir()
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def fake_nvidia_smi(tmp_path: Path, monkeypatch, listing: str) -> None:
    """An ``nvidia-smi`` first on PATH whose ``-L`` prints ``listing``."""
    script = f'#!/usr/bin/env bash\n[ "$*" = "-L" ] || exit 2\ncat <<"EOF"\n{listing}EOF\n'
    bin_dir = stub_tools(tmp_path / "bin", {"nvidia-smi": script})
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


# nvidia-smi -L's lines: a GPU, and a MIG instance of the GPU above it (not a GPU of its own).
GPU_LINE = "GPU {}: NVIDIA A100-SXM4-40GB (UUID: GPU-{})\n"
MIG_LINE = "  MIG 3g.20gb     Device  {}: (UUID: MIG-{})\n"


def test_visible_gpus_come_from_cuda_visible_devices_else_nvidia_smi(tmp_path, monkeypatch):
    fake_nvidia_smi(
        tmp_path, monkeypatch, GPU_LINE.format(0, "a") + GPU_LINE.format(1, "b") + MIG_LINE.format(0, "c")
    )
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == ["0", "1"]  # the two "GPU " lines; the MIG line is no third GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert visible_gpus() == ["2", "5"]
    for hidden in ("", "-1"):  # both mean "no GPU", whatever nvidia-smi lists
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert visible_gpus() == [], hidden


def test_visible_gpus_number_gpus_not_lines_when_mig_lines_come_between(tmp_path, monkeypatch):
    """GPU 0 split into two MIG instances, then GPU 1: the devices are 0 and 1 (not 0 and 3)."""
    listing = (
        GPU_LINE.format(0, "a") + MIG_LINE.format(0, "b") + MIG_LINE.format(1, "c") + GPU_LINE.format(1, "d")
    )
    fake_nvidia_smi(tmp_path, monkeypatch, listing)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == ["0", "1"]


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
        ("ok\ttrue\na b\ttrue\n", "x.jobs:2: job name 'a b'"),  # a valid start is not a valid name
        ("# nothing\n", "x.jobs: no jobs"),
    ],
)
def test_bad_jobs_files_fail_in_one_line(tmp_path, text, message):
    (tmp_path / "x.jobs").write_text(text)
    with pytest.raises(SertkError, match=message.replace("(", r"\(")):
        read_jobs(tmp_path / "x.jobs")


@pytest.mark.parametrize(
    "engine, nj, gpus_per_job, message",
    [
        ("ssh", 1, 1, "--cmd ssh: unknown engine (known: local, slurm)"),
        ("local", 0, 1, "--nj 0: need at least one job at a time"),
        ("local", 1, 0, "--gpus-per-job 0: need at least one"),
    ],
)
def test_dispatch_refuses_unknown_engines_and_zero_counts(tmp_path, engine, nj, gpus_per_job, message):
    jobs = write_jobs(tmp_path / "x.jobs", {"a": f"touch {tmp_path / 'ran'}"})
    with pytest.raises(SertkError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dispatch(jobs, engine, nj, gpus_per_job=gpus_per_job)
    assert not (tmp_path / "ran").exists()


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


def test_sbatch_leaves_unset_options_to_the_cluster(tmp_path):
    """The defaults: no --partition, --mem or --gres (the cluster's defaults), 1 CPU, 4 hours."""
    words = sbatch_command(SlurmConfig(), 3, 2, tmp_path / "x.slurm.sh", tmp_path, "sertk-x")
    assert words == [
        "sbatch",
        "--parsable",
        "--array=0-2%2",
        "--job-name=sertk-x",
        f"--output={tmp_path}/slurm-%A_%a.out",
        f"--chdir={Path.cwd()}",
        "--cpus-per-task=1",
        "--time=4:00:00",
        str(tmp_path / "x.slurm.sh"),
    ]


def test_slurm_task_i_runs_job_i_like_a_local_job(tmp_path):
    """Task 1 of the array script runs job 1 only: its log is rewritten (a stale success goes), holds stdout
    and stderr, SLURM_CPUS_PER_TASK threads and the work dir, no stdin; the task exits with the job's code."""
    work, logs = tmp_path / "work", tmp_path / "logs"
    work.mkdir()
    (logs / "v").mkdir(parents=True)
    (logs / "v" / "b.log").write_text("# old run\n# exit 0 after 1 s\n")
    command = "cat; echo out; echo err >&2; echo threads=$OMP_NUM_THREADS,$MKL_NUM_THREADS; pwd; exit 5"
    script = tmp_path / "x.slurm.sh"
    script.write_text(slurm_script([Job("a", "echo a"), Job("v/b", command)], logs, work))
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", SLURM_CPUS_PER_TASK="3")
    out = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, input="task stdin\n", capture_output=True, text=True, env=env
    )
    assert out.returncode == 5 and out.stdout == out.stderr == ""
    lines = (logs / "v" / "b.log").read_text().splitlines()
    assert lines[0] == f"# {command}" and lines[1].startswith("# host ")
    assert lines[2:6] == ["out", "err", "threads=3,3", str(work)]
    assert lines[6].startswith("# exit 5 after ") and len(lines) == 7
    assert not (logs / "a.log").exists()


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
    # The fake sbatch runs every task before it returns, so the fake squeue lists none.
    bin_dir = stub_tools(tmp_path / "bin", {"sbatch": FAKE_SBATCH, "squeue": FAKE_SQUEUE})
    env = dict(
        os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_SBATCH_ARGS=str(tmp_path / "args")
    )
    out = run_slurm_jobs(tmp_path, env)
    check_slurm_run(tmp_path, out)
    args = (tmp_path / "args").read_text().splitlines()
    assert "--array=0-2%2" in args and f"--chdir={tmp_path / 'work'}" in args
    assert "--comment=sertk" in args and "--time=0:05:00" in args and args[-1] == str(tmp_path / "x.slurm.sh")


def fake_slurm(tmp_path: Path, monkeypatch, sbatch: str, squeue: str) -> Path:
    """sbatch and squeue stand-ins first on PATH; returns the file sbatch records its arguments in."""
    bin_dir = stub_tools(
        tmp_path / "bin",
        {tool: f"#!/usr/bin/env bash\n{body}\n" for tool, body in (("sbatch", sbatch), ("squeue", squeue))},
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir / "args"


def test_slurm_tasks_that_never_ran_fail_even_over_old_logs(tmp_path, monkeypatch):
    """A submitted array whose task never ran (cancelled, node lost) wrote no trailer: the successful log of
    an earlier run must not count, and the job fails. sbatch answers "ID;cluster" on a federated cluster;
    squeue must be asked about the ID."""
    args = fake_slurm(
        tmp_path,
        monkeypatch,
        sbatch=f'printf "%s\\n" "$@" > {tmp_path / "bin" / "args"}; echo "42;cluster"',
        squeue='[ "$*" = "-h -r -j 42 -o %i" ] || { echo "unexpected $*" >&2; exit 2; }',
    )
    jobs = write_jobs(tmp_path / "x.jobs", {"a": "true"})
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("# true\n# exit 0 after 1 s\n")
    (tmp_path / "slurm.yaml").write_text("partition: gpu\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SertkError, match=r"x.jobs: 1 of 1 jobs failed: a \(rerun"):
        dispatch(jobs, "slurm", 1, log_dir=tmp_path / "logs", slurm_config=tmp_path / "slurm.yaml")
    words = args.read_text().splitlines()
    assert "--partition=gpu" in words and "--job-name=sertk-x" in words
    assert f"--output={tmp_path}/slurm-%A_%a.out" in words  # beside the jobs file, not in --log-dir


def test_slurm_engine_without_sbatch_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither sbatch nor squeue
    jobs = write_jobs(tmp_path / "x.jobs", {"a": "true"})
    with pytest.raises(SertkError, match=r"--cmd slurm: sbatch not found on PATH"):
        dispatch(jobs, "slurm", 1)


def test_sbatch_failure_names_the_script_and_sbatch_last_word(tmp_path, monkeypatch):
    fake_slurm(
        tmp_path,
        monkeypatch,
        sbatch='echo "sbatch: warning: no --mem" >&2; echo "sbatch: error: invalid partition specified" >&2; exit 1',
        squeue="exit 3",
    )
    jobs = write_jobs(tmp_path / "x.jobs", {"a": "true"})
    script = tmp_path / "x.slurm.sh"
    with pytest.raises(
        SertkError,
        match=re.escape(f"{script}: sbatch failed: sbatch: error: invalid partition specified") + "$",
    ):
        dispatch(jobs, "slurm", 1)


@pytest.mark.parametrize(
    "squeue, queued",
    [
        ('echo "42_1"', True),  # a task still listed
        ("exit 0", False),  # squeue -h lists nothing: all tasks done
        ('echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1', False),  # forgotten: done
    ],
)
def test_array_is_queued_while_squeue_lists_a_task(tmp_path, monkeypatch, squeue, queued):
    fake_slurm(tmp_path, monkeypatch, sbatch="exit 3", squeue=squeue)
    assert array_queued("42") is queued


def test_squeue_failing_otherwise_is_an_error_not_a_finished_array(tmp_path, monkeypatch):
    fake_slurm(
        tmp_path,
        monkeypatch,
        sbatch="exit 3",
        squeue='echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1',
    )
    with pytest.raises(SertkError, match=r"squeue -j 42 failed: slurm_load_jobs error: Unable to contact"):
        array_queued("42")


@pytest.mark.skipif(slurm.missing_reason() is not None, reason=str(slurm.missing_reason()))
def test_slurm_engine_on_a_real_single_node_cluster(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("jobs")
    with slurm.cluster(tmp_path_factory.mktemp("slurm")) as env:
        out = run_slurm_jobs(tmp_path, env)
    check_slurm_run(tmp_path, out)
    assert list(tmp_path.glob("slurm-*_2.out")), "sbatch's own output files go beside the jobs file"
