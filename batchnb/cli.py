"""The ``batchnb`` command: ``serve``, ``demo``, ``run`` and ``sanitize-config``.

    batchnb serve --db demo.sqlite3              # the batch server with the demo API
    batchnb serve --upstream https://api.example # a batch gateway in front of another API
    batchnb demo                                 # the spec's worked examples, end to end
    batchnb run ops.csv --url URL -o results.csv # a CSV of operations, batched
    batchnb run ops.csv --url URL --expect expected.csv --junit report.xml   # a regression test
    batchnb sanitize-config                      # the nbval sanitizer's path

Exit status: 0 when every row is ok (with --expect: as expected), 1 when
some rows are not, 2 for input that cannot be run (nothing was sent).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

DEMO_API_KEY = "demo"
DEMO_TOKEN = "demo-token"
#: how many operations ``run --dry-run`` shows before it counts the rest.
PREVIEW = 20


class _Help(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default; descriptions and examples keep their lines.

    An option that is off, or empty, by default says in its own words what happens without it.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.option_strings
            and action.default not in (None, False, [], argparse.SUPPRESS)
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


class _Usage(Exception):
    """A mistake in how the command was called: a message, exit status 2, no traceback."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _err(message: str) -> None:
    print(f"batchnb: {message}", file=sys.stderr)


# ---------------------------------------------------------------- serve


def serve(args: argparse.Namespace) -> int:
    from . import _serving
    from ._exceptions import BatchValidationError, Problem
    from ._extras import require
    from ._secrets import mask_url
    from .server import Limits

    uvicorn = require("uvicorn", "server", "batchnb serve")
    from .server._bounds import uvicorn_options

    api_key = args.api_key or os.environ.get("BATCHNB_API_KEY")
    token = args.token or os.environ.get("BATCHNB_TOKEN")
    tenants = _serving.credentials_from_environment()
    demo_defaults = args.upstream is None and not token and not tenants
    if args.upstream is None and not tenants:
        api_key = api_key or DEMO_API_KEY
        token = token or DEMO_TOKEN
    credentials = {**(tenants or {}), **({api_key or DEMO_API_KEY: token} if token else {})} or None
    if credentials and DEMO_TOKEN in credentials.values() and not _is_loopback(args.host):
        raise _Usage(
            f"serve: refusing to expose the well-known demo credentials on {args.host}; "
            "set --token (or BATCHNB_TOKEN) and --api-key (or BATCHNB_API_KEY)"
        )
    given = [o for o in ("upstream_cacert", "upstream_cert", "upstream_key", "upstream_proxy") if getattr(args, o)]
    if given and args.upstream is None:
        raise _Usage(f"serve --{given[0].replace('_', '-')}: applies to --upstream, which is not given")
    if args.upstream_key and not args.upstream_cert:
        raise _Usage("serve --upstream-key: give the certificate with --upstream-cert too")
    settings = _serving.ServeSettings(
        upstream=args.upstream,
        upstream_idempotency=args.upstream_idempotency,
        upstream_cacert=args.upstream_cacert,
        upstream_cert=args.upstream_cert,
        upstream_key=args.upstream_key,
        upstream_proxy=args.upstream_proxy,
        db=args.db,
        idempotency_ttl=args.idempotency_ttl,
        limits={name: getattr(args, name) for name, _default, _help in Limits.described()},
    )
    limits = _limits(settings.limits)
    _serving.open_files_for(limits, gateway=args.upstream is not None)
    try:
        app = _serving.build_app(settings, credentials)  # every problem found here, before any worker starts
    except BatchValidationError as exc:
        # A limit's problem names the limit: here it is a flag (max_jsonpath_length is --max-jsonpath-length).
        names = {name for name, _default, _help in Limits.described()}
        raise BatchValidationError(
            [
                Problem(f"--{p.pointer.replace('_', '-')}" if p.pointer in names else p.pointer, p.message)
                for p in exc.problems
            ]
        ) from None
    where = f"the upstream {mask_url(args.upstream)}" if args.upstream else f"the demo Scheduling API in {args.db}"
    workers = f" ({args.workers} worker processes)" if args.workers > 1 else ""
    print(
        f"batchnb: Batch API 2.3 on http://{args.host}:{args.port}/api/2.3/batch, in front of {where}{workers}",
        flush=True,
    )
    if demo_defaults:
        # The well-known demo credentials, on loopback only: saying them is what makes the demo usable.
        print(
            f"batchnb: demo credentials: api key {DEMO_API_KEY!r}, token {DEMO_TOKEN!r} "
            f"(Authorization: Bearer {DEMO_TOKEN}, or ?apiKey={DEMO_API_KEY}&token={DEMO_TOKEN})",
            flush=True,
        )
    bounds = uvicorn_options(limits)
    if args.workers > 1:
        environment = _serving.to_environment(settings, credentials)  # refuses a proxy password first
        os.environ.update(environment)
        uvicorn.run(
            "batchnb._serving:app_from_environment",
            factory=True,
            workers=args.workers,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            **bounds,
        )
    else:
        _serving.settle_heap()
        _serving.favour_the_loop()
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, **bounds)
    return 0


