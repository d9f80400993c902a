"""``sertk dispatch``: run the jobs of a jobs file N at a time, on this machine or as one Slurm job array.

A jobs file has one job a line, ``NAME<TAB>shell command`` (blank lines and ``#`` lines are skipped); the
command runs with ``bash -c`` in the directory dispatch was called from. Job ``NAME`` logs its stdout and
stderr to ``LOG_DIR/NAME.log`` (NAME may hold ``/``: ``variant/log/fold1``), between a header (command,
host, start time) and a trailer ``# exit CODE after S s``; the trailer is what decides whether a job
succeeded, for both engines. Dispatch never decides what is already done: the jobs themselves skip outputs
whose provenance records match, so rerunning a jobs file redoes only what failed (docs/architecture.md).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sertk.config import from_dict, read_yaml
from sertk.errors import SertkError
from sertk.utils import atomic_write_text, console

ENGINES = ("local", "slurm")
_NAME = re.compile(r"[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*")
_TRAILER = re.compile(r"^# exit (\d+) after (\d+) s$")


@dataclass
class Job:
    """One line of a jobs file."""

    name: str
    command: str


@dataclass
class SlurmConfig:
    """conf/slurm.yaml: the sbatch options of every job of an array (one job = one array task)."""

    partition: str | None = None  # None: the cluster's default partition
    gpus_per_job: int = 0  # --gres=gpu:N
    cpus_per_task: int = 1
    time: str = "4:00:00"  # --time, Slurm's [D-]HH:MM:SS
    mem: str | None = None  # --mem, e.g. 16G; None: the partition's default
    extra_args: list[str] = field(default_factory=list)  # more sbatch options, e.g. [--qos=short]


def read_jobs(path: Path) -> list[Job]:
    """The jobs of ``path``; a malformed line, a bad or repeated name is a one-line error naming the line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise SertkError(f"{path}: cannot read the jobs file ({err.strerror})") from None
    jobs: list[Job] = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, command = line.partition("\t")
        where = f"{path}:{number}"
        if not sep or not command.strip():
            raise SertkError(f"{where}: expected NAME<TAB>command")
        if not _NAME.fullmatch(name) or ".." in name.split("/"):
            raise SertkError(f"{where}: job name {name!r}: use letters, digits, _ . + - and / between parts")
        if any(j.name == name for j in jobs):
            raise SertkError(f"{where}: job name {name} is used twice (each job needs its own log)")
        jobs.append(Job(name, command))
    if not jobs:
        raise SertkError(f"{path}: no jobs")
    return jobs


def log_path(log_dir: Path, job: Job) -> Path:
    return log_dir / f"{job.name}.log"


def job_exit(log: Path) -> int | None:
    """The exit code in a log's trailer; None when there is none (the job never ran or was killed)."""
    try:  # the trailer is the last line: read the tail only (the slurm engine polls every log each second)
        with log.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 256))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    match = _TRAILER.match(lines[-1]) if lines else None
    return int(match.group(1)) if match else None


def visible_gpus() -> list[str]:
    """CUDA device ids this process may use: CUDA_VISIBLE_DEVICES if set, else ``nvidia-smi -L``'s (no torch)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    # Only the "GPU i:" lines count: MIG instances are listed as indented lines between them.
    gpus = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
    return [str(i) for i in range(len(gpus))]


def core_slots(cores: list[int], nj: int) -> list[list[int]]:
    """Split ``cores`` into ``nj`` disjoint equal shares (one core each, shared round robin, if too few)."""
    share = len(cores) // nj
    if share == 0:
        return [[cores[i % len(cores)]] for i in range(nj)]
    return [cores[i * share : (i + 1) * share] for i in range(nj)]


def _header(job: Job) -> str:
    return (
        f"# {job.command}\n# host {socket.gethostname()}, started {datetime.now().astimezone().isoformat()}\n"
    )


def gpu_slots(gpus: list[str], nj: int, per_job: int) -> list[str | None]:
    """Slot i's CUDA_VISIBLE_DEVICES: ``per_job`` consecutive GPUs, round robin (None: no GPU visible)."""
    if not gpus:
        return [None] * nj
    return [",".join(gpus[(i * per_job + k) % len(gpus)] for k in range(per_job)) for i in range(nj)]


