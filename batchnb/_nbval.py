"""Where the nbval sanitizer that ships with batchnb is (``batchnb sanitize-config`` prints it)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SANITIZE_CONFIG"]

#: the rules for what batchnb prints that changes from run to run (ids, ports, durations, times).
SANITIZE_CONFIG = Path(__file__).resolve().with_name("nbval-sanitize.cfg")
