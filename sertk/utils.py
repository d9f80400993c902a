"""Small shared helpers: atomic writes, logging to a rich console, run environment."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` only if the block finishes.

    An interrupted stage therefore never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()


def publish_dir(tmp: str | Path, out: str | Path, owned: Callable[[Path], bool]) -> None:
    """Rename the finished directory ``tmp`` onto ``out``, replacing an ``out`` that sertk wrote itself.

    ``out`` may be absent, empty, or hold only entries for which ``owned(entry)`` is true (what this
    command writes there); anything else is the user's, and then nothing is touched: SertkError naming it.
    """
    tmp, out = Path(tmp), Path(out)
    if out.exists() or out.is_symlink():
        check_replaceable(out, owned)
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)


def check_replaceable(out: str | Path, owned: Callable[[Path], bool]) -> None:
    """SertkError unless ``out`` is absent, or a directory holding only what ``owned`` accepts.

    Called before a command starts its work, so that a refusal costs nothing, and again by ``publish_dir``.
    """
    from sertk.errors import SertkError

    out = Path(out)
    if not (out.exists() or out.is_symlink()):
        return
    if not out.is_dir():
        raise SertkError(f"{out}: exists and is not a directory; choose another output path")
    foreign = sorted(e.name for e in out.iterdir() if not owned(e))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise SertkError(
            f"{out}: exists and holds files sertk did not write ({shown}); choose another output path"
        )


def fresh_tmp_dir(out: str | Path) -> Path:
    """An empty hidden temp dir beside ``out`` (for ``publish_dir``), private to this process."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


@contextlib.contextmanager
def batch_results(
    local: Callable[[Any], Any],
    worker: Callable[[Any], Any],
    batches: list,
    nj: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> Iterator[Iterator[Any]]:
    """Yield an iterator over the results of the batches: ``local(batch)`` in this process on one torch
    thread when ``nj`` is 1, else ``worker(batch)`` in ``nj`` spawned workers (unordered; ``worker`` and
    ``initializer`` must be top-level functions). One job is one core either way. Torch's thread count is
    restored and the workers are stopped when the block ends, finished or interrupted.
    """
    import multiprocessing

    import torch

    threads = torch.get_num_threads()
    pool = None
    try:
        if nj == 1:
            torch.set_num_threads(1)
            yield (local(batch) for batch in batches)
        else:
            # spawn: workers must not inherit the parent's torch threads or open files.
            pool = multiprocessing.get_context("spawn").Pool(nj, initializer=initializer, initargs=initargs)
            yield pool.imap_unordered(worker, batches)
    finally:
        torch.set_num_threads(threads)
        if pool is not None:
            pool.terminate()
            pool.join()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file with a one-line error for a missing or corrupt file."""
    from sertk.errors import SertkError

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SertkError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise SertkError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from None


def read_experiment(exp: str | Path) -> dict[str, Any]:
    """``EXP/experiment.json`` (written by ``sertk train``): data, feats, folds, protocol, classes, ..."""
    from sertk.errors import SertkError

    path = Path(exp) / "experiment.json"
    if not path.is_file():
        raise SertkError(f"{path}: not found (run stage 5 (sertk train) first)")
    info = read_json(path)
    if not isinstance(info, dict):
        raise SertkError(f"{path}: expected a JSON mapping")
    return info


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_environment(device: str | None = None) -> dict[str, Any]:
    """What a result needs to be reproduced: git sha, versions, platform, device."""
    import numpy
    import torch

    import sertk

    env: dict[str, Any] = {
        "sertk": sertk.__version__,
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "argv": sys.argv,
        "num_threads": torch.get_num_threads(),
    }
    if device is not None:
        env["device"] = device
        if device.startswith("cuda") and torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    return env


def resolve_device(device: str):
    """``auto`` = cuda when available, else cpu; an unavailable cuda is a user error."""
    import torch

    from sertk.errors import SertkError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not device.startswith(("cpu", "cuda")):
        raise SertkError(f"--device {device}: expected auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SertkError(f"--device {device}: CUDA is not available on this machine")
    return torch.device(device)


# mallopt(3) parameter numbers (glibc's malloc.h); blocks below KEEP_BELOW bytes stay in the heap.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_BELOW = 1 << 30


def reuse_freed_memory() -> bool:
    """With ``SERTK_MALLOC=reuse`` in the environment, make glibc's malloc keep freed blocks below 1 GiB
    for reuse instead of unmapping them (mallopt(3) M_MMAP_THRESHOLD and M_TRIM_THRESHOLD).

    PyTorch takes every CPU tensor from malloc. By default glibc serves a large block with a fresh mmap
    (above a threshold it raises to at most 32 MiB) and hands the heap's free top back to the kernel, so
    a model's maps and gradients are page-faulted and zeroed again in every step. Kept, CPU training runs
    faster and holds more memory: ``tools/bench_train.py`` (crnn-att, cnn-blstm, attn-pool, 40 utts) took
    0.75x the wall time (12 vs 32 s in the kernel) at 1.9x the peak resident memory, and ``sertk infer``
    gained nothing measurable (README, Benchmarks). Hence opt-in. Returns whether it took effect: only
    with ``SERTK_MALLOC=reuse``, on glibc (not macOS, musl), and not where the user set glibc's own
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (theirs stand).
    """
    import ctypes

    from sertk.errors import SertkError

    mode = os.environ.get("SERTK_MALLOC", "glibc")
    if mode not in ("glibc", "reuse"):
        raise SertkError(f"SERTK_MALLOC={mode}: expected glibc (the default) or reuse")
    if mode == "glibc" or any(f"MALLOC_{name}_THRESHOLD_" in os.environ for name in ("MMAP", "TRIM")):
        return False
    try:
        if os.confstr("CS_GNU_LIBC_VERSION") is None:
            return False
    except ValueError:  # the name is unknown off glibc
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    return bool(mallopt(_M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BELOW))
