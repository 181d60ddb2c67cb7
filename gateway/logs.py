"""Structured JSON logs (structlog): one line per event, level from the configuration.

Callers pass only safe values: job ids (the correlation id of an object), states, AE titles,
new UIDs, counts, statuses and reasons — never names, IDs, dates or original UIDs.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, TextIO

import structlog

LOG_FILE_ENV = "GANTRY_LOG_FILE"
_DEAD_SINK_ERRORS = (OSError, ValueError)  # EPIPE, ENOSPC, EIO …; ValueError: closed file
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure(level: str = "info", stream: TextIO | None = None, **context: Any) -> None:
    """Route every structlog logger to JSON lines on `stream` (default: the file named by
    $GANTRY_LOG_FILE, else stderr). Child processes inherit the variable."""
    if stream is None and os.environ.get(LOG_FILE_ENV):
        stream = open(os.environ[LOG_FILE_ENV], "a", buffering=1)  # noqa: SIM115
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_SinkFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    if context:
        structlog.contextvars.bind_contextvars(**context)
    # pynetdicom logs through stdlib logging, sometimes with dataset values: keep it quiet.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL + 1)


class _Sink:
    """Writes each line and flushes it; a sink that fails (its reader gone, its disk full) is
    given up for the rest of the process and the lines are dropped: logging never raises, so a
    dead log shipper cannot stop the node from receiving, processing or stopping."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.dead = False
        self._lock = threading.RLock()  # lines of threads never interleave

    def msg(self, message: str) -> None:
        with self._lock:
            if self.dead:
                return
            try:
                self.stream.write(message + "\n")
                self.stream.flush()
            except _DEAD_SINK_ERRORS:
                self.dead = True

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _SinkFactory:
    """One shared `_Sink` for every structlog logger of the process."""

    def __init__(self, stream: TextIO) -> None:
        self.sink = _Sink(stream)

    def __call__(self, *_args: Any) -> _Sink:
        return self.sink


def get_logger(name: str) -> Any:
    """A structlog logger tagged with the component name."""
    return structlog.get_logger(component=name)
