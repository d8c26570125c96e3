"""The label joiner: user events in, label-stream samples out, with the label rules of `make streams`.

It holds every impression whose stay is open and, per stream, the samples of closed impressions
not reported yet. Each step advances its watermark W (every event up to W has been applied) and
emits, per stream, the samples reported in (W_prev, W], in (report_ts, impression, kind) order:

  * a closed impression's samples are made once, when its exit arrives, by the streams' own engines
    (data_pipelines/streams/labels.py: LabelRules.emit) from its full facts;
  * an open one's are made at every step from its facts as known at W: its exit is taken to be W+1
    (nothing is known to have happened after W). Every sample reported by W depends only on facts
    up to W (a realtime positive is reported at the end of the tick after it, a fast sample at
    t0 + 5 min, and so on), so these are exactly the samples its full facts will give; those
    reported after W are dropped and made again later.

So the joiner's samples are `make streams`' samples, one for one, with the same report_ts; only
when they reach the trainer differs (the step after report_ts; tests/test_online.py checks both).

A sample's features are those the ranker answered its request with, read from the ranker's
served-features log (`served.<p>`, online/served.py) — feature logging: the trainer learns what was
scored, never a recomputation. The watermark waits for them: a clock mark says up to when every
request was answered (`answered`) and the ranker writes a record before it answers, so at watermark
W the record of every answered request up to W has been read. A sample whose request was never
answered (lost) has no features and is dropped, counted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from omegaconf import OmegaConf

from data_pipelines.configured import build
from data_pipelines.contract import ACTION_CODES, DENSE_FEATURES
from data_pipelines.micro_batch import concat_arrays, take_rows
from data_pipelines.streams import codec
from data_pipelines.streams.labels import LabelRules
from data_pipelines.streams.shards import with_labels
from online import broker as brk
from online.events import ACTIONS, CLICK, CLOCK, END, EXIT, IMPRESSION, STATE_TYPES, Event, MalformedEvent, parse
from online.process import own_process_group
from online.progress import JoinerProgress, publish
from online.joiner_checkpoint import JoinerCheckpoints, JoinerPosition
from online.record import JoinerSummary, LiveRun, ServedLedger, StreamLedger
from online.served import features_digests, parse_served

log = logging.getLogger(__name__)


@dataclass
class _Stay:
    """What the joiner knows of one impression."""

    request_ts: int
    clicked: bool = False
    exit_ts: int | None = None
    watch_ms: int = 0
    actions: list[tuple[int, int]] = field(default_factory=list)  # (action code, ts)


_LABEL_FIELDS = ("impression_id", "report_ts", "kind", "state")


@dataclass
class _Labels:
    """Samples of one stream, label part only."""

    impression_id: np.ndarray
    report_ts: np.ndarray
    kind: np.ndarray
    state: np.ndarray

    @staticmethod
    def empty(n_tasks: int) -> "_Labels":
        return _Labels(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros((0, n_tasks), np.int8))

    def take(self, mask: np.ndarray) -> "_Labels":
        return _Labels(self.impression_id[mask], self.report_ts[mask], self.kind[mask], self.state[mask])

    @staticmethod
    def concat(parts: list["_Labels"]) -> "_Labels":
        return _Labels(*(np.concatenate([getattr(p, f) for p in parts]) for f in _LABEL_FIELDS))


class LabelJoiner:
    def __init__(self, rules: LabelRules):
        self.rules = rules
        self.engines, self.tasks = rules.engines, rules.tasks
        self.stays: dict[int, _Stay] = {}  # open impressions
        # impression -> the request arrays it was served with (the served log), until its last sample
        self.requests: dict[int, dict[str, np.ndarray]] = {}
        self.digests: dict[int, int] = {}  # impression -> features_digests of its request arrays
        self.served = {"served": 0, "served_duplicates": 0, "served_conflicts": 0, "served_orphans": 0,
                       "samples_unserved": 0}
        self.unreported: dict[int, int] = {}  # closed impression -> its samples still pending
        self.pending = {name: _Labels.empty(len(self.tasks)) for name in self.engines}
        self.watermark: int | None = None
        self.emitted = {name: 0 for name in self.engines}

    # -- events ---------------------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        """One fact; raises MalformedEvent (and changes nothing) when it contradicts what is known."""
        if self.watermark is not None and event.ts <= self.watermark:
            raise MalformedEvent(f"{event.type} at {event.ts} arrived after the watermark passed it ({self.watermark})")
        imp = event.impression
        if event.type == IMPRESSION:
            if imp in self.stays or imp in self.unreported:
                raise MalformedEvent(f"impression {imp} seen before")
            self.stays[imp] = _Stay(event.ts)
            return
        stay = self.stays.get(imp)
        if stay is None:
            raise MalformedEvent(f"{event.type} of impression {imp}, which is not open "
                                 f"({'closed' if imp in self.unreported else 'never seen'})")
        if event.type == CLICK:
            if stay.clicked or event.ts != stay.request_ts:
                raise MalformedEvent(f"click of impression {imp} at {event.ts}: " +
                                     ("clicked before" if stay.clicked else
                                      f"not at its request time {stay.request_ts}"))
            stay.clicked = True
        elif event.type == EXIT:
            if event.watch_ms != event.ts - stay.request_ts or (not stay.clicked and event.watch_ms != 0):
                raise MalformedEvent(f"exit of impression {imp} at {event.ts} with watch_ms {event.watch_ms}: the "
                                     f"stay {'began' if stay.clicked else 'never began (no click)'} at "
                                     f"{stay.request_ts}")
            stay.exit_ts, stay.watch_ms = event.ts, event.watch_ms
        elif event.type in ACTIONS:
            if not stay.clicked or event.ts < stay.request_ts:
                raise MalformedEvent(f"{event.type} of impression {imp} at {event.ts} outside its stay")
            stay.actions.append((ACTION_CODES[event.type], event.ts))
        else:
            raise MalformedEvent(f"{event.type} is not a fact about an impression")

    def serve(self, impression: int, arrays: dict[str, np.ndarray]) -> int:
        """The features impression's request was answered with (a served-log record); returns their
        digest. A request served again (retried) keeps its first record; one of an impression whose
        samples are all out already (or that the joiner will never see) is counted and dropped."""
        digest = int(features_digests(arrays)[0])
        self.served["served"] += 1
        if impression in self.requests:
            self.served["served_duplicates"] += 1
            self.served["served_conflicts"] += int(self.digests[impression] != digest)
            return digest
        expected = impression in self.stays or impression in self.unreported or self.watermark is None or \
            int(arrays["request_ts"][0]) > self.watermark
        if not expected:
            self.served["served_orphans"] += 1
            return digest
        self.requests[impression], self.digests[impression] = arrays, digest
        return digest

    # -- samples --------------------------------------------------------------------------------
    def _labels(self, ids: list[int], watermark: int) -> dict[str, _Labels]:
        """Every stream's samples of impressions `ids`, from their facts as known at `watermark`."""
        stays = [self.stays[i] for i in ids]
        exit_ts = np.array([s.exit_ts if s.exit_ts is not None else watermark + 1 for s in stays], dtype=np.int64)
        request = np.array([s.request_ts for s in stays], dtype=np.int64)
        clicked = np.array([s.clicked for s in stays], dtype=bool)
        impressions = pd.DataFrame({"impression_id": np.asarray(ids, dtype=np.int64), "request_ts": request,
                                    "exit_ts": exit_ts, "clicked": clicked,
                                    "watch_ms": np.where(clicked, exit_ts - request, 0)})
        acts = np.array([(i, code, ts) for i, s in zip(ids, stays) for code, ts in s.actions],
                        dtype=np.int64).reshape(-1, 3)
        actions = pd.DataFrame({"impression_id": acts[:, 0], "action": acts[:, 1].astype(np.int8), "ts": acts[:, 2]})
        _, samples = self.rules.emit(impressions, actions, with_final=False)
        id_of = impressions["impression_id"].to_numpy()
        return {name: _Labels(id_of[s.impression], s.report_ts, s.kind, s.state) for name, s in samples.items()}

    def advance(self, watermark: int) -> dict[str, dict[str, np.ndarray] | None]:
        """Every sample reported in (previous watermark, `watermark`], per stream (None: none)."""
        if self.watermark is not None and watermark <= self.watermark:
            return {name: None for name in self.engines}
        previous = np.iinfo(np.int64).min if self.watermark is None else self.watermark
        closing = [i for i, s in self.stays.items() if s.exit_ts is not None]
        out: dict[str, list[_Labels]] = {name: [] for name in self.engines}
        if self.stays:  # one call of the engines for the closing and the open stays
            for name, labels in self._labels(list(self.stays), watermark).items():
                closed = np.isin(labels.impression_id, closing)
                fresh = labels.take(labels.report_ts > previous)
                closed = closed[labels.report_ts > previous]
                out[name].append(fresh.take(fresh.report_ts <= watermark))
                later = fresh.take(closed & (fresh.report_ts > watermark))  # an open stay's are made again
                self.pending[name] = _Labels.concat([self.pending[name], later])
                for imp in later.impression_id.tolist():
                    self.unreported[imp] = self.unreported.get(imp, 0) + 1
            for imp in closing:
                del self.stays[imp]
        done = set(closing)  # impressions that may have had their last sample now
        for name in self.engines:
            due = self.pending[name].report_ts <= watermark
            if due.any():
                reported = self.pending[name].take(due)
                self.pending[name] = self.pending[name].take(~due)
                out[name].append(reported)
                for imp in reported.impression_id.tolist():
                    self.unreported[imp] -= 1
                    done.add(imp)
        self.watermark = int(watermark)
        batches = {name: self._micro_batch(name, parts) for name, parts in out.items()}
        for imp in done:  # request arrays are kept until the impression's last sample is out
            if self.unreported.get(imp, 0) == 0:
                self.unreported.pop(imp, None)
                self.requests.pop(imp, None)
                self.digests.pop(imp, None)
        return batches

    def finish(self) -> dict[str, dict[str, np.ndarray] | None]:
        """Every sample still pending (the streams are complete); the open stays are left out."""
        last = max([self.watermark or 0, *(int(p.report_ts.max()) for p in self.pending.values() if len(p.report_ts))])
        return self.advance(last + 1) if any(len(p.report_ts) for p in self.pending.values()) else {
            name: None for name in self.engines}

    # -- checkpoint -----------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything the joiner holds, as named arrays (numbers only: a checkpoint never needs a
        pickle) and a JSON-able dict; `restored` takes them back."""
        imps = list(self.stays)
        stays = [self.stays[i] for i in imps]
        arrays = {"stay.impression": np.array(imps, np.int64),
                  "stay.request_ts": np.array([s.request_ts for s in stays], np.int64),
                  "stay.clicked": np.array([s.clicked for s in stays], bool),
                  "stay.exited": np.array([s.exit_ts is not None for s in stays], bool),
                  "stay.exit_ts": np.array([s.exit_ts or 0 for s in stays], np.int64),
                  "stay.watch_ms": np.array([s.watch_ms for s in stays], np.int64),
                  "action": np.array([(i, code, ts) for i, s in zip(imps, stays) for code, ts in s.actions],
                                     np.int64).reshape(-1, 3),
                  "unreported": np.array(list(self.unreported.items()), np.int64).reshape(-1, 2),
                  "held.impression": np.array(list(self.requests), np.int64)}
        if self.requests:
            held = concat_arrays(list(self.requests.values()))
            arrays.update({f"request.{key}": values for key, values in held.items()})
        for name, labels in self.pending.items():
            arrays.update({f"pending.{name}.{f}": getattr(labels, f) for f in _LABEL_FIELDS})
        return arrays, {"watermark": self.watermark, "emitted": dict(self.emitted), "served": dict(self.served)}

    @classmethod
    def restored(cls, rules: LabelRules, arrays: dict[str, np.ndarray], meta: dict) -> "LabelJoiner":
        joiner = cls(rules)
        actions: dict[int, list[tuple[int, int]]] = {}
        for imp, code, ts in arrays["action"].tolist():
            actions.setdefault(imp, []).append((code, ts))
        for imp, request_ts, clicked, exited, exit_ts, watch_ms in zip(
                *(arrays[f"stay.{f}"].tolist() for f in ("impression", "request_ts", "clicked", "exited", "exit_ts",
                                                          "watch_ms"))):
            joiner.stays[imp] = _Stay(request_ts, clicked, exit_ts if exited else None, watch_ms, actions.get(imp, []))
        held = arrays["held.impression"]
        if len(held):
            requests = {key.split(".", 1)[1]: v for key, v in arrays.items()
                        if key.startswith("request.")}
            joiner.requests = {int(imp): take_rows(requests, np.array([row])) for row, imp in enumerate(held.tolist())}
            joiner.digests = dict(zip(held.tolist(), features_digests(requests).tolist()))
        joiner.unreported = {imp: n for imp, n in arrays["unreported"].tolist()}
        for name in joiner.engines:
            joiner.pending[name] = _Labels(*(arrays[f"pending.{name}.{f}"] for f in _LABEL_FIELDS))
        joiner.watermark = meta["watermark"]
        joiner.emitted = {name: int(meta["emitted"].get(name, 0)) for name in joiner.engines}
        joiner.served.update(meta.get("served", {}))
        return joiner

    def _micro_batch(self, name: str, parts: list[_Labels]) -> dict[str, np.ndarray] | None:
        labels = _Labels.concat(parts) if parts else _Labels.empty(len(self.tasks))
        if not len(labels.report_ts):
            return None
        served = np.array([i in self.requests for i in labels.impression_id.tolist()], dtype=bool)
        self.served["samples_unserved"] += int((~served).sum())  # never answered: no features to learn
        labels = labels.take(served)
        if not len(labels.report_ts):
            return None
        order = np.lexsort((labels.kind, labels.impression_id, labels.report_ts))
        labels = labels.take(order)
        self.emitted[name] += len(order)
        request = concat_arrays([self.requests[i] for i in labels.impression_id.tolist()])
        return with_labels(request, {"report_ts": labels.report_ts, "kind": labels.kind, "state": labels.state})


# -- the process ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class JoinerSettings:
    """conf/online.yaml `joiner:` (one key per field)."""

    partitions: int  # the events' partitions on the broker
    step_s: float  # data time between two emissions (the watermark's resolution)
    idle_stream_maxlen: int  # a samples stream nobody learns is kept about this short
    checkpoint_every_s: float = 60.0  # data time between two checkpoints (state + offsets)
    read_count: int = 2000  # entries per partition and read, at most
    processes: int = 1  # joiner processes; process k owns the partitions p with p % processes == k

    def __post_init__(self) -> None:
        if min(self.partitions, self.step_s, self.idle_stream_maxlen, self.checkpoint_every_s, self.read_count,
               self.processes) <= 0:
            raise ValueError(f"joiner: partitions, step_s, idle_stream_maxlen, checkpoint_every_s, read_count and "
                             f"processes must be positive, got {self}")
        if self.processes > self.partitions:
            raise ValueError(f"joiner.processes ({self.processes}) cannot exceed the partitions ({self.partitions}): "
                             f"a process owns whole partitions")

    def owned(self, index: int) -> list[int]:
        """The partitions joiner process `index` consumes: a user's events all go to one of them."""
        if not 0 <= index < self.processes:
            raise ValueError(f"joiner {index}: there are {self.processes} joiner processes")
        return [p for p in range(self.partitions) if p % self.processes == index]

    @property
    def step_ms(self) -> int:
        return int(round(self.step_s * 1000))

    @property
    def checkpoint_every_ms(self) -> int:
        return int(round(self.checkpoint_every_s * 1000))


