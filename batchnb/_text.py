"""Messages that read as English: counts with the right noun."""

from __future__ import annotations

__all__ = ["plural"]


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``n`` and the noun, singular for one.

    >>> plural(1, "operation"), plural(3, "HTTP call"), plural(2, "reference")
    ('1 operation', '3 HTTP calls', '2 references')
    """
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"


def operations(size: int, top: int) -> str:
    """How many operations a batch holds, every one counted, then how many of them are nested.

    >>> operations(3, 1), operations(1, 1)
    ('3 operations, 2 nested', '1 operation')
    """
    nested = f", {size - top} nested" if size != top else ""
    return f"{plural(size, 'operation')}{nested}"
