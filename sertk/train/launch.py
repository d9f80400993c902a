"""``sertk train --nproc N``: run the same command line as N local processes of one torch.distributed job.

Each process gets the environment torchrun would give it (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT), so the training code has one way in whether torchrun or this launcher started it. The
launcher imports no torch (it only waits); when one process fails the others are stopped and the failure is
one line, the failed process having printed its own message first.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

from sertk.errors import SertkError


def in_distributed_job() -> bool:
    """Whether torchrun (or this launcher) started this process: its rendezvous variables are set."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def free_port() -> int:
    """A TCP port nothing listens on now, for rank 0's rendezvous store."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def relaunch(nproc: int) -> None:
    """Run this process's own command line as ranks 0..nproc-1 on this machine; return when all succeeded.

    Rank 0 speaks on this terminal; the others' output is kept and shown only when one of them failed
    first (a rank that dies because rank 0 died would only repeat rank 0's story as a traceback).
    """
    if nproc < 1:
        raise SertkError(f"--nproc {nproc}: must be >= 1")
    command = [sys.executable, *sys.orig_argv[1:]]
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    base.update({"WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc)})
    # N processes each running a thread per core would oversubscribe the CPU N times (torchrun sets 1).
    base.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logs = [None] + [tempfile.TemporaryFile() for _ in range(1, nproc)]
    procs = [
        subprocess.Popen(
            command,
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=logs[r],
            stderr=subprocess.STDOUT if r else None,
        )
        for r in range(nproc)
    ]
    try:
        failed = wait_all(procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            proc.wait()
    if failed is not None:
        rank, code = failed
        if logs[rank] is not None:
            logs[rank].seek(0)
            sys.stderr.write(logs[rank].read().decode(errors="replace"))
        raise SertkError(
            f"sertk train --nproc {nproc}: rank {rank} failed (exit status {code}); others stopped"
        )


def wait_all(procs: list[subprocess.Popen]) -> tuple[int, int] | None:
    """Wait until every process exited 0 (None) or some failed: (the lowest failed rank, its exit status)."""
    while True:
        codes = [p.poll() for p in procs]
        for rank, code in enumerate(codes):
            if code not in (None, 0):
                return rank, code
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.1)
