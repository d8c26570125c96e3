"""The live loop's event path, per process: how fast the driver encodes this world's events, how
many a redis-server of the job's own takes per second under each fsync policy (`always`, the loop's:
no acknowledged write lost to a SIGKILL; `everysec`) in the driver's round sizes, and how many the
label joiner consumes per second — one process over P partitions, checkpoints included — with the
samples it emits. docs/capacity.md scales these figures out."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from hydra import compose
from omegaconf import DictConfig

from bench.data import ensure_shards
from data_pipelines.configured import build
from data_pipelines.streams.build import data_set_features
from online import broker as brk
from online import events as ev
from online.driver import END_SEQ, MARK_SEQ, event_id
from online.joiner import JoinerSettings, run_joiner
from online.joiner_checkpoint import JoinerCheckpoints
from online.world import played_world


def _entries(world, features, partitions: int, limit: int, mark_every_ms: int) -> list[tuple[str, str, dict]]:
    """The first `limit` entries of the world's schedule as the driver publishes them on `partitions`
    (the ranker's state events included), each impression's served-features record as the ranker
    logs it (`features`: make streams' features of every impression), a clock mark on every
    partition each `mark_every_ms` of data time, and the partitions' ends."""
    from data_pipelines.streams.shards import request_arrays
    from online.served import served_fields

    n = min(limit, len(world))
    partition = world.partition(partitions)
    out, mark = [], int(world.ts[0]) - 1
    for k in range(n):
        ts = int(world.ts[k])
        if ts - 1 >= mark + mark_every_ms:
            mark = ts - 1
            out += [(brk.events_stream(p), event_id(mark, MARK_SEQ), ev.encode(ev.Event(ev.CLOCK, mark)))
                    for p in range(partitions)]
        out.append((brk.events_stream(int(partition[k])), event_id(ts, k + 1), world.fields(k)))
        if world.is_fact[k] and world.fact(k).type == ev.IMPRESSION:
            row = int(world.timeline.row[world.index[k]])
            out.append((brk.served_stream(int(partition[k])), event_id(ts, k + 1),
                        served_fields(request_arrays(features, np.array([row])), int(world.timeline.user[world.index[k]]))))
    end = int(world.ts[n - 1])
    return out + [(brk.events_stream(p), event_id(end, END_SEQ), ev.encode(ev.Event(ev.END, end)))
                  for p in range(partitions)]


def _append_rate(entries: list, fsync: str, round_size: int) -> dict:
    with brk.BrokerServer(fsync=fsync) as server:
        client = brk.connect(server.url)
        producer = brk.Producer(client)
        start = time.perf_counter()
        for a in range(0, len(entries), round_size):
            producer.send_keyed(entries[a:a + round_size])
        seconds = time.perf_counter() - start
        client.close()
    return {"events_per_s": len(entries) / seconds, "seconds": seconds}


def run(cfg: DictConfig) -> dict:
    bc = cfg.bench.broker
    data = ensure_shards(cfg)
    online_cfg = compose(config_name="online", overrides=[f"world={cfg.world.name}",
                                                          f"paths.data_dir={cfg.paths.data_dir}"])
    world = played_world(data, None)
    figures: dict = {"world": data.name}
    features = data_set_features(data)  # what the ranker would serve and log

    start = time.perf_counter()
    entries = _entries(world, features, int(bc.partitions), int(bc.events), int(bc.mark_every_ms))
    encode_s = time.perf_counter() - start
    facts = sum(1 for stream, _, f in entries if stream.startswith("events.") and f[b"type"] not in (b"clock", b"end"))
    served = sum(1 for stream, _, _ in entries if stream.startswith("served."))
    size = float(np.mean([sum(len(k) + len(v) for k, v in f.items()) for _, _, f in entries]))
    figures["driver_encode_events_per_s"] = (facts + served) / encode_s
    figures["entry_bytes_mean"] = size
    figures["served_records"] = served
    print(f"broker and joiner ({data.name}: {facts:,} events and {served:,} served-features records on "
          f"{bc.partitions} partitions, {size:,.0f} bytes an entry on average; encoded at "
          f"{(facts + served) / encode_s:,.0f} entries/s)")

    figures["append"] = {}
    for fsync in bc.fsync:
        for round_size in bc.round_sizes:
            rate = _append_rate(entries, str(fsync), int(round_size))
            figures["append"][f"{fsync}/{round_size}"] = rate
            print(f"  broker, appendfsync {fsync:<8} rounds of {round_size:>5}: {rate['events_per_s']:>9,.0f} "
                  f"entries/s")

    figures["joiner"] = {}
    for processes in bc.joiner_processes:
        rate = _joiner_rate(entries, online_cfg, int(bc.partitions), int(processes))
        figures["joiner"][f"K={processes}"] = rate
        print(f"  joiner, process 0 of {processes} ({rate['partitions']} of {bc.partitions} partitions): "
              f"{rate['events_per_s']:,.0f} events/s ({rate['events_per_s_per_partition']:,.0f} per partition), "
              f"{rate['samples_per_s']:,.0f} samples/s emitted (every stream), checkpoints every "
              f"{online_cfg.joiner.checkpoint_every_s:g} s of data time included")
    return figures


def _joiner_rate(entries: list, online_cfg: DictConfig, partitions: int, processes: int) -> dict:
    """Joiner 0 of `processes` on its partitions of the published entries, timed alone."""
    settings = JoinerSettings(partitions=partitions, step_s=float(online_cfg.joiner.step_s), idle_stream_maxlen=1000,
                              checkpoint_every_s=float(online_cfg.joiner.checkpoint_every_s), processes=processes)
    with brk.BrokerServer(fsync="always") as server, tempfile.TemporaryDirectory() as scratch:
        client = brk.connect(server.url)
        producer = brk.Producer(client)
        for a in range(0, len(entries), 2000):
            producer.send_keyed(entries[a:a + 2000])
        start = time.perf_counter()
        summary, _, _ = run_joiner(build(online_cfg.stream), settings, server.url, str(online_cfg.online_train.stream),
                                JoinerCheckpoints(Path(scratch) / "joiner"), 0)
        seconds = time.perf_counter() - start
        client.close()
    owned = len(settings.owned(0))
    return {"events_per_s": summary.events / seconds, "samples_per_s": sum(summary.emitted.values()) / seconds,
            "partitions": owned, "events": summary.events, "seconds": seconds,
            "events_per_s_per_partition": summary.events / seconds / owned}
