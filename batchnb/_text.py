"""Messages that read as English: counts with the right noun."""

from __future__ import annotations

__all__ = ["plural"]


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``n`` and the noun, singular for one.

    >>> plural(1, "operation"), plural(3, "HTTP call"), plural(2, "reference")
    ('1 operation', '3 HTTP calls', '2 references')
    """
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"
