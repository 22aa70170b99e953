"""The same submit, past one machine: a Dask DataFrame in, a Dask DataFrame out.

    >>> import dask.dataframe as dd, batchnb.dask

Then, on a cluster (not run as a doctest: it needs ``dask.distributed`` workers and the files):

    >>> staff = dd.read_csv("staff-*.csv")                                          # doctest: +SKIP
    >>> result = batchnb.dask.submit(staff, "http://api.example", token=TOKEN,      # doctest: +SKIP
    ...                              method="POST", path="/api/2.1/scheduling/companies/{company_id}/staff",
    ...                              body=["firstName", "lastName"], journal="runs/staff")
    >>> batchnb.dask.join(staff, result)                                            # doctest: +SKIP

Each partition runs as an ordinary batchnb submit on a worker of
``dask.distributed``, and the promises of one machine hold across the cluster:

- **once**: the result is persisted when :func:`submit` is called, so computing
  it again sends nothing; and every partition keeps a journal in a directory
  every worker sees, so a partition that Dask runs again (its worker died, or
  the worker holding its result did) sends only what never left. A fence makes
  an older attempt still running stop before it sends anything more. Rows
  caught in flight are "outcome unknown", or are sent again with the same
  idempotency keys where the API honours them.
- **one limit**: batches in flight (``concurrency``), requests per second
  (``rate``) and batches per second (``batch_rate``) are counted across every
  worker, for the whole submit, with named ``distributed.Semaphore``
  objects; a 429 with ``Retry-After`` backs every worker off.
- **rows aligned**: each result partition has its input partition's index
  (``read_csv`` partitions repeat labels: use :func:`join`, never a plain join).
- **nothing sent before every partition is checked**, references included: a
  reference to a row of another partition is refused with both rows named
  (:func:`by_key` moves each chain into one partition).
- **credentials never travel in the task graph**: workers get them from a
  worker plugin, or from their environment (``BATCHNB_TOKEN``, ``BATCHNB_API_KEY``);
  a URL's ``user:password@`` travels with them. What a submit puts on the
  cluster (the plugin, the limits' semaphores, the backoff variable) is named
  by a random id of its own, and removed when its partitions are done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from ._exceptions import BatchError, BatchValidationError, Problem
from ._extras import require

require("dask.dataframe", "dask", "batchnb.dask")
require("distributed", "dask", "batchnb.dask")

import dask.dataframe as dd  # noqa: E402 - after require(): a missing extra is named before its import fails
import distributed  # noqa: E402 - after require(): a missing extra is named before its import fails
import pandas as pd  # noqa: E402 - after require(): a missing extra is named before its import fails

from ._dask_csv import read_csv  # noqa: E402 - after require(): a missing extra is named before its import fails

__all__ = ["Cancelled", "Superseded", "by_key", "join", "read_csv", "submit"]

#: the columns a result partition has besides the usual result columns.
PARTITION = "partition"


class Cancelled(BatchError):
    """The computation was cancelled: the partition sends no new batch.

    >>> issubclass(Cancelled, BatchError)
    True
    """


class Superseded(BatchError):
    """A newer attempt at the same partition started: this one sends nothing more.

    >>> issubclass(Superseded, BatchError)
    True
    """


# ---------------------------------------------------------------- what every task gets


@dataclass(frozen=True)
class _Spec:
    """Everything a partition's task needs, credentials excepted (they never enter the graph)."""

    submission: str
    url: str
    frame_options: dict[str, Any]
    concurrency: int
    #: requests per second, cluster-wide.
    rate: float | None
    #: batches per second, cluster-wide.
    batch_rate: float | None
    retries: int
    retry_for: float
    idempotency: bool | str
    bodies: str
    timeout: float
    journal: str | None
    #: names what this submit puts on the cluster (its limits, its backoff): random, one per submit.
    limit_id: str
    credentials: str | None
    #: connection settings: paths (absolute), booleans, a proxy URL holding no password
    #: (one that does reaches the workers with the credentials, never in the graph).
    connection: dict[str, Any] = field(default_factory=dict)


