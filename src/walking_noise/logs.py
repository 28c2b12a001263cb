"""How the command lines show the library's log: library functions only log, a command decides what is shown."""

from __future__ import annotations

import logging
import sys


class _Format(logging.Formatter):
    """Plain messages for INFO, ``warning: ...`` / ``error: ...`` above: what the library logs, as a CLI says it."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {message}"


def configure_logging(verbosity: int = 0) -> None:
    """Send the library's log (loggers ``walking_noise.*``) to stdout: INFO by default, DEBUG with -v, WARNING
    with -q. Library functions only log; the command line decides what is shown."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Format("%(message)s"))
    root = logging.getLogger("walking_noise")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO)
