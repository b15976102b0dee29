"""Records in the dolly-ja layout and their loaders (.json array, .jsonl, .parquet, a folder or hub dataset
id, a ``datasets.Dataset``, a list of dicts).

A record has ``instruction`` and ``output`` (required, non-empty strings), ``input`` and ``category`` (optional
strings, missing or null read as ""), and ``index`` (optional string or int, kept as a string). Other fields are
ignored. Problems raise :class:`DataError` naming the file, the line (json/jsonl, 1-based) or row (parquet,
0-based) and the field; with ``on_error="skip"`` the bad records are left out, counted and reported instead.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..fileio import atomic_writer
from .hub import is_repo_id, resolve

FIELDS = ("instruction", "input", "output", "category", "index")
REQUIRED = ("instruction", "output")
SUFFIXES = (".json", ".jsonl", ".parquet")


@dataclasses.dataclass(frozen=True)
class Record:
    instruction: str
    input: str = ""
    output: str = ""
    category: str = ""
    index: str = ""

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Record":
        return dataclasses.replace(self, **changes)


NESTED = "JSON nested too deeply (records are flat objects of strings)"


class DataError(ValueError):
    """A bad file or record; ``file``, ``where`` ("line 3", "row 7", or None) and ``field`` say which."""

    def __init__(self, file: str, where: str | None, field: str | None, message: str):
        self.file, self.where, self.field, self.message = str(file), where, field, message
        loc = self.file + (f", {where}" if where else "") + (f", field {field!r}" if field else "")
        super().__init__(f"{loc}: {message}")


@dataclasses.dataclass(frozen=True)
class Skipped:
    file: str
    where: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        return str(DataError(self.file, self.where, self.field, self.message))


class LoadedRecords(list):
    """A list of :class:`Record` that also remembers the files read and what was skipped."""

    def __init__(self, records: Iterable[Record] = (), files: Iterable[str] = (),
                 skipped: Iterable[Skipped] = ()):
        super().__init__(records)
        self.files: list[str] = list(files)
        self.skipped: list[Skipped] = list(skipped)

    def report(self, limit: int = 10) -> str:
        """One line of counts, then up to ``limit`` skipped problems."""
        lines = [f"loaded {len(self)} record(s) from {len(self.files)} file(s), skipped {len(self.skipped)}"]
        lines += [f"  skipped: {s}" for s in self.skipped[:limit]]
        if len(self.skipped) > limit:
            lines.append(f"  … and {len(self.skipped) - limit} more")
        return "\n".join(lines)


def record_from_mapping(obj: Any, file: str, where: str | None, required: tuple[str, ...] = REQUIRED) -> Record:
    """Validate one decoded record; raises :class:`DataError`."""
    if not isinstance(obj, dict):
        raise DataError(file, where, None, f"expected an object with fields {', '.join(REQUIRED)}, "
                                           f"got {type(obj).__name__}")
    values: dict[str, str] = {}
    for field in FIELDS:
        v = obj.get(field)
        if field in required:
            if v is None:
                raise DataError(file, where, field, "missing")
            if not isinstance(v, str):
                raise DataError(file, where, field, f"expected a string, got {type(v).__name__}")
            if not v.strip():
                raise DataError(file, where, field, "empty")
        elif v is None:
            v = ""
        elif field == "index" and isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        elif not isinstance(v, str):
            raise DataError(file, where, field, f"expected a string, got {type(v).__name__}")
        _check_text(v, file, where, field)
        values[field] = v
    return Record(**values)


def _check_text(v: str, file: str, where: str | None, field: str) -> None:
    """DataError for a lone surrogate (JSON's "\\ud800" escape): not text, and no UTF-8 writer can store it."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(file, where, field, f"contains a lone surrogate (U+{ord(v[e.start]):04X}) at character "
                                            f"{e.start}; not valid Unicode text") from None


