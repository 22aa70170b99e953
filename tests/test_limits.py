"""What one batch may ask of the server (batchnb.server.limits): each limit declared once, announced as declared."""

from dataclasses import fields

import httpx
import pytest

from batchnb import BatchValidationError, LocalServer
from batchnb.server import Limits


def test_the_server_announces_exactly_the_limits_it_was_given():
    limits = Limits(
        max_requests=7,
        max_depth=2,
        max_body_bytes=1000,
        body_timeout=3.0,
        max_response_bytes=2000,
        max_answer_bytes=5000,
        max_resolved_bytes=300,
        max_jsonpath_length=100,
        max_jsonpath_nesting=5,
        max_jsonpath_nodes=1000,
        max_batch_work=20_000,
        max_parallel=3,
        operation_timeout=2.5,
        batch_timeout=9.0,
    )
    with LocalServer(limits=limits) as server:
        announced = httpx.get(server.url + "/api/2.3/batch", trust_env=False).json()
    assert (
        announced
        == {**limits.to_wire(), "idempotency": True}
        == {
            "version": "2.3",
            "maxRequests": 7,
            "maxDepth": 2,
            "maxBodyBytes": 1000,
            "bodyTimeout": 3.0,
            "maxResponseBytes": 2000,
            "maxAnswerBytes": 5000,
            "maxResolvedBytes": 300,
            "maxJsonPathLength": 100,
            "maxJsonPathNesting": 5,
            "maxJsonPathNodes": 1000,
            "maxBatchWork": 20_000,
            "maxParallel": 3,
            "operationTimeout": 2.5,
            "batchTimeout": 9.0,
            "idempotency": True,  # the demo API honours Idempotency-Key
        }
    )


def test_jsonpath_bounds_can_be_lowered_not_raised_past_what_the_parser_can_take():
    with pytest.raises(BatchValidationError) as info:
        Limits(max_jsonpath_length=10**6, max_jsonpath_nesting=1000)
    assert info.value.pointers == ["max_jsonpath_length", "max_jsonpath_nesting"]


@pytest.mark.parametrize("name", ["head_timeout", "body_timeout", "keep_alive_timeout", "write_timeout"])
@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf")])
def test_a_connection_bound_is_a_positive_finite_number_of_seconds(name, value):
    with pytest.raises(BatchValidationError) as info:
        Limits(**{name: value})
    assert info.value.pointers == [name] and "must be a positive number of seconds" in str(info.value)


@pytest.mark.parametrize("value", [0, -5, 2.5, True])
def test_max_connections_is_a_whole_number_of_at_least_one(value):
    with pytest.raises(BatchValidationError) as info:
        Limits(max_connections=value)
    assert info.value.pointers == ["max_connections"]


@pytest.mark.parametrize("units", [0, -5, 2.5, float("nan"), "many"])
def test_the_batch_work_budget_is_a_whole_number_of_units_1_or_more(units):
    with pytest.raises(BatchValidationError) as info:
        Limits(max_batch_work=units)
    assert info.value.pointers == ["max_batch_work"]
    assert "a whole number of units, 1 or more" in str(info.value)


def test_every_limit_is_described_once_with_its_default():
    described = list(Limits.described())
    assert [name for name, _default, _help in described] == [f.name for f in fields(Limits)]
    defaults = Limits()
    for name, default, what in described:
        assert getattr(defaults, name) == default, name
        assert what and isinstance(what, str), name
    assert len({what for _name, _default, what in described}) == len(described)
    # Only what a client can act on is announced: how many batches run at once is the server's business.
    assert defaults.max_concurrent_batches == 32
    assert not any("oncurrent" in key for key in defaults.to_wire())
