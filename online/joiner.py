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
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from omegaconf import OmegaConf

from data_pipelines.configured import build
from data_pipelines.contract import ACTION_CODES
from data_pipelines.micro_batch import concat_arrays
from data_pipelines.streams import codec
from data_pipelines.streams.labels import LabelRules
from data_pipelines.streams.shards import with_labels
from online import broker as brk
from online.events import ACTIONS, CLICK, CLOCK, END, EXIT, IMPRESSION, Event, MalformedEvent, parse
from online.process import own_process_group
from online.progress import JoinerProgress, publish
from online.record import JoinerSummary, LiveRun, StreamLedger

log = logging.getLogger(__name__)


@dataclass
class _Stay:
    """What the joiner knows of one impression."""

    request_ts: int
    clicked: bool = False
    exit_ts: int | None = None
    watch_ms: int = 0
    actions: list[tuple[int, int]] = field(default_factory=list)  # (action code, ts)


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
        return _Labels(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                         ("impression_id", "report_ts", "kind", "state")))


class LabelJoiner:
    def __init__(self, rules: LabelRules):
        self.rules = rules
        self.engines, self.tasks = rules.engines, rules.tasks
        self.stays: dict[int, _Stay] = {}  # open impressions
        self.requests: dict[int, dict[str, np.ndarray]] = {}  # impression -> request arrays, until its last sample
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
            if imp in self.stays or imp in self.requests:
                raise MalformedEvent(f"impression {imp} seen before")
            self.stays[imp] = _Stay(event.ts)
            self.requests[imp] = event.features
            return
        stay = self.stays.get(imp)
        if stay is None:
            raise MalformedEvent(f"{event.type} of impression {imp}, which is not open "
                                 f"({'closed' if imp in self.requests else 'never seen'})")
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
        return batches

    def finish(self) -> dict[str, dict[str, np.ndarray] | None]:
        """Every sample still pending (the streams are complete); the open stays are left out."""
        last = max([self.watermark or 0, *(int(p.report_ts.max()) for p in self.pending.values() if len(p.report_ts))])
        return self.advance(last + 1) if any(len(p.report_ts) for p in self.pending.values()) else {
            name: None for name in self.engines}

    def _micro_batch(self, name: str, parts: list[_Labels]) -> dict[str, np.ndarray] | None:
        labels = _Labels.concat(parts) if parts else _Labels.empty(len(self.tasks))
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

    def __post_init__(self) -> None:
        if self.partitions < 1 or self.step_s <= 0 or self.idle_stream_maxlen < 1:
            raise ValueError(f"joiner: partitions, step_s and idle_stream_maxlen must be positive, got {self}")

    @property
    def step_ms(self) -> int:
        return int(round(self.step_s * 1000))


