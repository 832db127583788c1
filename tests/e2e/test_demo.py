"""``make demo``, the first command the README gives: it must run end to end and say so.

It starts its own sandbox and a throwaway SQLite Airflow under ``.tmp/demo/`` (about 80 s on 2 cores).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_make_demo() -> None:
    # The Makefile's own target, with this interpreter and without the install step (the test's
    # environment is already installed).
    if shutil.which("make") is not None:
        command = ["make", "--no-print-directory", "demo", f"PY={sys.executable}", "STAMP="]
    else:  # what the target runs
        command = [sys.executable, "-m", "demo"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)])}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "=== Round 1: airflow dags test" in out and "=== Round 2: airflow dags test" in out
    assert "members resolved" in out and "Demo succeeded in" in out
    # The second round writes nothing: add-only and idempotent, for both targets, groups included.
    assert out.rstrip().count("assignments): 0") == 1
    assert "account API, managed identity" in out and "created in the account" in out
    assert "mirrored groups: created Data Engineers, Data Scientists" in out
    assert "service principals: 1 in the groups, added 0a6f2a13-c15d-5cce-a92e-8d98ae5df6f7" in out