def _limits(values: dict[str, Any]) -> Any:
    """The server's limits from their flags; a value no limit may take is the flag's mistake (exit 2)."""
    from ._exceptions import BatchValidationError
    from .server import Limits

    try:
        return Limits(**values)
    except BatchValidationError as exc:
        raise _Usage("; ".join(f"serve --{p.pointer.replace('_', '-')}: {p.message}" for p in exc.problems)) from None


# ---------------------------------------------------------------- demo


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


# ---------------------------------------------------------------- run


def _dtypes(text: str | None) -> dict[str, str]:
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        column, sep, kind = part.partition("=")
        if not sep or not column.strip():
            raise _Usage(f"run --dtype: {part!r} is not of the form column=type (types: int, decimal, bool, str)")
        out[column.strip()] = kind.strip()
    return out


def _headers(lines: list[str]) -> dict[str, str]:
    from . import _rules

    headers, bad = _rules.parse_header_lines("\n".join(lines))
    if bad:
        raise _Usage("run --header: each must be of the form 'Name: value'")
    return headers


def _read_input(args: argparse.Namespace) -> Any:
    """The input file's rows; a CSV's notices (rows skipped as empty) go to standard error."""
    import warnings

    from .frames import SkippedRowsWarning, read_csv

    src = Path(args.input)
    if src.suffix.lower() in (".parquet", ".pq"):
        from ._extras import require

        require("pyarrow", "parquet", f"reading {src.name}")
        if not src.is_file():
            raise _Usage(f"{args.input}: no such file")
        import pandas as pd

        return pd.read_parquet(src)
    with warnings.catch_warnings(record=True) as notices:
        warnings.simplefilter("always", SkippedRowsWarning)
        df = read_csv(src, sep=args.sep, encoding=args.encoding, strings=args.strings, dtype=_dtypes(args.dtype))
    for notice in notices:
        if issubclass(notice.category, SkippedRowsWarning):
            _err(str(notice.message))
        else:  # not ours to silence
            warnings.warn_explicit(notice.message, notice.category, notice.filename, notice.lineno)
    return df


def _output(args: argparse.Namespace) -> Any:
    """Where the result goes; a CSV is written as the input CSV was (its separator, its byte order mark)."""
    from ._output import Output

    csv_flags = [
        flag
        for flag, given in (
            ("--out-sep", args.out_sep),
            ("--out-encoding", args.out_encoding),
            ("--raw-cells", args.raw_cells),
        )
        if given
    ]
    if not args.output:
        if csv_flags:
            raise _Usage(f"run {csv_flags[0]}: applies to -o, which is not given")
        return None
    output = Output(args.output)
    if output.format in ("Parquet", "Excel"):
        if csv_flags:
            raise _Usage(
                f"run {csv_flags[0]}: applies to a CSV output (.csv, or - for standard output), not {output.format}"
            )
        return output
    output.sep = args.out_sep or output.sep
    output.encoding = args.out_encoding or output.encoding
    output.raw_cells = args.raw_cells
    return output


def _written_as(output: Any, df: Any, args: argparse.Namespace) -> None:
    """What the options leave open, as the input CSV was written: its separator; UTF-8 with a byte order mark
    (what Excel reads as UTF-8) when the input had one or was in a Windows encoding such as cp1252."""
    source = df.attrs.get("batchnb.csv")
    if source is None:
        return
    if not args.out_sep:
        output.sep = source.sep
    if not args.out_encoding and source.encoding != "utf-8":
        output.encoding = "utf-8-sig"


