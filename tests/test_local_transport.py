"""The local transport under a terminal's Ctrl-C: commands it starts must never die of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# A stand-in for the tool: it handles SIGINT as `release` does (an asyncio handler) and keeps
# spawning short commands, so that many SIGINTs land just as a command is being started.
TOOL = textwrap.dedent("""
    import asyncio, json, signal, sys
    from pathlib import Path
    from orchestrator.transports.base import Command
    from orchestrator.transports.local import LocalTransport

    async def main() -> None:
        seen = 0
        def on_sigint() -> None:
            nonlocal seen
            seen += 1
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, on_sigint)
        host = LocalTransport("h", Path(sys.argv[1]), Path(sys.argv[1]))
        print("ready", flush=True)
        results = []
        for _ in range(40):
            batch = [host.run(Command("sleep 0.01; echo ok", timeout=10)) for _ in range(8)]
            results += await asyncio.gather(*batch)
        print(json.dumps({"sigints": seen, "codes": [r.exit_code for r in results],
                          "outs": sorted({r.stdout.strip() for r in results})}), flush=True)

    asyncio.run(main())
""")


@pytest.mark.slow
def test_ctrl_c_storm_never_kills_a_starting_command(tmp_path: Path) -> None:
    script = tmp_path / "tool.py"
    script.write_text(TOOL)
    # Its own process group, as a terminal's foreground job: SIGINT goes to the whole group.
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "host")], start_new_session=True,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        while proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                break
            time.sleep(0.003)
        # Its report was flushed before a late SIGINT may have ended it at exit.
        report = json.loads(proc.stdout.read().strip().splitlines()[0])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert report["sigints"] > 20  # the storm really hit the tool while it was spawning
    assert report["codes"] == [0] * 320
    assert report["outs"] == ["ok"]
