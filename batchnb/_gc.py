"""Pausing the cyclic garbage collector while a million fresh objects are made."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    # A million fresh dicts and objects, none of them cyclic, would make the
    # cyclic collector rescan the growing heap again and again (it doubles the
    # time); it runs once, normally, afterwards.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
