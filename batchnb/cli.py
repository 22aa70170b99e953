"""The ``batchnb`` command: ``serve``, ``demo`` and ``run``.

    batchnb serve --db demo.sqlite3              # the batch server with the demo API
    batchnb serve --upstream https://api.example # a batch gateway in front of another API
    batchnb demo                                 # the spec's worked examples, end to end
    batchnb run ops.csv --url URL -o results.csv # a CSV of operations, batched
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main"]

DEMO_API_KEY = "demo"
DEMO_TOKEN = "demo-token"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ._secrets import mask_logger
    from .demo import create_demo_app
    from .server import Limits, create_app

    api_key = args.api_key or os.environ.get("BATCHNB_API_KEY")
    token = args.token or os.environ.get("BATCHNB_TOKEN")
    if args.upstream is None:
        api_key = api_key or DEMO_API_KEY
        token = token or DEMO_TOKEN
    if token == DEMO_TOKEN and not _is_loopback(args.host):
        print(
            f"batchnb serve: refusing to expose the well-known demo credentials on {args.host}; "
            "set --token (or BATCHNB_TOKEN) and --api-key (or BATCHNB_API_KEY)",
            file=sys.stderr,
        )
        return 2
    credentials = {api_key or DEMO_API_KEY: token} if token else None
    limits = Limits(
        max_requests=args.max_requests,
        max_depth=args.max_depth,
        operation_timeout=args.operation_timeout,
    )
    if args.upstream is not None:
        app = create_app(upstream=args.upstream, credentials=credentials, limits=limits)
    else:
        app = create_demo_app(db=args.db, credentials=credentials or {}, limits=limits)
    mask_logger("uvicorn.access")
    where = f"upstream {args.upstream}" if args.upstream else f"demo Scheduling API in {args.db}"
    print(f"batchnb: Batch API 2.3 on http://{args.host}:{args.port}/api/2.3/batch, in front of the {where}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def demo(args: argparse.Namespace) -> int:
    from .demo import examples
    from .local import LocalServer

    rows: list[tuple[str, Any]] = []
    with LocalServer() as server:
        client = server.client
        chained = client.submit(examples.chained())
        rows.append(("chained: add-company → add-service → add-staff", chained))
        company_id = chained[0].body["id"] if chained[0].ok else "co_000000000000"
        rows.append(("three services at one location", client.submit(examples.three_services(company_id))))
        rows.append(("a mixed batch", client.submit(examples.mixed(company_id))))
        rows.append(("a nested batch", client.submit(examples.nested())))
    expected_failures = {"missing", "bad-company", "never"}
    failed = False
    for title, responses in rows:
        print(f"\n{title}")
        print(f"  {'name':<16} {'method':<7} {'path':<78} {'status':>6} {'ms':>8}")
        for top in responses:
            for pointer, r in top.walk():
                indent = "  " * pointer.count(".responses")
                ms = f"{r.duration:.2f}" if r.duration is not None else ""
                print(f"  {indent + (r.name or ''):<16} {r.method:<7} {r.path:<78} {r.status!s:>6} {ms:>8}")
                if not r.ok and r.name not in expected_failures:
                    failed = True
    print("\nThe 404, the 400 and the 424 above are expected: they show failures staying where they belong.")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from ._exceptions import BatchError, BatchValidationError
    from .client import Client

    src = Path(args.input)
    if src.suffix.lower() in (".parquet", ".pq"):
        df = pd.read_parquet(src)
    else:
        df = pd.read_csv(src)
    token = args.token or os.environ.get("BATCHNB_TOKEN")
    api_key = args.api_key or os.environ.get("BATCHNB_API_KEY")
    options: dict[str, Any] = {}
    if args.method:
        options["method"] = args.method
    if args.path:
        options["path"] = args.path
    if args.name:
        options["name"] = args.name
    if args.body_columns:
        options["body"] = [c.strip() for c in args.body_columns.split(",") if c.strip()]
    client = Client(args.url, api_key=api_key, token=token, concurrency=args.concurrency, retries=args.retries,
                    mode="direct" if args.direct else "batch")
    try:
        result = client.submit(df, journal=args.journal, resume=args.resume, progress=not args.quiet, **options)
    except BatchValidationError as exc:
        print(f"batchnb run: {src}: {exc}", file=sys.stderr)
        return 2
    except BatchError as exc:
        print(f"batchnb run: {exc}", file=sys.stderr)
        result = exc.partial
        if result is None:
            return 1
    if args.output:
        out = Path(args.output)
        saved = result.copy()
        saved["body"] = saved["body"].map(lambda b: None if b is None else __import__("json").dumps(b))
        if out.suffix.lower() in (".parquet", ".pq"):
            saved.to_parquet(out)
        else:
            saved.to_csv(out, index_label=df.index.name or "row")
    _summary(result)
    return 0 if bool(result["ok"].all()) else 1


def _summary(result: Any) -> None:
    total = len(result)
    ok = int(result["ok"].sum())
    print(f"\n{ok} of {total} rows ok")
    counts = result["status"].astype("string").fillna("no status").value_counts()
    for status, n in counts.items():
        print(f"  {status:>9}  {n}")
    failed = result[~result["ok"]]
    if len(failed):
        print("first failures:")
        for label, row in failed.head(10).iterrows():
            print(f"  row {label!r}: {row['status'] if pd_notna(row['status']) else '—'} {row['error']}")


def pd_notna(v: Any) -> bool:
    import pandas as pd

    return bool(pd.notna(v))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="batchnb", description="Bulk API work from a notebook, with the Batch API 2.3.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the Batch API 2.3 server (demo API on SQLite, or a gateway)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--db", default="batchnb-demo.sqlite3", help="SQLite file of the demo API (default batchnb-demo.sqlite3)")
    s.add_argument("--api-key", help="api key of the accepted credentials (or BATCHNB_API_KEY)")
    s.add_argument("--token", help="token of the accepted credentials (or BATCHNB_TOKEN)")
    s.add_argument("--upstream", help="forward operations to this HTTP API instead of the demo API")
    s.add_argument("--max-requests", type=int, default=50)
    s.add_argument("--max-depth", type=int, default=4)
    s.add_argument("--operation-timeout", type=float, default=30.0)
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=serve)

    d = sub.add_parser("demo", help="start the embedded server and run the spec's worked examples")
    d.set_defaults(func=demo)

    r = sub.add_parser("run", help="run a CSV or Parquet file of operations, one per row")
    r.add_argument("input", help="operations file (.csv or .parquet)")
    r.add_argument("--url", required=True, help="base URL of the Batch API server")
    r.add_argument("--api-key", help="api key (or BATCHNB_API_KEY)")
    r.add_argument("--token", help="token (or BATCHNB_TOKEN; prefer the variable: arguments show in ps)")
    r.add_argument("--method", help="a method, or the column holding it")
    r.add_argument("--path", help="a path template such as /api/2.1/scheduling/companies/{company_id}/services")
    r.add_argument("--name", help="a name template such as co-{site}")
    r.add_argument("--body-columns", help="comma-separated columns that make the body")
    r.add_argument("-o", "--output", help="write the result (.csv or .parquet)")
    r.add_argument("--journal", help="JSON Lines journal, to resume after a crash")
    r.add_argument("--resume", action="store_true", help="send only rows the journal has no outcome for")
    r.add_argument("--concurrency", type=int, default=4)
    r.add_argument("--retries", type=int, default=3)
    r.add_argument("--direct", action="store_true", help="the API has no batch endpoint: send each operation from here")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``batchnb`` console script; returns its exit status.

    >>> main(["run", "--help"])           # doctest: +SKIP
    """
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
