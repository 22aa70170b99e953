"""The command line's words for the library's arguments: ``resume=True`` is ``--resume`` to a CLI user.

The library's messages name Python arguments (``pass resume=True to continue
it``), as a notebook user writes them. ``batchnb run`` says the same things to
someone who types flags, so it translates every message it shows with
:func:`to_flags`, and the pointers of validation problems with
:func:`pointer`. A quoted value (a file name, a cell) is never translated.
"""

from __future__ import annotations

import argparse
import ast
import math
import re
import shlex
from collections.abc import Callable
from typing import Any

from ._exceptions import BatchValidationError, Problem

__all__ = ["count", "limit", "pointer", "problems", "seconds", "to_flags"]

#: the arguments of ``Client.submit`` / ``read_csv`` that ``batchnb run`` has a flag for.
FLAGS = {
    "journal": "--journal",
    "resume": "--resume",
    "dry_run": "--dry-run",
    "concurrency": "--concurrency",
    "rate": "--rate",
    "batch_rate": "--batch-rate",
    "retry_for": "--retry-for",
    "retries": "--retries",
    "encoding": "--encoding",
    "sep": "--sep",
    "strings": "--strings",
    "dtype": "--dtype",
    "method": "--method",
    "path": "--path",
    "name": "--name",
    "body": "--body-columns",
    "headers": "--header",
    "verify": "--cacert",
    "cert": "--cert",
    "proxy": "--proxy",
    "api_key": "--api-key",
    "token": "--token",
}

_QUOTED = r"""(?<!\w)'(?:[^'\\\n]|\\.)*'(?!\w)|(?<!\w)"(?:[^"\\\n]|\\.)*"(?!\w)"""
_VALUE = r"""True|'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|\{[^{}\n]*\}|-?[0-9][0-9.]*"""
_NAMES = "|".join(sorted(FLAGS, key=len, reverse=True))
#: what a Python user reads about objects, as a command line user meets the same thing.
PHRASES = {
    "submit was interrupted": "the run was interrupted",
    "finished rows are in .partial": "finished rows are in the result",
    " (see .problems)": "",
}
_PHRASE = "|".join(re.escape(p) for p in PHRASES)
_WORDS = re.compile(
    rf"(?P<quoted>{_QUOTED})|(?<![\w?&/.$=-])(?P<arg>{_NAMES})=(?P<value>{_VALUE})?"
    rf"|(?P<leave>leave (?:{_NAMES}) out)|(?P<phrase>{_PHRASE})"
)
#: how a frame is named to someone who gave a file.
_FRAME = re.compile(r"\bthe frame has no column\b")


def to_flags(text: str) -> str:
    """``text`` with each Python argument written as the flag that sets it.

    >>> to_flags("journal 'run.jsonl' already holds a run: pass resume=True to continue it")
    "journal 'run.jsonl' already holds a run: pass --resume to continue it"
    >>> to_flags("submit was interrupted: finished rows are in .partial; resume with journal='runs/a b.jsonl', resume=True")
    "the run was interrupted: finished rows are in the result; resume with --journal 'runs/a b.jsonl' --resume"
    >>> to_flags("the column is read as int: dtype={'zip': 'int'}")
    'the column is read as int: --dtype zip=int'
    """

    def said(match: re.Match[str]) -> str:
        if match.group("quoted"):
            return match.group()
        if match.group("phrase"):
            return PHRASES[match.group("phrase")]
        if match.group("leave"):
            word = match.group("leave").split()[1]
            return f"leave {FLAGS[word]} out"
        return "\ue000" + _flag(match.group("arg"), match.group("value")) + "\ue001"

    text = _WORDS.sub(said, text)
    # "--journal x, --resume" reads as one command line: "--journal x --resume".
    text = text.replace("\ue001, \ue000", " ").replace("\ue000", "").replace("\ue001", "")
    return _FRAME.sub("the file has no column", text)


def _flag(name: str, value: str | None) -> str:
    flag = FLAGS[name]
    if value is None or value == "True":
        return flag
    try:
        parsed: Any = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return f"{flag} {value}"
    if isinstance(parsed, dict):
        return f"{flag} " + shlex.quote(",".join(f"{k}={v}" for k, v in parsed.items()))
    return f"{flag} {shlex.quote(str(parsed))}"


def pointer(where: str) -> str:
    """A problem's pointer as the command line names it: ``journal`` is ``--journal``, ``dtype['zip']`` ``--dtype zip``.

    >>> pointer("dtype['zip']"), pointer("retry_for"), pointer("row 3, column path")
    ('--dtype zip', '--retry-for', 'row 3, column path')
    """
    if where in FLAGS:
        return FLAGS[where]
    match = re.fullmatch(r"dtype\[(.*)\]", where)
    if match:
        try:
            return f"--dtype {ast.literal_eval(match.group(1))}"
        except (ValueError, SyntaxError):
            pass
    return where


def problems(error: BatchValidationError) -> str:
    """A validation error's message, each problem in the command line's words.

    >>> print(problems(BatchValidationError([Problem("journal", "pass resume=True to continue it")])))
    1 problem in the input, nothing was sent:
      - --journal: pass --resume to continue it
    """
    if error.problems and error.message == BatchValidationError(error.problems).message:
        return BatchValidationError([Problem(pointer(p.pointer), to_flags(p.message)) for p in error.problems]).message
    return to_flags(error.message)  # a message of its own (a reference's syntax, a missing extra)


# ---------------------------------------------------------------- numbers given as flags

#: a whole number as a command line writes it: ASCII digits, no '_', no '.0'.
_WHOLE = re.compile(r"[+-]?[0-9]+")
#: a decimal number as a command line writes it (``30``, ``2.5``, ``1e3``): no 'nan', no 'inf'.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: the serve limits that 0 makes sense for, and what it means.
SERVE_ZERO = {"max_concurrent_batches": "0 runs no batch: each is answered 429"}


def count(least: int = 1, most: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``least`` (to ``most``); argparse names the flag.

    >>> count(1)("8"), count(0)("0")
    (8, 0)
    >>> count(1)("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be a whole number, 1 or more, not '0'
    >>> count(1, 65535)("70000")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be a whole number from 1 to 65535, not '70000'
    """
    wanted = f"a whole number, {least} or more" if most is None else f"a whole number from {least} to {most}"

    def parse(text: str) -> int:
        value = int(text) if _WHOLE.fullmatch(text.strip()) else None
        if value is None or value < least or (most is not None and value > most):
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text!r}")
        return value

    parse.__name__ = "whole number"  # what argparse says if it ever names the type
    return parse


def seconds(text: str) -> float:
    """An argparse ``type``: a number of seconds, more than 0 and finite (``nan`` and ``inf`` are not).

    >>> seconds("2.5")
    2.5
    >>> seconds("nan")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be a number of seconds more than 0, such as 30 or 2.5, not 'nan'
    """
    value = float(text) if _DECIMAL.fullmatch(text.strip()) else math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds more than 0, such as 30 or 2.5, not {text!r}")
    return value


def limit(name: str, default: Any) -> Callable[[str], Any]:
    """The argparse ``type`` of a server limit's flag, from its default: seconds, or a whole number.

    A limit is a count or a time; 0 turns one off only where :data:`SERVE_ZERO` says what it means.

    >>> limit("max_requests", 50)("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be a whole number, 1 or more, not '0'
    >>> limit("max_concurrent_batches", 32)("0"), limit("batch_timeout", 300.0)("12")
    (0, 12.0)
    """
    if isinstance(default, float):
        return seconds
    return count(0 if name in SERVE_ZERO else 1)
