"""The `progress` hash on the broker: each component writes its counters there as it goes, and the
supervisor samples them once a second for the report's time series. One schema per component, its
fields stored as `<component>.<field>` (a dict field as `<component>.<field>.<key>`), so that a
writer and the report never meet over a literal key."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields

from online.broker import PROGRESS


@dataclass
class DriverProgress:
    data0_ms: int | None = None  # the data time the clock started at...
    unix0_s: float | None = None  # ...at this wall time
    last_ms: int | None = None  # the last event's data time
    last_request_ms: int | None = None  # the last request's: the clock runs to here, then jumps to last_ms
    speed: float | None = None  # data seconds per wall second
    clock_ms: int | None = None  # every partition is complete up to here
    sent: int | None = None  # requests
    answered: int | None = None
    done_unix_s: float | None = None  # every event published and every request answered or lost
    starts: int | None = None  # drivers of this run started so far (a restarted one resumes the run)

    def played_share(self) -> float | None:
        """How far through the requests the clock is (0 to 1, and past 1 on the events after the last
        request), once the driver has started."""
        if None in (self.clock_ms, self.data0_ms, self.last_request_ms):
            return None
        return (self.clock_ms - self.data0_ms) / max(self.last_request_ms - self.data0_ms, 1)


@dataclass
class JoinerProgress:
    watermark: int | None = None  # every event up to here is applied
    events: int | None = None
    quarantined: int | None = None
    emitted: dict[str, int] = field(default_factory=dict)  # samples, by stream
    unix_s: float | None = None  # when it wrote these


@dataclass
class TrainerProgress:
    clock_ms: int | None = None  # the data clock it has learned up to
    learned: int | None = None  # samples of its stream, from the stream's start
    pushes: int | None = None
    unix_s: float | None = None


COMPONENTS = {"driver": DriverProgress, "joiner": JoinerProgress, "trainer": TrainerProgress}
_NAME_OF = {cls: name for name, cls in COMPONENTS.items()}


def publish(client, progress, instance: int | None = None) -> None:
    """Writes the fields of `progress` (a component's schema) that are set; `instance`: which of a
    component's processes writes them (the joiners: `joiner<k>.<field>`)."""
    prefix = _NAME_OF[type(progress)] + ("" if instance is None else str(instance))
    mapping = {}
    for name, value in asdict(progress).items():
        if isinstance(value, dict):
            mapping.update({f"{prefix}.{name}.{key}": v for key, v in value.items()})
        elif value is not None:
            mapping[f"{prefix}.{name}"] = value
    if mapping:
        client.hset(PROGRESS, mapping=mapping)


def _parse(cls, values: dict[str, str]):
    kwargs: dict = {}
    for f in fields(cls):
        if f.name in values:
            kwargs[f.name] = _number(values[f.name], f.type)
        else:
            nested = {k.split(".", 1)[1]: int(float(v)) for k, v in values.items() if k.startswith(f"{f.name}.")}
            if nested:
                kwargs[f.name] = nested
    return cls(**kwargs)


def _number(raw: str, annotation: str):
    return int(float(raw)) if annotation.startswith("int") else float(raw)


def joined(joiners: list[JoinerProgress]) -> JoinerProgress:
    """The joiner processes as one: the lowest watermark (every event up to it is applied by all),
    the counters summed; None where one has not written it yet."""
    def all_of(name: str) -> list:
        values = [getattr(j, name) for j in joiners]
        return [] if not joiners or None in values else values

    emitted: dict[str, int] = {}
    for j in joiners:
        for stream, n in j.emitted.items():
            emitted[stream] = emitted.get(stream, 0) + n
    return JoinerProgress(watermark=min(all_of("watermark"), default=None), events=sum(all_of("events")) if
                          all_of("events") else None, quarantined=sum(all_of("quarantined")) if
                          all_of("quarantined") else None, emitted=emitted,
                          unix_s=min(all_of("unix_s"), default=None))


@dataclass
class ProgressSample:
    """The loop's counters at one moment, as the supervisor sampled them; `joiner` is the joiner
    processes as one (`joined`), `joiners` each of them."""

    unix_s: float
    events_in_broker: float  # what the events partitions hold: all of it (kept for a ranker's rebuild)
    driver: DriverProgress
    joiner: JoinerProgress
    trainer: TrainerProgress
    joiners: list[JoinerProgress] = field(default_factory=list)

    @classmethod
    def read(cls, client, events_in_broker: float, joiners: int = 1) -> "ProgressSample":
        raw = {k.decode(): v.decode() for k, v in client.hgetall(PROGRESS).items()}

        def part(prefix: str, schema):
            return _parse(schema, {k.split(".", 1)[1]: v for k, v in raw.items() if k.startswith(f"{prefix}.")})

        each = [part(f"joiner{k}", JoinerProgress) for k in range(joiners)]
        return cls(time.time(), events_in_broker, part("driver", DriverProgress), joined(each),
                   part("trainer", TrainerProgress), each)

    @classmethod
    def of_dict(cls, d: dict) -> "ProgressSample":
        return cls(d["unix_s"], d["events_in_broker"], **{name: schema(**d[name]) for name, schema in COMPONENTS.items()},
                   joiners=[JoinerProgress(**j) for j in d.get("joiners", [])])
