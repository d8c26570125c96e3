"""The live loop (online/): events, served-features records, the label joiner and its checkpoints, the
broker's offsets, the driver's schedule, the run's record and the supervisor's decisions
(tests/test_online_chaos.py: `make online` itself, as a chaos run)."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pandas as pd
import pytest

from data_pipelines.contract import DENSE_FEATURES, MASKED, NEG, POS, TASKS, is_sequence_key, sequence_key
from data_pipelines.streams import codec
from data_pipelines.streams.labels import FastSlowStream, LabelRules, RealtimeStream
from online import broker as brk
from online import events as ev
from online import served as sv
from online.broker_samples import BrokerSamples
from online.joiner import LabelJoiner
from online.trainer import sample_digest
from tests.conftest import compose_config, job_paths

T0 = 1_746_460_800_000  # a tick boundary of nothing in particular: ticks run from each request
LONG_VIEW_MS = 60_000


def _request(impression: int, ts: int) -> dict[str, np.ndarray]:
    """One request's arrays in the shard layout, every sequence empty."""
    arrays = {"impression_id": np.array([impression]), "request_ts": np.array([ts]),
              "dense": np.zeros((1, len(DENSE_FEATURES)), np.float32)}
    for key in sv.REQUEST_KEYS - set(arrays):
        element = is_sequence_key(key) and not key.endswith(".lengths")
        arrays[key] = np.zeros(0 if element else 1, dtype=np.int64 if element else np.int32)
    return arrays


def _joiner() -> LabelJoiner:
    return LabelJoiner(LabelRules(TASKS, LONG_VIEW_MS, {"realtime": RealtimeStream(30_000),
                                                        "fast_slow": FastSlowStream(300_000, 3_600_000)}))


# -- events -------------------------------------------------------------------------------------------
def test_request_keys_are_the_shard_layouts_request_arrays(untrained, tiny_streams):
    from data_pipelines.streams.shards import LABEL_KEYS
    from recsys.data import ShardDataset

    part = next(ShardDataset(tiny_streams.stream("realtime"), batch_size=1).micro_batches())
    assert sv.REQUEST_KEYS == set(part) - set(LABEL_KEYS)


def test_an_event_survives_encoding_and_bad_entries_are_refused_with_their_reason():
    good = ev.Event(ev.IMPRESSION, T0, user=5, impression=9)
    back = ev.parse({**ev.encode(good), b"live": b"3"})
    assert (back.type, back.ts, back.user, back.impression) == (ev.IMPRESSION, T0, 5, 9)
    mark = ev.parse(ev.encode(ev.Event(ev.CLOCK, T0, answered=T0 - 7)))
    assert (mark.type, mark.ts, mark.answered) == (ev.CLOCK, T0, T0 - 7)
    assert ev.parse(ev.encode(ev.Event(ev.CLOCK, T0))).answered is None  # a mark of no request stream
    cases = {
        "unknown event type 'purchase'": {b"type": b"purchase", b"ts": b"1"},
        "field 'ts' is not an integer": {b"type": b"click", b"ts": b"12.5", b"user": b"1", b"impression": b"2"},
        "missing field 'impression'": {b"type": b"click", b"ts": b"12", b"user": b"1"},
        "negative watch_ms": {**ev.encode(ev.Event(ev.EXIT, T0, 1, 2, watch_ms=0)), b"watch_ms": b"-3"},
        "missing field 'live'": ev.encode(good),
        "field 'answered' is not an integer": {**ev.encode(ev.Event(ev.CLOCK, T0)), b"answered": b"soon"},
    }
    for reason, fields in cases.items():
        with pytest.raises(ev.MalformedEvent, match=reason.replace("(", r"\(").replace(")", r"\)")):
            ev.parse(fields)
    # The feature state's events share the streams: the joiner passes over them, whatever they hold.
    for kind in ("play", "room_start", "room_end"):
        assert ev.parse({b"type": kind.encode(), b"ts": b"5", b"live": b"x"}) == ev.Event(kind, 5)


def test_a_served_record_reads_back_as_the_request_arrays_and_bad_ones_are_refused():
    """The ranker's served-log entry (features_json.cpp's JSON, written here by hand for one known
    request) read into the shard layout; and what no record may be."""
    arrays = _request(9, T0)
    arrays["dense"][0] = np.arange(len(DENSE_FEATURES)) / 8
    for field, values in (("item", [4, 5]), ("author", [6, 7]), ("gap", [1, 2]), ("watch", [3, 4]), ("domain", [1, 2])):
        arrays[sequence_key("long", field)] = np.array(values)
    arrays["seq.long.lengths"] = np.array([2], np.int32)
    arrays["sparse.live_item"] = np.array([11], np.int32)
    record = sv.served_fields(arrays, user=5)
    impression, back = sv.parse_served(record)
    assert impression == 9 and set(back) == sv.REQUEST_KEYS
    assert back["seq.long.item"].tolist() == [4, 5] and back["seq.long.gap"].dtype == np.int8
    assert back["sparse.live_item"].tolist() == [11] and back["dense"].dtype == np.float32
    np.testing.assert_array_equal(back["dense"], arrays["dense"])
    assert sv.features_digests(back)[0] == sv.features_digests(arrays)[0]
    moved = dict(arrays, **{"seq.long.item": np.array([5, 4])})
    assert sv.features_digests(moved)[0] != sv.features_digests(arrays)[0]  # order matters
    features = json.loads(record[b"features"])
    two = json.dumps({**features, "candidates": features["candidates"] * 2}).encode()
    uneven = json.loads(record[b"features"])
    uneven["candidates"][0]["sequences"]["long"]["gap"] = [1]
    wide = json.loads(record[b"features"])
    wide["candidates"][0]["sequences"]["long"]["gap"] = [1, 300]
    cases = {"names no impression": {**record, b"request": b"req-9"},
             "2 candidates": {**record, b"features": two},
             "fields differ in length": {**record, b"features": json.dumps(uneven).encode()},
             "long.gap out of range": {**record, b"features": json.dumps(wide).encode()},
             "JSONDecodeError": {**record, b"features": b"{not json"},
             "KeyError": {**record, b"features": b'{"user": {}}'},
             "without 'request_ts'": {k: v for k, v in record.items() if k != b"request_ts"}}
    for reason, fields in cases.items():
        with pytest.raises(ev.MalformedEvent, match=reason):
            sv.parse_served(fields)


