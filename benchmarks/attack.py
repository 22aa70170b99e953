"""The attack corpus under load: does one hostile request slow, bloat or break the server for everyone else?

    python benchmarks/attack.py                 # 10 s at rest, then the corpus twice
    python benchmarks/attack.py --rest 20 --rounds 3

Starts the corpus's three processes (``batchnb serve`` with the demo API, a
hostile upstream, and a gateway in front of it; see
``tests/support/attacks.py``). A steady client submits ordinary batches to
both servers the whole time, and a probe (a process of its own, so that it times the servers and not this
process's threads) asks ``GET /api/2.3/batch`` of each
every 20 ms. First at rest, then while every attack of the corpus runs.

Prints the probe's p99 latency under attack against its p99 at rest (the
ratio), the loop stall (each server's worst probe under attack: how long an
event loop was held, at most, by what the attacks made it do), the servers'
peak RSS growth during the attacks, and the counts of
crashes, 5xx answers, bare (non-JSON) answers and attacks that did not get
the answer they expect, each against its target. Exits non-zero when a
target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

# The corpus lives with the tests; this script runs it from the repository root.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from tests.support.attacks import ATTACKS, CO, Served, Servers, Tally, running  # noqa: E402 - after sys.path names the repository

PROBE_EVERY = 0.02
RSS_LIMIT = 200 * 1024 * 1024
P99_RATIO_LIMIT = 10.0
#: seconds: the longest a probe may wait under attack (an event loop held for that long, at most).
STALL_LIMIT = 0.100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


class Background:
    """The probe (a process of its own), the steady client and the RSS sampler (threads), until ``stop``.

    The probe runs in a process of its own so that what it measures is the
    servers' delay, not the wait of its own thread for this process's
    interpreter lock while the attacks' threads run here.
    """

    def __init__(self, servers: Servers, tally: Tally) -> None:
        self.servers = servers
        self.tally = tally
        self.latencies: list[float] = []
        self.worst = {"demo": 0.0, "gateway": 0.0}
        #: the attacks as they started (wall clock, name), and the one each server's worst probe waited through.
        self.attacks: list[tuple[float, str]] = [(0.0, "(none)")]
        self.worst_during = {"demo": "", "gateway": ""}
        self.batches = self.batches_ok = 0
        self.peak_rss = {"demo": 0, "gateway": 0}
        self._stop = threading.Event()
        self._probe: subprocess.Popen[str] | None = None
        self._threads = [
            threading.Thread(target=f, daemon=True) for f in (self._read_probe, self._steady, self._sample)
        ]

    @property
    def attack(self) -> str:
        return self.attacks[-1][1]

    @attack.setter
    def attack(self, name: str) -> None:
        self.attacks.append((time.time(), name))

    def start(self) -> Background:
        urls = [self.servers.demo.url, self.servers.gateway.url]
        self._probe = subprocess.Popen(
            [sys.executable, __file__, "--probe", *urls], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        assert self._probe is not None
        self._probe.terminate()
        for t in self._threads:
            t.join(120)
        self._probe.wait(30)

    def _read_probe(self) -> None:
        assert self._probe is not None and self._probe.stdout is not None
        for text in self._probe.stdout:
            at, label, waited, status, json_answer = text.split()
            during = next(name for started, name in reversed(self.attacks) if started <= float(at))
            if float(waited) > self.worst[label]:
                self.worst[label], self.worst_during[label] = float(waited), during
            if status == "-":
                continue  # a server that does not answer shows as a crash
            self.latencies.append(float(waited))
            self.tally.answers += 1
            self.tally.server_errors += int(status) >= 500
            self.tally.bare += json_answer == "0"

    def _steady(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            self._one(
                self.servers.demo,
                [
                    {"method": "POST", "path": CO, "body": {"name": f"steady {n}"}, "name": "co"},
                    {"method": "GET", "path": CO + "/${result=co:$.id}"},
                    {"method": "GET", "path": CO + "?limit=5"},
                ],
            )
            self._one(
                self.servers.gateway,
                [{"method": "GET", "path": f"/steady/{n}"}, {"method": "POST", "path": "/steady", "body": {"n": n}}],
            )

    def _one(self, served: Served, ops: list[dict]) -> None:
        try:
            r = served.post({"requests": ops})
        except httpx.HTTPError:
            return
        self.batches += 1
        self.batches_ok += r.status_code == 200 and all(200 <= x["status"] < 300 for x in r.json()["responses"])

    def _sample(self) -> None:
        while not self._stop.is_set():
            for label, served in (("demo", self.servers.demo), ("gateway", self.servers.gateway)):
                with contextlib.suppress(OSError, AssertionError):
                    self.peak_rss[label] = max(self.peak_rss[label], served.rss())
            time.sleep(0.05)


def run_attacks(servers: Servers, rounds: int, background: Background) -> list[str]:
    unexpected = []
    for _ in range(rounds):
        for kind, attack in ATTACKS:
            background.attack = attack.__name__
            try:
                attack(servers)
            except (AssertionError, httpx.HTTPError) as exc:
                unexpected.append(f"{kind} {attack.__name__}: {str(exc)[:300]}")
    return unexpected


def line(label: str, value: str, met: bool, target: str) -> str:
    return f"{label:<42} {value:<22} target {target:<10} {'met' if met else 'NOT met'}"


def probe(urls: list[str]) -> int:
    """Ask each server for its limits every PROBE_EVERY seconds; a line per answer: started, server, waited, status, JSON."""
    with httpx.Client(timeout=120, trust_env=False) as http:
        while True:
            for label, url in zip(("demo", "gateway"), urls, strict=True):
                at, started = time.time(), time.perf_counter()
                try:
                    r = http.get(url + "/api/2.3/batch")
                    status, json_answer = (
                        str(r.status_code),
                        r.headers.get("content-type", "").startswith("application/json"),
                    )
                except httpx.HTTPError:
                    status, json_answer = "-", False
                # A probe that timed out waited too: it counts as a stall, not as nothing.
                print(f"{at:.6f} {label} {time.perf_counter() - started:.6f} {status} {int(json_answer)}", flush=True)
            time.sleep(PROBE_EVERY)


def main() -> int:
    if sys.argv[1:2] == ["--probe"]:
        return probe(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rest", type=float, default=10.0, help="seconds of steady load before the attacks")
    parser.add_argument("--rounds", type=int, default=2, help="times the whole corpus runs")
    args = parser.parse_args()

    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="batchnb-attack-") as tmp, running(Path(tmp), tally) as servers:
        rest = Background(servers, tally).start()
        time.sleep(args.rest)
        rest.stop()
        rss_before = {"demo": servers.demo.rss(), "gateway": servers.gateway.rss()}

        under = Background(servers, tally).start()
        started = time.monotonic()
        unexpected = run_attacks(servers, args.rounds, under)
        elapsed = time.monotonic() - started
        under.stop()
        crashes = sum(s.proc.poll() is not None for s in (servers.demo, servers.gateway))

    p99_rest, p99_attack = percentile(rest.latencies, 99) * 1000, percentile(under.latencies, 99) * 1000
    ratio = p99_attack / p99_rest
    growth = {k: (under.peak_rss[k] - rss_before[k]) / 2**20 for k in rss_before}
    print(
        f"corpus: {len(ATTACKS)} attacks x {args.rounds} rounds in {elapsed:.1f} s; "
        f"steady client: {rest.batches + under.batches} batches, {rest.batches_ok + under.batches_ok} all ok"
    )
    print(
        f"probe p99 at rest: {p99_rest:.1f} ms ({len(rest.latencies)} probes); under attack: {p99_attack:.1f} ms ({len(under.latencies)} probes)"
    )
    print(
        f"worst probe at rest: {max(rest.worst.values()) * 1000:.0f} ms; "
        f"under attack: demo {under.worst['demo'] * 1000:.0f} ms ({under.worst_during['demo']}), "
        f"gateway {under.worst['gateway'] * 1000:.0f} ms ({under.worst_during['gateway']})"
    )
    results = [
        line("probe p99 under attack / at rest", f"{ratio:.2f}x", ratio <= P99_RATIO_LIMIT, f"<= {P99_RATIO_LIMIT:g}x"),
        line(
            "loop stall: worst probe (demo, gateway)",
            f"{under.worst['demo'] * 1000:.0f} ms, {under.worst['gateway'] * 1000:.0f} ms",
            max(under.worst.values()) <= STALL_LIMIT,
            f"<= {STALL_LIMIT * 1000:.0f} ms",
        ),
        line(
            "peak RSS growth (demo, gateway)",
            f"{growth['demo']:.0f} MB, {growth['gateway']:.0f} MB",
            max(growth.values()) < RSS_LIMIT / 2**20,
            f"< {RSS_LIMIT // 2**20} MB",
        ),
        line("crashes", str(crashes), crashes == 0, "0"),
        line("5xx answers", f"{tally.server_errors} of {tally.answers}", tally.server_errors == 0, "0"),
        line("bare (non-JSON) answers", f"{tally.bare} of {tally.answers}", tally.bare == 0, "0"),
        line("attacks answered otherwise than expected", str(len(unexpected)), not unexpected, "0"),
    ]
    print("\n".join(results))
    for text in tally.examples[:5] + unexpected[:5]:
        print("  ", text)
    return 0 if all(r.endswith(" met") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