def run_local(jobs: list[Job], nj: int, log_dir: Path, gpus_per_job: int = 1) -> None:
    """At most ``nj`` jobs at a time; job slot i is pinned to its share of the cores and its GPUs, if any."""
    nj = max(1, min(nj, len(jobs)))
    slots = core_slots(sorted(os.sched_getaffinity(0)), nj)
    gpus = gpu_slots(visible_gpus(), nj, gpus_per_job)
    free = list(range(nj))
    pending = list(jobs)
    running: dict[int, tuple[subprocess.Popen, float, object]] = {}
    columns = (
        TextColumn("dispatch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("jobs"),
        TimeElapsedColumn(),
    )
    # No refresh thread (auto_refresh off): the preexec_fn of a fork is only safe without other threads.
    with Progress(*columns, console=console, transient=True, auto_refresh=False) as bar:
        task = bar.add_task("jobs", total=len(jobs))
        while pending or running:
            while pending and free:
                slot, job = free.pop(0), pending.pop(0)
                running[slot] = _start(job, slots[slot], gpus[slot], log_dir)
            time.sleep(0.1)
            for slot, (proc, start, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                # A job killed by signal S reads as exit 128 + S, as bash and Slurm's script report it.
                code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
                log.write(f"# exit {code} after {round(time.monotonic() - start)} s\n")
                log.close()
                del running[slot]
                free.append(slot)
                bar.advance(task)
            bar.refresh()


def _start(job: Job, cores: list[int], gpu: str | None, log_dir: Path) -> tuple:
    """Start one job under ``bash -c`` with its header written, pinned to ``cores`` (and ``gpu``)."""
    log = log_path(log_dir, job)
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("w")
    handle.write(_header(job))
    handle.flush()
    env = dict(os.environ, OMP_NUM_THREADS=str(len(cores)), MKL_NUM_THREADS=str(len(cores)))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    proc = subprocess.Popen(
        ["bash", "-c", job.command],
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),  # before exec: every thread it starts inherits it
    )
    return proc, time.monotonic(), handle


def slurm_script(jobs: list[Job], log_dir: Path, workdir: Path) -> str:
    """The array job's script: task i runs job i under bash -c with the same log header and trailer."""
    names = " ".join(shlex.quote(j.name) for j in jobs)
    commands = "\n".join(f"  {shlex.quote(j.command)}" for j in jobs)
    return f"""#!/usr/bin/env bash
# Written by sertk dispatch: Slurm array task i runs job i of this list.
set -uo pipefail
names=({names})
commands=(
{commands}
)
i=${{SLURM_ARRAY_TASK_ID:?run me as a Slurm array task}}
log={shlex.quote(str(log_dir))}/${{names[i]}}.log
mkdir -p "$(dirname "${{log}}")"
printf '# %s\\n# host %s, started %s\\n' "${{commands[i]}}" "$(hostname)" "$(date -Iseconds)" > "${{log}}"
export OMP_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-1}} MKL_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-1}}
cd {shlex.quote(str(workdir))} || exit 1
start=${{SECONDS}}
bash -c "${{commands[i]}}" < /dev/null >> "${{log}}" 2>&1
code=$?
echo "# exit ${{code}} after $((SECONDS - start)) s" >> "${{log}}"
exit "${{code}}"
"""


def sbatch_command(
    cfg: SlurmConfig, n_jobs: int, nj: int, script: Path, out_dir: Path, name: str
) -> list[str]:
    """``sbatch`` of one array of ``n_jobs`` tasks, at most ``nj`` running at a time (Slurm's own per-task
    output, which holds only what fails before the job's log opens, goes to ``out_dir``)."""
    words = ["sbatch", "--parsable", f"--array=0-{n_jobs - 1}%{nj}", f"--job-name={name}"]
    words += [f"--output={out_dir}/slurm-%A_%a.out", f"--chdir={Path.cwd()}"]
    words += [f"--cpus-per-task={cfg.cpus_per_task}", f"--time={cfg.time}"]
    if cfg.partition:
        words.append(f"--partition={cfg.partition}")
    if cfg.mem:
        words.append(f"--mem={cfg.mem}")
    if cfg.gpus_per_job:
        words.append(f"--gres=gpu:{cfg.gpus_per_job}")
    return [*words, *cfg.extra_args, str(script)]


def run_slurm(jobs: list[Job], nj: int, log_dir: Path, cfg: SlurmConfig, jobs_file: Path) -> None:
    """Submit the jobs as one array, then wait until squeue no longer lists it.

    Polling squeue every second rather than ``sbatch --wait``: sbatch's own wait doubles its sleep up to
    32 s, which adds up to half a minute to every stage.
    """
    for tool in ("sbatch", "squeue"):
        if shutil.which(tool) is None:
            raise SertkError(f"--cmd slurm: {tool} not found on PATH (is this a Slurm login node?)")
    script = jobs_file.with_suffix(".slurm.sh")
    atomic_write_text(script, slurm_script(jobs, log_dir.resolve(), Path.cwd()))
    for job in jobs:  # a log from an earlier run must not pass for this run's result
        log_path(log_dir, job).unlink(missing_ok=True)
    command = sbatch_command(
        cfg, len(jobs), nj, script, jobs_file.parent.resolve(), f"sertk-{jobs_file.stem}"
    )
    console.print(
        f"dispatch: {len(jobs)} jobs as one Slurm array, at most {nj} at a time: {shlex.join(command)}"
    )
    out = subprocess.run(command, capture_output=True, text=True)
    job_id = out.stdout.strip().split(";")[0]  # --parsable: "ID" or "ID;cluster"
    if out.returncode != 0 or not job_id:
        message = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise SertkError(f"{script}: sbatch failed: {message}")
    with Progress(
        TextColumn("slurm"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("jobs", total=len(jobs))
        while array_queued(job_id):
            bar.update(task, completed=sum(job_exit(log_path(log_dir, j)) is not None for j in jobs))
            time.sleep(1.0)


def array_queued(job_id: str) -> bool:
    """Whether squeue still lists a task of array ``job_id`` (pending or running)."""
    out = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%i"], capture_output=True, text=True)
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # finished long enough ago for slurmctld to forget it
            return False
        raise SertkError(
            f"squeue -j {job_id} failed: {(out.stderr.strip().splitlines() or ['no output'])[-1]}"
        )
    return bool(out.stdout.strip())


def dispatch(
    jobs_file: Path,
    engine: str,
    nj: int,
    log_dir: Path | None = None,
    slurm_config: Path | None = None,
    gpus_per_job: int = 1,
) -> list[tuple[Job, Path]]:
    """Run every job of ``jobs_file``; a failure of any job is one SertkError naming each failed job's log."""
    if engine not in ENGINES:
        raise SertkError(f"--cmd {engine}: unknown engine (known: {', '.join(ENGINES)})")
    if nj < 1:
        raise SertkError(f"--nj {nj}: need at least one job at a time")
    if gpus_per_job < 1:
        raise SertkError(f"--gpus-per-job {gpus_per_job}: need at least one")
    jobs_file = Path(jobs_file)
    jobs = read_jobs(jobs_file)
    log_dir = Path(log_dir) if log_dir is not None else jobs_file.parent
    if engine == "local":
        run_local(jobs, nj, log_dir, gpus_per_job)
    else:
        cfg = (
            from_dict(SlurmConfig, read_yaml(slurm_config), where=str(slurm_config))
            if slurm_config
            else SlurmConfig()
        )
        run_slurm(jobs, nj, log_dir, cfg, jobs_file)
    failed = [(j, log_path(log_dir, j)) for j in jobs if job_exit(log_path(log_dir, j)) != 0]
    for job, log in failed:
        code = job_exit(log)
        console.print(
            f"failed: {job.name} ({'no exit code: killed?' if code is None else f'exit {code}'}): see {log}"
        )
    if failed:
        raise SertkError(
            f"{jobs_file}: {len(failed)} of {len(jobs)} jobs failed: {', '.join(j.name for j, _ in failed)} "
            "(rerun the same command to retry them; finished jobs skip themselves)"
        )
    console.print(f"dispatch: {len(jobs)} jobs done, logs in {log_dir}")
    return [(j, log_path(log_dir, j)) for j in jobs]
