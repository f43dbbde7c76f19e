"""Progress bars and log output for long work (rich), quiet when not attached to a terminal."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

console = Console(stderr=True)


def progress_bar(transfer: bool = False) -> Progress:
    """A progress bar on stderr (disabled unless stderr is a terminal); use as a context manager.
    ``transfer``: counts bytes (size and speed) instead of items."""
    counts = [DownloadColumn(), TransferSpeedColumn()] if transfer else [MofNCompleteColumn(), TimeElapsedColumn()]
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        *counts,
        TimeRemainingColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    )


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is now (tests and tools swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(debug: bool = False) -> None:
    """Log vista2d messages to stderr: INFO (DEBUG with ``debug``), one plain line each."""
    logger = logging.getLogger("vista2d")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