@dataclass
class _Published:
    """What a samples stream already holds: its last entry's watermark, and whether it said `end`
    (a joiner that resumes publishes neither again)."""

    watermark: int | None = None
    ended: bool = False

    @classmethod
    def read(cls, r, stream: str) -> "_Published":
        last = r.xrevrange(stream, count=1)
        if not last:
            return cls()
        fields = last[0][1]
        return cls(int(fields[b"watermark"]), bool(fields.get(b"end")))


def restore(checkpoints: JoinerCheckpoints, rules: LabelRules, streams: list[str],
            served: list[str]) -> tuple[LabelJoiner, JoinerPosition]:
    """The joiner and its position from the newest checkpoint (its resumes counted), or new ones."""
    loaded = checkpoints.load()
    if loaded is None:
        return LabelJoiner(rules), JoinerPosition.start(streams, served)
    arrays, meta, position = loaded
    if sorted(position.offsets) != sorted([*streams, *served]):
        raise ValueError(f"{checkpoints.root}: the checkpoint consumed {sorted(position.offsets)}, this joiner owns "
                         f"{sorted([*streams, *served])}; a run's partitions cannot change while it resumes")
    position.resumes += 1
    return LabelJoiner.restored(rules, arrays, meta), position


class _ServedRows:
    """The served records read since the last checkpoint (a part of the served ledger)."""

    def __init__(self):
        self.rows: list[tuple] = []

    def add(self, impression: int, arrays: dict[str, np.ndarray], state_clock: int, digest: int) -> None:
        self.rows.append((impression, int(arrays["request_ts"][0]), state_clock, digest, arrays["dense"][0]))

    def take(self) -> ServedLedger:
        rows, self.rows = self.rows, []
        if not rows:
            return ServedLedger.empty(len(DENSE_FEATURES))
        imp, ts, clock, digest, dense = zip(*rows)
        return ServedLedger(np.array(imp, np.int64), np.array(ts, np.int64), np.array(clock, np.int64),
                            np.array(digest, np.uint64), np.stack(dense).astype(np.float32))