class _Credentials(distributed.WorkerPlugin):
    """Credentials handed to every worker once, outside the task graph."""

    def __init__(
        self,
        name: str,
        api_key: str | None,
        token: str | None,
        auth: Any = None,
        proxy: str | None = None,
        url: str | None = None,
    ) -> None:
        self.name = name
        self.api_key = api_key
        self.token = token
        #: an auth flow (httpx.Auth): each worker gets its own copy, which keeps its tokens for its partitions.
        self.auth = auth
        #: a proxy URL with its password, when it has one.
        self.proxy = proxy
        #: the API's URL, when it holds a user and password (the graph has it without them).
        self.url = url

    def __repr__(self) -> str:
        return f"_Credentials({self.name!r}, ***)"


def _credentials(spec: _Spec) -> dict[str, str | None]:
    if spec.credentials is not None:
        plugin = distributed.get_worker().plugins.get(spec.credentials)
        if plugin is None:
            raise BatchValidationError([Problem("token", "the credentials of this submit are not on this worker")])
        found = {"api_key": getattr(plugin, "api_key", None), "token": getattr(plugin, "token", None)}
        found["auth"] = getattr(plugin, "auth", None)
        if found == {"api_key": None, "token": None, "auth": None}:  # the plugin carries only passwords of URLs
            found = {"api_key": os.environ.get("BATCHNB_API_KEY"), "token": os.environ.get("BATCHNB_TOKEN")}
        for name in ("proxy", "url"):  # a proxy's or the API's URL, with the password the graph leaves out
            if getattr(plugin, name, None):
                found[name] = getattr(plugin, name)
        return found
    return {"api_key": os.environ.get("BATCHNB_API_KEY"), "token": os.environ.get("BATCHNB_TOKEN")}


def _connection_for_workers(
    verify: Any, cert: Any, proxy: Any, trust_env: bool, http2: bool
) -> tuple[dict[str, Any], str | None]:
    """The connection settings as they travel in the graph, and a proxy URL that must not (it holds a password).

    Paths become absolute (a worker's working directory is its own); what
    cannot travel is refused, naming the argument.
    """
    import ssl

    from ._connect import Connection

    problems = Connection(verify=verify, cert=cert, proxy=proxy, trust_env=trust_env, http2=http2).problems()
    if isinstance(verify, ssl.SSLContext):
        problems.append(
            Problem(
                "verify", "an ssl.SSLContext cannot be sent to dask workers: give the CA file's path (verify='ca.pem')"
            )
        )
    if proxy is not None and not isinstance(proxy, str):
        problems.append(Problem("proxy", "give dask workers the proxy as a URL string, not an httpx.Proxy"))
    if problems:
        raise BatchValidationError(problems)

    def absolute(path: Any) -> Any:
        return path if isinstance(path, bool) else str(Path(path).resolve())

    settings: dict[str, Any] = {"verify": absolute(verify), "trust_env": trust_env, "http2": http2}
    if cert is not None:
        settings["cert"] = tuple(absolute(c) for c in cert) if isinstance(cert, tuple) else absolute(cert)
    secret = None
    if proxy is not None:
        if "@" in proxy.partition("://")[2].split("/")[0]:
            secret = proxy  # a user and password: with the credentials, outside the graph
        else:
            settings["proxy"] = proxy
    return settings, secret


# ---------------------------------------------------------------- checking every partition first


class _Anything:
    """A set of names that holds every name: references are judged across partitions afterwards."""

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:  # pragma: no cover - only membership is asked
        return iter(())

    def __len__(self) -> int:  # pragma: no cover - a Collection has a size; this one has no end
        return 0


def _check_partition(
    pdf: pd.DataFrame, frame_options: dict[str, Any], partition_info: dict[str, Any] | None = None
) -> pd.DataFrame:
    """One row per finding: a problem, a name made here, a name referenced here; and whether all is idempotent."""
    from . import _rules
    from .frames import from_frame

    number = partition_info["number"] if partition_info else 0
    rows: list[dict[str, Any]] = []
    try:
        ops = from_frame(pdf, **frame_options, known=_Anything())
    except BatchValidationError as exc:
        return pd.DataFrame(
            [{"partition": number, "kind": "problem", "row": p.pointer, "value": p.message} for p in exc.problems],
            columns=list(_CHECK_META.columns),
        )
    idempotent = True
    for top in ops:
        for _p, op in top.walk():
            if not _rules.is_idempotent_method(op.method):
                idempotent = False
            if op.name:
                rows.append({"partition": number, "kind": "name", "row": repr(op.row), "value": op.name})
            for referenced in sorted(op.referenced_names() - {op.name}):
                rows.append({"partition": number, "kind": "ref", "row": repr(op.row), "value": referenced})
    rows.append({"partition": number, "kind": "idempotent", "row": "", "value": "yes" if idempotent else "no"})
    return pd.DataFrame(rows, columns=list(_CHECK_META.columns))


