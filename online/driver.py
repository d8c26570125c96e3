"""The traffic driver: plays a data set's live impressions on an accelerated wall clock.

Data time t runs at `speed` times the wall clock from the first impression of the span, until the
last request; the events after it (exits, late actions: nothing is asked of the ranker any more) are
published at once. At each impression's request time the driver asks the ranker (gRPC) to score it,
with the request's features as the streams compute them (data_pipelines/streams: every value from events strictly
before the request, so computing them ahead of the clock changes none), and logs the answer with
the version that gave it; every event goes to its user's partition on the broker at its time, then a
`clock` mark says the partition is complete up to now. A request the ranker cannot take (restarting,
overloaded) is retried with backoff up to `retries` times; one that still fails is counted as lost.

Its log, the run's answers (online/record.py: Answers): per impression (rows of the canonical
table), the probabilities by task, the version that answered (export and push), the attempts, and
the wall times it was sent and answered, with the clock's origin to map wall time onto data time.
Each answer also goes to the broker's `answers` stream as it comes.

A driver started again (the supervisor restarts one that died) resumes the same run: the clock's
origin and the last clock mark it published are in the broker's progress hash, its answers in the
`answers` stream. It publishes again from that mark — every entry's id is derived from the event
itself (`event_id`), so what the broker already holds is refused, not doubled — catches the clock up
at once (the events of its outage as a backlog), and sends again the requests that had no answer.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from data_pipelines.configured import build
from data_pipelines.contract import DENSE_FEATURES, lengths_key, sequence_key, sparse_key
from data_pipelines.dataset import DataSet
from export.requests import RequestSchema
from online import events as ev
from online import broker as brk
from online.process import own_process_group
from online.progress import DriverProgress, ProgressSample, publish
from online.record import Answers, DriverClock, DriverSummary, LiveRun
from online.world import PlayedWorld, played_world
from serving.client import RankerClient, RankError, request_to_proto

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
# Entry ids on the events streams, `<ts>-<seq>`: a fact's seq is its position in the timeline + 1, a
# clock mark's and an end's are above any position (a mark at ts follows every fact at ts).
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


def request_of(arrays: dict[str, np.ndarray], schema: RequestSchema, request_id: str) -> dict:
    """The ranker request scoring one impression (the one row of `arrays`, shard layout) as its only
    candidate: ids, dense features and GSU sequences split into the user's and the candidate's part
    as the export's request layout says."""
    parts: dict[str, dict] = {"user": {"ids": {}, "dense": {}, "sequences": {}},
                              "candidate": {"ids": {}, "dense": {}, "sequences": {}}}
    for name in schema.id_features:
        parts[schema.owner[("ids", name)]]["ids"][name] = int(arrays[sparse_key(name)][0])
    for name in schema.dense_features:
        parts[schema.owner[("dense", name)]]["dense"][name] = float(arrays["dense"][0, DENSE_FEATURES.index(name)])
    for gsu in schema.gsu_names:
        n = min(int(arrays[lengths_key(gsu)][0]), schema.seq_len)
        parts[schema.owner[("sequences", gsu)]]["sequences"][gsu] = {
            f: arrays[sequence_key(gsu, f)][:n].astype(np.int64).tolist() for f in schema.sequence_fields}
    return {"request_id": request_id, "user": parts["user"], "candidates": [parts["candidate"]]}


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
                    b"attempts": str(int(a.attempts[row])).encode(), b"sent": repr(float(a.sent_unix_s[row])).encode(),
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
                a.sent_unix_s[row], a.answered_unix_s[row] = float(f[b"sent"]), float(f[b"answered"])
                rows += 1
            if len(page) < 10_000:
                return rows
            after = "(" + page[-1][0].decode()


