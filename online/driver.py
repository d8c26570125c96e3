"""The traffic driver: plays a data set on an accelerated wall clock against the ranker.

Data time t runs at `speed` times the wall clock from the first impression of the span, until the
last request; the events after it (exits, late actions: nothing is asked of the ranker any more) are
published at once. The driver publishes one schedule (online/world.py): the joiner's facts and the
ranker's feature-state events (short-video plays, rooms starting and ending), every entry on its
partition at its time — those before the first request as a backlog before the clock starts — and
after each round a `clock` mark on every partition. Then, at each impression's request time, it asks
the ranker (gRPC) to score it with an **ids-only** request: user, request time and the live id. The
ranker computes the features from the events it has read and logs them to `served.<p>`; the driver
computes none. A request the ranker cannot take (restarting, its feature state not caught up yet:
UNAVAILABLE) is retried with backoff up to `retries` times; one that still fails is counted as lost.
Each clock mark also says up to when every request has been answered or given up (`answered`), so
that the joiner knows when a request's served features are all on the broker.

Its log, the run's answers (online/record.py: Answers): per impression (rows of the canonical
table), the probabilities by task, the version that answered (export and push), the attempts, the
request's size on the wire, and the wall times it was sent and answered, with the clock's origin to
map wall time onto data time. Each answer also goes to the broker's `answers` stream as it comes,
and each publishing round to `rounds` (when which entries went out: the report's feature-skew causes).

A driver started again (the supervisor restarts one that died) resumes the same run: the clock's
origin and the last clock mark it published are in the broker's progress hash, its answers in the
`answers` stream. It publishes again from that mark — every entry's id is derived from its place in
the schedule (`event_id`), so what the broker already holds is refused, not doubled — catches the
clock up at once (the events of its outage as a backlog), and sends again the requests that had no
answer.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from data_pipelines.configured import build
from data_pipelines.dataset import DataSet
from online import events as ev
from online import broker as brk
from online.process import own_process_group
from online.progress import DriverProgress, ProgressSample, publish
from online.record import Answers, DriverClock, DriverSummary, LiveRun
from online.world import PlayedWorld, played_world
from serving.client import RankerClient, RankError
from serving.proto import ranker_pb2

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
# Entry ids on the events streams, `<ts>-<seq>`: an entry's seq is its position in the schedule + 1, a
# clock mark's and an end's are above any position (a mark at ts follows every entry at ts).
MARK_SEQ, END_SEQ = 2**64 - 2, 2**64 - 1


def event_id(ts: int, seq: int) -> str:
    return f"{max(int(ts), 0)}-{int(seq)}"


@dataclass(frozen=True)
class DriverSettings:
    """conf/online.yaml `driver:` (one key per field)."""

    speed: float  # data seconds per wall second
    partitions: int  # the events' partitions on the broker (by user)
    span_s: float | None  # data seconds played from the first impression; None: the whole data set
    tick_s: float  # wall seconds between two publishing rounds
    request_threads: int  # concurrent Rank calls
    retries: int  # attempts beyond the first for a request the ranker could not take
    progress: bool
    malformed: int = 0  # malformed events to publish first, a fault drill: each must be quarantined, none learned

    def __post_init__(self) -> None:
        if self.speed <= 0 or self.partitions < 1 or self.tick_s <= 0 or self.request_threads < 1 or self.retries < 0:
            raise ValueError(f"driver: speed, partitions, tick_s and request_threads must be positive and retries at "
                             f"least 0, got {self}")
        if self.span_s is not None and self.span_s <= 0:
            raise ValueError(f"online.span_s must be positive (or null: the whole data set), got {self.span_s}")


class AnswerLog:
    """The answers being collected, written from the request threads (one row each), and the rows
    answered since the last `flush` to the broker's `answers` stream."""

    def __init__(self, answers: Answers):
        self.answers = answers
        self._lock = threading.Lock()
        self._fresh: list[int] = []

    def export_index(self, export_id: str) -> int:
        with self._lock:
            if export_id not in self.answers.exports:
                self.answers.exports.append(export_id)
            return self.answers.exports.index(export_id)

    def answered(self, row: int) -> None:
        with self._lock:
            self._fresh.append(row)

    def flush(self, r) -> None:
        """The rows answered since the last flush, one `answers` entry each."""
        with self._lock:
            rows, self._fresh = self._fresh, []
        if not rows:
            return
        a = self.answers
        entries = [{b"row": str(row).encode(), b"p": a.probabilities[row].astype(np.float32).tobytes(),
                    b"export": a.exports[a.export[row]].encode(), b"push": str(int(a.push[row])).encode(),
                    b"attempts": str(int(a.attempts[row])).encode(), b"bytes": str(int(a.request_bytes[row])).encode(),
                    b"sent": repr(float(a.sent_unix_s[row])).encode(),
                    b"answered": repr(float(a.answered_unix_s[row])).encode()} for row in rows]

        def attempt() -> None:  # again, whole, through a broker restart: `load` keeps a row's first
            pipe = r.pipeline(transaction=False)
            for fields in entries:
                pipe.xadd(brk.ANSWERS, fields)
            pipe.execute()

        brk.through_outage(attempt)

    def load(self, r) -> int:
        """The answers an earlier driver of this run flushed (the first of a row, where a retried
        flush wrote one twice); how many rows."""
        a, after, rows = self.answers, "-", 0
        while True:
            page = r.xrange(brk.ANSWERS, min=after, count=10_000)
            for entry_id, f in page:
                row = int(f[b"row"])
                if np.isfinite(a.answered_unix_s[row]):
                    continue
                a.probabilities[row] = np.frombuffer(f[b"p"], dtype=np.float32)
                a.export[row] = self.export_index(f[b"export"].decode())
                a.push[row], a.attempts[row] = int(f[b"push"]), int(f[b"attempts"])
                a.request_bytes[row] = int(f[b"bytes"])
                a.sent_unix_s[row], a.answered_unix_s[row] = float(f[b"sent"]), float(f[b"answered"])
                rows += 1
            if len(page) < 10_000:
                return rows
            after = "(" + page[-1][0].decode()