_CHECK_META = pd.DataFrame(
    {
        "partition": pd.Series(dtype="int64"),
        "kind": pd.Series(dtype=object),
        "row": pd.Series(dtype=object),
        "value": pd.Series(dtype=object),
    }
)


def _problems(found: pd.DataFrame) -> tuple[list[Problem], bool]:
    """Every problem of every partition, references across partitions included; and whether all is idempotent."""
    problems = [
        Problem(f"partition {p}: {row}", message)
        for p, row, message in found.loc[found["kind"] == "problem", ["partition", "row", "value"]].itertuples(
            index=False
        )
    ]
    made: dict[str, tuple[int, str]] = {}
    for p, row, name in found.loc[found["kind"] == "name", ["partition", "row", "value"]].itertuples(index=False):
        made.setdefault(name, (p, row))
    local = {
        (p, name) for p, name in found.loc[found["kind"] == "name", ["partition", "value"]].itertuples(index=False)
    }
    for p, row, name in found.loc[found["kind"] == "ref", ["partition", "row", "value"]].itertuples(index=False):
        if (p, name) in local:
            continue
        if name in made:
            q, other = made[name]
            problems.append(
                Problem(
                    f"row {row} in partition {p}",
                    f"refers to {name!r}, made in partition {q} (row {other}): references work within a partition; "
                    "move each chain into one (batchnb.dask.by_key) or send the parents first",
                )
            )
        else:
            problems.append(
                Problem(f"row {row} in partition {p}", f"refers to {name!r}, which no row of any partition is named")
            )
    idempotent = bool((found.loc[found["kind"] == "idempotent", "value"] == "yes").all())
    return problems, idempotent


# ---------------------------------------------------------------- one partition, on a worker


class _ClusterSender:
    """A sender that keeps the cluster-wide limits and stops when its attempt is no longer wanted.

    Every wait for a limit is a coroutine on the worker's event loop
    (:mod:`batchnb._dask_limits`): no thread waits for a lease, so the
    batches that hold leases can always give them back, whatever the
    threads, partitions and limits.
    """

    def __init__(self, inner: Any, spec: _Spec, fence: _Fence | None, key: Any, max_requests: int = 50) -> None:
        from ._dask_limits import ClusterLimit, ClusterValue

        self.inner = inner
        # What the runner asks of a sender about its auth flow (see batchnb._runner).
        self.auth = getattr(inner, "auth", None)
        self.refreshes = getattr(inner, "refreshes", False)
        self.fence = fence
        self.key = key
        # Created by name, here, inside the task: every worker's copy is the same semaphore.
        names = _names(spec.limit_id)
        self.in_flight = ClusterLimit(names.in_flight, spec.concurrency)
        self.rate = spec.batch_rate
        self.starts: ClusterLimit | None = None
        if spec.batch_rate:
            self.leases = max(1, int(spec.batch_rate))
            self.starts = ClusterLimit(names.starts, self.leases)
        # Requests per second: a lease lets a batch start, and is held (its size × leases / rate)
        # seconds after its answer, so that at most `rate` operations start per second, cluster-wide.
        # About a second's worth of full batches may start at once.
        self.op_rate = spec.rate
        self.op_starts: ClusterLimit | None = None
        if spec.rate:
            self.op_leases = max(1, round(spec.rate / max(1, max_requests)))
            self.op_starts = ClusterLimit(names.op_starts, self.op_leases)
        self.backoff = ClusterValue(names.backoff)

    def _still_wanted(self) -> None:
        if self.key is not None:
            task = distributed.get_worker().state.tasks.get(self.key)
            if task is None or task.state in ("cancelled", "released", "forgotten"):
                raise Cancelled("the computation was cancelled: no new batch is sent")
        if self.fence is not None and not self.fence.holds():
            raise Superseded("a newer attempt at this partition started: this one sends nothing more")

    async def _wait_for_backoff(self) -> None:
        until = await self.backoff.get()  # set when the submit started: no wait here
        wait = float(until) - time.time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def __call__(self, ops: list[Any]) -> Any:
        self._still_wanted()
        await self.in_flight.acquire()
        started = False
        op_started = 0
        try:
            # After the lease: a 429 that the previous holder saw is published before it let go.
            await self._wait_for_backoff()
            if self.starts is not None:
                await self.starts.acquire()
                started = True
            if self.op_starts is not None:
                await self.op_starts.acquire()
                op_started = sum(1 for top in ops for _p in top.walk())
            # Checked again after the journal has the batch as sent: a newer attempt that
            # started since then sees it in the journal, as in flight.
            self._still_wanted()
            reply = await self.inner(ops)
            if reply.status == 429:
                from ._senders import retry_after

                wait = retry_after(reply.headers) or 1.0
                await self.backoff.set(time.time() + wait)
        finally:
            if started and self.starts is not None and self.rate:
                # The lease is kept leases/rate seconds after the answer: whatever the network's delays,
                # the server sees at most `rate` batches start in any second, cluster-wide.
                self.starts.release_after(self.leases / self.rate)
            if op_started and self.op_starts is not None and self.op_rate:
                # The same for requests: a batch of n holds its lease n × leases / rate seconds.
                self.op_starts.release_after(op_started * self.op_leases / self.op_rate)
            await self.in_flight.release()
        return reply


