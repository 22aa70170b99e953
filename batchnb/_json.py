"""JSON in and out, fast, with numbers kept exact.

orjson is several times faster than the standard library, but it writes no
integer beyond 64 bits (it raises), reads one as a float (silently wrong:
``18446744073709551616`` comes back as ``1.8446744073709552e+19``) or, past
about 309 digits, refuses it as "infinity", and it has no decimals. Here an
integer of up to :data:`MAX_INT_DIGITS` digits and a :class:`decimal.Decimal`
are written as the exact number they are, and reading falls back to the
standard library, which keeps every integer exact, only when such an integer
is there. A longer integer is refused both ways (:class:`IntegerTooLong`):
turning thousands of digits into a number and back takes time that grows with
the square of their count, which is why Python bounds it at the same 4,300.

    >>> dumps({"big": 2**70, "price": Decimal("12.50")})
    b'{"big":1180591620717411303424,"price":12.50}'
    >>> loads(b'[18446744073709551616]')
    [18446744073709551616]
    >>> len(str(loads(b'[' + b'7' * 4300 + b']')[0]))
    4300
"""

from __future__ import annotations

import codecs
import json
import math
import re
from decimal import Decimal
from typing import Any

import msgspec
import orjson

__all__ = ["MAX_INT_DIGITS", "DuplicateKey", "IntegerTooLong", "RawJSON", "TooDeep", "dumps", "loads", "loads_strict"]

#: the most digits an integer may have, read or written (the client, the server and the demo API alike):
#: Python's own bound on converting between int and text (``sys.get_int_max_str_digits()``'s default).
MAX_INT_DIGITS = 4300
#: the first integer with more digits than that.
_TOO_LONG = 10**MAX_INT_DIGITS

#: every digit to "0", everything else to a space: a run of digits becomes a run of zeros.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_RUN = b"0" * 19
#: bytes a large buffer is searched in at a time.
_PIECE = 1 << 20


def has_long_digits(raw: bytes | memoryview) -> bool:
    """Whether ``raw`` holds a run of 19 or more digits: it may be an integer beyond 64 bits (2**63 has 19 digits).

    >>> has_long_digits(b'{"n": 9223372036854775808}'), has_long_digits(b'{"n": 922337203685477580}')
    (True, False)

    A byte translation and a substring search, both in C: a regular
    expression tries a match at every position, ten times slower here. A
    large buffer goes a megabyte at a time, so that no copy of it is made.
    """
    if type(raw) is bytes and len(raw) <= _PIECE:
        return _LONG_RUN in raw.translate(_DIGITS_AS_ZEROS)
    view = memoryview(raw)
    # Each piece reaches 18 bytes into the next: a run that starts in it is seen whole.
    return any(
        _LONG_RUN in bytes(view[at : at + _PIECE + 18]).translate(_DIGITS_AS_ZEROS)
        for at in range(0, len(view), _PIECE)
    )