# -- the joiner ---------------------------------------------------------------------------------------
def _samples(batch: dict | None) -> list[tuple]:
    if batch is None:
        return []
    return [(int(r), int(i), int(k), tuple(int(x) for x in s)) for r, i, k, s in
            zip(batch["report_ts"], batch["impression_id"], batch["kind"], batch["state"])]


def test_the_joiner_emits_each_sample_once_its_watermark_passes_the_report_time():
    """One stay, by hand: request and click at T0, a like at T0+45 s, still watching at T0+60 s (the
    long view), exit at T0+100 s. Realtime ticks from T0: the click is reported at T0+30 s, the like
    at T0+60 s, the long view at T0+90 s, the exit (comment and gift negative) at T0+120 s. Fast:
    at T0+300 s, click, long view and like positive. A second impression, never clicked, exits at
    its request: one realtime negative at the end of its first tick, one fast sample."""
    j = _joiner()
    j.apply(ev.Event(ev.IMPRESSION, T0, 1, 10))
    j.serve(10, _request(10, T0))
    j.apply(ev.Event(ev.CLICK, T0, 1, 10))
    j.serve(11, _request(11, T0 + 5_000))  # a served record may come before its impression
    j.apply(ev.Event(ev.IMPRESSION, T0 + 5_000, 2, 11))
    j.apply(ev.Event(ev.EXIT, T0 + 5_000, 2, 11, watch_ms=0))
    emitted = {"realtime": [], "fast_slow": []}

    def step(w: int) -> None:
        for name, batch in j.advance(w).items():
            emitted[name].append(_samples(batch))

    step(T0 + 29_999)
    assert emitted["realtime"][-1] == []
    step(T0 + 30_000)
    M, N, P = MASKED, NEG, POS
    assert emitted["realtime"][-1] == [(T0 + 30_000, 10, 2, (P, M, M, M, M))]
    j.apply(ev.Event("like", T0 + 45_000, 1, 10))
    step(T0 + 35_000 + 1)  # the never-clicked impression's exit tick ends at T0+35 s
    assert emitted["realtime"][-1] == [(T0 + 35_000, 11, 3, (N, N, N, N, N))]
    step(T0 + 60_000)
    assert emitted["realtime"][-1] == [(T0 + 60_000, 10, 2, (M, M, P, M, M))]
    step(T0 + 90_000)  # the stay is still open: the long view was reached at T0+60 s
    assert emitted["realtime"][-1] == [(T0 + 90_000, 10, 2, (M, P, M, M, M))]
    j.apply(ev.Event(ev.EXIT, T0 + 100_000, 1, 10, watch_ms=100_000))
    step(T0 + 119_999)
    assert emitted["realtime"][-1] == []
    step(T0 + 120_000)
    assert emitted["realtime"][-1] == [(T0 + 120_000, 10, 3, (M, M, M, N, N))]
    step(T0 + 305_000)
    assert emitted["fast_slow"][-1] == [(T0 + 300_000, 10, 0, (P, P, P, N, N)), (T0 + 305_000, 11, 0, (N, N, N, N, N))]
    assert sum(len(e) for e in emitted["fast_slow"][:-1]) == 0
    assert j.finish() == {"realtime": None, "fast_slow": None}  # nothing pending: no slow sample
    assert not j.stays and not j.requests  # everything emitted, nothing kept
    assert j.served == {"served": 2, "served_duplicates": 0, "served_conflicts": 0, "served_orphans": 0,
                        "samples_unserved": 0}


def test_samples_carry_the_first_served_record_and_a_request_never_served_gives_none():
    """Impression 10 served twice (a retry after a lost answer), the second time with other
    features: its samples carry the first, the conflict counted. Impression 11 never served (its
    request lost): its samples are dropped and counted. A record of an impression long gone is an
    orphan."""
    j = _joiner()
    first, second = _request(10, T0), _request(10, T0)
    second["sparse.hour"] = np.array([7], np.int32)
    j.apply(ev.Event(ev.IMPRESSION, T0, 1, 10))
    j.serve(10, first)
    j.serve(10, second)
    j.apply(ev.Event(ev.IMPRESSION, T0, 2, 11))
    j.apply(ev.Event(ev.EXIT, T0, 1, 10, watch_ms=0))
    j.apply(ev.Event(ev.EXIT, T0, 2, 11, watch_ms=0))
    batch = j.advance(T0 + 400_000)["realtime"]
    assert batch["impression_id"].tolist() == [10] and batch["sparse.hour"].tolist() == [0]
    j.serve(12, _request(12, T0))  # before the watermark, of nothing open or pending
    assert j.served == {"served": 3, "served_duplicates": 1, "served_conflicts": 1, "served_orphans": 1,
                        "samples_unserved": 2}  # 11's realtime and fast samples


