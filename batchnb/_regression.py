"""What ``batchnb run --expect`` and ``--junit`` add to a run: a verdict that CI reads.

Everything is checked before anything is sent (the expected file read, its
statuses, JSONPaths and columns checked against what the run will produce,
the report's directory found), so that a run is never spent on a file that
could not be used afterwards. Then:

- with ``--expect``, each row is compared with the expected file
  (:mod:`batchnb._compare`); the verdict is 1 when something differs, and
  what differs is printed as a short table, a body's fields by JSONPath
  (with ``--strict``, a field the API added differs too);
- without it, a row fails when it is not ok (the verdict ``run`` gives anyway);
- with ``--junit``, a JUnit XML report: one test case per row, a failure for
  each row that differs or is not ok, with the row's error.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO
from xml.etree import ElementTree as ET

import pandas as pd

from ._compare import Difference, Expected, frame_differences, message, ok_differences, rows_differ
from ._exceptions import BatchValidationError, Problem
from ._text import plural

__all__ = ["Check", "write_junit"]

#: characters XML 1.0 cannot hold, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class Check:
    """The expected file and the report of one run, checked before the run.

    >>> import pandas as pd
    >>> Check(pd.DataFrame({"name": ["a"]}), expect=None, junit="report.xml", source="ops.csv").junit.name
    'report.xml'
    """

    def __init__(
        self, df: pd.DataFrame, *, expect: str | None, junit: str | None, source: str, strict: bool = False
    ) -> None:
        from .results import to_frame

        self.df = df
        self.source = source
        self.strict = strict
        self.expected = Expected.read(expect) if expect else None
        self.junit = Path(junit) if junit else None
        problems = _target_problems(self.junit) if self.junit is not None else []
        if self.expected is not None:
            result_columns = list(to_frame([]).columns)
            renamed = [f"{c}_result" for c in result_columns if c in df.columns]
            try:
                self.expected.check([*df.columns, *result_columns, *renamed])
            except BatchValidationError as exc:
                problems.extend(exc.problems)
        if problems:
            raise BatchValidationError(problems)

    def finish(self, result: pd.DataFrame, out: TextIO) -> int:
        """Compare, print what differs to ``out``, write the report; 1 when a row fails, else 0."""
        if self.expected is None:
            total, diffs = len(result), ok_differences(result)
        else:
            total, diffs = frame_differences(self._actual(result), self.expected, strict=self.strict)
            if diffs:
                print("\n" + message(rows_differ(diffs, total, self.expected.source), diffs), file=out)
            else:
                print(f"\nall {plural(total, 'row')} as in {self.expected.source}", file=out)
        if self.junit is not None:
            write_junit(self.junit, result, diffs, source=self.source)
        return 1 if diffs else 0

    def _actual(self, result: pd.DataFrame) -> pd.DataFrame:
        """The run as the expected file sees it: the shape ``-o`` writes, with or without ``--only-results``."""
        assert self.expected is not None
        renamed = {c: f"{c}_result" for c in result.columns if c in self.df.columns}
        if set(renamed.values()) & set(self.expected.frame.columns):
            return self.df.join(result.rename(columns=renamed))
        return result.join(self.df[[c for c in self.df.columns if c not in result.columns]])


def _target_problems(path: Path) -> list[Problem]:
    if path.is_dir():
        return [Problem("--junit", f"{str(path)!r} is a directory; name a file in it")]
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return [Problem("--junit", f"{str(path)!r}: the directory {str(parent)!r} does not exist")]
    return []


def write_junit(path: Path, result: pd.DataFrame, diffs: list[Difference], *, source: str) -> None:
    """A JUnit XML report: one test case per row of ``result``, a failure for each row with differences.

    >>> import pandas as pd, tempfile, pathlib
    >>> result = pd.DataFrame({"name": ["a"], "status": [201], "ok": [True], "duration": [2.5]})
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "report.xml"
    >>> write_junit(target, result, [], source="ops.csv")
    >>> 'tests="1" failures="0"' in target.read_text()
    True

    A row's test is named by its operation name and label (``add-company (row 0)``),
    grouped under the input file's stem; a failure's message says what differs
    and its text is the row's error. Expected rows the run did not produce are
    failed tests too.
    """
    classname = Path(source).stem or "batchnb"
    by_row: dict[int, list[Difference]] = defaultdict(list)
    for d in diffs:
        if d.position is not None:
            by_row[d.position].append(d)
    cases: list[ET.Element] = []
    seconds = 0.0
    labels = [str(label) for label in result.index]
    names = result["name"].tolist() if "name" in result.columns else [None] * len(result)
    durations = result["duration"].tolist() if "duration" in result.columns else [None] * len(result)
    for i, (label, name, duration) in enumerate(zip(labels, names, durations)):
        took = _seconds(duration)
        seconds += took
        case = _case(classname, label, name, took)
        if by_row.get(i):
            _fail(case, by_row[i])
        cases.append(case)
    for d in diffs:
        if d.position is None:
            case = _case(classname, d.label, d.name, 0.0)
            _fail(case, [d])
            cases.append(case)
    failures = sum(1 for c in cases if c.find("failure") is not None)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0", "time": f"{seconds:.3f}"}
    root = ET.Element("testsuites", {"name": "batchnb", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": _xml(Path(source).name), "skipped": "0", **counts})
    suite.extend(cases)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _case(classname: str, label: str, name: Any, seconds: float) -> ET.Element:
    named = name if isinstance(name, str) else ""
    shown = f"{named} (row {label})" if named and label else named or f"row {label}"
    return ET.Element("testcase", classname=_xml(classname), name=_xml(shown), time=f"{seconds:.3f}")


def _fail(case: ET.Element, diffs: list[Difference]) -> None:
    said = "; ".join(f"{d.field or 'row'}: expected {d.expected or '—'}, got {d.got or '—'}" for d in diffs)
    kind = "status" if all(d.field == "status" for d in diffs) else "difference"
    failure = ET.SubElement(case, "failure", message=_xml(said), type=kind)
    failure.text = _xml(diffs[0].error or said)


def _seconds(duration: Any) -> float:
    try:
        value = float(duration) / 1000
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(value) else value


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