class _Fence:
    """Which attempt at a partition may send: the newest to start (a file every worker sees)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.attempt = uuid.uuid4().hex

    def take(self) -> None:
        tmp = self.path.with_suffix(f".{self.attempt}.tmp")
        tmp.write_text(json.dumps({"attempt": self.attempt, "pid": os.getpid()}))
        os.replace(tmp, self.path)  # atomic: the newest attempt wins

    def holds(self) -> bool:
        try:
            return bool(json.loads(self.path.read_text())["attempt"] == self.attempt)
        except (OSError, ValueError, KeyError):
            return False


def _submit_partition(pdf: pd.DataFrame, spec: _Spec, partition_info: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run one partition as an ordinary submit, on this worker."""
    from ._submission import Submission, SubmitOptions
    from ._sync import run_sync
    from .client import AsyncClient

    number = partition_info["number"] if partition_info else 0
    journal, fence = None, None
    if spec.journal is not None:
        directory = Path(spec.journal)
        journal = directory / f"partition-{number:05d}.jsonl"
        fence = _Fence(directory / f"partition-{number:05d}.fence")
        fence.take()
    try:
        key = distributed.get_worker().get_current_task()
    except ValueError:  # not in a worker (a local scheduler): nothing to cancel by
        key = None

    async def go() -> pd.DataFrame:
        from ._ratelimit import Throttle

        credentials = _credentials(spec)
        async with AsyncClient(
            credentials.pop("url", None) or spec.url,
            **{**spec.connection, **credentials},
            timeout=spec.timeout,
            concurrency=spec.concurrency,
        ) as client:
            limits = await client.limits()
            options = SubmitOptions(
                concurrency=spec.concurrency,
                retries=spec.retries,
                retry_operations=True,
                retry_for=spec.retry_for,
                # This partition's own pace, from the 429s it sees; the cluster-wide limits are the sender's.
                throttle=Throttle(),
                progress=False,
                bodies=spec.bodies,
                journal=None if journal is None else str(journal),
                resume=journal is not None and journal.exists() and journal.stat().st_size > 0,
                idempotency=spec.idempotency,
                backoff=client.backoff,
                max_backoff=client.max_backoff,
            )
            sender = _ClusterSender(client._sender(), spec, fence, key, int(limits["maxRequests"]))
            result: pd.DataFrame = await Submission(pdf, spec.frame_options, limits, sender, options).run()
            return result

    result = _empty_result(pdf.index) if len(pdf) == 0 else run_sync(go)
    result[PARTITION] = number
    return _as_meta(result, pdf.index, spec.bodies)


# ---------------------------------------------------------------- the result's shape


def _empty_result(index: pd.Index) -> pd.DataFrame:
    from .results import to_frame

    frame = to_frame([])
    frame.index = index[:0]
    return frame


