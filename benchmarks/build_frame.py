"""How fast a large DataFrame becomes wire JSON through ``from_frame``.

Baseline: ``df.to_json(orient="records", lines=True)`` on the same columns,
pandas' own C serialiser, which does no checking at all. Measured:
``from_frame`` (every row checked, one Operation per row) plus serialising the
operations as the client sends them (``op.to_wire()``, ``_json.dumps``), one
JSON document per batch of 50. The goal is to stay within 1.5x of the baseline.

    python benchmarks/build_frame.py --rows 1000000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import best_of, report

from batchnb import _json
from batchnb.frames import from_frame

TARGET = 1.5
PATH = "/api/2.1/scheduling/companies/{company}/staff"
BODY = {"firstName": "first", "lastName": "last", "age": "age"}


def make_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    first = np.array(["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"])
    last = np.array(["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"])
    return pd.DataFrame(
        {
            "company": pd.Series([f"co-{i}" for i in rng.integers(0, 5000, rows)], dtype="str"),
            "first": pd.Series(first[rng.integers(0, len(first), rows)], dtype="str"),
            "last": pd.Series(last[rng.integers(0, len(last), rows)], dtype="str"),
            "age": rng.integers(18, 80, rows),
        }
    )


def baseline(df: pd.DataFrame) -> int:
    return len(df.to_json(orient="records", lines=True))


def measured(df: pd.DataFrame, chunk: int = 50) -> int:
    ops = from_frame(df, method="POST", path=PATH, body=BODY)
    # What the client's sender does with each batch.
    dumps = _json.dumps
    size = 0
    for start in range(0, len(ops), chunk):
        size += len(dumps({"requests": [op.to_wire() for op in ops[start : start + chunk]]}))
    return size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs (default 3)")
    args = parser.parse_args(argv)

    df = make_frame(args.rows)
    base = best_of(baseline, df, args.repeat)
    ours = best_of(measured, df, args.repeat)
    print(f"rows: {args.rows:,}")
    return report(
        "df.to_json(orient='records', lines=True)", base, "from_frame + wire JSON per batch of 50", ours, TARGET
    )


if __name__ == "__main__":
    sys.exit(main())