class _Settling:
    """Which requests are settled (answered, or given up) in submission order, which is request-time
    order: `answered_through(mark)` is the latest time up to which every request submitted is settled."""

    def __init__(self):
        self._ts: list[int] = []
        self._done: list[bool] = []
        self._lock = threading.Lock()
        self._first_open = 0

    def submit(self, ts: int) -> int:
        with self._lock:
            self._ts.append(int(ts))
            self._done.append(False)
            return len(self._ts) - 1

    def settle(self, k: int) -> None:
        self._done[k] = True

    def all_settled(self) -> bool:
        with self._lock:
            return all(self._done[self._first_open:])

    def answered_through(self, mark: int) -> int:
        with self._lock:
            while self._first_open < len(self._done) and self._done[self._first_open]:
                self._first_open += 1
            return mark if self._first_open == len(self._done) else min(mark, self._ts[self._first_open] - 1)


class TrafficDriver:
    def __init__(self, world: PlayedWorld, settings: DriverSettings, tasks: list[str], broker_url: str,
                 ranker_address: str):
        self.world, self.s = world, settings
        self.broker_url, self.ranker_address = broker_url, ranker_address
        self.tasks = list(tasks)
        self.log: AnswerLog | None = None
        self.settling = _Settling()
        self.sent = 0

    def _request(self, row: int) -> ranker_pb2.RankRequest:
        """The ids-only request of impression `row`: its user, its time, its live as the one candidate."""
        imp = self.world.impressions
        message = ranker_pb2.RankRequest(request_id=f"imp-{int(imp['impression_id'].iat[row])}")
        message.ids.user_id = int(imp["user_id"].iat[row])
        message.ids.request_ts = int(imp["request_ts"].iat[row])
        message.ids.live_ids.append(int(imp["live_id"].iat[row]))
        return message

    def _submit(self, pool: ThreadPoolExecutor, client: RankerClient, row: int) -> Future:
        k = self.settling.submit(int(self.world.impressions["request_ts"].iat[row]))
        return pool.submit(self._score, client, row, k)

    def _score(self, client: RankerClient, row: int, k: int) -> None:
        """Scores one impression and logs the answer; settles submission k either way."""
        try:
            self._ask(client, row)
        finally:
            self.settling.settle(k)

    def _ask(self, client: RankerClient, row: int) -> None:
        message = self._request(row)
        log = self.log.answers
        log.sent_unix_s[row] = time.time()
        log.request_bytes[row] = message.ByteSize()
        for attempt in range(self.s.retries + 1):
            log.attempts[row] = attempt + 1
            try:
                answer = client.rank_proto(message)
            except RankError as exc:
                if exc.code not in RETRYABLE or attempt == self.s.retries:
                    if exc.code not in RETRYABLE:
                        print(f"driver: request {message.request_id} refused: {exc.code.name}: {exc}", flush=True)
                    return  # lost
                # The feature state a moment behind the clock is the common case: retry soon.
                time.sleep(min(1.0, 0.005 * 2 ** attempt))
                continue
            ranked = answer.ranked[0]
            log.probabilities[row] = [ranked.probabilities[t] for t in log.tasks]
            log.export[row] = self.log.export_index(answer.model_export)
            log.push[row] = answer.model_push
            log.answered_unix_s[row] = time.time()  # last: a row is answered once every field is
            self.log.answered(row)
            return

    def _malformed(self, data0: int) -> list[tuple[str, str, dict]]:
        """`malformed` entries, one of each kind in turn, on partition 0 before any request: an unknown
        type, a time that is no number, an impression of no room, a click of an impression nobody
        saw, an exit whose watch time contradicts its stay."""
        kinds = [{b"type": b"purchase", b"ts": b"0", b"user": b"1", b"impression": b"1"},
                 {b"type": b"click", b"ts": b"soon", b"user": b"1", b"impression": b"1"},
                 {b"type": b"impression", b"ts": str(data0 - 1).encode(), b"user": b"0", b"impression": b"-8"},
                 {b"type": b"click", b"ts": str(data0 - 1).encode(), b"user": b"0", b"impression": b"-7"},
                 {b"type": b"exit", b"ts": str(data0 - 1).encode(), b"user": b"0", b"impression": b"-7",
                  b"watch_ms": b"-5"}]
        return [(brk.events_stream(0), event_id(data0 - 1, len(self.world) + k + 1), kinds[k % len(kinds)])
                for k in range(self.s.malformed)]

    def _publish_progress(self, r, **fields) -> None:
        answered = int(self.log.answers.answered.sum())
        publish(r, DriverProgress(sent=self.sent, answered=answered, **fields))

    def _resume(self, r, data0: int) -> tuple[DriverClock | None, int, int]:
        """(the clock, the last clock mark published, earlier starts) of this run: no clock yet and
        nothing published for its first driver; an earlier driver's, from the progress hash, for
        one started again."""
        earlier = ProgressSample.read(r, 0.0).driver
        if earlier.unix0_s is None:
            return None, data0 - 1, 0
        return (DriverClock(int(earlier.data0_ms), float(earlier.unix0_s), self.s.speed),
                int(earlier.clock_ms if earlier.clock_ms is not None else data0 - 1), (earlier.starts or 1))

    def _entries(self, i: int, j: int, partition: np.ndarray, on_clock: bool = True) -> list[tuple[str, str, dict]]:
        """Schedule entries [i, j) as broker entries; those published on the clock stamped with the
        wall time (`pub`: the ranker's publication-to-state lag; a backlog's would measure the backlog)."""
        stamp = {b"pub": str(int(time.time() * 1000)).encode()} if on_clock else {}
        return [(brk.events_stream(int(partition[k])), event_id(self.world.ts[k], k + 1),
                 {**self.world.fields(k), **stamp}) for k in range(i, j)]

    @staticmethod
    def _round(i: int, j: int, mark: int | None = None) -> tuple[str, str, dict]:
        """The `rounds` entry of a round that published schedule entries [i, j) and the clock mark
        `mark` after them (id `*`: a retried round may appear twice; the first says when)."""
        return (brk.ROUNDS, "*", {b"unix_ms": str(int(time.time() * 1000)).encode(), b"first": str(i).encode(),
                                  b"end": str(j).encode(), b"mark": str(-1 if mark is None else mark).encode()})

    def _backlog(self, producer: brk.Producer, partition: np.ndarray, until: int) -> None:
        """Every entry before the first request, before the clock starts: the histories and rooms the
        ranker must hold before it can answer the first request."""
        bar = tqdm(total=until, desc="driver backlog", unit="event", disable=not self.s.progress, mininterval=2.0)
        for a in range(0, until, 5000):
            b = min(until, a + 5000)
            producer.send_keyed([*self._entries(a, b, partition, on_clock=False), self._round(a, b)])
            bar.update(b - a)
        bar.close()

    def run(self) -> tuple[Answers, DriverSummary]:
        s, world = self.s, self.world
        r = brk.connect(self.broker_url)
        client = RankerClient(self.ranker_address, timeout_s=5.0)
        client.wait_until_serving(timeout_s=600)
        pool = ThreadPoolExecutor(max_workers=s.request_threads, thread_name_prefix="rank")
        partition = world.partition(s.partitions)
        data0 = world.first_request_ms
        started = time.monotonic()
        producer = brk.Producer(r)
        clock, last_mark, starts = self._resume(r, data0)
        if clock is None:  # the first driver of the run: the backlog, then the clock starts
            self._backlog(producer, partition, int(np.searchsorted(world.ts, data0, side="left")))
            producer.send_keyed(self._malformed(data0))  # after the backlog: their ids are above its
            clock = DriverClock(data0, time.time(), s.speed)
        self.log = AnswerLog(Answers.empty(len(world.impressions), self.tasks, world.rows, clock))
        request_ts = world.impressions["request_ts"].to_numpy()
        # After the last request the rest are label events only (exits, late gifts) with no answer to
        # wait for: they are published at once rather than on the clock, as a backlog would be.
        last_request = int(request_ts[world.rows].max())
        last_ms = int(world.ts[-1])
        facts = world.timeline
        is_request = world.is_fact.copy()
        is_request[world.is_fact] = facts.type[world.index[world.is_fact]] == ev.FACT_TYPES.index(ev.IMPRESSION)
        row_of = np.full(len(world), -1, dtype=np.int64)
        row_of[world.is_fact] = facts.row[world.index[world.is_fact]]
        i = int(np.searchsorted(world.ts, last_mark, side="right"))  # every entry up to the mark is published
        through_last_request = int(np.searchsorted(world.ts, last_request, side="right"))
        futures = []
        if starts == 0:
            publish(r, DriverProgress(data0_ms=data0, unix0_s=clock.unix0_s, last_ms=last_ms,
                                      last_request_ms=last_request, speed=s.speed, starts=1))
        else:
            loaded = self.log.load(r)
            publish(r, DriverProgress(starts=starts + 1))
            again = [int(row_of[k]) for k in np.flatnonzero(is_request[:i]) if not self.log.answers.answered[row_of[k]]]
            print(f"driver started again ({starts + 1}): from data time {last_mark}, {loaded:,} answers kept, "
                  f"{len(again):,} requests sent again", flush=True)
            for row in again:  # sent by the driver that died, never answered (request-time order)
                futures.append(self._submit(pool, client, row))
        self.sent = int(is_request[:i].sum())
        bar = tqdm(total=len(world), initial=i, desc="driver events", unit="event", disable=not s.progress,
                   mininterval=2.0)
        while i < len(world):
            now = clock.data0_ms + int((time.time() - clock.unix0_s) * s.speed * 1000)
            on_clock = now <= last_request
            if not on_clock:  # the rest once every request is sent and settled: none may find its events passed
                now = last_ms if i >= through_last_request and self.settling.all_settled() else last_request
            j = int(np.searchsorted(world.ts, now, side="right"))
            # The round's answers first: a mark's `answered` must not claim one the answers stream lacks.
            self.log.flush(r)
            entries = self._entries(i, j, partition, on_clock)
            mark = min(now, last_ms) if j == len(world) else now
            if mark > last_mark:  # every partition is complete up to the mark
                # Requests up to the previous mark are all sent (this round's go out after its entries):
                # only those can be vouched for.
                answered = self.settling.answered_through(last_mark)
                entries += [(brk.events_stream(p), event_id(mark, MARK_SEQ),
                             ev.encode(ev.Event(ev.CLOCK, mark, answered=answered))) for p in range(s.partitions)]
                last_mark = mark
            producer.send_keyed([*entries, self._round(i, j, last_mark)])
            for k in np.flatnonzero(is_request[i:j]) + i:  # asked once the events before them are out
                futures.append(self._submit(pool, client, int(row_of[k])))
                self.sent += 1
            bar.update(j - i)
            i = j
            self._publish_progress(r, clock_ms=last_mark)
            time.sleep(s.tick_s)
        bar.close()
        for f in futures:
            f.result()
        pool.shutdown()
        client.close()
        self.log.flush(r)
        producer.send_keyed([(brk.events_stream(p), event_id(last_ms, END_SEQ),
                              ev.encode(ev.Event(ev.END, last_ms, answered=last_ms))) for p in range(s.partitions)])
        self._publish_progress(r, done_unix_s=time.time())
        r.close()
        answered = int(self.log.answers.answered.sum())
        return self.log.answers, DriverSummary(self.sent, answered, self.sent - answered, time.monotonic() - started,
                                               len(world.timeline) + s.malformed, starts, len(world.state))


def run_driver(cfg: DictConfig, broker_url: str, ranker_address: str) -> DriverSummary:
    """Plays the configured data set (cfg.driver) against the ranker at `ranker_address`, publishing
    to the broker at `broker_url`; writes the answers and the summary into the run's record."""
    settings: DriverSettings = build(cfg.driver)
    run = LiveRun.of(cfg.paths, cfg.online.name)
    world = played_world(DataSet(cfg.data.output_dir), settings.span_s)
    driver = TrafficDriver(world, settings, list(run.export.meta()["tasks"]), broker_url, ranker_address)
    answers, summary = driver.run()
    run.save_answers(answers)
    run.save_driver_summary(summary)
    return summary


def main(config_yaml: str, broker_url: str, ranker_address: str) -> None:
    """The driver's process, as the supervisor (online/live.py) spawns it."""
    own_process_group()
    run_driver(OmegaConf.create(config_yaml), broker_url, ranker_address)
