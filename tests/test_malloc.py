"""SERTK_MALLOC=reuse: a CPU tensor freed and allocated again reuses the process's pages (no fresh page
faults); every ``sertk`` command reads the variable; glibc's defaults stay unless it asks otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import sertk.cli
from sertk.errors import SertkError
from sertk.utils import reuse_freed_memory

pytestmark = pytest.mark.skipif(
    not hasattr(os, "confstr") or os.confstr("CS_GNU_LIBC_VERSION") is None, reason="glibc's malloc only"
)

# 48 MiB blocks: above the 32 MiB ceiling of glibc's own mmap threshold, so by default each one is a fresh
# mapping whose 12,288 pages fault on first touch.
FAULTS = textwrap.dedent(
    """
    import resource, sys, numpy, torch
    from sertk.utils import reuse_freed_memory
    torch.set_num_threads(1)  # one thread: no other allocation lands between a freed block and the next
    assert reuse_freed_memory() == (sys.argv[1] == "reuse")
    def touch():
        x = torch.empty(12 << 20)
        x.fill_(1.0)
        y = numpy.ones(12 << 20, dtype=numpy.float32)  # malloc'd by numpy, not torch
        return float(x[-1]) + float(y[-1])
    for _ in range(10):  # the heap grows to hold a freed block beside the next (then reuse is steady)
        touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        touch()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def minor_faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["SERTK_MALLOC"] = mode
    done = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True, env=env
    )
    return int(done.stdout.split()[-1])


def test_freed_blocks_reuse_their_pages_with_sertk_malloc_reuse():
    """Ten rounds of a 48 MiB tensor and a 48 MiB numpy array, each freed before the next: by default each
    is a fresh mapping that faults in its pages (about 20 x 12,288 faults); with SERTK_MALLOC=reuse, once
    the heap has grown to its steady size, they reuse its blocks and fault nothing. Either mallopt alone
    is not enough: the mmap threshold alone lets a freed block at the heap top be trimmed, the trim
    threshold alone leaves 48 MiB mapped afresh."""
    assert minor_faults("glibc") > 10 * 12288
    assert minor_faults("reuse") < 500


def test_every_sertk_command_reads_sertk_malloc(monkeypatch):
    """The console entry point applies the setting before running any command."""
    calls = []
    monkeypatch.setattr(sertk.cli, "reuse_freed_memory", lambda: calls.append(True))
    monkeypatch.setattr(sys, "argv", ["sertk", "--help"])
    with pytest.raises(SystemExit):
        sertk.cli.main()
    assert calls == [True]


def test_glibcs_defaults_stay_unless_asked(monkeypatch):
    """Unset or SERTK_MALLOC=glibc: nothing changes; glibc's own MALLOC_*_THRESHOLD_ variables win over
    reuse; a misspelt value is a one-line error."""
    monkeypatch.delenv("SERTK_MALLOC", raising=False)
    assert reuse_freed_memory() is False
    monkeypatch.setenv("SERTK_MALLOC", "glibc")
    assert reuse_freed_memory() is False
    monkeypatch.setenv("SERTK_MALLOC", "reuse")
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.setenv(name, "131072")
        assert reuse_freed_memory() is False
        monkeypatch.delenv(name)
    monkeypatch.setenv("SERTK_MALLOC", "resue")
    with pytest.raises(SertkError, match="SERTK_MALLOC=resue: expected glibc"):
        reuse_freed_memory()


def test_a_misspelt_sertk_malloc_is_one_line_from_the_cli():
    env = {**os.environ, "SERTK_MALLOC": "resue"}
    done = subprocess.run(
        [sys.executable, "-m", "sertk.cli", "--help"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: SERTK_MALLOC=resue: expected glibc (the default) or reuse"
    ]