def _as_meta(frame: pd.DataFrame, index: pd.Index, bodies: str = "parsed") -> pd.DataFrame:
    """The result with exactly the meta's dtypes, in every partition.

    A text column of one partition may be all missing (no row named, none
    failed): pandas then gives it ``object``, another partition ``str``; a
    body column without parsed bodies holds objects. Each is cast to the
    meta's dtype, so that every partition has the same, and Parquet one schema.
    """
    from ._jsonarray import JSONDtype
    from .results import _json_bodies

    meta = _meta(index, bodies)
    out = frame.reindex(columns=meta.columns)
    if isinstance(meta["body"].dtype, JSONDtype) and not isinstance(out["body"].dtype, JSONDtype):
        out = _json_bodies(out)
    for column, dtype in meta.dtypes.items():
        if out[column].dtype != dtype:
            out[column] = out[column].astype(dtype)
    return out


def _meta(index: pd.Index, bodies: str = "parsed") -> pd.DataFrame:
    """An empty result partition: the columns and dtypes of a real result, plus ``partition``.

    Derived from a real result, of one refused operation and its nested one,
    so that every column holds a value of its kind and has the dtype real
    results have (text as pandas' text dtype, with or without pyarrow;
    ``body`` as the ``json`` dtype, or text with ``bodies="json"``).
    ``parent`` is text: a parent's name, or its row label as text.

    >>> _meta(pd.RangeIndex(0)).dtypes[["name", "status", "body", "parent", "partition"]].astype(str).tolist()
    ['str', 'Int64', 'json', 'str', 'int64']
    """
    from .model import Response
    from .results import _json_bodies, to_frame

    nested = Response("GET", "/b", 424, name="b", body={"error": {}}, batch=1, attempts=1)
    refused = Response("POST", "/a", 400, name="a", body={"error": {}}, responses=[nested], batch=1, attempts=1)
    sample = to_frame([refused])
    if bodies == "json":
        sample["body"] = sample["body"].map(json.dumps).astype(str)
    else:
        sample = _json_bodies(sample)  # "none" keeps error bodies: JSON values too
    sample["parent"] = sample["parent"].astype(str)
    sample[PARTITION] = 0
    meta = sample.iloc[:0].copy()
    meta.index = index[:0]
    return meta


def _nonempty_json(dtype: Any) -> Any:
    """Two JSON values, for Dask's stand-in of an empty partition (``meta_nonempty``)."""
    from ._jsonarray import JSONArray

    return JSONArray._from_sequence([{"id": 1}, None])


def _register_json_with_dask() -> None:
    from dask.dataframe.extensions import make_array_nonempty

    from ._jsonarray import JSONDtype

    make_array_nonempty.register(JSONDtype)(_nonempty_json)


_register_json_with_dask()


# ---------------------------------------------------------------- the public functions


