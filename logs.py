"""Structured logs to stdout: one JSON object per line, model and version when known."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_CONTEXT_KEYS = ("model", "version", "request_id", "details")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _CONTEXT_KEYS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """Attach one stdout handler to the ``modelgate`` loggers (idempotent across app instances)."""
    logger = logging.getLogger("modelgate")
    logger.setLevel(level)
    if not any(getattr(h, "_modelgate", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        handler._modelgate = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