def _exact(value: Any) -> Any:
    if isinstance(value, RawJSON):
        return orjson.Fragment(value.text)
    if isinstance(value, Decimal) and value.is_finite():
        return orjson.Fragment(str(value).encode("ascii"))
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON; integers of any size and decimals written exactly.

    Raises TypeError for what JSON cannot hold, nesting past orjson's limit
    of 254 levels included.
    """
    try:
        return orjson.dumps(value, default=_exact)
    except TypeError as exc:
        if "Integer exceeds 64-bit range" not in str(exc):
            raise
    try:
        return orjson.dumps(_big_ints_as_fragments(value), default=_exact)
    except RecursionError:
        raise TypeError("Recursion limit reached") from None


def _big_ints_as_fragments(value: Any) -> Any:
    """A copy of ``value`` with every integer beyond 64 bits as its exact JSON text."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        if abs(value) >= _TOO_LONG:
            raise TypeError(f"an integer of more than {MAX_INT_DIGITS} digits cannot be written exactly")
        return orjson.Fragment(str(value).encode("ascii"))
    if isinstance(value, dict):
        return {k: _big_ints_as_fragments(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_big_ints_as_fragments(v) for v in value]
    return value


def loads(data: bytes | str) -> Any:
    """Parse JSON; integers beyond 64 bits come back as exact Python ints, not floats.

    Raises ``orjson.JSONDecodeError`` (a ValueError) for anything that is
    not JSON, nesting past 1,024 levels included, and :class:`IntegerTooLong`
    (one too) for an integer of more than :data:`MAX_INT_DIGITS` digits.

    >>> loads(b'{"n": -1' + b'0' * 400 + b'}') == {"n": -(10**400)}
    True
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson reads a number as a double first: an integer past ~1.8e308 is "infinity" to it.
        if not has_long_digits(raw):
            raise
        return _exact_after(raw, exc)
    if has_long_digits(raw) and _has_inexact_number(value):
        return _exact_loads(raw)
    return value


class IntegerTooLong(orjson.JSONDecodeError):
    """An integer of more than :data:`MAX_INT_DIGITS` digits; ``pointer`` says where (``requests[0].body.n``).

    >>> try:
    ...     loads(b'{"requests": [{"body": {"n": ' + b'9' * 5000 + b'}}]}')
    ... except IntegerTooLong as exc:
    ...     print(exc)
    requests[0].body.n: an integer of 5000 digits; integers are kept exact up to 4300 digits
    """

    def __init__(self, pointer: str, digits: int) -> None:
        self.pointer = pointer
        self.message = f"an integer of {digits} digits; integers are kept exact up to {MAX_INT_DIGITS} digits"
        super().__init__(self.message, "", 0)

    def __str__(self) -> str:
        return f"{self.pointer}: {self.message}" if self.pointer else self.message


class _Long:
    """Stands for an integer over the bound while the text is read: :func:`_exact_after` says where it was."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _bounded_int(text: str) -> int | _Long:
    digits = len(text) - (text[0] == "-")
    if digits > MAX_INT_DIGITS:
        return _Long(digits)
    try:
        return int(text)
    except ValueError:  # a process that lowered sys.set_int_max_str_digits() below the bound
        return _Long(digits)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number is infinity when parsed as double")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _exact_after(raw: bytes, refused: orjson.JSONDecodeError) -> Any:
    """``raw`` read by the standard library, after orjson refused it: no more leniently than orjson.

    orjson stops at the first number it cannot hold; what follows is read here
    under orjson's rules: strict UTF-8 without a byte order mark, no NaN or
    Infinity, no float beyond a double, no lone surrogate. Anything else wrong
    raises orjson's own error, ``refused``.
    """
    try:
        value = _exact_loads(
            raw.decode("utf-8"), parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant
        )
    except ValueError:
        raise refused from None
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, pointer = stack.pop()
        if isinstance(item, _Long):
            raise IntegerTooLong(pointer, item.digits)
        if isinstance(item, str):
            if not item.isascii() and not _encodable(item):
                raise refused
        elif isinstance(item, dict):
            for k, v in item.items():
                if not k.isascii() and not _encodable(k):
                    raise refused
                stack.append((v, f"{pointer}.{k}" if pointer else k))
        elif isinstance(item, list):
            stack.extend((v, f"{pointer}[{i}]") for i, v in enumerate(item))
    return value


def _encodable(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (a lone surrogate, read from an escape, cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, written as an escape
        return False
    return True


def _exact_loads(raw: bytes | str, **hooks: Any) -> Any:
    """The standard library's parser (exact integers), its recursion made a decoding error."""
    try:
        return json.loads(raw, **hooks)
    except RecursionError:
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        raise orjson.JSONDecodeError("nested too deeply", text, 0) from None


class DuplicateKey(ValueError):
    """A JSON object that names one key twice; ``pointer`` says where (``requests[0]``).

    >>> try:
    ...     loads_strict(b'{"requests": [{"method": "DELETE", "method": "GET"}]}')
    ... except DuplicateKey as exc:
    ...     print(exc)
    requests[0]: the key 'method' appears twice in one object
    """

    def __init__(self, pointer: str, key: str) -> None:
        self.pointer = pointer
        self.message = f"the key {key!r} appears twice in one object"
        super().__init__(f"{pointer}: {self.message}" if pointer else self.message)


#: a JSON string, escapes included (unrolled, so that it runs in linear time).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def loads_strict(data: bytes | str) -> Any:
    """:func:`loads`, refusing an object that names a key twice (JSON leaves that open; orjson keeps the last).

    >>> loads_strict(b'{"a": 1, "b": {"a": 2}}')
    {'a': 1, 'b': {'a': 2}}
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    value = loads(raw)
    # Outside strings, each ':' of valid JSON separates one member: as many
    # members parsed as colons written means that no key was written twice.
    # Counting every colon first spares the strings' removal when none holds one.
    members = _members(value)
    if members != raw.count(b":") and members != _STRING.sub(b"", raw).count(b":"):
        _find_duplicate(raw)
    return value


def _members(value: Any) -> int:
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


class _Repeated(dict[str, Any]):
    """An object parsed with a key written twice: the key, kept for the pointer."""

    key: str = ""


def _mark_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, val in pairs:
        if key in out and not isinstance(out, _Repeated):
            out = _Repeated(out)
            out.key = key
        out[key] = val
    return out


def _find_duplicate(raw: bytes) -> None:
    """Raise :class:`DuplicateKey` for the first object, in reading order, that repeats a key."""
    value = _exact_loads(raw, object_pairs_hook=_mark_repeats)
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, pointer = stack.pop()
        if isinstance(item, _Repeated):
            raise DuplicateKey(pointer, item.key)
        if isinstance(item, dict):
            stack.extend((v, f"{pointer}.{k}" if pointer else str(k)) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{pointer}[{i}]") for i, v in reversed(list(enumerate(item))))


def _has_inexact_number(value: Any) -> bool:
    """Whether parsing made a float that may stand for a long integer (checked iteratively)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and abs(item) >= 2**63:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


# ---------------------------------------------------------------- JSON kept as its text

#: levels a JSON value may nest and still be written by :func:`dumps` (orjson refuses 255 and deeper).
MAX_DEPTH = 254
#: digits to "0", "e" and "E" to "e", "." kept, what may stand before or after a number (",:[]{}" and
#: whitespace) to a space, and the rest to "x" (signs are dropped): the only numbers that may lie beyond a
#: double's range, which :func:`loads` may refuse, start after a space and show an exponent of three digits
#: (:data:`_FAR_EXPONENT`), or hold a run of 209 digits (a mantissa that an exponent of 99 takes past 1e308).
#: An identifier such as ``"st_8e409b7"`` is no number: its "8e409" follows an "x".
_NUMBERISH = bytes(
    0x30
    if 0x30 <= i <= 0x39
    else 0x65
    if i in (0x45, 0x65)
    else 0x2E
    if i == 0x2E
    else 0x20
    if i in b",:[]{} \t\n\r"
    else 0x78
    for i in range(256)
)
#: a token that starts as a number after a space (the text is searched with one put before it: a
#: look-behind would cost the search its fast scan for the space) and reaches an exponent of 3 digits;
#: "[0.]+" gives back one byte at a time and each fails at once: linear in the token's length.
_FAR_EXPONENT = re.compile(rb" [0.]+e000")
_FAR_RUN = b"0" * 209
#: everything but the bytes that open or close a string, an array or an object.
_NOT_STRUCTURE = bytes(i for i in range(256) if i not in b'"[]{}')
#: '[' and '{' to 1, ']' and '}' to -1 (as a signed byte), '"' to 0.
_STEPS = bytes.maketrans(b'"[]{}', bytes([0, 1, 255, 1, 255]))
#: of those bytes, how many are counted at a time (each costs about 8 bytes of numpy arrays while counted).
_MARKS = 1 << 18


class TooDeep(ValueError):
    """JSON nested deeper than it may be carried.

    >>> str(TooDeep(300, 254))
    'nested 300 levels deep, more than 254'
    """

    def __init__(self, depth: int, most: int) -> None:
        self.depth = depth
        self.most = most
        super().__init__(f"nested {depth} levels deep, more than {most}")


class RawJSON:
    """One JSON value kept as its compact UTF-8 text, parsed only when :meth:`value` is called.

    >>> body = RawJSON.of(b'{ "id": 7, "n": 18446744073709551616 }')
    >>> body.text
    b'{"id":7,"n":18446744073709551616}'
    >>> body.value()["n"]
    18446744073709551616
    >>> dumps({"body": body})
    b'{"body":{"id":7,"n":18446744073709551616}}'

    A value as Python objects takes 5 to 20 times the bytes of its text: an
    answer kept this way costs about its size, and is written out again (by
    :func:`dumps`, as an ``orjson.Fragment``) without being parsed at all.
    :meth:`value` parses once and keeps what it read, for the references
    that read the same answer again.
    """

    __slots__ = ("_read", "_value", "text")

    def __init__(self, text: bytes) -> None:
        # Trusted: ``text`` is JSON that loads() reads (RawJSON.of checks it).
        self.text = text
        self._value: Any = None
        self._read = False

    @classmethod
    def of(cls, data: bytes | memoryview, *, most_depth: int = MAX_DEPTH) -> RawJSON:
        """``data`` kept as a value, if it is JSON that :func:`loads` reads and nests at most ``most_depth`` levels.

        Raises :class:`TooDeep` for deeper JSON, and ValueError for what is
        not JSON (or what :func:`loads` would refuse: text that is not UTF-8,
        a number beyond a double's range). Checked without building a single
        Python object: about 20 times faster than parsing it.

        >>> RawJSON.of(b"[1, 2]").text
        b'[1,2]'
        >>> RawJSON.of(b"[1, 2] x")
        Traceback (most recent call last):
        ...
        ValueError: not JSON: JSON is malformed: trailing characters (byte 8)
        >>> RawJSON.of(b"[[[1]]]", most_depth=2)
        Traceback (most recent call last):
        ...
        batchnb._json.TooDeep: nested 3 levels deep, more than 2
        """
        try:
            # Checks the syntax and drops the whitespace, copying every token as it is (no number is rewritten).
            text = msgspec.json.format(data, indent=-1)
        except msgspec.DecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        except RecursionError:
            # Deeper than the checker goes (about 900 levels): loads says whether it is JSON at all.
            text = bytes(data)
            try:
                loads(text)
            except (ValueError, RecursionError):
                raise ValueError("not JSON: nested too deeply to read") from None
        if not text.isascii() and not _is_utf8(text):
            raise ValueError("not JSON: the text is not UTF-8")
        if _has_far_numbers(text):
            try:
                loads(text)  # what a number beyond a double means is loads' to say
            except ValueError as exc:
                raise ValueError(f"not JSON: {exc}") from None
        deeper = _depth_past(text, most_depth)
        if deeper is not None:
            raise TooDeep(deeper, most_depth)
        return cls(text)

    def value(self) -> Any:
        """The value as Python objects (:func:`loads`), read once and kept."""
        if not self._read:
            self._value = loads(self.text)
            self._read = True
        return self._value

    def __len__(self) -> int:
        return len(self.text)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RawJSON):
            return self.text == other.text
        return bool(self.value() == other)

    __hash__ = None  # type: ignore[assignment]  # compares equal to the (unhashable) value it holds

    def __repr__(self) -> str:
        shown = self.text[:60].decode("utf-8", "replace")
        return f"RawJSON({shown}{'…' if len(self.text) > 60 else ''})"


def _is_utf8(text: bytes) -> bool:
    """Whether ``text`` is UTF-8 (surrogates refused, as JSON parsers do), read a megabyte at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    view = memoryview(text)
    try:
        for at in range(0, len(view), _PIECE):
            decoder.decode(view[at : at + _PIECE])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _has_far_numbers(text: bytes) -> bool:
    """Whether ``text`` may hold a number beyond a double's range (see :data:`_NUMBERISH`), a megabyte at a time."""
    if len(text) <= _PIECE:
        translated = text.translate(_NUMBERISH, b"+-")
        return _far(translated)
    view = memoryview(text)
    for at in range(0, len(view), _PIECE):
        # Each piece reaches into the next as far as a run is long: a run that starts in it is seen whole.
        translated = bytes(view[at : at + _PIECE + len(_FAR_RUN)]).translate(_NUMBERISH, b"+-")
        if _far(translated):
            return True
    return False


def _far(translated: bytes) -> bool:
    if _FAR_RUN in translated:
        return True
    # Most texts hold no "e000" at all: found in C, much faster than the search for a number that holds it.
    return b"e000" in translated and _FAR_EXPONENT.search(b" " + translated) is not None


def prepare() -> None:
    """Import what checking a large answer needs (numpy), so that the first such answer does not wait for it.

    A server calls it as it starts: importing numpy takes about 100 ms,
    which would otherwise be spent on the event loop in the middle of a
    batch, holding every other request.

    >>> prepare()
    """
    import numpy  # noqa: F401 - imported for its side effect: numpy in sys.modules


def _depth_past(text: bytes, most: int) -> int | None:
    """How deep the valid, compact JSON ``text`` nests, when that is more than ``most`` (else None).

    >>> _depth_past(b'[["[[[", {"a": [1]}]]', 2)
    4
    >>> _depth_past(b'[["[[[", {"a": [1]}]]', 4) is None
    True

    Only the bytes that open and close strings, arrays and objects are
    looked at (picked out in C, then counted with numpy a quarter of a
    megabyte at a time): a bracket between an odd and an even quote is inside a string.
    """
    if len(text) <= 2 * most:
        return None  # too short to open more than ``most`` levels
    if b'\\"' in text:
        # An escaped quote is no string's end: hidden, escaped backslashes first (left to right, as they are read).
        text = text.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    marks = text.translate(None, _NOT_STRUCTURE)
    if marks.count(b"[") + marks.count(b"{") <= most:
        return None  # fewer brackets than levels: not that deep, wherever they stand
    import numpy as np  # imported here, not with the module: a client may never need it (a server: prepare())

    depth = deepest = 0
    inside = False  # whether the piece starts inside a string
    for at in range(0, len(marks), _MARKS):
        piece = marks[at : at + _MARKS]
        within = np.bitwise_xor.accumulate(np.frombuffer(piece, dtype=np.uint8) == 0x22)
        if inside:
            within = ~within
        inside = bool(within[-1])
        steps = np.frombuffer(piece.translate(_STEPS), dtype=np.int8).copy()
        steps[within] = 0
        levels = np.cumsum(steps, dtype=np.int32)
        deepest = max(deepest, depth + int(levels.max()))
        depth += int(levels[-1])
    return deepest if deepest > most else None