def run_joiner(rules: LabelRules, settings: JoinerSettings, broker_url: str, learned_stream: str,
               checkpoints: JoinerCheckpoints, index: int = 0) -> tuple[JoinerSummary, dict[str, StreamLedger],
                                                                         ServedLedger]:
    """Consumes the partitions until each has said `end`, and the served-features records of their
    users; emits samples each `step_s` of watermark and checkpoints each `checkpoint_every_s`.
    Started again after a crash, it resumes from its newest checkpoint: the entries after its offsets
    are read again and the samples they give that a samples stream already holds (published after
    the checkpoint, before the crash) are counted and kept in the ledger but not published twice —
    the stream's last watermark says which. Every stream but `learned_stream` (the one the trainer
    learns) is trimmed as it is written; the served records up to each checkpoint's offsets are
    trimmed after it (the events are not: a ranker that starts again rebuilds its feature state from
    them). Joiner `index` of `settings.processes` consumes its own partitions (`settings.owned`) and
    publishes to its own samples streams: its watermark is the lowest over its partitions of the
    clock marks and their `answered`, and each sample is made by the one joiner that holds its
    user's events and served records."""
    r = brk.connect(broker_url)
    producer = brk.Producer(r)
    maxlen = {brk.samples_stream(n, index): settings.idle_stream_maxlen for n in rules.engines if n != learned_stream}
    streams = [brk.events_stream(p) for p in settings.owned(index)]
    served_streams = [brk.served_stream(p) for p in settings.owned(index)]
    joiner, pos = restore(checkpoints, rules, streams, served_streams)
    published = {name: _Published.read(r, brk.samples_stream(name, index)) for name in joiner.engines}
    quarantined_before = {(f[b"stream"], f[b"entry"]) for _, f in r.xrange(brk.QUARANTINE)} if pos.resumes else set()
    if pos.resumes:
        log.warning("joiner resumed (%d) at watermark %s after %d events; samples streams hold up to %s",
                    pos.resumes, joiner.watermark, pos.events,
                    {n: p.watermark for n, p in published.items()})
    ledger: list[tuple] = []
    served_rows = _ServedRows()
    last_checkpoint = joiner.watermark
    done = False
    while not done:  # until every partition has said `end` and its served records are all read
        reading = [s for s in streams if s not in pos.ended] + served_streams
        reply = r.xread({s: pos.offsets[s] for s in reading}, count=settings.read_count, block=100)
        served_read = dict.fromkeys(served_streams, 0)
        for raw_name, entries in reply or []:
            stream = raw_name.decode()
            for entry_id, fields in entries:
                pos.offsets[stream] = entry_id.decode()
                try:
                    if stream in served_read:
                        impression, arrays = parse_served(fields)
                        digest = joiner.serve(impression, arrays)
                        served_rows.add(impression, arrays, int(fields.get(b"state_clock", b"0")), digest)
                    else:
                        _consume(joiner, pos, stream, parse(fields))
                except MalformedEvent as exc:
                    pos.quarantined += 1
                    if (stream.encode(), entry_id) not in quarantined_before:
                        kept = {k: v for k, v in fields.items() if k != b"features"}
                        r.xadd(brk.QUARANTINE, {b"stream": stream.encode(), b"entry": entry_id,
                                                b"reason": str(exc).encode(), **kept})
            if stream in served_read:
                served_read[stream] = len(entries)
        # A served stream read to its count may hold more before the marks just read: not yet.
        drained = all(n < settings.read_count for n in served_read.values())
        known = [min(c, a if a is not None else c) for c, a in ((pos.clocks[s], pos.answered.get(s)) for s in streams)
                 if c is not None]
        watermark = min(known) if len(known) == len(streams) and drained else None
        done = len(pos.ended) == len(streams) and drained
        if watermark is not None and (done or pos.last_step is None or watermark - pos.last_step >= settings.step_ms):
            _publish(producer, joiner.advance(watermark), watermark, maxlen, ledger, published, index)
            pos.last_step = watermark
            publish(r, JoinerProgress(watermark=watermark, events=pos.events, quarantined=pos.quarantined,
                                      emitted=dict(joiner.emitted), unix_s=time.time()), instance=index)
            if not done and (last_checkpoint is None or watermark - last_checkpoint >= settings.checkpoint_every_ms):
                checkpoints.save(joiner.state(), pos, _ledger(ledger), served_rows.take())
                ledger.clear()
                last_checkpoint = watermark
                for s in served_streams:  # consumed and checkpointed: needed by no one now
                    r.xtrim(s, minid=pos.offsets[s], approximate=True)
    final = joiner.finish()
    _publish(producer, final, (joiner.watermark or 0), maxlen, ledger, published, index)
    producer.send([(brk.samples_stream(name, index), joiner.watermark or 0,
                    {b"end": b"1", b"watermark": str(joiner.watermark or 0).encode()})
                   for name in joiner.engines if not published[name].ended])
    publish(r, JoinerProgress(events=pos.events, quarantined=pos.quarantined, emitted=dict(joiner.emitted),
                              unix_s=time.time()), instance=index)
    if joiner.stays:
        log.warning("%d impressions had no exit when the partitions ended; none of their exit samples was emitted",
                    len(joiner.stays))
    r.close()
    return (JoinerSummary(pos.events, pos.quarantined, dict(joiner.emitted), len(joiner.stays), pos.resumes,
                          **joiner.served),
            checkpoints.ledger(pos.ledger_parts, _ledger(ledger)),
            checkpoints.served(pos.ledger_parts, served_rows.take()))


