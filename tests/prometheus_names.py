"""Prometheus' naming rules for exposed metrics, as `promtool check metrics` applies them (client_golang's
promlint: help text, base units, `_total` on counters and only there, the histogram and summary suffixes
and labels, no type in the name, no colons, snake_case, no abbreviated units, `_timestamp_seconds` only
on gauges), for machines without promtool. `problems(text)` lists what the exposition text breaks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

BASE_UNITS = {"amperes", "bytes", "celsius", "grams", "joules", "kelvin", "meters", "metres", "seconds", "volts"}
OTHER_UNITS = {"minutes": "seconds", "hours": "seconds", "days": "seconds", "weeks": "seconds", "kelvins": "kelvin",
               "fahrenheit": "celsius", "rankine": "celsius", "inches": "meters", "yards": "meters",
               "miles": "meters", "bits": "bytes", "calories": "joules", "pounds": "grams", "ounces": "grams"}
UNIT_PREFIXES = ("pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi", "mega", "mibi",
                 "giga", "gibi", "tera", "tebi", "peta", "pebi")
ABBREVIATIONS = ("s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d")
TYPES = ("counter", "gauge", "summary", "histogram", "gauge_histogram")
CAMEL = re.compile(r"[a-z][A-Z]")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+\S+")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')


@dataclass
class Family:
    name: str
    type: str = "untyped"
    help: str | None = None
    labels: set[str] = field(default_factory=set)


def families(text: str) -> dict[str, Family]:
    out: dict[str, Family] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            out.setdefault(name, Family(name)).help = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            out.setdefault(name, Family(name)).type = kind.strip()
        elif line and not line.startswith("#"):
            match = SAMPLE.match(line)
            if match is None:
                raise ValueError(f"not a sample line: {line!r}")
            name = match.group(1)
            family = next((f for f in out.values() if name == f.name or (
                f.type in ("histogram", "summary") and name in (f"{f.name}_bucket", f"{f.name}_sum",
                                                                f"{f.name}_count"))), None)
            family = family or out.setdefault(name, Family(name))
            family.labels |= set(LABEL.findall(match.group(3) or ""))
    return out


def _unit(name: str) -> tuple[str, str] | None:
    for part in name.split("_"):
        if part in BASE_UNITS:
            return part, part
        if part in OTHER_UNITS:
            return part, OTHER_UNITS[part]
        for prefix in UNIT_PREFIXES:
            rest = part[len(prefix):]
            if part.startswith(prefix) and (rest in BASE_UNITS or rest in OTHER_UNITS):
                return part, OTHER_UNITS.get(rest, rest)
    return None


def problems(text: str) -> list[str]:
    out = []
    for f in families(text).values():
        said = lambda what: out.append(f"{f.name}: {what}")  # noqa: E731
        name = f.name.lower()
        if f.help is None:
            said("no help text")
        unit = _unit(f.name)
        if unit is not None and unit[0] != unit[1]:
            said(f'use base unit "{unit[1]}" instead of "{unit[0]}"')
        if f.type == "counter" and not f.name.endswith("_total"):
            said('counter metrics should have "_total" suffix')
        if f.type not in ("counter", "untyped") and f.name.endswith("_total"):
            said('non-counter metrics should not have "_total" suffix')
        if f.type != "untyped":
            if f.type != "histogram" and f.name.endswith("_bucket"):
                said('non-histogram metrics should not have "_bucket" suffix')
            if f.type not in ("histogram", "summary") and f.name.endswith(("_count", "_sum")):
                said("non-histogram and non-summary metrics should not have a _count or _sum suffix")
            if f.type != "histogram" and "le" in f.labels:
                said('non-histogram metrics should not have "le" label')
            if f.type != "summary" and "quantile" in f.labels:
                said('non-summary metrics should not have "quantile" label')
        if f.type not in ("gauge", "untyped") and f.name.endswith("_timestamp_seconds"):
            said('non-gauge metrics should not have "_timestamp_seconds" suffix')
        for kind in TYPES:
            if f"_{kind}_" in name or name.endswith(f"_{kind}"):
                said(f"metric name should not include type '{kind}'")
        if ":" in f.name:
            said("metric names should not contain ':'")
        if CAMEL.search(f.name):
            said("metric names should be written in 'snake_case' not 'camelCase'")
        if any(CAMEL.search(label) for label in f.labels):
            said("label names should be written in 'snake_case' not 'camelCase'")
        if any(f"_{a}_" in name or name.endswith(f"_{a}") for a in ABBREVIATIONS):
            said("metric names should not contain abbreviated units")
    return out