def test_the_joiner_refuses_events_that_contradict_what_it_knows():
    j = _joiner()
    j.apply(ev.Event(ev.IMPRESSION, T0, 1, 10))
    refused = {
        "seen before": ev.Event(ev.IMPRESSION, T0 + 1, 1, 10),
        "never seen": ev.Event(ev.CLICK, T0, 1, 99),
        "not at its request time": ev.Event(ev.CLICK, T0 + 7, 1, 10),
        "outside its stay": ev.Event("gift", T0 + 5, 1, 10),  # no click: no stay
        "never began": ev.Event(ev.EXIT, T0 + 9, 1, 10, watch_ms=9),
    }
    for reason, event in refused.items():
        with pytest.raises(ev.MalformedEvent, match=reason):
            j.apply(event)
    j.advance(T0 + 1_000)
    with pytest.raises(ev.MalformedEvent, match="after the watermark"):
        j.apply(ev.Event(ev.CLICK, T0 + 1_000, 1, 10))
    assert list(j.stays) == [10] and not j.stays[10].clicked  # nothing refused changed anything


@pytest.fixture(scope="module")
def tiny_events(tiny_streams):
    """The tiny world's first six hours as the live loop sees them: (label rules, timeline of every
    event of the impressions requested in them, the request features of every impression (rows of
    the canonical table), every stream's shards of those impressions in (report_ts, impression, kind)
    order). An impression's samples depend on its own events only, so the span's are `make streams`'."""
    from hydra.utils import instantiate

    from data_pipelines.streams.build import data_set_features

    cfg = compose_config("online", job_paths(tiny_streams))
    data = tiny_streams
    impressions = pd.read_parquet(data.canonical.live_impressions)
    features = data_set_features(data)
    played = impressions["request_ts"].to_numpy() < int(impressions["request_ts"].min()) + 6 * 3_600_000
    kept = impressions[played]
    actions = pd.read_parquet(data.canonical.live_actions)
    timeline = ev.world_timeline(kept, actions[actions["impression_id"].isin(kept["impression_id"])])
    rows = np.flatnonzero(played)  # world_timeline numbers rows within `kept`: back to the whole table's
    timeline = ev.Timeline(timeline.ts, timeline.type, timeline.user, timeline.impression, rows[timeline.row],
                           timeline.watch_ms)
    rules = instantiate(cfg.stream)
    shards = {}
    for name in rules.engines:
        from data_pipelines.micro_batch import take_rows

        every = _shards(data, name)
        shards[name] = _in_report_order(take_rows(every, np.flatnonzero(np.isin(every["impression_id"],
                                                                                 kept["impression_id"]))))
    return rules, timeline, features, shards


def _shards(data, stream: str) -> dict[str, np.ndarray]:
    from data_pipelines.micro_batch import concat_arrays
    from recsys.data import ShardDataset

    return concat_arrays(list(ShardDataset(data.stream(stream), batch_size=1).micro_batches()))


