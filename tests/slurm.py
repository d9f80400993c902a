"""A private single-node Slurm cluster for tests: munged, slurmctld and slurmd on localhost, all state in a
temp dir (Debian's slurm-wlm + munge packages; tools/install.sh --dev installs them when run as root)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo")


def missing_reason() -> str | None:
    """Why no cluster can start here (one line), or None."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"Slurm test cluster: {', '.join(missing)} not installed (tools/install.sh --dev, as root on Debian)"
    if os.geteuid() != 0:
        return "Slurm test cluster: slurmd must run as root (SlurmdUser=root) to start jobs"
    return None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def write_conf(root: Path, cpus: int) -> Path:
    """slurm.conf of one node (localhost, ``cpus`` CPUs) and one default partition ``debug``."""
    ctld_port, slurmd_port = _free_ports(2)
    lines = {
        "ClusterName": "sertk-test",
        "SlurmctldHost": "localhost",
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        "AuthInfo": f"socket={root / 'munge.sock'}",
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "SlurmctldPort": ctld_port,
        "SlurmdPort": slurmd_port,
        "StateSaveLocation": root / "state",
        "SlurmdSpoolDir": root / "spool",
        "SlurmctldPidFile": root / "slurmctld.pid",
        "SlurmdPidFile": root / "slurmd.pid",
        "SlurmctldLogFile": root / "slurmctld.log",
        "SlurmdLogFile": root / "slurmd.log",
        # No cgroups, no accounting daemon: what a container without systemd can run.
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "AccountingStorageType": "accounting_storage/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core",
        "MpiDefault": "none",
        "ReturnToService": 2,
    }
    text = "".join(f"{k}={v}\n" for k, v in lines.items())
    text += f"NodeName=localhost CPUs={cpus} RealMemory=1000 State=UNKNOWN\n"
    text += "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n"
    (root / "state").mkdir()
    (root / "spool").mkdir()
    conf = root / "slurm.conf"
    conf.write_text(text)
    return conf


def _stop(pid_file: Path) -> None:
    """SIGTERM the daemon of ``pid_file`` and wait (up to 10 s) until it is gone."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)


@contextmanager
def cluster(root: Path, cpus: int = 2, timeout: float = 30.0) -> Iterator[dict]:
    """Start munged, slurmctld and slurmd under ``root``; yield the env that points sbatch at them."""
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = write_conf(root, cpus)
    env = dict(os.environ, SLURM_CONF=str(conf))
    munge = [f"--key-file={key}", f"--socket={root / 'munge.sock'}", f"--pid-file={root / 'munged.pid'}"]
    munge += [f"--log-file={root / 'munged.log'}", f"--seed-file={root / 'munged.seed'}"]
    daemons = []
    try:
        for command, pid_file in (
            (["munged", "--force", *munge], root / "munged.pid"),
            (["slurmctld"], root / "slurmctld.pid"),
            (["slurmd"], root / "slurmd.pid"),
        ):
            subprocess.run(command, env=env, check=True, capture_output=True, timeout=timeout)
            daemons.append(pid_file)
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            state = out.stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        else:
            logs = (root / "slurmd.log").read_text()[-500:] if (root / "slurmd.log").exists() else ""
            pytest.fail(f"Slurm test cluster: node not idle after {timeout} s (sinfo: {state!r}) {logs}")
        yield env
    finally:
        if shutil.which("scancel"):
            subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True)
        for pid_file in reversed(daemons):
            _stop(pid_file)
