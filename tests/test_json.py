"""batchnb._json: JSON in and out with numbers kept exact."""

from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchnb import _json


@pytest.mark.parametrize("n", [2**63 - 1, 2**64 - 1, 2**64, -(2**63) - 1, 10**40])
def test_integers_of_any_size_round_trip_exactly(n):
    text = _json.dumps({"n": n, "nested": [n, {"m": n}]})
    assert text == f'{{"n":{n},"nested":[{n},{{"m":{n}}}]}}'.encode()
    assert _json.loads(text) == {"n": n, "nested": [n, {"m": n}]}


def test_decimals_are_written_digit_for_digit():
    assert _json.dumps([Decimal("12.50"), Decimal("3.141592653589793238")]) == b"[12.50,3.141592653589793238]"
    with pytest.raises(TypeError):
        _json.dumps(Decimal("NaN"))


def test_ordinary_values_take_the_fast_path_and_floats_stay_floats():
    value = {"a": [1, 2.5, "é", None, True], "big_float": 1e300}
    assert _json.dumps(value) == orjson.dumps(value)
    assert _json.loads(b'{"x": 12345678901234567890.5}') == {"x": 12345678901234567890.5}


def test_unknown_types_are_still_refused():
    with pytest.raises(TypeError):
        _json.dumps({"s": {1, 2}})


def test_a_key_written_twice_is_refused_with_where():
    with pytest.raises(_json.DuplicateKey) as info:
        _json.loads_strict(b'{"requests": [{"path": "/x"}, {"method": "DELETE", "path": "/y", "method": "GET"}]}')
    assert info.value.pointer == "requests[1]" and "'method' appears twice" in info.value.message
    # Colons inside strings are not members: no false alarm.
    assert _json.loads_strict(b'{"a": "x:y\\":", "b": [{"c": ":"}]}') == {"a": 'x:y":', "b": [{"c": ":"}]}
    # A key written twice is found whether or not some string holds a colon.
    for text in (b'{"a": "12:00", "a": 1}', b'{"a": 1, "a": 2}', b'{"x": {"t": "a:b:c", "t": 1}}'):
        with pytest.raises(_json.DuplicateKey):
            _json.loads_strict(text)


def test_strict_reading_keeps_integers_beyond_64_bits_exact():
    assert _json.loads_strict(b'{"n": 1180591620717411303424}') == {"n": 2**70}


def test_deep_json_with_long_integers_is_a_decoding_error_not_a_recursion_error():
    deep = b"[" * 1000 + b"12345678901234567890123" + b"]" * 1000
    with pytest.raises(ValueError):
        _json.loads(deep)
    value: object = 2**70
    for _ in range(2000):
        value = [value]
    with pytest.raises(TypeError, match="Recursion"):
        _json.dumps(value)


def test_long_digit_runs_are_found_anywhere_in_a_large_buffer_too() -> None:
    piece = _json._PIECE
    for at in (0, 5, piece - 19, piece - 10, piece - 1, piece, 2 * piece + 7):
        raw = bytearray(b" " * (3 * piece))
        raw[at : at + 19] = b"1" * 19
        assert _json.has_long_digits(memoryview(raw)), at
        raw[at + 18] = ord("x")  # 18 digits: not long
        assert not _json.has_long_digits(memoryview(raw)), at
    assert _json.has_long_digits(b"[12345678901234567890]") and not _json.has_long_digits(b"[123456789012345678, 1.5]")


# ---------------------------------------------------------------- integers past a double, up to MAX_INT_DIGITS


@pytest.mark.parametrize("digits", [309, 400, 1000, _json.MAX_INT_DIGITS])
def test_integers_past_a_double_are_read_exactly_up_to_the_bound(digits: int) -> None:
    # orjson reads a number as a double first: from ~309 digits on it called this one "infinity".
    n = int("9" * digits)
    text = b'{"requests": [{"body": {"n": ' + str(n).encode() + b', "m": -' + str(n).encode() + b"}}]}"
    expected = {"requests": [{"body": {"n": n, "m": -n}}]}
    assert _json.loads(text) == expected
    assert _json.loads_strict(text) == expected
    assert _json.dumps(n) == str(n).encode()


def test_an_integer_over_the_bound_is_refused_both_ways_saying_where() -> None:
    digits = _json.MAX_INT_DIGITS + 1
    text = b'{"requests": [{"body": {"n": [1, ' + b"1" * digits + b"]}}]}"
    for read in (_json.loads, _json.loads_strict):
        with pytest.raises(_json.IntegerTooLong) as info:
            read(text)
        assert info.value.pointer == "requests[0].body.n[1]", info.value.pointer
        assert f"{digits} digits" in str(info.value) and "4300" in str(info.value)
        assert isinstance(info.value, orjson.JSONDecodeError)  # what every reader of answers already catches
    with pytest.raises(TypeError, match="more than 4300 digits"):
        _json.dumps({"n": -(10**digits)})


@pytest.mark.parametrize(
    "text",
    [
        b"[" + b"9" * 400 + b", NaN]",
        b"[" + b"9" * 400 + b", Infinity]",
        b"[" + b"9" * 400 + b", 1e999]",
        b"[" + b"9" * 400 + b', "\\ud800"]',
        b"[" + b"9" * 400 + b', {"\\udfff": 1}]',
        b"\xef\xbb\xbf[" + b"9" * 400 + b"]",
        b"[" + b"9" * 400 + b', "\xff"]',
        b"[" + b"9" * 400 + b",]",
    ],
)
def test_reading_long_integers_is_no_more_lenient_than_orjson(text: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError) as info:
        _json.loads(text)
    assert not isinstance(info.value, _json.IntegerTooLong)


