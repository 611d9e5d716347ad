"""Keeping the console to what matters while a library is chatty."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
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


def library_bars_off() -> None:
    """Hugging Face's own tqdm bars (transformers loading or writing weights, hub transfers) off in this process and
    the ones it starts, as utabench's bars are when progress is off (`--no-progress`, stderr not a terminal, and
    run-all's workers, which share one terminal)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub is first imported
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


@contextlib.contextmanager
def chatter_to(path: Path) -> Iterator[None]:
    """What libraries print inside the block (stdout: pycocotools' and lvis' progress, mmengine's console handler when
    its logger is made inside) and the Python warnings they raise go to the file `path` (appended), not the console.
    Exceptions still propagate."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as out, contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: out.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        yield
