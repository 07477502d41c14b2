"""Atomic file writes: write a temporary file beside the target, then rename over it.

A crash or an exception midway leaves the previous file (if any) untouched and no partial file.
``atomic_create_json`` never replaces a file at all, and ``unwritable_reason`` lets a command
check its output folder before it starts any work.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, replace: bool = True) -> Path:
    """Write ``data`` to ``path`` (parent folders created). With ``replace=False`` an existing
    ``path`` is left alone and ``FileExistsError`` raised: the file is hard-linked into place,
    which fails rather than replaces."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """Why files cannot be created in ``folder``, or None if they can. A folder that does not
    exist yet is judged by the nearest existing folder above it, where it would be created."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        return f"cannot create files in {probe} ({exc.strerror or exc})"
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_bytes(payload: object) -> bytes:
    # allow_nan=False: a NaN or infinity is an error to report, not a token to write
    return (json.dumps(payload, indent=2, allow_nan=False) + "\n").encode("utf-8")


def atomic_write_json(path: str | os.PathLike, payload: object) -> Path:
    return atomic_write_bytes(path, _json_bytes(payload))


def atomic_create_json(path: str | os.PathLike, payload: object) -> Path:
    """Like ``atomic_write_json``, but ``FileExistsError`` if ``path`` exists (never replaced)."""
    return atomic_write_bytes(path, _json_bytes(payload), replace=False)
