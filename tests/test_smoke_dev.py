"""Smoke test of ``questline dev`` on the embedded servers, as a newcomer runs it.

It starts the real command in its own session (like a terminal), waits for ``/readyz``, talks
GraphQL with tokens minted by ``questline token``, presses Ctrl-C (SIGINT to the process group)
and then checks that no process is left: every process it started (PostgreSQL, Redis, the API,
the Dramatiq worker and its forks, the scheduler) carries the temporary data folder in its
environment or command line, so a scan of ``/proc`` for that path finds any survivor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.dev import Supervisor

LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")

READY_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
SERVICE_VARIABLES = ("QUESTLINE_DATABASE_URL", "QUESTLINE_REDIS_URL", "QUESTLINE_BROKER_URL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processes_mentioning(marker: str) -> dict[int, str]:
    """PIDs (other than ours) whose environment or command line contains ``marker``."""
    found: dict[int, str] = {}
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in cmdline or needle in environ:
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def questline_command() -> str:
    return str(Path(sys.executable).parent / "questline")


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short path: PostgreSQL's Unix socket path must stay under ~100 characters.
    path = Path(tempfile.mkdtemp(prefix="ql-smoke-"))
    yield path
    # After a failure, do not leak what this test started (embedded servers run detached).
    for pid in processes_mentioning(str(path)):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_supervisor_kills_what_ignores_sigterm_grandchildren_included() -> None:
    supervisor = Supervisor(os.environ, stop_timeout=1.0)
    child = supervisor.start("stubborn", ["sh", "-c", "trap '' TERM; sleep 60 & sleep 60; wait"])
    time.sleep(0.3)
    started = time.monotonic()
    supervisor.stop_all()
    assert time.monotonic() - started < 5
    assert child.process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5  # the orphaned grandchild is reaped by init
    while group_exists(child.pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_exists(child.pgid)


def test_supervisor_reports_the_first_child_to_exit() -> None:
    supervisor = Supervisor(os.environ, stop_timeout=5.0)
    sleeper = supervisor.start("sleeper", ["sleep", "60"])
    supervisor.start("failing", ["sh", "-c", "exit 3"])
    try:
        exited = supervisor.wait(poll_interval=0.05)
        assert exited.name == "failing" and exited.process.returncode == 3
    finally:
        supervisor.stop_all()
    assert sleeper.process.returncode == -signal.SIGTERM
    assert not group_exists(sleeper.pgid)


@pytest.mark.slow
@LINUX_PROC
def test_dev_serves_and_leaves_no_process_behind(workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env["QUESTLINE_DATA_DIR"] = str(workdir / "data")
    marker = str(workdir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"

    with out_path.open("wb") as out, err_path.open("wb") as err:
        dev = subprocess.Popen(
            [questline_command(), "dev", "--port", str(port)],
            cwd=workdir,  # no stray .env from the repository
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )

    def logs() -> str:
        return f"stdout:\n{out_path.read_text()}\nstderr:\n{err_path.read_text()}"

    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            assert dev.poll() is None, f"questline dev exited with {dev.returncode}\n{logs()}"
            assert time.monotonic() < deadline, f"/readyz never answered 200\n{logs()}"
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)

        first = err_path.read_text().splitlines()[0]
        assert first.startswith("Questline: no URL configured, using the EMBEDDED"), logs()

        response = httpx.post(f"{base}/graphql", json={"query": "{ __typename }"}, timeout=10)
        assert response.status_code == 200
        assert response.json() == {"data": {"__typename": "Query"}}

        # The demo program was loaded: a member token for "alice" reads her own member.
        token = subprocess.run(
            [questline_command(), "token", "--member", "alice"],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        me = httpx.post(
            f"{base}/graphql",
            json={"query": "{ me { externalId displayName } }"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()
        assert me == {"data": {"me": {"externalId": "alice", "displayName": "Alice Martin"}}}

        running = processes_mentioning(marker)
        commands = " | ".join(running.values())
        for expected in ("postgres", "redis-server", "uvicorn", "dramatiq", "server.scheduler"):
            assert expected in commands, f"{expected} not found among {running}"

        os.killpg(dev.pid, signal.SIGINT)  # Ctrl-C in the terminal
        assert dev.wait(STOP_TIMEOUT) == 0, logs()
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()

    deadline = time.monotonic() + 10
    while (left := processes_mentioning(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind: {left}\n{logs()}"
