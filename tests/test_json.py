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