def _consume(joiner: LabelJoiner, pos: JoinerPosition, stream: str, event: Event) -> None:
    """One event of `stream`: a clock mark or an end moves the partition's clock (and how far its
    requests are answered), a fact goes to the joiner (MalformedEvent: refused, nothing changed), a
    feature-state event is passed over."""
    if event.type in STATE_TYPES:
        return
    if event.type in (CLOCK, END):
        if event.type == END and stream not in pos.ended:
            pos.ended.append(stream)
        pos.clocks[stream] = max(event.ts, pos.clocks[stream] or event.ts)
        answered = event.ts if event.answered is None else event.answered
        pos.answered[stream] = max(answered, pos.answered.get(stream) or answered)
        return
    if pos.clocks[stream] is not None and event.ts <= pos.clocks[stream]:
        raise MalformedEvent(f"{event.type} at {event.ts} came after its partition's clock mark {pos.clocks[stream]}")
    joiner.apply(event)
    pos.events += 1


def _publish(producer: brk.Producer, batches: dict[str, dict[str, np.ndarray] | None], watermark: int,
             maxlen: dict[str, int], ledger: list[tuple], published: dict[str, _Published], index: int) -> None:
    """One step's samples, a stream's entry left out where the stream already holds this watermark
    (a resumed joiner's re-emission: its samples are in the ledger all the same)."""
    now = time.time()
    entries = []
    for name, batch in batches.items():
        if batch is not None:  # the features as published: the report checks them against the served ones
            ledger.append((name, batch["impression_id"], batch["request_ts"], batch["report_ts"], batch["kind"],
                           batch["state"], now, features_digests(batch)))
        held = published[name].watermark
        if held is not None and watermark <= held:
            continue
        if held is not None and batch is not None and batch["report_ts"][0] <= held:  # the step crosses it
            batch = take_rows(batch, np.flatnonzero(batch["report_ts"] > held)) if batch["report_ts"][-1] > held \
                else None
        fields = {b"watermark": str(watermark).encode(), b"count": b"0" if batch is None else
                  str(len(batch["report_ts"])).encode()}
        if batch is not None:
            fields[b"batch"] = codec.encode(batch)
        entries.append((brk.samples_stream(name, index), watermark, fields))
    producer.send(entries, maxlen=maxlen)


