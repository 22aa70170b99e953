"""How fast a million responses become a DataFrame through ``to_frame``.

Baseline: ``pd.DataFrame.from_records`` on the response dicts as they come off
the wire. Measured: ``to_frame`` on the same responses already parsed into
:class:`~batchnb.model.Response` objects (parsing is the client's step, not
this one's), which adds the ``ok``, ``error``, ``batch``, ``attempts`` and
``parent`` columns and indexes by row label. The goal is to take no longer
than the baseline (1.0x).

    python benchmarks/results_frame.py --rows 1000000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import best_of, report

from batchnb.model import Response
from batchnb.results import to_frame

TARGET = 1.0


def make_dicts(rows: int) -> list[dict]:
    out = []
    for i in range(rows):
        if i % 50 == 49:  # one failure per batch of 50
            out.append(
                {
                    "path": f"/api/2.1/scheduling/companies/{i % 5000}/staff",
                    "method": "POST",
                    "status": 404,
                    "duration": 0.8,
                    "body": {"error": {"code": "not_found", "message": "no such company"}},
                }
            )
            continue
        out.append(
            {
                "path": f"/api/2.1/scheduling/companies/{i % 5000}/staff",
                "method": "POST",
                "name": f"staff-{i}" if i % 10 == 0 else None,
                "status": 201,
                "duration": 3.25,
                "body": {"id": i, "firstName": "Ada", "lastName": "Lovelace"},
            }
        )
    return out


def make_responses(dicts: list[dict]) -> list[Response]:
    responses = [Response.from_wire(d) for d in dicts]
    for i, r in enumerate(responses):
        r.row = i
        r.batch = i // 50
        r.attempts = 1
    return responses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs (default 3)")
    args = parser.parse_args(argv)

    dicts = make_dicts(args.rows)
    responses = make_responses(dicts)
    base = best_of(pd.DataFrame.from_records, dicts, args.repeat)
    ours = best_of(to_frame, responses, args.repeat)
    print(f"responses: {args.rows:,}")
    return report("pd.DataFrame.from_records(dicts)", base, "to_frame(responses)", ours, TARGET)


if __name__ == "__main__":
    sys.exit(main())
