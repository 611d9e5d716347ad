"""Keeping the console to what matters while a library is chatty."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def quiet(*names: str, level: int = logging.WARNING) -> Iterator[None]:
    """The named loggers (the root logger with no names) show only `level` and above inside the block."""
    loggers = [logging.getLogger(name) for name in names] or [logging.getLogger()]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(level)
    try:
        yield
    finally:
        for log, old in zip(loggers, levels):
            log.setLevel(old)