def _ledger(entries: list[tuple]) -> dict[str, StreamLedger]:
    """Per stream: the emitted samples' impression, request, report and state, the wall time each
    was published and its features' digest, in emission order."""
    out = {}
    for name in sorted({e[0] for e in entries}):
        mine = [e for e in entries if e[0] == name]
        out[name] = StreamLedger(*(np.concatenate([e[k] for e in mine]) for k in range(1, 6)),
                                 np.concatenate([np.full(len(e[1]), e[6]) for e in mine]),
                                 np.concatenate([e[7] for e in mine]))
    return out


def main(config_yaml: str, broker_url: str, index: int = 0) -> None:
    """Joiner process `index`, as the supervisor (online/live.py) spawns (and restarts) it: the label
    rules of cfg.stream, the settings of cfg.joiner; its summary and ledger go into the run's record."""
    own_process_group()
    cfg = OmegaConf.create(config_yaml)
    run = LiveRun.of(cfg.paths, cfg.online.name)
    summary, ledger, served = run_joiner(build(cfg.stream), build(cfg.joiner), broker_url,
                                         str(cfg.online_train.stream), JoinerCheckpoints(run.joiner_checkpoints(index)),
                                         index)
    run.save_ledger(ledger, index)
    run.save_served(served, index)
    run.save_joiner_summary(summary, index)