def submit(
    ddf: dd.DataFrame,
    url: str,
    *,
    token: str | None = None,
    api_key: str | None = None,
    auth: Any = None,
    method: str | None = None,
    path: str | None = None,
    body: Sequence[Hashable]
    | Mapping[str, Hashable]
    | Callable[[dict[str, Any]], Any]
    | str
    | Literal[False]
    | None = None,
    name: str | Literal[False] | None = None,
    headers: str | Mapping[str, str] | Literal[False] | None = None,
    parent: str | Literal[False] | None = None,
    nulls: Literal["omit", "null"] = "omit",
    journal: str | os.PathLike[str] | None = None,
    resume: bool = False,
    concurrency: int = 4,
    rate: float | str | None = None,
    batch_rate: float | None = None,
    retries: int = 3,
    retry_for: float = 300.0,
    idempotency: bool | Literal["auto"] = "auto",
    bodies: Literal["parsed", "json", "none"] = "parsed",
    timeout: float = 60.0,
    client: distributed.Client | None = None,
    wait: bool = True,
    verify: bool | str | os.PathLike[str] = True,
    cert: str | os.PathLike[str] | tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
    proxy: str | None = None,
    trust_env: bool = True,
    http2: bool = False,
) -> dd.DataFrame:
    """Submit every row of a Dask DataFrame, a partition per task, once; return the persisted result.

    Not run as a doctest (it needs ``dask.distributed`` workers):

    >>> result = batchnb.dask.submit(ddf, "http://127.0.0.1:8000", token=TOKEN, method="POST",   # doctest: +SKIP
    ...                              path="/api/2.1/scheduling/companies", body=["name"], journal="runs/companies")

    The arguments are :meth:`batchnb.Client.submit`'s. ``concurrency``,
    ``rate`` (requests per second: ``"50/s"``, ``"3000/min"`` or a number) and
    ``batch_rate`` (batches per second) hold for this submit across the
    whole cluster, not per worker. Operations answered 429 or 503 are sent
    again until ``retry_for`` seconds have passed. ``journal`` is a directory every worker sees (a shared
    filesystem): required unless every operation is GET, PUT or DELETE;
    ``resume=True`` continues the submit that wrote it. ``token`` and
    ``api_key``, or ``auth`` (an ``httpx.Auth`` such as
    :class:`batchnb.auth.ClientCredentials`, which each worker keeps fresh
    for its partitions), reach the workers through a worker plugin, never
    through the task graph; without them workers read ``BATCHNB_TOKEN`` and
    ``BATCHNB_API_KEY`` from their environment. A URL's ``user:password@``
    travels with them too. ``client`` is the ``distributed.Client`` (the
    current one by default).

    The result has the usual result columns plus ``partition``, and each
    partition keeps its input partition's index: line it up with
    :func:`join`. With ``wait`` (the default) this returns when every
    partition has run, and raises the first partition's error.

    What the submit puts on the cluster is named by a random id of its own
    and removed when its partitions are done, failed or cancelled (with
    ``wait=False`` too): the credentials' plugin at once; the limits'
    semaphores and the backoff variable once no task of the submit runs
    and their leases are back. A process that ends before its partitions do
    leaves them on the scheduler (the plugin holds the credentials): wait
    for the result, or cancel it, before ending it.

    Every partition is checked before anything is sent; a reference to a
    row of another partition is refused, naming both rows.

    ``verify``, ``cert``, ``proxy``, ``trust_env`` and ``http2`` are
    :class:`batchnb.Client`'s, checked here and used by every worker: a CA
    or certificate path must be one every worker sees (as ``journal``); an
    ``ssl.SSLContext`` cannot travel (give the CA file's path); a proxy URL
    holding a password reaches the workers with the credentials, never in
    the task graph. With ``trust_env``, each worker also reads its own
    environment (``HTTPS_PROXY``, ``SSL_CERT_FILE``, …), as httpx does.
    """
    from .auth import auth_problem

    wrong = auth_problem(auth)
    if wrong is None and auth is not None and (token is not None or api_key is not None):
        wrong = "was given with token/api_key: the auth flow sets the credentials; pass one"
    if wrong is not None:
        raise BatchValidationError([Problem("auth", wrong)])
    connection, secret_proxy = _connection_for_workers(verify, cert, proxy, trust_env, http2)
    from ._ratelimit import parse_rate

    rate = parse_rate(rate, "rate")  # before anything is sent
    from .client import _batch_rate_problem

    problem = _batch_rate_problem(batch_rate)
    if problem is not None:
        raise BatchValidationError([problem])
    client = client or distributed.get_client()
    frame_options = {
        k: v
        for k, v in {
            "method": method,
            "path": path,
            "body": body,
            "name": name,
            "headers": headers,
            "parent": parent,
            "nulls": nulls,
        }.items()
        if v is not None
    }
    found = ddf.map_partitions(_check_partition, frame_options, meta=_CHECK_META).compute()
    problems, idempotent = _problems(found)
    if journal is None and not idempotent:
        problems.append(
            Problem(
                "journal",
                "is required when a row may create something (POST, PATCH): a directory every "
                "worker sees, so that a partition run again sends only what never left",
            )
        )
    if problems:
        raise BatchValidationError(problems)
    submission = _start(journal, resume)
    # Random, one per submit: a name made from the URL and the credentials would let whoever sees the
    # cluster's names try a list of guesses for the token.
    run_id = secrets.token_hex(16)
    shown_url, secret_url = _without_password(url)
    plugin_name = None
    if any(v is not None for v in (token, api_key, auth, secret_proxy, secret_url)):
        plugin_name = f"batchnb-credentials-{run_id}"
        plugin = _Credentials(plugin_name, api_key, token, auth, secret_proxy, secret_url)
        client.register_plugin(plugin, name=plugin_name)
    published = _Published(
        client, run_id, plugin_name, rate=rate is not None, batch_rate=batch_rate is not None, timeout=timeout
    )
    try:
        # Every worker reads it before each batch; a 429 with Retry-After moves it on.
        distributed.Variable(_names(run_id).backoff, client=client).set(0.0)
        spec = _Spec(
            submission=submission,
            url=shown_url,
            frame_options=frame_options,
            concurrency=max(1, concurrency),
            rate=rate,
            batch_rate=batch_rate,
            retries=retries,
            retry_for=retry_for,
            idempotency=idempotency,
            bodies=bodies,
            timeout=timeout,
            journal=None if journal is None else str(Path(journal).resolve()),
            limit_id=run_id,
            credentials=plugin_name,
            connection=connection,
        )
        result: dd.DataFrame = ddf.map_partitions(
            _submit_partition, spec, meta=_meta(ddf._meta.index, bodies), align_dataframes=False
        ).persist()
    except BaseException:
        published.remove()
        raise
    futures = distributed.futures_of(result)
    published.remove_when_done(futures)
    if wait:
        distributed.wait(futures)
        published.remove()
        for future in futures:
            if future.status == "error":
                future.result()  # raises the partition's error
    return result


