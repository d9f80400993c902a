"""``sertk`` with tests/ddp_toys.py's archs and hooks installed in each rank, for tests/test_ddp.py.

The launching process (``--nproc 2`` outside a job) only starts and waits for the ranks, so it imports
neither torch nor the test archs.
"""

from __future__ import annotations

import sys

from sertk.train.launch import in_distributed_job

if __name__ == "__main__":
    if in_distributed_job():
        import ddp_toys

        ddp_toys.install()
    from sertk.cli import main

    sys.argv[0] = "sertk"
    main()
