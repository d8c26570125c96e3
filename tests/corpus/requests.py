"""Ranker request lines, each one defect away from a valid request, and what each must get: the
Python validator's exact message (export/requests.py; a "bad JSON: ..." one up to where the parser
adds its position), and the contract both validators keep, the C++ ranker's included: the message
starts with the field's path and states the rule (`path`, `rule`). The words around them may differ
between the two languages; the ranker's two front ends answer with the very same text."""

from __future__ import annotations

import json
from dataclasses import dataclass

PLACEHOLDER = 123456.25  # put where a literal must stand exactly as written


@dataclass(frozen=True)
class RequestCase:
    name: str
    line: bytes
    error: str  # the Python validator's message (C++-only cases: the ranker's, up to the column)
    path: str  # every validator's message starts with this: the field's path ("" for the request)
    rule: str  # ... and contains this
    python_too: bool = True  # False: bytes that are not UTF-8 text, which only the ranker reads

    def kept_by(self, message: str) -> bool:
        return message.startswith(self.path) and self.rule in message

    @property
    def text(self) -> str:
        return self.line.decode("utf-8")


def request_cases(valid: dict, meta: dict) -> list[RequestCase]:
    """`valid`: a request of at least four candidates whose first has a non-empty `long` sequence;
    `meta`: the model.json it is for."""
    rows = {f["name"]: f["rows"] for f in meta["id_features"]}
    fields = [*meta["gsus"]["id_fields"], *meta["gsus"]["side_fields"]]
    short = valid["user"]["sequences"]["short"]
    length = meta["gsus"]["length"]

    def changed(change) -> str:
        request = json.loads(json.dumps(valid))
        change(request)
        return json.dumps(request)

    def written(change, literal: str) -> str:
        return changed(change).replace(str(PLACEHOLDER), literal)

    def key_twice(key: str) -> str:
        return json.dumps(valid).replace(f'"{key}": ', f'"{key}": 1, "{key}": ', 1)

    out_of_range = "out of range"
    text_cases = [
        ("not_json", "{not json", "bad JSON", "bad JSON", ""),
        ("not_an_object", "[1, 2]", "a request must be a JSON object", "", "a request must be a JSON object"),
        ("no_candidates", changed(lambda r: r.update(candidates=[])), "candidates is empty", "", "candidates is empty"),
        ("candidates_missing", changed(lambda r: r.pop("candidates")), "missing or non-array field 'candidates'", "",
         "missing or non-array field 'candidates'"),
        ("sequence_fields_of_different_lengths", changed(lambda r: r["user"]["sequences"]["short"]["author"].append(1)),
         f"user.sequences.short.author has {len(short['author']) + 1} elements, item has {len(short['item'])}",
         "user.sequences.short.author", f"has {len(short['author']) + 1} elements, item has {len(short['item'])}"),
        ("id_above_its_table", changed(lambda r: r["candidates"][3]["ids"].update(live_item=10 ** 9)),
         f"candidates[3].ids.live_item=1000000000 out of range [0, {rows['live_item']})",
         "candidates[3].ids.live_item=1000000000", f"{out_of_range} [0, {rows['live_item']})"),
        ("negative_id", changed(lambda r: r["candidates"][0]["ids"].update(live_item=-1)),
         f"candidates[0].ids.live_item=-1 out of range [0, {rows['live_item']})",
         "candidates[0].ids.live_item=-1", f"{out_of_range} [0, {rows['live_item']})"),
        ("fractional_id", changed(lambda r: r["candidates"][1]["ids"].update(category=2.5)),
         "candidates[1].ids.category must be an integer, got 2.5", "candidates[1].ids.category",
         "must be an integer, got 2.5"),
        ("id_written_as_float", written(lambda r: r["candidates"][1]["ids"].update(category=PLACEHOLDER), "2.0"),
         "candidates[1].ids.category must be an integer, got 2.0", "candidates[1].ids.category",
         "must be an integer, got 2.0"),
        ("id_beyond_double", written(lambda r: r["candidates"][1]["ids"].update(category=PLACEHOLDER), "1e400"),
         "candidates[1].ids.category must be an integer, got 1e400", "candidates[1].ids.category",
         "must be an integer"),
        ("id_beyond_int64", written(lambda r: r["candidates"][1]["ids"].update(category=PLACEHOLDER), "1" + "0" * 30),
         f"candidates[1].ids.category=1{'0' * 30} out of range [0, {rows['category']})",
         f"candidates[1].ids.category=1{'0' * 30}", out_of_range),
        ("user_id_missing", changed(lambda r: r["user"]["ids"].pop("user_id")), "user.ids: missing field 'user_id'",
         "user.ids", "missing field 'user_id'"),
        ("candidate_id_in_the_user", changed(lambda r: r["user"]["ids"].update(live_item=3)),
         "user.ids: unexpected field 'live_item' (expected here: "
         f"{[f['name'] for f in meta['id_features'] if f['name'] in meta['request_layout']['user']['ids']]})",
         "user.ids", "unexpected field 'live_item'"),
        ("dense_not_a_number", changed(lambda r: r["candidates"][2]["dense"].update(room_ctr_5min="high")),
         'candidates[2].dense.room_ctr_5min must be a finite float32 number, got "high"',
         "candidates[2].dense.room_ctr_5min", 'must be a finite float32 number, got "high"'),
        # Finite doubles beyond float32's range would reach the model as inf.
        ("dense_beyond_float32", written(lambda r: r["candidates"][2]["dense"].update(room_ctr_5min=PLACEHOLDER),
                                         "3.5e38"),
         "candidates[2].dense.room_ctr_5min must be a finite float32 number, got 3.5e38",
         "candidates[2].dense.room_ctr_5min", "must be a finite float32 number"),
        ("dense_below_float32", written(lambda r: r["user"]["dense"].update(user_history_len=PLACEHOLDER), "-1e39"),
         "user.dense.user_history_len must be a finite float32 number, got -1e39", "user.dense.user_history_len",
         "must be a finite float32 number"),
        ("dense_beyond_double", written(lambda r: r["user"]["dense"].update(user_history_len=PLACEHOLDER), "1e400"),
         "user.dense.user_history_len must be a finite float32 number, got 1e400", "user.dense.user_history_len",
         "must be a finite float32 number"),
        ("sequence_longer_than_the_model", changed(lambda r: r["user"]["sequences"].update(
            short={f: [1] * (length + 1) for f in fields})),
         f"user.sequences.short.{fields[0]} has {length + 1} elements, more than the model's {length}",
         f"user.sequences.short.{fields[0]}", f"has {length + 1} elements, more than the model's {length}"),
        ("side_bucket_beyond_its_table", changed(lambda r: r["candidates"][0]["sequences"]["long"].update(gap=[99] * len(
            r["candidates"][0]["sequences"]["long"]["item"]))),
         f"candidates[0].sequences.long.gap[0]=99 out of range [0, {meta['gsus']['rows']['gap']})",
         "candidates[0].sequences.long.gap[0]=99", f"{out_of_range} [0, {meta['gsus']['rows']['gap']})"),
        ("request_id_not_a_string", changed(lambda r: r.update(request_id=7)), "request_id must be a string",
         "request_id", "must be a string"),
        # No key twice (the last one would silently win), no text that could not be written back.
        ("duplicate_key", key_twice("user_id"), "bad JSON: duplicate key 'user_id'", "bad JSON",
         "duplicate key 'user_id'"),
        ("duplicate_request_id", key_twice("request_id"), "bad JSON: duplicate key 'request_id'", "bad JSON",
         "duplicate key 'request_id'"),
        ("lone_high_surrogate", changed(lambda r: r.update(request_id="x\ud800y")), "bad JSON: lone surrogate",
         "bad JSON", "lone surrogate"),
        ("lone_low_surrogate", changed(lambda r: r.update(request_id="\udc00")), "bad JSON: lone surrogate",
         "bad JSON", "lone surrogate"),
    ]
    valid_line = json.dumps(valid).encode()
    byte_cases = [
        ("invalid_utf8", valid_line.replace(b'"request_id": "', b'"request_id": "\xff\xfe', 1),
         "bad JSON: invalid UTF-8 at column 17"),
        ("overlong_utf8", valid_line.replace(b'"request_id": "', b'"request_id": "\xc0\xaf', 1),
         "bad JSON: invalid UTF-8 at column 17"),
        ("utf8_encoded_surrogate", valid_line.replace(b'"request_id": "', b'"request_id": "\xed\xa0\x80', 1),
         "bad JSON: invalid UTF-8 at column 17"),
    ]
    return [*(RequestCase(name, line.encode(), error, path, rule) for name, line, error, path, rule in text_cases),
            *(RequestCase(name, line, error, "bad JSON", error.removeprefix("bad JSON: "), python_too=False)
              for name, line, error in byte_cases)]