@dataclass(frozen=True)
class _Names:
    """The names of what one submit puts on the scheduler, by its random id."""

    in_flight: str
    starts: str
    op_starts: str
    backoff: str


def _names(run_id: str) -> _Names:
    return _Names(
        f"batchnb-in-flight-{run_id}",
        f"batchnb-starts-{run_id}",
        f"batchnb-op-starts-{run_id}",
        f"batchnb-backoff-{run_id}",
    )


def _without_password(url: str) -> tuple[str, str | None]:
    """The URL as the task graph may carry it (no ``user:password@``), and the URL itself when it had one.

    >>> _without_password("http://alice:s3cret@api.example/v1")
    ('http://api.example/v1', 'http://alice:s3cret@api.example/v1')
    """
    import httpx

    parsed = httpx.URL(url)
    if not parsed.userinfo:
        return url, None
    return str(parsed.copy_with(userinfo=b"")), url


_log = logging.getLogger(__name__)
#: how often the removal asks whether the submit's tasks still run and its leases are back; and how long
#: past the submit's own timeout it waits at most (a cancelled task runs on until its batch has answered).
_POLL = 0.25
_DRAIN = 30.0


class _Published:
    """What one submit put on the cluster: its credentials' plugin, its limits and its backoff.

    The plugin goes as soon as every partition is done, failed or cancelled
    (it holds the token). The semaphores and the backoff variable go once no
    task of the submit runs any more (a cancelled task runs on until its
    batch has answered, and would wait for ever on a semaphore or a variable
    that is gone) and every lease is back (a start is counted a moment after
    its answer); if that does not happen within the submit's timeout and
    :data:`_DRAIN` more, they are left as they are. Removed once, from
    whichever thread sees the end first.
    """

    def __init__(
        self,
        client: distributed.Client,
        run_id: str,
        plugin: str | None,
        *,
        rate: bool,
        batch_rate: bool,
        timeout: float,
    ) -> None:
        self._client = client
        self._plugin = plugin
        names = _names(run_id)
        self._backoff = names.backoff
        # Only the semaphores this submit uses: asking a scheduler about another makes an entry for it.
        self._semaphores = [names.in_flight] + [names.starts] * batch_rate + [names.op_starts] * rate
        self._drain = timeout + _DRAIN
        self._keys: list[Any] = []
        self._lock = threading.Lock()
        self._removed = False

    def remove_when_done(self, futures: list[Any]) -> None:
        """Remove everything once every one of ``futures`` has finished, failed or been cancelled."""
        self._keys = [f.key for f in futures]
        left = [len(futures)]
        lock = threading.Lock()

        def one_done(_future: Any) -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                self.remove()

        if not futures:
            self.remove()
        for future in futures:
            future.add_done_callback(one_done)  # distributed calls it in a thread of its own

    def remove(self) -> None:
        """Remove the plugin now, and the limits once no task of the submit runs (in a thread of its own)."""
        with self._lock:
            if self._removed:
                return
            self._removed = True
        try:
            if self._plugin is not None:
                self._client.unregister_worker_plugin(self._plugin)
        except Exception:  # noqa: BLE001 - the client or the cluster is gone: nothing is left to remove
            _log.warning("could not remove the worker plugin %s", self._plugin, exc_info=True)
        threading.Thread(target=self._remove_limits, name="batchnb-dask-cleanup", daemon=True).start()

    def _remove_limits(self) -> None:
        client = self._client
        deadline = time.monotonic() + self._drain
        try:
            while self._busy():
                if time.monotonic() > deadline:
                    _log.info("a task of the submit still runs: its limits stay on the scheduler")
                    return
                time.sleep(_POLL)
            distributed.Variable(self._backoff, client=client).delete()
            scheduler: Any = client.scheduler  # the scheduler's RPC: its calls are made by name
            for name in self._semaphores:
                client.sync(scheduler.semaphore_close, name=name)
        except Exception:  # noqa: BLE001 - the client was closed, or the cluster is gone: so are these
            _log.debug("could not remove the limits of a submit", exc_info=True)

    def _busy(self) -> bool:
        """Whether a task of the submit still runs on a worker, or a lease of its limits is still out."""
        client = self._client
        running: dict[str, list[Any]] = cast(Any, client.run(_running, self._keys))  # a dict: the client is sync
        if any(running.values()):
            return True
        scheduler: Any = client.scheduler
        return any(client.sync(scheduler.semaphore_value, name=name) for name in self._semaphores)


