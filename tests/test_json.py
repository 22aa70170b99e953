"""batchnb._json: JSON in and out with numbers kept exact."""

from decimal import Decimal

import orjson
import pytest

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
