"""Pausing the cyclic garbage collector while a million fresh objects are made."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

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