def _in_report_order(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from data_pipelines.micro_batch import take_rows

    return take_rows(arrays, np.lexsort((arrays["kind"], arrays["impression_id"], arrays["report_ts"])))


def _assert_same_samples(mine: dict[str, np.ndarray], shards: dict[str, np.ndarray], name: str) -> None:
    mine = _in_report_order(mine)
    assert set(mine) == set(shards)
    for key in shards:
        assert mine[key].dtype == shards[key].dtype and np.array_equal(mine[key], shards[key]), (name, key)


@pytest.mark.slow
def test_the_joiner_emits_exactly_the_samples_make_streams_writes(tiny_events, tmp_path):
    """Every event of the tiny world through the event codec and the joiner, each impression's
    features served to it, the watermark advanced every 10 s: each stream's
    samples equal its shards' one for one, every field, report_ts included
    (emitted at the first step at or after report_ts, never before). Every 40 steps the joiner's
    state goes through a checkpoint and a new joiner goes on from it."""
    from data_pipelines.micro_batch import concat_arrays
    from online.joiner_checkpoint import JoinerCheckpoints, JoinerPosition

    from data_pipelines.streams.shards import request_arrays

    rules, timeline, features, shards = tiny_events
    joiner = LabelJoiner(rules)
    checkpoints = JoinerCheckpoints(tmp_path / "joiner")
    out = {n: [] for n in rules.engines}
    watermark, steps = int(timeline.ts[0]) - 1, 0

    def keep(batches: dict, at: int) -> None:
        for name, batch in batches.items():
            if batch is not None:
                assert batch["report_ts"].max() <= at and (not out[name] or batch["report_ts"].min() > out[name][-1][1])
                out[name].append((batch, at))

    for i in range(len(timeline)):
        event = ev.parse({**ev.encode(timeline.event(i)), b"live": b"0"})
        while event.ts > watermark + 10_000:
            watermark += 10_000
            keep(joiner.advance(watermark), watermark)
            steps += 1
            if steps % 40 == 0:
                checkpoints.save(joiner.state(), JoinerPosition.start([]), {})
                arrays, meta, _ = checkpoints.load()
                joiner = LabelJoiner.restored(rules, arrays, meta)
        joiner.apply(event)
        if event.type == ev.IMPRESSION:  # its served features (their log's format: the test below)
            joiner.serve(event.impression, request_arrays(features, timeline.row[i:i + 1]))
    keep(joiner.advance(int(timeline.ts[-1])), int(timeline.ts[-1]))
    keep(joiner.finish(), np.iinfo(np.int64).max)
    assert steps >= 80
    for name in rules.engines:
        _assert_same_samples(concat_arrays([b for b, _ in out[name]]), shards[name], name)
    assert not joiner.stays and not joiner.requests


class _Killed(Exception):
    pass


def _publish_world(client, timeline, features, partitions: int) -> None:
    """Every event of the timeline on its user's partition, as the driver publishes them, and each
    impression's served features on its partition's served stream, as the ranker logs them: a clock
    mark on every partition about each second of data time, an end on each at the last; beside
    each impression a short-video play of its user, as the ranker's feature state takes it (the
    joiner must pass over it)."""
    from data_pipelines.streams.shards import request_arrays

    producer = brk.Producer(client)
    partition = ev.partition_of(timeline.user, partitions)
    entries, mark = [], int(timeline.ts[0]) - 1
    for i in range(len(timeline)):
        event = timeline.event(i)
        if event.ts - 1 > mark + 1_000:  # every partition is complete up to ts - 1
            mark = event.ts - 1
            entries += [(brk.events_stream(p), mark, ev.encode(ev.Event(ev.CLOCK, mark, answered=mark)))
                        for p in range(partitions)]
        entries.append((brk.events_stream(int(partition[i])), event.ts, {**ev.encode(event), b"live": b"1"}))
        if event.type == ev.IMPRESSION:
            play = {"type": "play", "ts": event.ts, "user": event.user, "photo": 1, "author": 1,
                    "start_ts": event.ts - 1_000, "watch_ms": 1_000}
            entries.append((brk.events_stream(int(partition[i])), event.ts,
                            {k.encode(): str(v).encode() for k, v in play.items()}))
            entries.append((brk.served_stream(int(partition[i])), event.ts,
                            sv.served_fields(request_arrays(features, timeline.row[i:i + 1]), event.user)))
    end = int(timeline.ts[-1])
    entries += [(brk.events_stream(p), end, ev.encode(ev.Event(ev.END, end))) for p in range(partitions)]
    for a in range(0, len(entries), 5000):
        producer.send(entries[a:a + 5000])


@pytest.mark.slow
def test_two_joiners_one_killed_twice_between_publishing_and_checkpointing_emit_each_sample_once(
        tiny_events, broker, tmp_path):
    """K = 2 over four partitions, side by side on one broker, each publishing its own samples
    streams. Joiner 1 dies twice right after publishing a step's samples and before that step's
    checkpoint (the worst moment: its samples streams are ahead of its state) and is started again
    each time, reading at another pace each time, so that its steps after a resume do not line up
    with those published before the crash. The union of what the broker holds is `make streams`'
    samples, each once — what K = 1 gives (tested above) — and so is the joiners' ledger."""
    import threading

    from data_pipelines.micro_batch import concat_arrays
    from online.joiner import JoinerSettings, run_joiner
    from online.joiner_checkpoint import JoinerCheckpoints
    from online.record import concat_ledgers

    rules, timeline, features, shards = tiny_events
    client = brk.connect(broker.url)
    _publish_world(client, timeline, features, 4)

    class Dying(JoinerCheckpoints):
        def __init__(self, root, dies_at: int | None):
            super().__init__(root)
            self.saves, self.dies_at = 0, dies_at

        def save(self, state, position, ledger_part, served_part=None):
            self.saves += 1
            if self.saves == self.dies_at:
                raise _Killed
            return super().save(state, position, ledger_part, served_part)

    def settings(read_count: int) -> JoinerSettings:
        return JoinerSettings(partitions=4, step_s=2, idle_stream_maxlen=10**9, checkpoint_every_s=600,
                              read_count=read_count, processes=2)

    assert settings(1).owned(0) == [0, 2] and settings(1).owned(1) == [1, 3]
    results: dict[int, tuple] = {}
    deaths: dict[int, list] = {0: [], 1: []}

    def joiner(index: int, lives: tuple[tuple[int | None, int], ...]) -> None:
        for dies_at, read_count in lives:
            try:
                results[index] = run_joiner(rules, settings(read_count), broker.url, "realtime",
                                            Dying(tmp_path / f"joiner.{index}", dies_at), index)
            except _Killed:
                deaths[index].append(dies_at)

    threads = [threading.Thread(target=joiner, args=(0, ((None, 2000),))),
               threading.Thread(target=joiner, args=(1, ((4, 700), (3, 300), (None, 1000))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert deaths == {0: [], 1: [4, 3]} and sorted(results) == [0, 1]
    summaries = [results[k][0] for k in range(2)]
    assert [j.resumes for j in summaries] == [0, 2] and sum(j.events for j in summaries) == len(timeline)
    assert all(j.events > 0.3 * len(timeline) and j.quarantined == j.open_at_end == 0 for j in summaries)
    assert sum(j.samples_unserved + j.served_conflicts + j.served_orphans for j in summaries) == 0
    ledger = concat_ledgers([results[k][1] for k in range(2)])
    served = [results[k][2] for k in range(2)]  # every impression's record read, a resumed one's again
    impressions = timeline.impression[timeline.type == ev.FACT_TYPES.index(ev.IMPRESSION)]
    assert set(np.concatenate([p.impression_id for p in served]).tolist()) == set(impressions.tolist())
    for name in rules.engines:
        entries = [f for k in range(2) for _, f in client.xrange(brk.samples_stream(name, k))]
        assert sum(bool(f.get(b"end")) for f in entries) == 2  # one end per joiner stream
        published = concat_arrays([codec.decode(f[b"batch"]) for f in entries if f.get(b"batch")])
        _assert_same_samples(published, shards[name], name)
        assert sum(j.emitted[name] for j in summaries) == len(shards[name]["report_ts"]) == len(ledger[name].report_ts)
        assert sample_digest(ledger[name].impression_id, ledger[name].report_ts, ledger[name].kind) == \
            sample_digest(shards[name]["impression_id"], shards[name]["report_ts"], shards[name]["kind"])
    client.close()


# -- the broker ---------------------------------------------------------------------------------------
@pytest.fixture
def broker():
    with brk.BrokerServer() as server:
        yield server


def _published(producer: brk.Producer, stream: str, counts: list[int]) -> list[dict]:
    """Entries of `counts` samples each, report times 1, 2, 3, ... and watermarks at each entry's last."""
    batches, ts = [], 0
    for n in counts:
        batch = {"report_ts": np.arange(ts + 1, ts + n + 1, dtype=np.int64), "impression_id": np.arange(ts, ts + n),
                 "kind": np.zeros(n, np.int8)}
        ts += n
        fields = {b"watermark": str(ts).encode(), b"count": str(n).encode()}
        if n:
            fields[b"batch"] = codec.encode(batch)
        producer.send([(stream, ts, fields)])
        batches.append(batch)
    producer.send([(stream, ts, {b"end": b"1", b"watermark": str(ts).encode()})])
    return batches


def test_a_consumer_resumes_at_the_offset_its_checkpoint_names_and_nothing_is_read_twice(broker):
    client = brk.connect(broker.url)
    _published(brk.Producer(client), "s", [3, 0, 4, 2])
    first = BrokerSamples(client, "s")
    got = first.until(6)  # report times 1..5 (before 6)
    assert got["report_ts"].tolist() == [1, 2, 3, 4, 5]
    after, skip = first.offset_for(5)  # 5 learned: the third entry (4 samples from 4) is half read
    assert skip == 2
    resumed = BrokerSamples(client, "s", after.encode() if isinstance(after, str) else after, skip, position=5)
    rest = resumed.until(100)
    assert rest["report_ts"].tolist() == [6, 7, 8, 9] and resumed.exhausted
    assert resumed.offset_for(9)[1] == 0
    client.close()


def test_samples_of_two_joiners_are_merged_in_report_order_and_a_resume_reads_nothing_twice(broker):
    """Two joiner streams (report times 1, 3, 5, ... and 2, 4, 6, ...): the merged reader hands out
    every sample before t once both watermarks passed it, in report order; a checkpoint's offsets
    taken in the middle of a handed-out batch resume each stream where its learned samples end."""
    from online.broker_samples import MergedBrokerSamples

    client = brk.connect(broker.url)

    def publish(stream: str, first: int) -> None:
        producer, ts = brk.Producer(client), first
        for n in (3, 2, 4):
            report = np.arange(ts, ts + 2 * n, 2, dtype=np.int64)
            batch = {"report_ts": report, "impression_id": report * 10, "kind": np.zeros(n, np.int8)}
            producer.send([(stream, int(report[-1]), {b"watermark": str(int(report[-1])).encode(),
                                                      b"count": str(n).encode(), b"batch": codec.encode(batch)})])
            ts += 2 * n
        producer.send([(stream, ts, {b"end": b"1", b"watermark": str(ts).encode()})])

    publish("a", 1)
    publish("b", 2)
    merged = MergedBrokerSamples(client, ["a", "b"])
    got = merged.until(8)
    assert got["report_ts"].tolist() == [1, 2, 3, 4, 5, 6, 7]
    offsets = merged.offset_for(6)  # 1..6 learned: a's 1, 3, 5 (its first entry), b's 2, 4, 6
    assert {s: o["position"] for s, o in offsets.items()} == {"a": 3, "b": 3}
    resumed = MergedBrokerSamples(client, ["a", "b"], offsets, position=6)
    rest = resumed.until(100)
    assert rest["report_ts"].tolist() == list(range(7, 19)) and resumed.exhausted
    client.close()


def test_a_retried_send_cannot_append_twice(broker):
    client = brk.connect(broker.url)
    producer = brk.Producer(client)
    producer.send([("s", 5, {b"a": b"1"}), ("s", 6, {b"a": b"2"})])
    again = brk.Producer(client)  # the same ids again, as a retry after a dropped reply sends them
    again.send([("s", 5, {b"a": b"1"}), ("s", 6, {b"a": b"2"})])
    assert client.xlen("s") == 2
    client.close()


def test_clients_reconnect_through_a_broker_restart_and_the_stream_survives(broker):
    client = brk.connect(broker.url)
    brk.Producer(client).send([("s", 1, {b"a": b"1"})])
    broker.restart(down_s=0.5)
    assert client.xlen("s") == 1  # reconnected; the entry came back from the append-only file
    client.close()


def test_the_digest_changes_when_a_sample_is_learned_twice_or_missed():
    imp, report, kind = np.arange(10), np.arange(10) * 1000, np.zeros(10, np.int8)
    whole = sample_digest(imp, report, kind)
    shuffled = np.random.default_rng(0).permutation(10)
    assert sample_digest(imp[shuffled], report[shuffled], kind[shuffled]) == whole
    halves = (sample_digest(imp[:4], report[:4], kind[:4]) + sample_digest(imp[4:], report[4:], kind[4:])) % 2**64
    assert halves == whole
    twice = np.r_[np.arange(10), 3]
    assert sample_digest(imp[twice], report[twice], kind[twice]) != whole
    assert sample_digest(imp[1:], report[1:], kind[1:]) != whole


def test_the_drivers_schedule_holds_every_fact_and_state_event_once_in_order_and_asks_by_ids(tiny_streams):
    """The first hour of tiny as the driver publishes it: the label facts of the impressions played,
    the plays and room starts and ends up to the last of them (counted here from the canonical
    tables), in time order, entry ids rising on every partition (the broker refuses a lower one as
    already there); an exit carries the ranker's fields; a request carries ids only."""
    from online.driver import DriverSettings, TrafficDriver, event_id
    from online.world import played_world

    data = tiny_streams
    world = played_world(data, 3600)
    imp = pd.read_parquet(data.canonical.live_impressions)
    actions = pd.read_parquet(data.canonical.live_actions)
    played = imp[imp["request_ts"] < imp["request_ts"].min() + 3_600_000]
    last = int(world.ts[-1])
    assert last == int(np.max([played["exit_ts"].max(), actions[actions["impression_id"].isin(
        played["impression_id"])]["ts"].max()]))
    facts = 2 * len(played) + int(played["clicked"].sum()) + int(actions["impression_id"].isin(played["impression_id"]).sum())
    plays = pd.read_parquet(data.canonical.short_plays)
    lives = pd.read_parquet(data.canonical.lives)
    state = int((plays["end_ts"] <= last).sum() + (lives["start_ts"] <= last).sum() + (lives["end_ts"] <= last).sum())
    assert int(world.is_fact.sum()) == facts and int((~world.is_fact).sum()) == state
    assert np.all(np.diff(world.ts) >= 0)
    partition = world.partition(4)
    for p in range(4):
        ids = [tuple(map(int, event_id(world.ts[k], k + 1).split("-"))) for k in np.flatnonzero(partition == p)]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    exit_k = next(k for k in range(len(world)) if world.is_fact[k] and world.fact(k).type == ev.EXIT
                  and imp["clicked"].iat[int(world.timeline.row[world.index[k]])])
    row = int(world.timeline.row[world.index[exit_k]])
    fields = world.fields(exit_k)
    assert (int(fields[b"live"]), int(fields[b"author"]), int(fields[b"start_ts"]), fields[b"clicked"]) == (
        int(imp["live_id"].iat[row]), int(imp["author_id"].iat[row]), int(imp["request_ts"].iat[row]), b"1")
    assert int(fields[b"user"]) % 4 == partition[exit_k]
    driver = TrafficDriver(world, DriverSettings(20, 4, 3600, 0.05, 1, 0, False), ["ctr"], "", "")
    request = driver._request(row)
    assert (request.request_id, request.ids.user_id, request.ids.request_ts, list(request.ids.live_ids)) == (
        f"imp-{int(imp['impression_id'].iat[row])}", int(imp["user_id"].iat[row]), int(imp["request_ts"].iat[row]),
        [int(imp["live_id"].iat[row])])
    assert not request.HasField("user") and not request.candidates


def test_click_to_served_and_staleness_on_a_hand_made_log():
    """Four realtime samples, clicks at positions 1 (at 1 s) and 3 (at 5 s); versions (e, 0), (e, 1),
    (e, 2) had learned 0, 2 and 4 samples; the clock runs 10x from data 0 = unix 100. Answers: (e, 0)
    at unix 101, (e, 1) at 102, an older (e, 0) at 102.5, (e, 2) at 103. The click at 1 s is first
    served by (e, 1) at data 20 s: 19 s (wall: 102 - 100.1 = 1.9 s); the one at 5 s by (e, 2) at
    data 30 s: 25 s (wall 2.5 s). Staleness: (e, 1) at data 20 s had learned up to the sample reported
    at 1.5 s (18.5 s), (e, 2) at data 30 s up to 5.5 s (24.5 s); (e, 0) had learned nothing."""
    from online.record import Answers, DriverClock, StreamLedger, Version
    from online.report.figures import click_to_served, staleness

    ctr = TASKS.index("ctr")
    state = np.full((4, len(TASKS)), MASKED, np.int8)
    state[[1, 3], ctr] = POS
    state[0, ctr] = NEG
    learned = StreamLedger(impression_id=np.arange(4), request_ts=np.array([0, 1_000, 2_000, 5_000]),
                           report_ts=np.array([500, 1_500, 2_500, 5_500]), kind=np.zeros(4, np.int8), state=state,
                           published_unix_s=np.array([100.05, 100.2, 100.3, 100.6]),
                           features_digest=np.zeros(4, np.uint64))
    n = 5
    answers = Answers.empty(n, list(TASKS), np.arange(n), DriverClock(0, 100.0, 10.0))
    answers.answered_unix_s[:] = [101.0, 102.0, 103.0, 102.5, np.nan]
    answers.export[:] = [0, 0, 0, 0, -1]
    answers.push[:] = [0, 1, 2, 0, -1]
    answers.exports.append("e")
    versions = [Version("e", 0, 0, 0, 0.0), Version("e", 1, 2, 0, 0.0), Version("e", 2, 4, 0, 0.0)]
    latency = click_to_served(answers, versions, learned, ctr)
    assert latency["clicks"] == latency["served"] == 2
    assert latency["data_s"]["p50"] == pytest.approx(22.0) and latency["data_s"]["max"] == pytest.approx(25.0)
    assert latency["wall_s"]["p50"] == pytest.approx(2.2) and latency["wall_s"]["max"] == pytest.approx(2.5)
    assert latency["click_to_sample_published_wall_s"]["max"] == pytest.approx(0.1)  # 100.6 - 100.5
    stale = staleness(answers, versions, learned)
    assert stale["p50"] == pytest.approx(21.5) and stale["max"] == pytest.approx(24.5)


# -- the run's record and the progress hash ------------------------------------------------------------
class _Hash:
    """The two commands the progress schema uses, on a dict (a broker's hash)."""

    def __init__(self):
        self.fields: dict[bytes, bytes] = {}

    def hset(self, key, mapping):
        assert key == brk.PROGRESS
        self.fields.update({k.encode(): str(v).encode() for k, v in mapping.items()})

    def hgetall(self, key):
        return dict(self.fields)


def test_each_component_writes_its_own_progress_fields_and_the_sample_reads_them_typed():
    from online.progress import DriverProgress, JoinerProgress, ProgressSample, TrainerProgress, publish

    client = _Hash()
    publish(client, DriverProgress(data0_ms=1_000, unix0_s=5.5, last_ms=15_000, last_request_ms=11_000, speed=20.0))
    publish(client, DriverProgress(clock_ms=6_000, sent=7, answered=6))
    publish(client, JoinerProgress(watermark=5_500, events=40, quarantined=1, emitted={"realtime": 9, "fast_slow": 2},
                                   unix_s=7.0), instance=0)
    publish(client, JoinerProgress(watermark=5_100, events=30, quarantined=0, emitted={"realtime": 4},
                                   unix_s=6.0), instance=1)
    publish(client, TrainerProgress(clock_ms=4_000, learned=8))
    assert set(client.fields) == {b"driver.data0_ms", b"driver.unix0_s", b"driver.last_ms", b"driver.last_request_ms",
                                  b"driver.speed", b"driver.clock_ms", b"driver.sent", b"driver.answered",
                                  *(f"joiner{k}.{f}".encode() for k in (0, 1) for f in
                                    ("watermark", "events", "quarantined", "emitted.realtime", "unix_s")),
                                  b"joiner0.emitted.fast_slow", b"trainer.clock_ms", b"trainer.learned"}
    sample = ProgressSample.read(client, events_in_broker=3, joiners=2)
    assert sample.driver == DriverProgress(data0_ms=1_000, unix0_s=5.5, last_ms=15_000, last_request_ms=11_000,
                                           speed=20.0, clock_ms=6_000, sent=7, answered=6)
    assert sample.driver.played_share() == 0.5  # (6000 - 1000) / (11000 - 1000): of the requests' span
    # The joiners as one: every event up to the lower watermark is applied; counters summed.
    assert sample.joiner == JoinerProgress(watermark=5_100, events=70, quarantined=1,
                                           emitted={"realtime": 13, "fast_slow": 2}, unix_s=6.0)
    assert sample.joiners[1].watermark == 5_100 and sample.trainer.pushes is None
    assert ProgressSample.read(client, events_in_broker=3, joiners=3).joiner.watermark is None  # one not started
    assert ProgressSample.of_dict(dataclasses.asdict(sample)) == sample  # as loop.json holds it


def test_a_runs_record_reads_back_what_was_written(tmp_path):
    from omegaconf import OmegaConf

    from online.record import (Answers, DriverClock, DriverSummary, Fault, JoinerSummary, LiveRun, LoopRecord,
                               Rounds, ServedLedger, StreamLedger, Version)

    run = LiveRun.of(OmegaConf.create({"log_dir": str(tmp_path / "logs"), "artifacts_dir": str(tmp_path / "a"),
                                       "reports_dir": str(tmp_path / "r")}), "x")
    run.clear()
    answers = Answers.empty(3, ["ctr", "gtr"], np.array([2, 0]), DriverClock(10, 1.5, 20.0))
    answers.probabilities[2] = [0.25, 0.5]
    answers.exports.append("e1")
    run.save_answers(answers)
    back = run.answers()
    assert back.tasks == ["ctr", "gtr"] and back.exports == ["e1"] and back.clock == DriverClock(10, 1.5, 20.0)
    np.testing.assert_array_equal(back.probabilities, answers.probabilities)
    np.testing.assert_array_equal(back.rows, [2, 0])
    ledger = {"realtime": StreamLedger(np.array([5]), np.array([1]), np.array([2]), np.array([3], np.int8),
                                       np.zeros((1, 5), np.int8), np.array([9.5]), np.array([2**63 + 1], np.uint64))}
    run.save_ledger(ledger)
    assert list(run.ledger()) == ["realtime"] and run.ledger()["realtime"].published_unix_s.tolist() == [9.5]
    assert run.ledger()["realtime"].features_digest.tolist() == [2**63 + 1]
    served = ServedLedger(np.array([5, 5]), np.array([1, 1]), np.array([0, 3]), np.array([7, 7], np.uint64),
                          np.ones((2, 8), np.float32))
    run.save_served(served)
    assert run.served().state_clock.tolist() == [0, 3] and run.served().dense.shape == (2, 8)
    run.save_rounds(Rounds(np.array([2_000, 1_000, 3_000]), np.array([4, 0, 6]), np.array([6, 4, 9]),
                           np.array([50, -1, 80])))
    rounds = run.rounds()
    # Entries 0-3 in the round at 1 s, 4-5 at 2 s, 6-8 at 3 s, 9 never; a mark reaching 50 first at 2 s.
    assert rounds.published_unix_s(10).tolist() == [1.0] * 4 + [2.0] * 2 + [3.0] * 3 + [np.inf]
    assert rounds.marked_unix_s(np.array([10, 50, 51, 80, 81])).tolist() == [2.0, 2.0, 3.0, 3.0, np.inf]
    run.append_version(Version("e1", 0, 0, 100, 1.0))
    run.append_version(Version("e1", 1, 4, 130, 2.0))
    assert run.versions() == [Version("e1", 0, 0, 100, 1.0), Version("e1", 1, 4, 130, 2.0)]
    run.save_driver_summary(DriverSummary(3, 2, 1, 4.0))
    run.save_joiner_summary(JoinerSummary(10, 1, {"realtime": 4}, 0))
    run.save_loop(LoopRecord(12.5, faults=[Fault("ranker stopped", 3.0)]))
    assert run.driver_summary() == DriverSummary(3, 2, 1, 4.0)
    assert run.joiner_summary().emitted == {"realtime": 4}
    assert run.loop().faults == [Fault("ranker stopped", 3.0)] and run.loop().wall_s == 12.5
    assert run.export.root == tmp_path / "a" / "x"
    assert run.trainer_summary_path == tmp_path / "r" / "online_train_x.json"


# -- supervision ----------------------------------------------------------------------------------------
def test_restarts_back_off_doubling_up_to_the_cap_and_stop_at_the_limit():
    from online.supervision import RestartPolicy

    policy = RestartPolicy(limit=3, backoff_s=0.5, backoff_max_s=3)
    assert [policy.delay_s(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert [policy.allows(n) for n in range(5)] == [True, True, True, False, False]
    with pytest.raises(ValueError, match="backoff_max_s"):
        RestartPolicy(limit=1, backoff_s=2, backoff_max_s=1)


def test_the_chaos_schedule_kills_every_component_once_a_round_at_ordered_moments_inside_its_window():
    from online.supervision import CHAOS_WINDOW, RESTARTABLE, chaos_schedule

    kills = chaos_schedule(12, seed=7)
    shares = [k.share for k in kills]
    assert shares == sorted(shares) and all(CHAOS_WINDOW[0] <= x <= CHAOS_WINDOW[1] for x in shares)
    components = [k.component for k in kills]
    n = len(RESTARTABLE)
    for a in range(0, 10, n):  # each full round: every component once
        assert sorted(components[a:a + n]) == sorted(RESTARTABLE)
    assert chaos_schedule(12, seed=7) == kills and chaos_schedule(12, seed=8) != kills  # the seed decides
    assert chaos_schedule(0, seed=1) == []


def test_the_drill_is_a_named_schedule_and_a_run_takes_one_schedule_only():
    from online.supervision import Kill, fault_schedule

    assert fault_schedule(True, 0, 0) == [Kill(0.3, "trainer", "SIGKILL"), Kill(0.5, "ranker", "SIGTERM"),
                                          Kill(0.7, "broker", "SIGTERM")]
    assert fault_schedule(False, 0, 0) == []
    with pytest.raises(ValueError, match="choose one"):
        fault_schedule(True, 3, 0)
    with pytest.raises(ValueError, match="at least 0"):
        fault_schedule(False, -1, 0)


def test_a_sigkilled_broker_started_again_holds_every_entry_it_acknowledged(broker):
    """fsync=always (the live loop's): nothing acknowledged is lost to a crash."""
    client = brk.connect(broker.url)
    producer = brk.Producer(client)
    for a in range(50):
        producer.send([("s", a * 100 + k, {b"n": str(a * 100 + k).encode()}) for k in range(100)])
    broker.kill()
    broker.start()
    assert client.xlen("s") == 5000
    assert int(client.xrevrange("s", count=1)[0][1][b"n"]) == 4999
    client.close()


def test_a_producer_sending_again_from_an_earlier_point_appends_only_what_is_missing(broker):
    """The driver started again publishes from its last clock mark: ids derived from the events
    make the broker refuse what it holds."""
    from online.driver import MARK_SEQ, event_id

    client = brk.connect(broker.url)
    entries = [("e", event_id(ts, k + 1), {b"k": str(k).encode()}) for k, ts in enumerate([5, 5, 7, 9, 9, 12])]
    mark = ("e", event_id(9, MARK_SEQ), {b"mark": b"9"})
    assert brk.Producer(client).send_keyed(entries[:5] + [mark]) == 6
    assert brk.Producer(client).send_keyed(entries[3:]) == 1  # 9, 9 held (below the mark); 12 new
    assert [f.get(b"k", b"mark") for _, f in client.xrange("e")] == [b"0", b"1", b"2", b"3", b"4", b"mark", b"5"]
    client.close()


class _Exited:
    """A component process as the supervisor sees it: its exit code (None: running)."""

    def __init__(self, exitcode=None):
        self.exitcode = exitcode

    def is_alive(self) -> bool:
        return self.exitcode is None


def test_the_supervisor_starts_a_dead_component_again_after_its_backoff_and_gives_up_past_the_limit():
    """LiveLoop.supervise on stand-in processes: a joiner exiting with status 1 is started again once
    its backoff has passed (not before), recorded with its cause; a trainer that finished (status 0)
    is left alone; a third death past limit 2 ends the run naming the component."""
    from online.live import LiveLoop
    from online.record import LoopRecord
    from online.supervision import RestartPolicy

    loop = LiveLoop.__new__(LiveLoop)  # the supervisor's decisions only: no config, no processes
    loop.s = type("S", (), {"restart": RestartPolicy(limit=2, backoff_s=0.3, backoff_max_s=0.3)})()
    loop.procs = {"trainer": _Exited(0), "joiner.0": _Exited(1)}
    loop.ranker = type("Ranker", (), {"proc": _Exited()})()  # running: poll() is None
    loop.ranker.proc.poll = lambda: None
    loop.broker = None  # not the job's own
    loop.record, loop._restarting, loop._recovering, loop._killed_at = LoopRecord(wall_s=0.0), {}, [], {}
    started = []

    def start(component):
        started.append(component)
        loop.procs[component] = _Exited(None)

    loop._start = start
    loop.supervise()
    assert started == [] and list(loop._restarting) == ["joiner.0"]  # waiting out its backoff
    time.sleep(0.35)
    loop.supervise()
    assert started == ["joiner.0"] and [r.cause for r in loop.record.restarts] == ["exit status 1"]
    loop.procs["joiner.0"] = _Exited(-9)  # the second death: the second restart (limit 2)
    loop.supervise()
    time.sleep(0.35)
    loop.supervise()
    assert started == ["joiner.0"] * 2 and [r.cause for r in loop.record.restarts][1] == "exit status -9"
    assert all(r.restarted_unix_s - r.died_unix_s >= 0.3 for r in loop.record.restarts)
    loop.procs["joiner.0"] = _Exited(-9)  # the third: past the limit
    with pytest.raises(RuntimeError, match="the joiner.0 exited with status -9 after 2 restarts"):
        loop.supervise()
    assert "trainer" not in started