def load_dolly(source, *, split: str = "train", on_error: str = "raise") -> LoadedRecords:
    """Load dolly-ja records from any of:

    * a path: a ``.json`` array, a ``.jsonl`` file, a ``.parquet`` file, or a folder searched recursively for
      them (read in path order). A folder in the Hub's layout (``data/train-00000-of-00001.parquet``,
      ``train.jsonl``, ``train/…``) is read for ``split`` only;
    * a Hugging Face dataset id (``org/name``) in the local hub cache (``gozaru.data.hub``);
    * a ``datasets.Dataset``, or a ``datasets.DatasetDict`` (its ``split``);
    * a list of dicts (or :class:`Record` objects).

    ``on_error="raise"`` (default) stops at the first problem with a :class:`DataError`; ``"skip"`` leaves out
    bad records (or a whole unreadable file), lists them in ``.skipped`` and warns once with the count.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    out = LoadedRecords()
    for name, items in _sources(source, split):
        out.files.append(name)
        for item in items:
            if isinstance(item, Record):
                out.append(item)
            elif on_error == "raise":
                raise item
            else:
                out.skipped.append(Skipped(item.file, item.where, item.field, item.message))
    if out.skipped:
        warnings.warn(out.report(limit=3), stacklevel=2)
    return out


def _sources(source, split: str) -> list[tuple[str, Iterator[Record | DataError]]]:
    """(name, records) for each file or in-memory collection that ``source`` stands for."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.exists() and is_repo_id(str(source)):
            p = Path(resolve(str(source), "dataset"))
        if p.is_dir():
            return [(str(f), _read_file(f)) for f in _split_files(p, split)]
        if p.is_file():
            return [(str(p), _read_file(p))]
        raise FileNotFoundError(f"{source}: no such file or folder")
    if isinstance(source, Mapping) and source and all(hasattr(v, "column_names") for v in source.values()):
        if split not in source:   # a datasets.DatasetDict
            raise DataError("<DatasetDict>", None, None, f"no split {split!r} (splits: {', '.join(source)})")
        source = source[split]
    if hasattr(source, "column_names") and hasattr(source, "__getitem__"):   # a datasets.Dataset
        name = f"<Dataset {getattr(getattr(source, 'info', None), 'dataset_name', None) or ''}>".replace(" >", ">")
        missing = [f for f in REQUIRED if f not in source.column_names]
        if missing:
            raise DataError(name, None, missing[0], f"missing column (columns: {', '.join(source.column_names)})")
        return [(name, _read_rows(iter(source), name, "row"))]
    if isinstance(source, (list, tuple)):
        return [("<list>", _read_rows(iter(source), "<list>", "item"))]
    raise TypeError(f"load_dolly: expected a path, a hub dataset id, a datasets.Dataset / DatasetDict or a list "
                    f"of dicts, got {type(source).__name__}")


def _read_rows(rows, name: str, unit: str) -> Iterator[Record | DataError]:
    for i, obj in enumerate(rows):
        if isinstance(obj, Record):
            yield obj
            continue
        try:
            yield record_from_mapping(obj, name, f"{unit} {i}")
        except DataError as e:
            yield e


_SPLIT_FILE = re.compile(r"^(?P<split>[A-Za-z0-9_]+?)(?:[-_.]\d{5}-of-\d{5})?$")
_KNOWN_SPLITS = ("train", "validation", "valid", "dev", "test")


def _split_of(rel: Path) -> str | None:
    """The split a file in the Hub's layout belongs to (``train-00000-of-00001.parquet``, ``train/x.jsonl``,
    ``data/test.jsonl``), or None."""
    for part in (*rel.parent.parts, rel.stem):
        m = _SPLIT_FILE.match(part)
        if m and m["split"] in _KNOWN_SPLITS:
            return m["split"]
    return None


def _split_files(folder: Path, split: str) -> list[Path]:
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES
                   and not any(part.startswith(".") for part in f.relative_to(folder).parts))
    if not files:
        raise DataError(str(folder), None, None, f"folder has no {' / '.join(SUFFIXES)} files (searched recursively)")
    splits = {f: _split_of(f.relative_to(folder)) for f in files}
    if not any(splits.values()):
        return files
    chosen = [f for f in files if splits[f] == split]
    if not chosen:
        raise DataError(str(folder), None, None, f"no files of split {split!r} (splits found: "
                                                 f"{', '.join(sorted({s for s in splits.values() if s}))})")
    return chosen


