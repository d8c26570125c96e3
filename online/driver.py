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
from online.progress import DriverProgress, publish
from online.record import Answers, DriverClock, DriverSummary, LiveRun
from online.world import PlayedWorld, played_world
from serving.client import RankerClient, RankError, request_to_proto

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}


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
    """The answers being collected, written from the request threads (one row each)."""

    def __init__(self, answers: Answers):
        self.answers = answers
        self._lock = threading.Lock()

    def export_index(self, export_id: str) -> int:
        with self._lock:
            if export_id not in self.answers.exports:
                self.answers.exports.append(export_id)
            return self.answers.exports.index(export_id)


class TrafficDriver:
    def __init__(self, world: PlayedWorld, settings: DriverSettings, schema: RequestSchema, tasks: list[str],
                 broker_url: str, ranker_address: str):
        self.world, self.s, self.schema = world, settings, schema
        self.timeline, self.features = world.timeline, world.features
        self.broker_url, self.ranker_address = broker_url, ranker_address
        self.tasks = list(tasks)
        self.log: AnswerLog | None = None
        self.sent = self.answered = self.lost = 0
        self._count_lock = threading.Lock()

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
                    with self._count_lock:
                        self.lost += 1
                    return
                time.sleep(min(1.0, 0.05 * 2 ** attempt))
                continue
            log.answered_unix_s[row] = time.time()
            ranked = answer.ranked[0]
            log.probabilities[row] = [ranked.probabilities[t] for t in log.tasks]
            log.export[row] = self.log.export_index(answer.model_export)
            log.push[row] = answer.model_push
            with self._count_lock:
                self.answered += 1
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
        return [(brk.events_stream(0), data0 - 1, kinds[k % len(kinds)]) for k in range(self.s.malformed)]

    def _publish_progress(self, r, **fields) -> None:
        publish(r, DriverProgress(sent=self.sent, answered=self.answered, lost=self.lost, **fields))

    def run(self) -> tuple[Answers, DriverSummary]:
        s, tl = self.s, self.timeline
        r = brk.connect(self.broker_url)
        client = RankerClient(self.ranker_address, timeout_s=5.0)
        client.wait_until_serving(timeout_s=600)
        pool = ThreadPoolExecutor(max_workers=s.request_threads, thread_name_prefix="rank")
        partition = ev.partition_of(tl.user, s.partitions)
        data0 = int(tl.ts[0])
        wall0 = time.monotonic()
        clock = DriverClock(data0, time.time(), s.speed)
        self.log = AnswerLog(Answers.empty(len(self.features.request_ts), self.tasks, self.world.rows, clock))
        # After the last request the rest are label events only (exits, late gifts) with no answer to
        # wait for: they are published at once rather than on the clock, as a backlog would be.
        last_request = int(tl.ts[tl.type == ev.FACT_TYPES.index(ev.IMPRESSION)].max())
        publish(r, DriverProgress(data0_ms=data0, unix0_s=clock.unix0_s, last_ms=int(tl.ts[-1]),
                                  last_request_ms=last_request, speed=s.speed))
        producer = brk.Producer(r)
        producer.send(self._malformed(data0))
        i = 0
        last_mark = data0 - 1
        bar = tqdm(total=len(tl), desc="driver events", unit="event", disable=not s.progress, mininterval=2.0)
        futures = []
        while i < len(tl):
            now = data0 + int((time.monotonic() - wall0) * s.speed * 1000)
            if now > last_request:
                now = int(tl.ts[-1])
            j = int(np.searchsorted(tl.ts, now, side="right"))
            entries = []
            for k in range(i, j):
                event = tl.event(k, self.features)
                if event.type == ev.IMPRESSION:  # scored with the features its event logs
                    futures.append(pool.submit(self._score, client, int(tl.row[k]), event.features))
                    self.sent += 1
                entries.append((brk.events_stream(int(partition[k])), event.ts, ev.encode(event)))
            bar.update(j - i)
            i = j
            mark = min(now, int(tl.ts[-1])) if i == len(tl) else now
            if mark > last_mark:  # every partition is complete up to the mark
                entries += [(brk.events_stream(p), mark, ev.encode(ev.Event(ev.CLOCK, mark)))
                            for p in range(s.partitions)]
                last_mark = mark
            producer.send(entries)
            self._publish_progress(r, clock_ms=last_mark)
            time.sleep(s.tick_s)
        producer.send([(brk.events_stream(p), int(tl.ts[-1]), ev.encode(ev.Event(ev.END, int(tl.ts[-1]))))
                       for p in range(s.partitions)])
        bar.close()
        for f in futures:
            f.result()
        pool.shutdown()
        client.close()
        self._publish_progress(r, done_unix_s=time.time())
        r.close()
        return self.log.answers, DriverSummary(self.sent, self.answered, self.lost, time.monotonic() - wall0)


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
