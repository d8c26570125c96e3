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
    lost: int | None = None
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


def publish(client, progress) -> None:
    """Writes the fields of `progress` (a component's schema) that are set."""
    prefix = _NAME_OF[type(progress)]
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


@dataclass
class ProgressSample:
    """The loop's counters at one moment, as the supervisor sampled them."""

    unix_s: float
    events_in_broker: float  # published, not consumed yet (approximately: the joiner trims what it read)
    driver: DriverProgress
    joiner: JoinerProgress
    trainer: TrainerProgress

    @classmethod
    def read(cls, client, events_in_broker: float) -> "ProgressSample":
        raw = {k.decode(): v.decode() for k, v in client.hgetall(PROGRESS).items()}
        parts = {name: _parse(schema, {k.split(".", 1)[1]: v for k, v in raw.items() if k.startswith(f"{name}.")})
                 for name, schema in COMPONENTS.items()}
        return cls(time.time(), events_in_broker, **parts)

    @classmethod
    def of_dict(cls, d: dict) -> "ProgressSample":
        return cls(d["unix_s"], d["events_in_broker"],
                   **{name: schema(**d[name]) for name, schema in COMPONENTS.items()})