class TrafficDriver:
    def __init__(self, world: PlayedWorld, settings: DriverSettings, schema: RequestSchema, tasks: list[str],
                 broker_url: str, ranker_address: str):
        self.world, self.s, self.schema = world, settings, schema
        self.timeline, self.features = world.timeline, world.features
        self.broker_url, self.ranker_address = broker_url, ranker_address
        self.tasks = list(tasks)
        self.log: AnswerLog | None = None
        self.sent = 0

    def _score(self, client: RankerClient, row: int, arrays: dict[str, np.ndarray]) -> None:
        """Scores one impression (`arrays`: its request arrays) and logs the answer."""
        message = request_to_proto(request_of(arrays, self.schema, f"imp-{int(arrays['impression_id'][0])}"))
        log = self.log.answers
        log.sent_unix_s[row] = time.time()
        for attempt in range(self.s.retries + 1):
            log.attempts[row] = attempt + 1
            try:
                answer = client.rank_proto(message)
            except RankError as exc:
                if exc.code not in RETRYABLE or attempt == self.s.retries:
                    return  # lost
                time.sleep(min(1.0, 0.05 * 2 ** attempt))
                continue
            ranked = answer.ranked[0]
            log.probabilities[row] = [ranked.probabilities[t] for t in log.tasks]
            log.export[row] = self.log.export_index(answer.model_export)
            log.push[row] = answer.model_push
            log.answered_unix_s[row] = time.time()  # last: a row is answered once every field is
            self.log.answered(row)
            return

    def _malformed(self, data0: int) -> list[tuple[str, int, dict]]:
        """`malformed` entries, one of each kind in turn, on partition 0 before any event: an unknown
        type, a time that is no number, an impression whose features fail their checksum, a click of
        an impression nobody saw, an exit whose watch time contradicts its stay."""
        first = int(np.flatnonzero(self.timeline.type == ev.FACT_TYPES.index(ev.IMPRESSION))[0])
        good = ev.encode(self.timeline.event(first, self.features))
        corrupt = bytearray(good[b"features"])
        corrupt[-1] ^= 0xFF
        kinds = [{b"type": b"purchase", b"ts": b"0", b"user": b"1", b"impression": b"1"},
                 {b"type": b"click", b"ts": b"soon", b"user": b"1", b"impression": b"1"},
                 {**good, b"features": bytes(corrupt)},
                 {b"type": b"click", b"ts": str(data0 - 1).encode(), b"user": b"0", b"impression": b"-7"},
                 {b"type": b"exit", b"ts": str(data0 - 1).encode(), b"user": b"0", b"impression": b"-7",
                  b"watch_ms": b"-5"}]
        return [(brk.events_stream(0), event_id(data0 - 1, k + 1), kinds[k % len(kinds)]) for k in range(self.s.malformed)]

    def _publish_progress(self, r, **fields) -> None:
        answered = int(self.log.answers.answered.sum())
        publish(r, DriverProgress(sent=self.sent, answered=answered, **fields))

    def _resume(self, r, data0: int) -> tuple[DriverClock, int, int]:
        """(the clock, the last clock mark published, earlier starts) of this run: a new clock and
        nothing published for its first driver; an earlier driver's, from the progress hash, for
        one started again."""
        earlier = ProgressSample.read(r, 0.0).driver
        if earlier.unix0_s is None:
            return DriverClock(data0, time.time(), self.s.speed), data0 - 1, 0
        return (DriverClock(int(earlier.data0_ms), float(earlier.unix0_s), self.s.speed),
                int(earlier.clock_ms if earlier.clock_ms is not None else data0 - 1), (earlier.starts or 1))

    def run(self) -> tuple[Answers, DriverSummary]:
        s, tl = self.s, self.timeline
        r = brk.connect(self.broker_url)
        client = RankerClient(self.ranker_address, timeout_s=5.0)
        client.wait_until_serving(timeout_s=600)
        pool = ThreadPoolExecutor(max_workers=s.request_threads, thread_name_prefix="rank")
        partition = ev.partition_of(tl.user, s.partitions)
        data0 = int(tl.ts[0])
        started = time.monotonic()
        clock, last_mark, starts = self._resume(r, data0)
        self.log = AnswerLog(Answers.empty(len(self.features.request_ts), self.tasks, self.world.rows, clock))
        # After the last request the rest are label events only (exits, late gifts) with no answer to
        # wait for: they are published at once rather than on the clock, as a backlog would be.
        last_request = int(tl.ts[tl.type == ev.FACT_TYPES.index(ev.IMPRESSION)].max())
        producer = brk.Producer(r)
        is_request = tl.type == ev.FACT_TYPES.index(ev.IMPRESSION)
        i = int(np.searchsorted(tl.ts, last_mark, side="right"))  # every event up to the mark is published
        futures = []
        if starts == 0:
            publish(r, DriverProgress(data0_ms=data0, unix0_s=clock.unix0_s, last_ms=int(tl.ts[-1]),
                                      last_request_ms=last_request, speed=s.speed, starts=1))
            producer.send_keyed(self._malformed(data0))
        else:
            loaded = self.log.load(r)
            publish(r, DriverProgress(starts=starts + 1))
            again = [k for k in np.flatnonzero(is_request[:i]) if not self.log.answers.answered[tl.row[k]]]
            print(f"driver started again ({starts + 1}): from data time {last_mark}, {loaded:,} answers kept, "
                  f"{len(again):,} requests sent again", flush=True)
            for k in again:  # sent by the driver that died, never answered
                futures.append(pool.submit(self._score, client, int(tl.row[k]), tl.event(int(k), self.features).features))
        self.sent = int(is_request[:i].sum())
        bar = tqdm(total=len(tl), initial=i, desc="driver events", unit="event", disable=not s.progress,
                   mininterval=2.0)
        while i < len(tl):
            now = clock.data0_ms + int((time.time() - clock.unix0_s) * s.speed * 1000)
            if now > last_request:
                now = int(tl.ts[-1])
            j = int(np.searchsorted(tl.ts, now, side="right"))
            entries = []
            for k in range(i, j):
                event = tl.event(k, self.features)
                if event.type == ev.IMPRESSION:  # scored with the features its event logs
                    futures.append(pool.submit(self._score, client, int(tl.row[k]), event.features))
                    self.sent += 1
                entries.append((brk.events_stream(int(partition[k])), event_id(event.ts, k + 1), ev.encode(event)))
            bar.update(j - i)
            i = j
            mark = min(now, int(tl.ts[-1])) if i == len(tl) else now
            if mark > last_mark:  # every partition is complete up to the mark
                entries += [(brk.events_stream(p), event_id(mark, MARK_SEQ), ev.encode(ev.Event(ev.CLOCK, mark)))
                            for p in range(s.partitions)]
                last_mark = mark
            producer.send_keyed(entries)
            self.log.flush(r)
            self._publish_progress(r, clock_ms=last_mark)
            time.sleep(s.tick_s)
        producer.send_keyed([(brk.events_stream(p), event_id(tl.ts[-1], END_SEQ), ev.encode(ev.Event(ev.END, int(tl.ts[-1]))))
                             for p in range(s.partitions)])
        bar.close()
        for f in futures:
            f.result()
        pool.shutdown()
        client.close()
        self.log.flush(r)
        self._publish_progress(r, done_unix_s=time.time())
        r.close()
        answered = int(self.log.answers.answered.sum())
        return self.log.answers, DriverSummary(self.sent, answered, self.sent - answered, time.monotonic() - started,
                                               len(tl) + s.malformed, starts)


def run_driver(cfg: DictConfig, broker_url: str, ranker_address: str) -> DriverSummary:
    """Plays the configured data set (cfg.driver) against the ranker at `ranker_address`, publishing
    to the broker at `broker_url`; writes the answers and the summary into the run's record."""
    settings: DriverSettings = build(cfg.driver)
    run = LiveRun.of(cfg.paths, cfg.online.name)
    meta = run.export.meta()
    world = played_world(DataSet(cfg.data.output_dir), settings.span_s, settings.progress)
    driver = TrafficDriver(world, settings, RequestSchema(meta), list(meta["tasks"]), broker_url, ranker_address)
    answers, summary = driver.run()
    run.save_answers(answers)
    run.save_driver_summary(summary)
    return summary


def main(config_yaml: str, broker_url: str, ranker_address: str) -> None:
    """The driver's process, as the supervisor (online/live.py) spawns it."""
    own_process_group()
    run_driver(OmegaConf.create(config_yaml), broker_url, ranker_address)
