"""Atomic file writing and JSON payloads — the one way every Python-side writer of gozaru puts a file down.

A writer makes an exclusive temporary file in the target's folder (never following a planted link), writes,
fsyncs, keeps the mode of the file it replaces, renames it over the target and fsyncs the folder; on any
failure the temporary file is removed and the old target stays as it was.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """``with atomic_writer(path) as f: f.write(...)`` — readers see the old file or the whole new one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        try:
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
        binary = "b" in mode
        with os.fdopen(fd, mode, **({} if binary else {"encoding": encoding})) as f:
            fd = -1  # owned by f now
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(folder)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _fsync_folder(folder: str) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_writer(path) as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """JSON (UTF-8, NumPy scalars, sets and tuples as plain values) written atomically."""
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=1, default=json_default))


def json_default(o):
    if hasattr(o, "item") and callable(o.item) and getattr(o, "shape", None) == ():
        return o.item()  # NumPy scalars
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"cannot store {type(o).__name__} as JSON")


def loads(text: str | bytes, source: str) -> Any:
    """json.loads with one ValueError naming ``source`` for any unreadable text (bad syntax, bad UTF-8, nesting
    too deep for the parser)."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        detail = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise ValueError(f"{source}: not valid JSON ({detail})") from None


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's value; ValueError naming the file when it is not valid JSON (e.g. truncated)."""
    with open(path, "rb") as f:
        return loads(f.read(), os.fspath(path))


def json_payload(value) -> dict:
    """A JSON object stored as bytes / str (e.g. a checkpoint's ``extra``); {} when empty."""
    if value is None or len(value) == 0:
        return {}
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode()
    return loads(value, "payload") if isinstance(value, str) else dict(value)
