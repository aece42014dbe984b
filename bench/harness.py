"""What the benchmarks share: a scratch database, a running API, and an HTTP load generator.

Each benchmark uses ``QUESTLINE_DATABASE_URL`` / ``QUESTLINE_REDIS_URL`` when set (else the
embedded servers), creates its own scratch database (dropped afterwards) and prints one JSON
line of figures. HTTP load comes from ``wrk`` (Debian package ``wrk``) when installed, as the
issue's reference figures do; otherwise from a small asyncio client in this process, which is
slower and says so in its output (``"load_generator": "python"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.db import plain_dsn  # noqa: E402
from server.embedded import resolve_services  # noqa: E402
from server.migrate import upgrade_head  # noqa: E402
from server.settings import Settings  # noqa: E402


@dataclass(frozen=True)
class Servers:
    database_url: str  # the scratch database
    redis_url: str


@contextlib.contextmanager
def scratch_database(server_url: str, prefix: str) -> Iterator[str]:
    """A fresh, migrated database on the PostgreSQL server of ``server_url``; dropped at exit
    (only that one). Yields its SQLAlchemy URL."""
    name = f"questline_bench_{prefix}_{secrets.token_hex(3)}"
    admin = plain_dsn(server_url)

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(drivername="postgresql+asyncpg", database=name)
    database_url = url.render_as_string(hide_password=False)
    try:
        upgrade_head(database_url)
        yield database_url
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def scratch_servers(prefix: str) -> Iterator[Servers]:
    """A scratch database (``scratch_database``) on the configured (or embedded) PostgreSQL,
    and the configured (or embedded) Redis."""
    urls = resolve_services(Settings())
    with scratch_database(urls.database_url, prefix) as database_url:
        yield Servers(database_url, urls.redis_url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_api(servers: Servers, workers: int = 2, **env: str) -> Iterator[str]:
    """``questline serve --workers N`` on a free port; yields the base URL."""
    port = free_port()
    child_env = {
        **os.environ,
        "QUESTLINE_DATABASE_URL": servers.database_url,
        "QUESTLINE_REDIS_URL": servers.redis_url,
        "QUESTLINE_LOG_LEVEL": "WARNING",
        # The benchmarks measure throughput: a few tokens send thousands of requests per
        # second, far beyond the per-token rate limits a production deployment wants.
        "QUESTLINE_RATE_LIMIT_ENABLED": "false",
        **env,
    }
    fd, log_name = tempfile.mkstemp(prefix="questline-bench-", suffix=".log")
    command = [sys.executable, "-m", "server.cli", "serve", "--port", str(port)]
    with os.fdopen(fd, "wb") as log:  # the child keeps its own copy of the handle
        process = subprocess.Popen(
            [*command, "--workers", str(workers)],
            cwd=ROOT,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"API did not start; see {log_name}")
            time.sleep(0.2)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int  # HTTP status other than 200, or any error in the GraphQL answer
    generator: str  # "wrk" or "python"
    first_error: str = ""

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def figures(self, prefix: str) -> dict[str, Any]:
        """``<prefix>_rps``, ``_p50_ms``, ``_p99_ms``, ``_errors`` and the generator."""
        return {
            f"{prefix}_rps": round(self.requests_per_s),
            f"{prefix}_p50_ms": round(self.p50_ms, 1),
            f"{prefix}_p99_ms": round(self.p99_ms, 1),
            f"{prefix}_errors": self.errors,
            "load_generator": self.generator,
        }

    def summary(self) -> dict[str, Any]:
        """Every figure, unprefixed (one operation of a mix)."""
        figures: dict[str, Any] = {
            "rps": round(self.requests_per_s, 1),
            "p50_ms": round(self.p50_ms, 1),
            "p95_ms": round(self.p95_ms, 1),
            "p99_ms": round(self.p99_ms, 1),
            "errors": self.errors,
            "requests": self.requests,
        }
        if self.first_error:
            figures["first_error"] = self.first_error[:300]
        return figures


# Each wrk thread walks the body list in order, thread k of n from k/n of the way in (with one
# thread, a list longer than the run is used at most once per body: fresh members for
# check-ins; with several, no two threads ask for the same member at once). ``setup`` and
# ``done`` run in wrk's main Lua state, ``init``/``request``/``response`` in each thread's:
# ``done`` reads the threads' error counts and first error through ``thread:get``.
# Latencies are in microseconds.
WRK_SCRIPT = r"""
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
function init(args)
  bodies, tokens, bad, sample = {}, {}, 0, ""
  local f = io.open(args[1], "r")
  for line in f:lines() do
    local tab = line:find("\t")
    table.insert(tokens, line:sub(1, tab - 1))
    table.insert(bodies, line:sub(tab + 1))
  end
  f:close()
  -- thread k of n starts k/n of the way into the list: threads never send the same body
  -- (the same member) at the same moment
  counter = math.floor((tid - 1) * #bodies / tonumber(args[2]))
  nonce = args[3]  -- this load's nonce: no two loads of one run share a key
end
function request()
  counter = counter + 1
  local i = ((counter - 1) % #bodies) + 1
  local headers = {["Content-Type"] = "application/json"}
  if tokens[i] ~= "" then headers["Authorization"] = "Bearer " .. tokens[i] end
  local body = bodies[i]:gsub("__UNIQUE__", nonce .. "-" .. tid .. "-" .. counter)
  return wrk.format("POST", "/graphql", headers, body)
end
function response(status, headers, body)
  if status ~= 200 or body:find('"errors":%s*%[%s*{') then
    bad = bad + 1
    if sample == "" then sample = status .. " " .. body:sub(1, 300) end
  end
end
function done(summary, latency, requests)
  local errors, sample = 0, ""
  for _, t in ipairs(threads) do
    errors = errors + (t:get("bad") or 0)
    if sample == "" then sample = t:get("sample") or "" end
  end
  io.write(string.format(
    'JSON {"p50": %f, "p95": %f, "p99": %f, "requests": %d, "duration": %f, '
    .. '"socket_errors": %d, "bad": %d}\n',
    latency:percentile(50), latency:percentile(95), latency:percentile(99), summary.requests,
    summary.duration, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, errors))
  io.write("SAMPLE " .. sample:gsub("\n", " ") .. "\n")
end
"""

Request = tuple[str | None, Mapping[str, Any]]  # (bearer token or None, JSON body)


def load(
    base_url: str,
    requests: Sequence[Request],
    *,
    connections: int = 32,
    seconds: int = 10,
    threads: int | None = None,
    timeout_s: int = 5,
) -> LoadResult:
    """POST the GraphQL ``requests`` (token, body) in order, round-robin, for ``seconds``,
    from ``threads`` load-generator threads (default: up to 2).

    ``__UNIQUE__`` anywhere in a body is replaced by a value unique to each request of this
    call and of every other call (for idempotency keys: a warm-up's keys are not replayed),
    so the same request list can drive value-moving mutations."""
    threads = threads or min(2, connections)
    if shutil.which("wrk"):
        return _wrk(base_url, requests, connections, seconds, threads, timeout_s)
    return asyncio.run(_python_load(base_url, requests, connections, seconds, timeout_s))


def calibrate(base_url: str, seconds: int = 5) -> dict[str, float]:
    """``{ __typename }`` through the same API in the same run: the whole stack answering a
    query that does no work. The machine's speed drifts; read a run's other figures against
    this one (``calibration_typename_rps`` and ``_p99_ms``)."""
    trivial: list[Request] = [(None, {"query": "{ __typename }"})]
    load(base_url, trivial, connections=32, seconds=1)  # warm-up
    result = load(base_url, trivial, connections=32, seconds=seconds)
    return {
        "calibration_typename_rps": round(result.requests_per_s),
        "calibration_typename_p99_ms": round(result.p99_ms, 1),
    }


def _wrk(
    base_url: str,
    requests: Sequence[Request],
    connections: int,
    seconds: int,
    threads: int,
    timeout_s: int,
) -> LoadResult:
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder, "graphql.lua")
        script.write_text(WRK_SCRIPT)
        bodies = Path(folder, "bodies.tsv")
        bodies.write_text(
            "".join(f"{token or ''}\t{json.dumps(body)}\n" for token, body in requests)
        )
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                f"{timeout_s}s",
                "-s",
                str(script),
                f"{base_url}/graphql",
                "--",
                str(bodies),
                str(threads),
                secrets.token_hex(4),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    match = re.search(r"^JSON (\{.*\})$", out, re.M)
    sample = re.search(r"^SAMPLE (.*)$", out, re.M)
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    figures = json.loads(match.group(1))
    return LoadResult(
        requests=figures["requests"],
        seconds=figures["duration"] / 1e6,
        p50_ms=figures["p50"] / 1000,
        p95_ms=figures["p95"] / 1000,
        p99_ms=figures["p99"] / 1000,
        errors=figures["socket_errors"] + figures["bad"],
        generator="wrk",
        first_error=sample.group(1).strip() if sample else "",
    )


async def _python_load(
    base_url: str,
    requests: Sequence[Request],
    connections: int,
    seconds: int,
    timeout_s: int,
) -> LoadResult:
    """The same measurement without wrk (slower: the client shares this Python process)."""
    latencies: list[float] = []
    errors, first_error, counter, nonce = 0, "", 0, secrets.token_hex(4)
    stop = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors, first_error, counter
        while time.monotonic() < stop:
            counter += 1
            token, template = requests[(counter - 1) % len(requests)]
            body = json.loads(json.dumps(template).replace("__UNIQUE__", f"{nonce}-{counter}"))
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            started = time.perf_counter()
            response = await http.post("/graphql", json=body, headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200 or re.search(r'"errors":\s*\[\s*\{', response.text):
                errors += 1
                first_error = first_error or f"{response.status_code} {response.text[:300]}"

    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout_s) as http:
        began = time.monotonic()
        await asyncio.gather(*(client(http) for _ in range(connections)))
        elapsed = time.monotonic() - began
    latencies.sort()

    def percentile(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000

    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=percentile(0.50),
        p95_ms=percentile(0.95),
        p99_ms=percentile(0.99),
        errors=errors,
        generator="python",
        first_error=first_error,
    )


@contextlib.asynccontextmanager
async def connect(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        yield conn
    finally:
        await conn.close()


def emit(figures: dict[str, Any]) -> None:
    """Print the benchmark's one JSON line."""
    print(json.dumps(figures), flush=True)
