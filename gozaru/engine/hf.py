"""Import and export of Hugging Face model folders: GPT-NeoX, Llama and Qwen2 (``model_type`` in config.json).

Import reads ``config.json`` and the weights from, in this order of preference, ``model.safetensors``,
``model.safetensors.index.json`` (sharded), ``pytorch_model.bin`` or ``pytorch_model.bin.index.json``
(both need torch). float32/float16/bfloat16 weights become float32. Every file is checked (names, shapes,
dtypes) before any weight is read, and weights are then copied one tensor at a time into the model, so
memory stays at the model plus one tensor (safetensors are memory-mapped; ``.bin`` files are opened with
``mmap=True``).

Export is in ``gozaru.engine.hf_export``. config.json spellings (transformers 5 and the hub's older ones) are
read by ``hf_config``.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Callable

import numpy as np

from .._core import CheckpointError
from .config import MODEL_TYPES, GPTNeoXConfig
from .hf_export import _write_safetensors, write_folder  # noqa: F401  (export's home; kept importable here)

# Buffers HF keeps in some state dicts that are not parameters (rotary caches, attention masks).
IGNORED_SUFFIXES = (".rotary_emb.inv_freq", ".attention.bias", ".attention.masked_bias")

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"

# Other names some tools give gozaru's tensors (transformers >= 5 calls GPT-NeoX's head lm_head).
ALIASES = {"lm_head.weight": "embed_out.weight"}
# Prefixes of weights saved from a bare base model (GPTNeoXModel, LlamaModel) rather than the *ForCausalLM.
BARE_PREFIXES = ("gpt_neox.", "model.")

# transformers.GPTNeoXConfig's defaults for the fields whose gozaru default differs (rotary_pct 0.25 is its
# partial_rotary_factor default; rope_parameters' own value still wins, see GPTNeoXConfig.from_dict).
HF_DEFAULTS = {"rotary_pct": 0.25, "use_parallel_residual": True, "bos_token_id": 0, "eos_token_id": 2}

# dtype names as safetensors spells them; torch dtypes are mapped onto these.
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


def read_hf_config(folder: str | os.PathLike) -> GPTNeoXConfig:
    """The GPTNeoXConfig of an HF folder; errors name the file and the missing or bad field."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json in the model folder")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({'nested too deeply' if isinstance(e, RecursionError) else e})"
                              ) from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    if d.get("model_type", "gpt_neox") not in MODEL_TYPES:
        raise CheckpointError(f"{path}: model_type is {d['model_type']!r}; gozaru imports "
                              f"{', '.join(map(repr, MODEL_TYPES))} models")
    if d.get("model_type", "gpt_neox") == "gpt_neox":
        # transformers' GPTNeoXConfig defaults where gozaru's own differ: an HF file means them
        d = {**HF_DEFAULTS, **{k: v for k, v in d.items() if v is not None}}
    try:
        return GPTNeoXConfig.from_dict(d, source=str(path))
    except ValueError as e:
        raise CheckpointError(str(e)) from None


# ---------------------------------------------------------------- weight files

