"""python -m tests.corpus OUT_DIR [--model artifacts/<name>]: write the corpus out for a look.

OUT_DIR/kuailive/<case>/ holds each source folder (with expected.json: the outcome), and, given an
export, OUT_DIR/requests.jsonl its request lines with OUT_DIR/requests.expected.jsonl beside them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tests.corpus.kuailive import ingest_cases
from tests.corpus.requests import request_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--model", type=Path, help="an export (make export): its model.json and sample requests")
    args = parser.parse_args()
    for case in ingest_cases():
        folder = case.write(args.out_dir / "kuailive" / case.name)
        (folder / "expected.json").write_text(json.dumps(
            {"error": case.error, "error_is_prefix": case.error_is_prefix, "overrides": list(case.overrides),
             "quarantine": [[*key, reason] for key, reason in case.quarantine.items()],
             "corrected": [[*key, rows] for key, rows in case.corrected.items()]}, indent=2, ensure_ascii=False))
    if args.model is not None:
        meta = json.loads((args.model / "model.json").read_text())
        request = json.loads((args.model / "requests.jsonl").read_text().splitlines()[0])
        request["candidates"][0]["sequences"]["long"] = {
            f: [1, 1] for f in [*meta["gsus"]["id_fields"], *meta["gsus"]["side_fields"]]}
        cases = request_cases(request, meta)
        (args.out_dir / "requests.jsonl").write_bytes(b"".join(c.line + b"\n" for c in cases))
        (args.out_dir / "requests.expected.jsonl").write_text(
            "".join(json.dumps({"case": c.name, "error": c.error}) + "\n" for c in cases))
    print(f"corpus -> {args.out_dir}")


if __name__ == "__main__":
    main()
