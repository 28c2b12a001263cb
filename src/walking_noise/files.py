"""Small I/O helpers every layer may use: durable file writes, timestamps, plain JSON-able values.

No import of the package: the store, the engine and the analysis all write files the same way.
"""

from __future__ import annotations

import math
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so that readers (array tasks on other nodes) see either nothing or all of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable; not every filesystem lets a folder be opened
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def to_plain(value: Any, nan_as_none: bool = False) -> Any:
    """Recursively turn numpy/torch scalars and tuples into plain Python types (what SEML stores unpickled);
    ``nan_as_none``: non-finite floats become None (strict JSON, e.g. a fit's fields)."""
    if isinstance(value, dict):
        return {str(k): to_plain(v, nan_as_none) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v, nan_as_none) for v in value]
    if isinstance(value, (bool, str, type(None))):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return None if nan_as_none and not math.isfinite(value) else float(value)
    if hasattr(value, "item") and callable(value.item):  # numpy or torch scalar
        return to_plain(value.item(), nan_as_none)
    if hasattr(value, "tolist"):
        return to_plain(value.tolist(), nan_as_none)
    return str(value)
