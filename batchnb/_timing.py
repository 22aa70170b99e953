"""Where a batch's time goes on the server, per phase, as a ``Server-Timing`` header.

    >>> t = Timings()
    >>> t.add("parse", 0.0012); t.add("api", 0.004); t.add("api", 0.001)
    >>> t.header()
    'parse;dur=1.200, api;dur=5.000'
    >>> read_header(t.header())
    {'parse': 1.2, 'api': 5.0}

Phases are summed over a batch's operations, so with ``parallel`` the
``api`` phase may add up to more than the batch's wall time.
"""

from __future__ import annotations

import re

__all__ = ["PHASES", "Timings", "read_header"]

#: the phases, in the order a batch meets them between the socket and the API.
PHASES = {
    "read": "receiving the body",
    "parse": "JSON to a checked batch (shape, names, paths, headers, references, limits)",
    "resolve": "filling in references and preparing each operation's request",
    "api": "the API answering (summed over operations)",
    "carry": "reading each answer into the batch's answer (decoding, bounds)",
    "serialise": "the batch's answer to JSON",
}
#: a duration as Server-Timing writes it (RFC 8941 decimal, ASCII digits).
_DURATION = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class Timings:
    """Seconds spent per phase, added up as the batch runs."""

    __slots__ = ("_spent",)

    def __init__(self) -> None:
        self._spent: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self._spent[phase] = self._spent.get(phase, 0.0) + seconds

    def header(self) -> str:
        """The ``Server-Timing`` value: each phase's milliseconds."""
        return ", ".join(f"{phase};dur={seconds * 1000:.3f}" for phase, seconds in self._spent.items())


def read_header(value: str) -> dict[str, float]:
    """A ``Server-Timing`` value → milliseconds by phase (metrics without a duration are skipped)."""
    out: dict[str, float] = {}
    for metric in value.split(","):
        name, *params = (p.strip(" \t") for p in metric.split(";"))
        for param in params:
            key, _, number = param.partition("=")
            # A number as HTTP writes it: float() would also take 'nan', 'inf', '1_0' and '١٢'.
            if key == "dur" and name and _DURATION.fullmatch(number):
                out[name] = out.get(name, 0.0) + float(number)
    return out
