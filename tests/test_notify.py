"""Webhooks and hooks, with real parts: an HTTP server on 127.0.0.1 started here, the CLI as a
process, the demo release with one failing host."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import copy_demo, current, fail_orders_on, journal_rows, run, write

TOKEN = "tok-planted-4711"  # SHOP_TOKEN's value: no body, log or output may show it
PATH_SECRET = "p4th-s3cret"  # a webhook URL's ${HOOK_PATH}: the URL's path is masked in logs


class Hook:
    """A webhook receiver on a free port: records each POST; answers `status`, or hangs."""

    def __init__(self, status: int = 200, hang: bool = False) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.raw: list[bytes] = []
        self.hangs = threading.Event()  # set at teardown: a hanging handler lets go
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.raw.append(data)
                hook.paths.append(self.path)
                hook.bodies.append(json.loads(data))
                if hang:
                    hook.hangs.wait(30)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[str]:
        return [b["event"] for b in self.bodies]

    def close(self) -> None:
        self.hangs.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks_started():
    started: list[Hook] = []

    def start(**kw) -> Hook:
        started.append(Hook(**kw))
        return started[-1]

    yield start
    for h in started:
        h.close()


def settings(root: Path, notify: list[dict], hooks: dict | None = None) -> None:
    import yaml

    write(root, {"services.d/release.yaml": yaml.safe_dump({"notify": notify, "hooks": hooks or {}})})


def leak_token(root: Path) -> None:
    """orders' deploy prints SHOP_TOKEN on stderr, on every host."""
    path = root / "services.d" / "orders.yaml"
    path.write_text(path.read_text().replace("  set -e\n", '  set -e\n  echo "token is $SHOP_TOKEN" >&2\n', 1))


ENV = {"SHOP_TOKEN": TOKEN, "HOOK_PATH": PATH_SECRET}


def test_webhook_bodies_for_a_failed_release_and_its_revert(tmp_path: Path, hooks_started) -> None:
    demo = copy_demo(tmp_path / "demo")
    fail_orders_on(demo, "app2", "v2.5")
    leak_token(demo)
    hook = hooks_started()
    only_ends = hooks_started()
    settings(demo, [{"url": hook.url + "/slack/${HOOK_PATH}"},
                    {"url": only_ends.url, "events": ["failed", "reverted"]}])

    failed = run("apply", "v2.5", cwd=demo, env=ENV, check=1)
    run("revert", "-y", cwd=demo, env=ENV, check=0)

    assert hook.events() == ["started", "failed", "reverted"]
    assert only_ends.events() == ["failed", "reverted"]
    assert set(hook.paths) == {f"/slack/{PATH_SECRET}"}  # ${HOOK_PATH} resolved when sent
    started, fail, reverted = hook.bodies
    assert (started["release"], started["state"], started["failed"]) == ("v2.5", "in_progress", [])
    assert (fail["release"], fail["state"], fail["phase"]) == ("v2.5", "failed", "apply")
    # Every failed step is named, as the journal has them, with its exit code and stderr tail.
    journal_failed = journal_rows(demo, "select node, host, exit_code from steps where status='failed'")
    assert [(f["node"], f["host"], f["exit_code"]) for f in fail["failed"]] == journal_failed == [("orders", "app2", 3)]
    assert "orders broke on app2" in fail["failed"][0]["stderr_tail"]
    assert fail["text"].startswith(":x: release v2.5 failed: orders@app2 exit 3: orders broke on app2")
    assert (reverted["event"], reverted["state"], reverted["phase"], reverted["failed"]) == \
        ("reverted", "reverted", "revert", [])
    assert "reverted" in reverted["text"]
    # The planted secret reached the stderr tail masked, and nowhere else.
    assert "token is ***" in fail["failed"][0]["stderr_tail"]
    logs = "".join(p.read_text() for p in (demo / ".release" / "logs").glob("*.jsonl"))
    for where in [*hook.raw, *only_ends.raw, failed.stdout.encode(), failed.stderr.encode(), logs.encode()]:
        assert TOKEN.encode() not in where


