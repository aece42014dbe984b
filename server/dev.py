"""Process orchestration: ``questline dev`` and the supervisor it shares with ``worker``.

``questline dev`` runs the whole stack from one terminal: it migrates, loads the demo program
into an empty database, then runs the API, one Dramatiq worker and the scheduler as child
processes pointed at the same (possibly embedded) PostgreSQL and Redis.

Every child gets its own process group, so a Ctrl-C in the terminal reaches only this process,
which then stops the children in an orderly way: SIGTERM to each child, a grace period for its
whole group (Dramatiq's forked worker processes included) to end, SIGKILL for whatever is left.
On Linux the children also ask the kernel for SIGTERM should this process die without cleaning
up (``PR_SET_PDEATHSIG``), so even a ``kill -9`` of ``questline dev`` leaves no API running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from server.embedded import ServiceUrls, child_env

PR_SET_PDEATHSIG = 1


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived: shut down in order."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise StopRequested(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into ``StopRequested`` so that ``finally`` blocks run.

    Without this a SIGTERM would end the process on the spot and leave the embedded servers
    and the children running.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (e.g. a CLI run inside a test thread)
        return
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, _raise_stop) for signum in handled}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def signals_deferred(on_signal: Callable[[], None] = lambda: None) -> Iterator[None]:
    """While cleaning up, a further Ctrl-C must not abort the clean-up: just note it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def note(signum: int, frame: FrameType | None) -> None:
        on_signal()

    previous = {signum: signal.signal(signum, note) for signum in handled}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]

    @property
    def pgid(self) -> int:
        return self.process.pid  # leader of its own session, so its group id is its pid


class Supervisor:
    """Starts children in their own process groups and stops all of them, always."""

    def __init__(self, env: Mapping[str, str], stop_timeout: float = 15.0) -> None:
        self.env = dict(env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []

    def start(self, name: str, argv: Sequence[str]) -> Child:
        process = subprocess.Popen(
            list(argv),
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # safe: the supervisor runs no threads
        )
        child = Child(name, process)
        self.children.append(child)
        return child

    def exited(self) -> Child | None:
        """The first child that has exited, if any."""
        return next((c for c in self.children if c.process.poll() is not None), None)

    def wait(self, poll_interval: float = 0.2) -> Child:
        """Block until a child exits (a signal interrupts this with ``StopRequested``)."""
        while True:
            child = self.exited()
            if child is not None:
                return child
            time.sleep(poll_interval)

    def stop_all(self) -> None:
        """SIGTERM every child, wait up to ``stop_timeout`` for their whole process groups to
        end, then SIGKILL what is left of the groups."""
        hurry = False

        def _hurry() -> None:
            nonlocal hurry
            hurry = True

        with signals_deferred(_hurry):
            # SIGTERM to the leader only: it stops its own children (Dramatiq's worker
            # processes treat a second SIGTERM as "kill now", so they must not get two).
            for child in reversed(self.children):
                if child.process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while not hurry and time.monotonic() < deadline:
                if not any(_group_alive(c) for c in self.children):
                    break
                time.sleep(0.1)
            for child in self.children:  # whatever is left, including grandchildren
                _signal_group(child.pgid, signal.SIGKILL)
            for child in self.children:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(5)
        self.children.clear()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(child: Child) -> bool:
    """True while any process of the child's group exists."""
    child.process.poll()  # reap our own exited child first: a zombie still counts as a member
    try:
        os.killpg(child.pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- questline dev --------------------------------------------------------------------------


def api_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "server.app:create_app",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--timeout-graceful-shutdown",
        "5",  # open subscriptions must not hold the shutdown
    ]


def worker_command(
    processes: int = 1,
    threads: int = 8,
    shutdown_timeout_ms: int = 600_000,
    queues: Sequence[str] = (),
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "server.tasks_entry",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--worker-shutdown-timeout",
        str(shutdown_timeout_ms),
    ]
    if queues:
        argv += ["--queues", *queues]
    return argv


def scheduler_command() -> list[str]:
    return [sys.executable, "-m", "server.scheduler"]


def wait_until_ready(url: str, child: Child, timeout: float = 90.0) -> bool:
    """Poll ``url`` until it answers 200; False on timeout or when ``child`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    return False


def banner(host: str, port: int) -> str:
    base = f"http://{host}:{port}"
    return "\n".join(
        [
            "",
            "Questline is running:",
            f"  GraphQL API and GraphiQL  {base}/graphql",
            f"  health                    {base}/healthz   {base}/readyz",
            f"  metrics                   {base}/metrics",
            "  an admin token for GraphiQL:  .venv/bin/questline token --admin",
            "  a member token:               .venv/bin/questline token --member alice",
            "Press Ctrl-C to stop everything.",
            "",
        ]
    )


def run_dev(urls: ServiceUrls, *, host: str, port: int, seed: Callable[[], Any]) -> int:
    """Migrate, seed, run API + worker + scheduler until a signal or a child's exit.

    Returns the exit code: 0 after Ctrl-C/SIGTERM, 1 when a child stopped by itself.
    Raises ``StopRequested`` if the signal arrives before the children run (the caller's
    ``finally`` then stops the embedded servers).
    """
    from server.migrate import upgrade_head

    print("Migrating the database...", flush=True)
    upgrade_head(urls.database_url)
    seed()

    # development: webhook receivers usually run on this machine (webhooks.addresses)
    env = {"QUESTLINE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true", **child_env(urls)}
    supervisor = Supervisor(env)
    try:
        api = supervisor.start("api", api_command(host, port))
        supervisor.start(
            "worker", worker_command(processes=1, threads=4, shutdown_timeout_ms=5_000)
        )
        supervisor.start("scheduler", scheduler_command())
        if wait_until_ready(f"http://{host}:{port}/readyz", api):
            print(banner(host, port), flush=True)
        elif api.process.poll() is None:
            print(
                f"The API does not answer /readyz yet; still waiting on {host}:{port}.", flush=True
            )
        try:
            stopped = supervisor.wait()
        except StopRequested:
            print("\nStopping Questline...", flush=True)
            return 0
        print(
            f"The {stopped.name} process exited with code {stopped.process.returncode}; "
            "stopping everything.",
            file=sys.stderr,
            flush=True,
        )
        return 1
    finally:
        supervisor.stop_all()
