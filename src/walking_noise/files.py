"""Small I/O helpers every layer may use: durable file writes, timestamps, plain JSON-able values.

No import of the package: the store, the engine and the analysis all write files the same way.
"""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from datetime import datetime, timezone
from functools import lru_cache
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


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (e.g. trained weights: their identity, wherever the file lies); cached per
    (path, size, modification time), so a study of thousands of runs on one weights file reads it once."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as err:
        raise FileNotFoundError(f"weights file {path} cannot be read ({err.strerror}); give the path of a file saved "
                                f"with torch.save (a state_dict or a walking-noise checkpoint)") from err
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001 - size and mtime key the cache
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