@pytest.mark.slow
def test_a_webhook_down_hanging_or_failing_changes_nothing(tmp_path: Path, hooks_started) -> None:
    quiet = copy_demo(tmp_path / "quiet")
    t0 = time.monotonic()
    run("apply", "v2.5", cwd=quiet, check=0)
    baseline = time.monotonic() - t0

    demo = copy_demo(tmp_path / "demo")
    hang, error = hooks_started(hang=True), hooks_started(status=500)
    settings(demo, [{"url": hang.url + "/${HOOK_PATH}", "timeout": 1},
                    {"url": error.url + "/${HOOK_PATH}", "timeout": 1},
                    {"url": "http://127.0.0.1:9/${HOOK_PATH}", "timeout": 1}])  # nothing listens there
    t0 = time.monotonic()
    proc = run("apply", "v2.5", cwd=demo, env=ENV, check=0)
    took = time.monotonic() - t0

    assert "applied" in proc.stdout
    assert all(current(demo, h, "orders") == "v2.5" for h in ("app1", "app2"))
    # At most one timeout (1 s) longer than the same release without webhooks, loosely.
    assert took < baseline + 1 + 3, (took, baseline)
    assert error.events().count("started") == 3  # retried: 3 attempts
    assert hang.events()[:1] == ["started"]  # `applied` only after it, if its turn came in time
    failures = [json.loads(line) for p in (demo / ".release" / "logs").glob("*.jsonl")
                for line in p.read_text().splitlines() if '"notify.failed"' in line]
    assert {f["url"] for f in failures} == {f"{hang.url}/***", f"{error.url}/***", "http://127.0.0.1:9/***"}
    assert "notify.failed" in proc.stderr
    assert PATH_SECRET not in proc.stderr + proc.stdout + json.dumps(failures)


def test_a_failing_pre_apply_hook_changes_nothing(tmp_path: Path, hooks_started) -> None:
    demo = copy_demo(tmp_path / "demo")
    hook = hooks_started()
    settings(demo, [{"url": hook.url}], {"pre_apply": 'echo "frozen until $RELEASE_NAME is signed off" >&2; exit 4'})

    proc = run("apply", "v2.5", cwd=demo, check=1)

    assert "pre_apply" in proc.stderr and "frozen until v2.5 is signed off" in proc.stderr
    assert journal_rows(demo, "select count(*) from releases") == [(0,)]
    assert not (demo / ".release" / "hosts").exists()  # no host touched
    assert not (demo / ".release" / "accounts.db").exists()  # no database migrated
    assert hook.bodies == []
    st = json.loads(run("status", "--json", cwd=demo, check=0).stdout)
    assert st["release"] is None


@pytest.mark.slow
def test_post_apply_and_on_failure_hooks_see_the_outcome(tmp_path: Path) -> None:
    demo = copy_demo(tmp_path / "demo")
    fail_orders_on(demo, "app2", "v2.5")
    settings(demo, [], {"pre_apply": "echo $RELEASE_NAME $RELEASE_CHANGES > pre.txt",
                        "post_apply": "echo $RELEASE_NAME $RELEASE_STATE > post.txt",
                        "on_failure": "env | grep ^RELEASE_ > failure.txt; exit 9"})

    run("apply", "v2.4", cwd=demo, check=0)
    assert (demo / "post.txt").read_text().split() == ["v2.4", "applied"]
    assert "orders" in (demo / "pre.txt").read_text()
    assert not (demo / "failure.txt").exists()

    proc = run("apply", "v2.5", cwd=demo, check=1)  # the on_failure hook's exit 9 changes nothing
    env = dict(line.split("=", 1) for line in (demo / "failure.txt").read_text().splitlines())
    assert env["RELEASE_NAME"] == "v2.5"
    assert env["RELEASE_STATE"] == "failed"
    assert env["RELEASE_EVENT"] == "failed"
    assert env["RELEASE_FAILED"] == "orders@app2"
    assert "hook.failed" in proc.stderr
    assert json.loads(run("status", "--json", cwd=demo, check=0).stdout)["state"] == "failed"