class _SafetensorsFile:
    """One .safetensors file: entries from its (validated) header, tensors read one at a time."""

    def __init__(self, path: Path):
        from safetensors import SafetensorError, safe_open

        self.path = path
        self._error = SafetensorError
        try:
            # safe_open validates the whole header (offsets inside the file, no overlaps) and maps the file.
            self._file = safe_open(str(path), framework="numpy")
            self.entries = {}
            for name in self._file.keys():
                s = self._file.get_slice(name)
                self.entries[name] = (tuple(s.get_shape()), s.get_dtype())
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
        self._data_start = None

    def _offsets(self, name: str) -> tuple[int, int]:
        if self._data_start is None:
            with open(self.path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                self._header = json.loads(f.read(n))
            self._data_start = 8 + n
        begin, end = self._header[name]["data_offsets"]
        return self._data_start + begin, end - begin

    def read(self, name: str) -> np.ndarray:
        shape, dtype = self.entries[name]
        if dtype == "BF16":  # NumPy has no bfloat16: widen the raw 16 bits into float32's high half
            offset, nbytes = self._offsets(name)
            raw = np.fromfile(self.path, dtype="<u2", count=nbytes // 2, offset=offset)
            return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
        try:
            return self._file.get_tensor(name)
        except (self._error, OSError, ValueError) as e:
            raise CheckpointError(f"{self.path}: reading tensor {name} failed ({e})") from None


class _TorchFile:
    """One pytorch_model*.bin file, opened memory-mapped with weights_only=True."""

    def __init__(self, path: Path):
        try:
            import torch
        except ImportError:
            raise ImportError(f"{path}: reading PyTorch .bin weights needs torch (pip install torch), or convert "
                              "the folder to safetensors") from None
        self.path = path
        self._torch = torch
        try:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                sd = torch.load(path, map_location="cpu", weights_only=True)  # legacy non-zip format
        except Exception as e:  # torch raises many kinds (pickle, zip, RuntimeError) for a bad file
            raise CheckpointError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {e})") from None
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise CheckpointError(f"{path}: expected a flat dict of tensors (a state dict)")
        names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
        self._sd = sd
        self.entries = {k: (tuple(v.shape), names.get(v.dtype, str(v.dtype))) for k, v in sd.items()}

    def read(self, name: str) -> np.ndarray:
        return self._sd[name].to(self._torch.float32).numpy()


def _index_files(folder: Path, index_name: str) -> list[Path]:
    path = folder / index_name
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        files = sorted(set(weight_map.values()))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a valid index file ({type(e).__name__}: {e})") from None
    for f in files:
        if not isinstance(f, str) or "/" in f or not (folder / f).is_file():
            raise CheckpointError(f"{path}: lists shard {f!r}, which is not in {folder}")
    return [folder / f for f in files]


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files of an HF folder, by the preference order in the module docstring."""
    folder = Path(folder)
    for single, index in ((SAFETENSORS, SAFETENSORS_INDEX), (TORCH_BIN, TORCH_BIN_INDEX)):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            return _index_files(folder, index)
    raise FileNotFoundError(f"{folder}: no weights found (looked for {SAFETENSORS}, {SAFETENSORS_INDEX}, "
                            f"{TORCH_BIN}, {TORCH_BIN_INDEX})")


def check_weights_size(folder: str | os.PathLike, config: GPTNeoXConfig) -> None:
    """CheckpointError when the weight files are too small for the parameters config.json declares (at 2 bytes
    each, the narrowest dtype), before a model of that size is allocated. Only safetensors are sized this way
    (a .bin needs torch, which names its own errors)."""
    files = weight_files(folder)
    if any(p.suffix != ".safetensors" for p in files):
        return
    have = sum(p.stat().st_size for p in files)
    if config.num_params() * 2 > have:
        raise CheckpointError(f"{Path(folder) / 'config.json'}: declares {config.num_params():,} parameters but the "
                              f"weight files hold only {have:,} bytes")


def _open(path: Path):
    return _SafetensorsFile(path) if path.suffix == ".safetensors" else _TorchFile(path)


def _ignored(name: str, shapes: dict) -> bool:
    """Buffers, and the copy of a tied head some tools save beside the embedding."""
    return name.endswith(IGNORED_SUFFIXES) or (name == "lm_head.weight" and "model.embed_tokens.weight" in shapes)


def _model_name(name: str, shapes: dict) -> str | None:
    """gozaru's name for a weight-file tensor, or None when it is not one of the model's."""
    if name in shapes:
        return name
    name = ALIASES.get(name, name)
    if name in shapes:
        return name
    for prefix in BARE_PREFIXES:  # weights saved from a bare base model
        if prefix + name in shapes:
            return prefix + name
    return None


def _names_text(names, limit=5) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _plan(files: list[Path], shapes: dict[str, tuple], strict: bool, folder: Path) -> dict[Path, dict[str, str]]:
    """Checks every file's names, shapes and dtypes; returns {file: {name in file: model name}}."""
    plan: dict[Path, dict[str, str]] = {}
    found: dict[str, Path] = {}
    unknown: list[str] = []
    for path in files:
        wf = _open(path)
        plan[path] = {}
        for name, (shape, dtype) in wf.entries.items():
            key = _model_name(name, shapes)
            if key is None:
                if not _ignored(name, shapes):
                    unknown.append(name)
                continue
            if key in found:
                raise CheckpointError(f"{path}: tensor {name} is also in {found[key]}")
            if shape != shapes[key]:
                raise CheckpointError(f"{path}: tensor {name} has shape {list(shape)}, the config implies "
                                      f"{list(shapes[key])}")
            if dtype not in FLOAT_DTYPES:
                raise CheckpointError(f"{path}: tensor {name} has dtype {dtype}; only float32/float16/bfloat16 "
                                      "weights can be imported")
            found[key] = path
            plan[path][name] = key
        del wf
    missing = [k for k in shapes if k not in found]
    if missing:
        raise CheckpointError(f"{folder}: {len(missing)} tensor(s) missing from the weights: {_names_text(missing)}")
    if unknown and strict:
        raise CheckpointError(f"{folder}: {len(unknown)} unknown tensor(s) in the weights: {_names_text(unknown)} "
                              "(pass strict=False to ignore them)")
    return plan


def read_weights_into(folder: str | os.PathLike, config: GPTNeoXConfig, params, *, strict: bool = True,
                      progress: Callable[[str], None] | None = None) -> None:
    """Copies the weights of an HF folder into ``params`` (name -> writable float32 array, e.g. ``Model.params``).

    Every file is checked (names, shapes, dtypes) before any weight is read; strict=False ignores tensors gozaru
    does not know; missing tensors are always an error. progress, when given, is called with each tensor name."""
    folder = Path(folder)
    plan = _plan(weight_files(folder), config.tensor_shapes(), strict, folder)
    for path, names in plan.items():
        wf = _open(path)
        for name, key in names.items():
            params[key][...] = wf.read(name)
            if progress:
                progress(key)
        del wf