def _read_file(f: Path) -> Iterator[Record | DataError]:
    suffix = f.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_jsonl(f)
    elif suffix == ".json":
        yield from _read_json_array(f)
    elif suffix == ".parquet":
        yield from _read_parquet(f)
    else:
        yield DataError(str(f), None, None, f"unknown file type {suffix!r}; use {', '.join(SUFFIXES)}")


def _text(raw: bytes, name: str, line: int | None = None, encoding: str = "utf-8-sig") -> str:
    """raw decoded; a DataError at ``line`` (None: somewhere in the file) when it is not UTF-8."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(name, line and f"line {line}", None, f"not UTF-8 ({e.reason} at byte {e.start})") from None


def _json(text: str, name: str, line: int | None = None):
    """text parsed as JSON; a DataError at ``line`` (None: the whole file, located by JSON's own line) when it is
    not JSON or nested too deeply."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(name, f"line {line or e.lineno} column {e.colno}", None, f"invalid JSON: {e.msg}") from None
    except RecursionError:
        raise DataError(name, line and f"line {line}", None, NESTED) from None


def _read_jsonl(f: Path) -> Iterator[Record | DataError]:
    name = str(f)
    with open(f, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = _text(raw, name, lineno, "utf-8-sig" if lineno == 1 else "utf-8")
                if line.strip():
                    yield record_from_mapping(_json(line, name, lineno), name, f"line {lineno}")
            except DataError as e:
                yield e


def _read_json_array(f: Path) -> Iterator[Record | DataError]:
    """Records of a JSON array, each located by the line its object starts on."""
    name = str(f)
    try:
        text = _text(f.read_bytes(), name)
        _json(text, name)  # whole-file syntax check first, so a broken file gives JSON's own position
    except DataError as e:
        yield e
        return
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if not text.startswith("[", pos):
        yield DataError(name, None, None, "expected a JSON array of records (use .jsonl for one per line)")
        return
    pos = _skip_ws(text, pos + 1)
    lineno, counted_to, k = 1, 0, 0
    while pos < len(text) and text[pos] != "]":
        lineno += text.count("\n", counted_to, pos)
        counted_to = pos
        obj, pos = decoder.raw_decode(text, pos)
        try:
            yield record_from_mapping(obj, name, f"record {k} (line {lineno})")
        except DataError as e:
            yield e
        k += 1
        pos = _skip_ws(text, pos)
        if text.startswith(",", pos):
            pos = _skip_ws(text, pos + 1)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_parquet(f: Path) -> Iterator[Record | DataError]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = str(f)
    try:
        table = pq.read_table(f)
    except (pa.ArrowException, OSError) as e:
        yield DataError(name, None, None, f"not a readable parquet file ({e})")
        return
    for field in REQUIRED:
        if field not in table.column_names:
            yield DataError(name, None, field, f"missing column (columns: {', '.join(table.column_names)})")
            return
    for row, obj in enumerate(table.to_pylist()):
        try:
            yield record_from_mapping(obj, name, f"row {row}")
        except DataError as e:
            yield e


def save_jsonl(records: Iterable[Record | dict], path: str | os.PathLike) -> str:
    """Write records as dolly-ja ``.jsonl`` (UTF-8, one object per line, Japanese kept readable), atomically: a
    record that cannot be stored (DataError naming it) or a full disk leaves the old file as it was."""
    path = str(path)
    with atomic_writer(path) as fh:
        for i, r in enumerate(records):
            d = r.to_dict() if isinstance(r, Record) else dict(r)
            for field, v in d.items():
                if isinstance(v, str):
                    _check_text(v, path, f"record {i}", field)
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    return path


def as_record(r: Record | dict, *, require_output: bool = True) -> Record:
    """Accept a Record or a dolly-ja dict (validated; ``require_output=False`` for prompt-only dicts)."""
    if isinstance(r, Record):
        return r
    return record_from_mapping(r, "<dict>", None, REQUIRED if require_output else ("instruction",))