# ---------------------------------------------------------------- JSON kept as its text


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
)


def _reads(data: bytes) -> tuple[bool, object]:
    try:
        return True, _json.loads(data)
    except (ValueError, RecursionError):
        return False, None


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(_values, st.sampled_from([b"", b" ", b"\n  "]))
def test_raw_json_reads_every_value_as_loads_does(value, pad):
    text = _json.dumps(value)
    raw = (
        _json.RawJSON.of(pad + orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2) + pad)
        if (len(text) < 2**20 and not _json.has_long_digits(text))
        else _json.RawJSON.of(text)
    )
    assert raw.value() == _json.loads(text)
    assert _json.dumps({"body": raw}) == b'{"body":' + raw.text + b"}"


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=24)
    | st.text(alphabet='[]{}",:0123456789.eE+- \\utrufalsn\t\x00\xe9', max_size=24).map(str.encode)
)
def test_raw_json_takes_what_loads_takes_and_refuses_the_rest(data):
    ok, value = _reads(data)
    try:
        raw = _json.RawJSON.of(data)
    except _json.TooDeep:
        raise AssertionError("nothing this short nests 254 levels") from None
    except ValueError:
        assert not ok, f"{data!r} is JSON that loads reads, refused as raw"
    else:
        assert ok, f"{data!r} is kept as JSON, but loads refuses it"
        assert raw.value() == value


@pytest.mark.parametrize(
    "data",
    [
        b'"\xff"',  # not UTF-8
        b'"\xed\xa0\x80"',  # a surrogate written as UTF-8
        b"[1e999]",  # beyond a double
        b"[" + b"9" * 400 + b"e10]",
        b'{"a": 1} {"b": 2}',  # two values: a second one that would land in the batch's answer
        b'{"a": 1}, "status": 200',
        b"[1,]",
        b"[" * 2000 + b"]" * 2000,  # deeper than loads reads
    ],
)
def test_raw_json_refuses_what_loads_refuses(data):
    assert not _reads(data)[0]
    with pytest.raises(ValueError, match="not JSON"):
        _json.RawJSON.of(data)


@pytest.mark.parametrize(
    "data, far",
    [
        (b"1e400", True),  # where the text starts
        (b"[1e999]", True),
        (b'{"a":-1E+400}', True),
        (b"[0.5e-999]", True),
        (b"[1.5e10, 12e001]", True),  # may be: loads says
        (b"[" + b"9" * 400 + b"]", True),
        (b'{"id":"st_8e409b7","co":"co-5e400"}', False),  # identifiers, not numbers
        (b'{"email":"eeee@example.com","n":12345,"x":1.5e10}', False),
    ],
)
def test_only_what_may_be_a_number_beyond_a_double_is_parsed_to_find_out(data, far):
    # A hex identifier such as "8e409" once sent every answer that held one through a full parse.
    assert _json._has_far_numbers(data) is far
    assert _json._has_far_numbers(b" " * (1 << 21) + data) is far  # read a megabyte at a time


@pytest.mark.parametrize(
    "data, depth",
    [
        (b"[" * 254 + b"]" * 254, None),
        (b"[" * 255 + b"]" * 255, 255),
        (b'{"a":' * 300 + b"1" + b"}" * 300, 300),
        (b'["' + b"[" * 400 + b'"]', None),  # brackets inside a string do not nest
        (b'["\\"' + b"[" * 400 + b'"]', None),  # nor after an escaped quote
        (b'["\\\\",' + b"[" * 300 + b"]" * 300 + b"]", 301),  # an escaped backslash ends no string
        (b"[" * 1000 + b"]" * 1000, 1000),  # past what the checker itself goes, not past loads
    ],
)
def test_raw_json_measures_how_deep_a_value_nests(data, depth):
    if depth is None:
        assert _json.RawJSON.of(data).value() is not None
    else:
        with pytest.raises(_json.TooDeep) as info:
            _json.RawJSON.of(data)
        assert info.value.depth == depth


def test_raw_json_keeps_every_number_as_written_and_reads_it_exactly():
    raw = _json.RawJSON.of(b'{"price": 12.50, "n": 1180591620717411303424, "e": 1E+2, "z": -0}')
    assert raw.text == b'{"price":12.50,"n":1180591620717411303424,"e":1E+2,"z":-0}'
    assert raw.value() == {"price": 12.5, "n": 2**70, "e": 100.0, "z": 0}
    assert raw.value() is raw.value()  # read once


@pytest.mark.slow
def test_raw_json_is_checked_without_building_python_objects():
    import tracemalloc

    text = orjson.dumps([{"id": i, "tags": ["a", "b"], "x": {"y": i}} for i in range(100_000)])
    tracemalloc.start()
    try:
        raw = _json.RawJSON.of(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert raw.text == text
    # The objects would take about 15 times the text; the check takes about what copies of it take.
    assert peak < 4 * len(text), f"{peak} bytes to check {len(text)} bytes"
