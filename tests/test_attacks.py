"""The attack corpus against real processes: ``batchnb serve`` (demo API), and a gateway in front of a hostile upstream.

Each attack of :data:`tests.support.attacks.ATTACKS` expects its status and
message; after each, both servers must answer ``GET /api/2.3/batch`` and
still be running. The corpus itself, and why each attack is there, is in
:mod:`tests.support.attacks`; ``benchmarks/attack.py`` runs the same corpus
under load.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.attacks import ATTACKS, Servers, Tally, running

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


@pytest.fixture(scope="module")
def tally() -> Tally:
    return Tally()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, tally: Tally) -> Iterator[Servers]:
    with running(tmp_path_factory.mktemp("attacks"), tally) as s:
        yield s


@pytest.mark.parametrize(("kind", "attack"), ATTACKS, ids=[f"{kind.split()[0]}-{a.__name__}" for kind, a in ATTACKS])
def test_attack_is_refused_and_the_server_lives_on(
    servers: Servers, kind: str, attack: Callable[[Servers], None]
) -> None:
    attack(servers)
    servers.demo.probe()
    servers.gateway.probe()


def test_no_answer_of_the_corpus_was_a_5xx_or_bare(servers: Servers, tally: Tally) -> None:
    assert tally.answers > len(ATTACKS), tally
    assert tally.server_errors == 0 and tally.bare == 0, tally.examples[:5]