def _client_credentials(args: argparse.Namespace) -> Any:
    """The OAuth2 client-credentials flow the options ask for, or None."""
    from ._exceptions import BatchValidationError, Problem
    from .auth import ClientCredentials

    given = [f for f in ("client_id", "client_secret_file", "scope") if getattr(args, f)]
    if not args.token_url:
        if given:
            raise _Usage(f"run --{given[0].replace('_', '-')}: needs --token-url (the OAuth2 token endpoint)")
        return None
    if not args.client_id:
        raise _Usage("run --token-url: give the client's id with --client-id")
    if args.client_secret_file:
        try:
            secret = Path(args.client_secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise BatchValidationError(
                [Problem("--client-secret-file", f"{args.client_secret_file!r} cannot be read: {why}")]
            ) from None
        if not secret:
            raise BatchValidationError([Problem("--client-secret-file", f"{args.client_secret_file!r} is empty")])
    else:
        secret = os.environ.get("BATCHNB_CLIENT_SECRET", "")
        if not secret:
            raise _Usage("run --token-url: set BATCHNB_CLIENT_SECRET, or give --client-secret-file FILE")
    return ClientCredentials(args.token_url, args.client_id, secret, scope=args.scope)


def run(args: argparse.Namespace) -> int:
    from ._exceptions import BatchError, BatchValidationError, SubmitInterrupted
    from ._flags import to_flags
    from .client import Client

    url = args.url or os.environ.get("BATCHNB_URL")
    if not url:
        raise _Usage("run: give the server's address with --url URL (or set BATCHNB_URL)")
    output = _output(args)
    if output is not None:
        problems = output.problems()
        if problems:
            raise BatchValidationError(problems)
    df = _read_input(args)
    if output is not None and output.format == "CSV":
        _written_as(output, df, args)
    check = None
    if args.expect or args.junit:
        from ._regression import Check

        check = Check(df, expect=args.expect, junit=args.junit, source=args.input, strict=args.strict)
    options: dict[str, Any] = {}
    for option in ("method", "path", "name"):
        if getattr(args, option):
            options[option] = getattr(args, option)
    if args.body_columns:
        options["body"] = [c.strip() for c in args.body_columns.split(",") if c.strip()]
    if args.header:
        if "headers" in df.columns:
            raise _Usage("run --header: the file has a 'headers' column already; use one or the other")
        options["headers"] = _headers(args.header)
    auth = _client_credentials(args)
    # With a token endpoint, only a token given on the command line competes with it (and is refused).
    token = args.token or (None if auth else os.environ.get("BATCHNB_TOKEN"))
    api_key = args.api_key or (None if auth else os.environ.get("BATCHNB_API_KEY"))
    connection = _connection(args)
    client = Client(
        url,
        api_key=api_key,
        token=token,
        auth=auth,
        concurrency=args.concurrency,
        retries=args.retries,
        retry_for=args.retry_for,
        mode="direct" if args.direct else "batch",
        verify=connection.verify,
        cert=connection.cert,
        proxy=connection.proxy,
    )
    rate = {"rate": args.rate, "batch_rate": args.batch_rate}
    if args.dry_run:
        plan = client.submit(df, dry_run=True, **rate, **options)
        _preview(df, plan, options)
        return 0
    progress = (not args.quiet) and sys.stderr.isatty()
    status = 0
    try:
        result = client.submit(df, journal=args.journal, resume=args.resume, progress=progress, **rate, **options)
    except BatchValidationError:
        raise
    except SubmitInterrupted as exc:
        _err(to_flags(str(exc)))
        result, status = exc.partial, 130
    except BatchError as exc:
        _err(to_flags(str(exc)))
        result = exc.partial
        if result is None:
            return 1
    result = _in_flags(result)
    report = sys.stderr if output is not None and output.to_stdout else sys.stdout
    if output is not None and result is not None:
        # A result column whose name the input has gets "_result" (join's rsuffix= is deprecated in pandas 3).
        clashes = {c: f"{c}_result" for c in result.columns if c in df.columns}
        table = result if args.only_results else df.join(result.rename(columns=clashes))
        try:
            notice = output.write(table)
        except BrokenPipeError:
            # The reader stopped early (| head): the rows ran; say how they went, on standard error.
            _quiet_stdout()
            status = status or SIGPIPE_STATUS
        else:
            if notice:
                _err(notice)
    if result is None:  # nothing came back, and the error said why
        return status or 1
    _summary(result, report)
    verdict = check.finish(result, report) if check is not None else None
    if status:
        return status
    if verdict is not None:
        return verdict
    return 0 if bool(result["ok"].all()) else 1


#: the exit status of a command whose reader closed the pipe early (``| head``), as the shell reports
#: a command that SIGPIPE ended (128 + 13): what ``cat``, ``yes`` or ``seq`` give under ``set -o pipefail``.
SIGPIPE_STATUS = 141


def _quiet_stdout() -> None:
    """Standard output's reader is gone: what is still buffered goes nowhere, instead of a traceback at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _in_flags(result: Any) -> Any:
    """The result, with batchnb's own notes in its error column in the command line's words.

    Only the note batchnb appends (``(retry_for=300 s)``) is translated: the API's own messages are data.
    """
    if result is None or "error" not in getattr(result, "columns", ()):
        return result
    errors = result["error"]
    try:
        said = errors.str.replace(r"\(retry_for=([0-9.]+) s\)$", r"(--retry-for \1 s)", regex=True)
    except AttributeError:  # no text in the column at all
        return result
    if said.equals(errors):
        return result
    result = result.copy()
    result["error"] = said
    return result


#: the command line's names for the connection settings, to say which option is wrong.
RUN_CONNECTION_OPTIONS = {"verify": "--cacert", "cert": "--cert", "key": "--key", "proxy": "--proxy"}


def _connection(args: argparse.Namespace) -> Any:
    """The connection settings of ``run``, checked (the environment too, as httpx reads it)."""
    from ._connect import Connection

    if args.key and not args.cert:
        raise _Usage("run --key: give the certificate with --cert too")
    if args.insecure and args.cacert:
        raise _Usage("run --insecure: it turns off the checks that --cacert sets up; give one of them")
    cert: Any = (args.cert, args.key) if args.key else args.cert
    connection = Connection(verify=False if args.insecure else (args.cacert or True), cert=cert, proxy=args.proxy)
    connection.check(RUN_CONNECTION_OPTIONS)
    if args.insecure:
        _err(
            "WARNING: --insecure: TLS certificates are NOT checked. Anyone on the network path can read "
            "and change this traffic, credentials included. Give the CA with --cacert (or SSL_CERT_FILE) instead."
        )
    return connection


def _preview(df: Any, plan: Any, options: dict[str, Any]) -> None:
    """The plan, and what each operation will send (credentials masked)."""
    import json

    from ._secrets import mask_headers, mask_path
    from .frames import from_frame

    print(f"dry run: nothing was sent. {plan.summary}")
    ops = from_frame(df, **options)
    shown = 0
    for top in ops:
        for _p, op in top.walk():
            if shown == PREVIEW:
                break
            shown += 1
            body = "" if op.body is None else " " + json.dumps(op.body, ensure_ascii=False, default=str)[:200]
            headers = f" headers={mask_headers(op.headers)}" if op.headers else ""
            print(f"  row {op.row!r}: {op.method} {mask_path(op.path)}{body}{headers}")
    total = plan.operations
    if total > shown:
        print(f"  … and {total - shown} more")


#: how many causes of failure, and how many failed rows, the summary lists.
SUMMARY_CAUSES = SUMMARY_ROWS = 10


def _summary(result: Any, out: Any) -> None:
    from ._causes import failure_causes, failure_text
    from ._text import plural

    total = len(result)
    ok = int(result["ok"].sum())
    print(f"\n{ok} of {plural(total, 'row')} ok", file=out)
    counts = result["status"].astype("string").fillna("no status").value_counts()
    for status, n in counts.items():
        print(f"  {status:>9}  {n}", file=out)
    # Causes first: 50 failed rows are often one problem said 50 times.
    causes = failure_causes(result)
    if causes:
        print(f"failures by cause ({len(causes)}):", file=out)
        for cause in causes[:SUMMARY_CAUSES]:
            print(f"  {cause}", file=out)
        if len(causes) > SUMMARY_CAUSES:
            print(f"  … and {plural(len(causes) - SUMMARY_CAUSES, 'more cause')}", file=out)
        print("first failures:", file=out)
        failed = result[~result["ok"]]
        for label, status, error in zip(
            failed.index[:SUMMARY_ROWS], failed["status"][:SUMMARY_ROWS], failed["error"][:SUMMARY_ROWS]
        ):
            print(f"  row {label!r}: {failure_text(status, error)}", file=out)


# ---------------------------------------------------------------- sanitize-config


SANITIZE_DESCRIPTION = """\
Print the path of the nbval sanitizer that ships with batchnb: rules that hide
what batchnb prints that changes from run to run (the demo API's ids, UUIDs,
ISO timestamps, loopback ports, temporary files, durations), and nothing else.

  pytest --nbval --nbval-sanitize-with "$(batchnb sanitize-config)" notebooks/"""


def sanitize_config(args: argparse.Namespace) -> int:
    from ._nbval import SANITIZE_CONFIG

    print(SANITIZE_CONFIG.read_text(encoding="utf-8") if args.show else SANITIZE_CONFIG, end="" if args.show else "\n")
    return 0


# ---------------------------------------------------------------- the parser


RUN_DESCRIPTION = """\
Run a CSV (or Parquet) file of operations, one per row, in batches.

Each row's method, path, name and body come from the columns of those names
unless --method, --path, --name or --body-columns say otherwise. A path may
be a template such as /api/2.1/scheduling/companies/{company_id}/services,
filled from each row's columns. Cells reach the API as the file says them:
integers, decimals and true/false only where a whole column is written that
way; everything else as text; an empty cell is a missing value.

Nothing is sent until every row has been checked, and every problem is
reported at once with its row and line."""

RUN_EXAMPLES = """\
examples:
  batchnb run companies.csv --url http://127.0.0.1:8000 --method POST \\
      --path /api/2.1/scheduling/companies --body-columns name,timezone -o result.csv
  batchnb run staff.csv --path '/api/2.1/scheduling/companies/{company_id}/staff' \\
      --method POST --dtype phone=str --dry-run
  batchnb run ops.csv --url "$API" --expect expected.csv --junit report.xml   # a regression test in CI
  batchnb run ops.csv --url https://api.corp --direct --cacert corp-ca.pem --proxy http://proxy.corp:3128
  SSL_CERT_FILE=corp-ca.pem HTTPS_PROXY=http://proxy.corp:3128 batchnb run ops.csv --url https://api.corp --direct
  BATCHNB_URL=https://api.example BATCHNB_TOKEN=... batchnb run ops.csv -o - > result.csv"""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from . import _flags as flags
    from .server.limits import Limits

    p = argparse.ArgumentParser(
        prog="batchnb", description="Bulk API work from a notebook, with the Batch API 2.3.", formatter_class=_Help
    )
    p.add_argument("--version", action="version", version=f"batchnb {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "serve",
        help="run the Batch API 2.3 server (demo API on SQLite, or a gateway)",
        formatter_class=_Help,
        description="Run the Batch API 2.3 server in front of the demo Scheduling API, or of another HTTP API (--upstream).",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to bind")
    s.add_argument("--port", type=flags.count(1, 65535), default=8000, help="port to listen on")
    s.add_argument("--db", default="batchnb-demo.sqlite3", help="SQLite file of the demo API")
    s.add_argument(
        "--api-key",
        help="api key of the accepted credentials (default: BATCHNB_API_KEY, else 'demo' for the demo API; "
        "several tenants: BATCHNB_CREDENTIALS, a JSON object of api keys to tokens)",
    )
    s.add_argument(
        "--token", help="token of the accepted credentials (default: BATCHNB_TOKEN, else 'demo-token' for the demo API)"
    )
    s.add_argument(
        "--upstream", help="forward operations to this HTTP API (default: the demo Scheduling API, in-process)"
    )
    s.add_argument(
        "--upstream-cacert",
        metavar="FILE",
        help="the CA (a PEM file, or a directory of them) that issued the upstream's certificate "
        "(default: SSL_CERT_FILE or SSL_CERT_DIR when set, else the usual CAs)",
    )
    s.add_argument(
        "--upstream-cert",
        metavar="FILE",
        help="a client certificate for the upstream (PEM; with its key, or see --upstream-key)",
    )
    s.add_argument("--upstream-key", metavar="FILE", help="the key of --upstream-cert, when it is a file of its own")
    s.add_argument(
        "--upstream-proxy",
        metavar="URL",
        help="reach the upstream through this proxy (default: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, minus NO_PROXY)",
    )
    s.add_argument(
        "--upstream-idempotency",
        action="store_true",
        help="the upstream honours Idempotency-Key: say so, so that clients resend POSTs whose outcome is unknown",
    )
    s.add_argument(
        "--idempotency-ttl",
        type=flags.seconds,
        default=24 * 3600.0,
        help="seconds the demo API keeps an Idempotency-Key",
    )
    for name, default, what in Limits.described():
        zero = f"; {flags.SERVE_ZERO[name]}" if name in flags.SERVE_ZERO else ""
        s.add_argument(
            "--" + name.replace("_", "-"), type=flags.limit(name, default), default=default, help=f"limit: {what}{zero}"
        )
    s.add_argument(
        "--workers",
        type=flags.count(1),
        default=1,
        help="server processes (uvicorn's workers; limits such as --max-concurrent-batches hold per process)",
    )
    s.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="how much uvicorn logs",
    )
    s.set_defaults(func=serve)

    d = sub.add_parser(
        "demo", help="start the embedded server and run the spec's worked examples", formatter_class=_Help
    )
    d.set_defaults(func=demo)

    r = sub.add_parser(
        "run",
        help="run a CSV or Parquet file of operations, one per row",
        formatter_class=_Help,
        description=RUN_DESCRIPTION,
        epilog=RUN_EXAMPLES,
    )
    r.add_argument("input", help="operations file (.csv, or .parquet)")
    r.add_argument("--url", help="base URL of the Batch API server (default: BATCHNB_URL)")
    r.add_argument("--api-key", help="api key (default: BATCHNB_API_KEY)")
    r.add_argument("--token", help="token (default: BATCHNB_TOKEN; prefer the variable: arguments show in ps)")
    r.add_argument(
        "--token-url",
        metavar="URL",
        help="OAuth2 token endpoint: get tokens by client credentials, refreshed as they run out "
        "(the secret from BATCHNB_CLIENT_SECRET or --client-secret-file, never an argument)",
    )
    r.add_argument("--client-id", metavar="ID", help="OAuth2 client id (with --token-url)")
    r.add_argument(
        "--client-secret-file",
        metavar="FILE",
        help="a file holding the OAuth2 client secret (default: BATCHNB_CLIENT_SECRET)",
    )
    r.add_argument("--scope", help="OAuth2 scope to ask for (with --token-url)")
    r.add_argument("--method", help="a method, or the column holding it (default: the 'method' column)")
    r.add_argument(
        "--path",
        help="a path, a template such as /companies/{company_id}/services, or a column (default: the 'path' column)",
    )
    r.add_argument("--name", help="a name template such as co-{site}, or a column (default: the 'name' column, if any)")
    r.add_argument(
        "--body-columns", help="comma-separated columns that make the body (default: the 'body' column of JSON objects)"
    )
    r.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a header sent with every operation (repeatable)",
    )
    r.add_argument("--sep", help="the CSV's separator (default: found from the header line: ',', ';' or tab)")
    r.add_argument(
        "--encoding",
        default="utf-8",
        help="the CSV's encoding: utf-8 with or without BOM, and UTF-16 with its BOM (Excel's Unicode text), are "
        "found by themselves; cp1252 for what Windows and Excel save as CSV or ANSI",
    )
    r.add_argument("--strings", action="store_true", help="send every cell as text")
    r.add_argument(
        "--dtype",
        metavar="COL=TYPE,…",
        help="set columns' types by hand: int, decimal, bool or str (default: each column's type from what it holds)",
    )
    r.add_argument(
        "-o",
        "--output",
        help="write the result: .csv, .parquet, .xlsx, or - for CSV on standard output (default: only the summary)",
    )
    r.add_argument(
        "--out-sep",
        metavar="SEP",
        help="the separator of a CSV output (default: the input CSV's, else ',')",
    )
    r.add_argument(
        "--out-encoding",
        metavar="ENCODING",
        help="the encoding of a CSV output, such as utf-8-sig (UTF-8 that Excel reads) (default: utf-8-sig when "
        "the input CSV had a byte order mark or was cp1252, else utf-8)",
    )
    r.add_argument(
        "--raw-cells",
        action="store_true",
        help="write a CSV output's text cells exactly as they are, for a program to read back; by default a text "
        "that a spreadsheet would run as a formula (it starts with =, +, -, @, a tab or a carriage return) is "
        "written with a leading ' (an .xlsx always holds texts as texts)",
    )
    r.add_argument("--only-results", action="store_true", help="write only the result columns, not the input's")
    r.add_argument("--journal", help="JSON Lines journal, to resume after a crash (default: none)")
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue the run the journal records: send only rows it has no outcome for",
    )
    r.add_argument("--concurrency", type=int, default=4, help="batches in flight at once")
    r.add_argument(
        "--rate",
        help="at most this many requests (rows) per second: 50/s, 3000/min, 100000/h or a number "
        "(default: as fast as the API allows, slowing down when it answers 429)",
    )
    r.add_argument("--batch-rate", type=float, help="at most this many batches per second (default: no limit)")
    r.add_argument(
        "--retry-for",
        type=float,
        default=300.0,
        help="seconds during which what the API did not run (429, 503) is sent again, after the wait its answer says",
    )
    r.add_argument(
        "--retries", type=int, default=3, help="resends of a batch that could not be delivered (dropped before sending)"
    )
    r.add_argument(
        "--cacert",
        metavar="FILE",
        help="the CA (a PEM file, or a directory of them) that issued the server's certificate "
        "(default: SSL_CERT_FILE or SSL_CERT_DIR when set, else the usual CAs)",
    )
    r.add_argument("--cert", metavar="FILE", help="a client certificate (PEM; with its key, or see --key)")
    r.add_argument("--key", metavar="FILE", help="the key of --cert, when it is a file of its own")
    r.add_argument(
        "--proxy",
        metavar="URL",
        help="send through this proxy (default: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, minus NO_PROXY)",
    )
    r.add_argument(
        "--insecure",
        action="store_true",
        help="do not check TLS certificates at all (a loud warning says so; prefer --cacert)",
    )
    r.add_argument("--direct", action="store_true", help="the API has no batch endpoint: send each operation from here")
    r.add_argument(
        "--dry-run", action="store_true", help="check every row and print the plan and each operation; send nothing"
    )
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar (it shows only on a terminal anyway)")
    r.add_argument(
        "--expect",
        metavar="FILE",
        help="compare the result with FILE (a CSV: what -o wrote on a good run, or row/name, "
        "status and body fields as JSONPath columns such as $.name); exit 1 and print the rows that differ "
        "(default: exit 1 when a row is not ok)",
    )
    r.add_argument(
        "--strict",
        action="store_true",
        help="with --expect: a body field the API returns and FILE does not have is a difference too",
    )
    r.add_argument(
        "--junit",
        metavar="FILE",
        help="write a JUnit XML report to FILE: a test case per row, a failure per row "
        "that differs (or, without --expect, is not ok)",
    )
    r.set_defaults(func=run)

    c = sub.add_parser(
        "sanitize-config",
        help="print the path of the nbval sanitizer that ships with batchnb",
        formatter_class=_Help,
        description=SANITIZE_DESCRIPTION,
    )
    c.add_argument("--show", action="store_true", help="print the rules themselves instead of the file's path")
    c.set_defaults(func=sanitize_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``batchnb`` console script; returns its exit status.

    >>> df.to_csv(tmp / "companies.csv", index=False)
    >>> main(["run", str(tmp / "companies.csv"), "--url", server.url, "--method", "POST",
    ...       "--path", "/api/2.1/scheduling/companies", "--body-columns", "name", "--dry-run"])
    dry run: nothing was sent. 3 operations in 1 HTTP call of at most 50; ...
      row 0: POST /api/2.1/scheduling/companies {"name": "Riverside Clinic"}
      row 1: POST /api/2.1/scheduling/companies {"name": "Hilltop Dental"}
      row 2: POST /api/2.1/scheduling/companies {"name": "Harbour Physio"}
    0
    """
    from ._exceptions import BatchError, BatchValidationError
    from ._flags import problems, to_flags

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _Usage as exc:
        _err(str(exc))
    except BatchValidationError as exc:
        _err(f"{getattr(args, 'input', args.command)}: {problems(exc)}")
    except BatchError as exc:
        _err(to_flags(str(exc)))
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        # Standard output's reader stopped early (| head): end quietly, as a command SIGPIPE ended.
        _quiet_stdout()
        return SIGPIPE_STATUS
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
