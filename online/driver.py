"""The traffic driver: plays a data set's live impressions on an accelerated wall clock.

Data time t runs at `speed` times the wall clock from the first impression of the span. At each
impression's request time the driver asks the ranker (gRPC) to score it, with the request's
features as the streams compute them (data_pipelines/streams: every value from events strictly
before the request, so computing them ahead of the clock changes none), and logs the answer with
the version that gave it; every event goes to its user's partition on the broker at its time, then a
`clock` mark says the partition is complete up to now. A request the ranker cannot take (restarting,
overloaded) is retried with backoff up to `retries` times; one that still fails is counted as lost.

Its log, `answers.npz`: per impression (rows of the canonical table), the probabilities by task, the
version that answered (`model_export` index into `exports`, `model_push`), the attempts, and the
wall times it was sent and answered, with the clock's origin to map wall time onto data time.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import numpy as np
from tqdm import tqdm

from data_pipelines.contract import DENSE_FEATURES, lengths_key, sequence_key, sparse_key
from data_pipelines.streams.shards import ImpressionFeatures
from export.client import RankerClient, RankError, request_to_proto
from export.requests import RequestSchema
from online import broker as brk
from online import events as ev

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}


@dataclass(frozen=True)
class DriverSettings:
    redis_url: str
    ranker_address: str
    partitions: int
    speed: float  # data seconds per wall second
    tick_s: float  # wall seconds between two publishing rounds
    retries: int  # attempts beyond the first for a request the ranker could not take
    request_threads: int
    answers_path: str
    progress: bool
    malformed: int = 0  # malformed events to publish first, a fault drill: each must be quarantined, none learned


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
    """What the ranker answered for each impression; written from the request threads (one row each)."""

    def __init__(self, n: int, tasks: list[str]):
        self.tasks = tasks
        self.probabilities = np.full((n, len(tasks)), np.nan, dtype=np.float32)
        self.export = np.full(n, -1, dtype=np.int32)
        self.push = np.full(n, -1, dtype=np.int64)
        self.attempts = np.zeros(n, dtype=np.int16)
        self.sent_unix_s = np.full(n, np.nan)
        self.answered_unix_s = np.full(n, np.nan)
        self.exports: list[str] = []
        self._lock = threading.Lock()

    def export_index(self, export_id: str) -> int:
        with self._lock:
            if export_id not in self.exports:
                self.exports.append(export_id)
            return self.exports.index(export_id)

    def save(self, path: str, **extra) -> None:
        np.savez(path, probabilities=self.probabilities, export=self.export, push=self.push, attempts=self.attempts,
                 sent_unix_s=self.sent_unix_s, answered_unix_s=self.answered_unix_s,
                 exports=np.array(self.exports, dtype=str), tasks=np.array(self.tasks, dtype=str), **extra)


class TrafficDriver:
    def __init__(self, timeline: ev.Timeline, features: ImpressionFeatures, impression_rows: np.ndarray,
                 settings: DriverSettings, schema: RequestSchema, tasks: list[str]):
        """`impression_rows`: the canonical rows played (requests sent), in request order."""
        self.timeline, self.features, self.s, self.schema = timeline, features, settings, schema
        self.rows = impression_rows
        self.log = AnswerLog(len(features.request_ts), tasks)
        self.sent = self.answered = self.lost = 0
        self._count_lock = threading.Lock()

    def _score(self, client: RankerClient, row: int, arrays: dict[str, np.ndarray]) -> None:
        """Scores one impression (`arrays`: its request arrays) and logs the answer."""
        message = request_to_proto(request_of(arrays, self.schema, f"imp-{int(arrays['impression_id'][0])}"))
        log = self.log
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
            log.export[row] = log.export_index(answer.model_export)
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

    def run(self) -> dict:
        s, tl = self.s, self.timeline
        r = brk.connect(s.redis_url)
        client = RankerClient(s.ranker_address, timeout_s=5.0)
        client.wait_until_serving(timeout_s=600)
        pool = ThreadPoolExecutor(max_workers=s.request_threads, thread_name_prefix="rank")
        partition = ev.partition_of(tl.user, s.partitions)
        data0 = int(tl.ts[0])
        wall0 = time.monotonic()
        unix0 = time.time()
        r.hset(brk.PROGRESS, mapping={"driver_data0_ms": data0, "driver_last_ms": int(tl.ts[-1]), "driver_unix0_s": unix0,
                                      "driver_speed": s.speed})
        producer = brk.Producer(r)
        producer.send(self._malformed(data0))
        i = 0
        last_mark = data0 - 1
        bar = tqdm(total=len(tl), desc="driver events", unit="event", disable=not s.progress, mininterval=2.0)
        futures = []
        while i < len(tl):
            now = data0 + int((time.monotonic() - wall0) * s.speed * 1000)
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
            r.hset(brk.PROGRESS, mapping={"driver_clock_ms": last_mark, "driver_sent": self.sent,
                                          "driver_answered": self.answered, "driver_lost": self.lost})
            time.sleep(s.tick_s)
        producer.send([(brk.events_stream(p), int(tl.ts[-1]), ev.encode(ev.Event(ev.END, int(tl.ts[-1]))))
                       for p in range(s.partitions)])
        bar.close()
        for f in futures:
            f.result()
        pool.shutdown()
        client.close()
        r.hset(brk.PROGRESS, mapping={"driver_sent": self.sent, "driver_answered": self.answered,
                                      "driver_lost": self.lost, "driver_done_unix_s": time.time()})
        r.close()
        self.log.save(self.s.answers_path, data0_ms=data0, unix0_s=unix0, speed=s.speed, rows=self.rows)
        return {"requests_sent": self.sent, "requests_answered": self.answered, "requests_lost": self.lost,
                "wall_s": time.monotonic() - wall0}