def _running(keys: list[Any], dask_worker: Any = None) -> list[Any]:
    """The keys of ``keys`` whose task runs on this worker (a cancelled one included, until it returns)."""
    wanted = set(keys)
    return [ts.key for ts in dask_worker.state.all_running_tasks if ts.key in wanted]


def _start(journal: str | os.PathLike[str] | None, resume: bool) -> str:
    """A new submission's id, recorded in its journal directory (or the id of the one being resumed)."""
    if journal is None:
        return uuid.uuid4().hex
    directory = Path(journal)
    marker = directory / "submission.json"
    if marker.exists():
        recorded: str = json.loads(marker.read_text())["submission"]
        if not resume:
            raise BatchValidationError(
                [
                    Problem(
                        "journal",
                        f"{str(directory)!r} holds the journals of another submit: "
                        "pass resume=True to continue it, or name another directory",
                    )
                ]
            )
        return recorded
    if resume:
        raise BatchValidationError([Problem("journal", f"{str(directory)!r} holds no submit to continue")])
    directory.mkdir(parents=True, exist_ok=True)
    submission = uuid.uuid4().hex
    marker.write_text(json.dumps({"submission": submission}))
    return submission


def join(
    ddf: dd.DataFrame, result: dd.DataFrame, columns: Sequence[str] = ("status", "ok", "error", "body")
) -> dd.DataFrame:
    """The input beside its result, partition by partition (labels may repeat across partitions).

    >>> import dask.dataframe as dd, batchnb.dask
    >>> companies = dd.from_pandas(df, npartitions=1)
    >>> answers = dd.from_pandas(result, npartitions=1)    # as batchnb.dask.submit returns it
    >>> batchnb.dask.join(companies, answers, columns=["status", "ok"]).compute()
                   name  status    ok
    0  Riverside Clinic     201  True
    1    Hilltop Dental     201  True
    2    Harbour Physio     201  True

    ``columns`` are the result columns to keep.
    """
    wanted = list(columns)
    joined: dd.DataFrame = dd.map_partitions(
        _join_partition, ddf, result[wanted], align_dataframes=False, meta=ddf._meta.join(result._meta[wanted])
    )
    return joined


def _join_partition(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    return left.join(right)


def by_key(ddf: dd.DataFrame, column: str, npartitions: int | None = None) -> dd.DataFrame:
    """Move the rows that share ``column`` into one partition, keeping their order (parents before children).

    >>> import dask.dataframe as dd, batchnb.dask
    >>> ops = dd.from_pandas(pd.DataFrame({"site": ["north", "south", "north", "south"],
    ...                                    "name": ["n1", "s1", "n2", "s2"]}), npartitions=4)
    >>> chains = batchnb.dask.by_key(ops, "site")
    >>> chains.compute().groupby("site")["name"].agg(list).to_dict()
    {'north': ['n1', 'n2'], 'south': ['s1', 's2']}

    References work within a partition: rows that reference each other must
    share a key (a site, a customer, …).
    """
    order = "_batchnb_order"
    numbered = ddf.assign(**{order: 1})
    numbered[order] = numbered[order].cumsum()
    moved = numbered.shuffle(on=column, npartitions=npartitions or ddf.npartitions)
    ordered: dd.DataFrame = moved.map_partitions(_in_order, order, meta=numbered._meta.drop(columns=order))
    return ordered


def _in_order(pdf: pd.DataFrame, order: str) -> pd.DataFrame:
    return pdf.sort_values(order, kind="stable").drop(columns=order)
