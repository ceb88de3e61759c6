"""The benchmark command keeps working: `python -m bench` on its smallest settings writes a
results file. Speed is measured by the benchmark, never asserted here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fleet import _find_sshd

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.ssh, pytest.mark.e2e]


@pytest.mark.timeout(900)
def test_bench_runs_on_its_smallest_settings(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux") or _find_sshd() is None or os.geteuid() != 0:
        pytest.skip("the benchmark's sshd fleet needs Linux, OpenSSH's sshd and root")
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--hosts", "2", "--runs", "1", "--warmup", "0",
         "--workloads", "a,d", "--plan-sizes", "20,80", "--no-ansible", "--no-pyinfra", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    for heading in ("## (a) even steps", "## (d) plan only", "## Start-up"):
        assert heading in text
    # Each tool that ran has a measured wall time; those left out say why.
    assert re.search(r"^\| `release apply` \(CLI\) \| \d+\.\d+ s \|", text, re.M), text
    assert re.search(r"^\| floor: minimal asyncssh walker \| \d+\.\d+ s \|", text, re.M), text
    assert "not run (--no-ansible)" in text and "not run (--no-pyinfra)" in text
    assert re.search(r"^\| 80 \| \d+\.\d+ s", text, re.M), text
    assert "failed" not in text, text