def run_joiner(joiner: LabelJoiner, settings: JoinerSettings, broker_url: str, learned_stream: str
               ) -> tuple[JoinerSummary, dict[str, StreamLedger]]:
    """Consumes the partitions until each has said `end`; emits samples each `step_s` of watermark.
    Every stream but `learned_stream` (the one the trainer learns) is trimmed as it is written."""
    r = brk.connect(broker_url)
    producer = brk.Producer(r)
    maxlen = {brk.samples_stream(n): settings.idle_stream_maxlen for n in joiner.engines if n != learned_stream}
    streams = [brk.events_stream(p) for p in range(settings.partitions)]
    offsets = {s: b"0-0" for s in streams}
    clocks: dict[str, int | None] = {s: None for s in streams}
    ended: set[str] = set()
    quarantined = events = 0
    last_step: int | None = None
    ledger: list[tuple] = []
    while len(ended) < len(streams):
        reply = r.xread({s: offsets[s] for s in streams if s not in ended}, count=2000, block=100)
        for raw_name, entries in reply or []:
            stream = raw_name.decode()
            for entry_id, fields in entries:
                offsets[stream] = entry_id
                try:
                    event = parse(fields)
                    if event.type == CLOCK:
                        clocks[stream] = max(event.ts, clocks[stream] or event.ts)
                    elif event.type == END:
                        ended.add(stream)
                        clocks[stream] = max(event.ts, clocks[stream] or event.ts)
                    else:
                        if clocks[stream] is not None and event.ts <= clocks[stream]:
                            raise MalformedEvent(f"{event.type} at {event.ts} came after its partition's clock "
                                                 f"mark {clocks[stream]}")
                        joiner.apply(event)
                        events += 1
                except MalformedEvent as exc:
                    quarantined += 1
                    kept = {k: v for k, v in fields.items() if k != b"features"}
                    r.xadd(brk.QUARANTINE, {b"stream": stream.encode(), b"entry": entry_id,
                                            b"reason": str(exc).encode(), **kept})
            r.xtrim(stream, minid=offsets[stream], approximate=True)  # consumed: this joiner keeps its state
        known = [c for c in clocks.values() if c is not None]
        watermark = min(known) if len(known) == len(streams) else None
        done = len(ended) == len(streams)
        if watermark is not None and (done or last_step is None or watermark - last_step >= settings.step_ms):
            _publish(producer, joiner.advance(watermark), watermark, maxlen, ledger)
            last_step = watermark
            publish(r, JoinerProgress(watermark=watermark, events=events, quarantined=quarantined,
                                      emitted=dict(joiner.emitted)))
    final = joiner.finish()
    _publish(producer, final, (joiner.watermark or 0), maxlen, ledger)
    producer.send([(brk.samples_stream(name), joiner.watermark or 0,
                    {b"end": b"1", b"watermark": str(joiner.watermark or 0).encode()}) for name in joiner.engines])
    publish(r, JoinerProgress(events=events, quarantined=quarantined, emitted=dict(joiner.emitted)))
    if joiner.stays:
        log.warning("%d impressions had no exit when the partitions ended; none of their exit samples was emitted",
                    len(joiner.stays))
    r.close()
    return JoinerSummary(events, quarantined, dict(joiner.emitted), len(joiner.stays)), _ledger(ledger)


def _publish(producer: brk.Producer, batches: dict[str, dict[str, np.ndarray] | None], watermark: int,
             maxlen: dict[str, int], ledger: list[tuple]) -> None:
    now = time.time()
    entries = []
    for name, batch in batches.items():
        fields = {b"watermark": str(watermark).encode(), b"count": b"0" if batch is None else
                  str(len(batch["report_ts"])).encode()}
        if batch is not None:
            fields[b"batch"] = codec.encode(batch)
            ledger.append((name, batch["impression_id"], batch["request_ts"], batch["report_ts"], batch["kind"],
                           batch["state"], now))
        entries.append((brk.samples_stream(name), watermark, fields))
    producer.send(entries, maxlen=maxlen)


def _ledger(entries: list[tuple]) -> dict[str, StreamLedger]:
    """Per stream: the emitted samples' impression, request, report and state, and the wall time
    each was published, in emission order."""
    out = {}
    for name in sorted({e[0] for e in entries}):
        mine = [e for e in entries if e[0] == name]
        out[name] = StreamLedger(*(np.concatenate([e[k] for e in mine]) for k in range(1, 6)),
                                 np.concatenate([np.full(len(e[1]), e[6]) for e in mine]))
    return out


def main(config_yaml: str, broker_url: str) -> None:
    """The joiner's process, as the supervisor (online/live.py) spawns it: the label rules of
    cfg.stream, the settings of cfg.joiner; its summary and ledger go into the run's record."""
    own_process_group()
    cfg = OmegaConf.create(config_yaml)
    run = LiveRun.of(cfg.paths, cfg.online.name)
    joiner = LabelJoiner(build(cfg.stream))
    summary, ledger = run_joiner(joiner, build(cfg.joiner), broker_url, str(cfg.online_train.stream))
    run.save_ledger(ledger)
    run.save_joiner_summary(summary)
