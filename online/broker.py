"""The live loop's broker: Redis Streams from Debian's redis-server (docs/online.md maps the layout
onto Kafka topics, partitions and consumer groups).

| stream             | written by | read by  | holds                                                     |
|--------------------|------------|----------|-----------------------------------------------------------|
| events.<p>         | driver     | joiner   | user events of partition p = user_id % partitions          |
| samples.<stream>.<k> | joiner k | trainer  | a micro-batch of samples per joiner step, with its watermark |
| quarantine         | joiner     | report   | entries the joiner refused, with the reason               |
| answers            | driver     | driver   | the ranker's answer to each request (a restarted driver's log) |

and one hash, `progress`, where every component writes its counters for the report's time series.

`BrokerServer` runs a private instance (loopback, a temporary directory, append-only file on) and
stops it; `connect` gives a client that retries through a broker restart.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

PROGRESS = "progress"
QUARANTINE = "quarantine"
ANSWERS = "answers"
ROUNDS = "rounds"  # the driver's publishing rounds: when each range of its schedule went out


def events_stream(partition: int) -> str:
    return f"events.{partition}"


def served_stream(partition: int) -> str:
    """The ranker's served-features log of partition `partition`'s users (online/served.py)."""
    return f"served.{partition}"


def samples_stream(stream: str, part: int = 0) -> str:
    """Label stream `stream`'s samples as joiner `part` publishes them (one stream per joiner process:
    a Kafka topic's partitions)."""
    return f"samples.{stream}.{part}"


RECONNECT = (redis.ConnectionError, redis.TimeoutError)


def through_outage(call, outage_s: float = 60.0):
    """`call()`, again with backoff while the broker is unreachable, for up to `outage_s`."""
    deadline, delay = time.monotonic() + outage_s, 0.02
    while True:
        try:
            return call()
        except RECONNECT:
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.5)


class _Client(redis.Redis):
    """redis-py retries a command whose connection breaks, but not the taking of a connection from
    its pool, which is where a client fails while the broker restarts: every command is retried
    here as a whole."""

    outage_s = 60.0

    def execute_command(self, *args, **options):
        return through_outage(lambda: super(_Client, self).execute_command(*args, **options), self.outage_s)


def connect(url: str, outage_s: float = 60.0) -> redis.Redis:
    """A client whose every command is retried, with backoff, for up to about `outage_s` while the
    broker is unreachable (a restart), then raises."""
    client = _Client.from_url(url, retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 3),
                              retry_on_error=list(RECONNECT), socket_connect_timeout=2.0, health_check_interval=0)
    client.outage_s = outage_s
    return client


class Producer:
    """Appends entries with ids of its own, `<ms>-<n>` (ms: the entry's data time, n: this producer's
    count), so that a command the client retries after a dropped connection cannot append twice:
    the broker refuses an id not above the stream's newest, and that refusal means "already there" —
    Kafka's idempotent producer, on Redis Streams."""

    def __init__(self, client: redis.Redis, start: int = 0):
        self.client = client
        self.count = int(start)

    def entry_id(self, ms: int) -> str:
        self.count += 1
        return f"{max(int(ms), 0)}-{self.count}"

    def send(self, entries: list[tuple[str, int, dict]], maxlen: dict[str, int] | None = None) -> None:
        """[(stream, data time ms, fields)] in one round trip (again, with the same ids, after an
        outage: what was appended before it is refused, not doubled)."""
        self.send_keyed([(stream, self.entry_id(ms), fields) for stream, ms, fields in entries], maxlen)

    def send_keyed(self, entries: list[tuple[str, str, dict]], maxlen: dict[str, int] | None = None) -> int:
        """[(stream, entry id, fields)]: ids the caller derives from what the entries are, so that
        sending them again — a retry, or a producer started again from an earlier point — appends
        only what is not there yet: a stream takes entries in id order, in one round trip each, so
        what it holds of a producer's entries is a prefix of them, and an id not above its newest is
        one it holds. Returns how many entries were appended."""
        def attempt() -> list:
            pipe = self.client.pipeline(transaction=False)
            for stream, entry_id, fields in entries:
                limit = (maxlen or {}).get(stream)
                pipe.xadd(stream, fields, id=entry_id, maxlen=limit, approximate=limit is not None)
            return pipe.execute(raise_on_error=False)

        appended = 0
        for reply in through_outage(attempt, getattr(self.client, "outage_s", 60.0)) if entries else []:
            if isinstance(reply, Exception):
                if "equal or smaller" not in str(reply):
                    raise reply
            else:
                appended += 1
        return appended


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FSYNC_POLICIES = ("always", "everysec")


class BrokerServer:
    """A redis-server of this job's own: bound to 127.0.0.1, its data (append-only file) in a
    temporary directory removed on `stop`. `fsync="always"` (the live loop's): every write is on disk
    before the broker acknowledges it, so a SIGKILLed broker started again (`kill`, then `start`: the
    same port and directory) has every acknowledged entry back; "everysec" may lose up to the last
    second of them (docs/online.md, "A broker that may be killed", measures the cost). `restart` stops
    it cleanly and starts it again, as an operator's restart would."""

    def __init__(self, port: int | None = None, binary: str = "redis-server", fsync: str = "always"):
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(f"{binary} not found: run make setup (it installs Debian's redis-server), or "
                                    f"point online.redis_url at a running broker")
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"the broker's fsync policy must be one of {FSYNC_POLICIES}, got {fsync!r}")
        self.fsync = fsync
        self.binary = path
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="online-broker-"))
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> "BrokerServer":
        self._log = open(self.dir / "redis.log", "ab")
        self.process = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", self.fsync, "--save", "", "--protected-mode", "yes",
             "--daemonize", "no", "--loglevel", "warning"],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: "
                                   f"{(self.dir / 'redis.log').read_text()[-2000:]}")
            try:
                if client.ping():
                    client.close()
                    return self
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server on port {self.port} did not answer within {timeout_s:.0f} s")
            time.sleep(0.05)

    def terminate(self, timeout_s: float = 30.0) -> None:
        """SIGTERM: redis writes its append-only file out and exits (the directory stays)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._log is not None:
            self._log.close()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is written out; the directory stays for `start`."""
        if self.alive:
            self.process.kill()
            self.process.wait()
        if self._log is not None:
            self._log.close()

    def restart(self, down_s: float = 0.0) -> None:
        self.terminate()
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        self.terminate()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "BrokerServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
