"""Export of a model (GPT-NeoX, Llama or Qwen2) as a Hugging Face folder that
``transformers.AutoModelForCausalLM.from_pretrained`` loads as its family's *ForCausalLM.

Writes ``config.json``, ``generation_config.json`` (bos/eos/pad ids) and the weights as safetensors in float32,
bfloat16 or float16: one ``model.safetensors``, or shards ``model-00001-of-0000N.safetensors`` with the standard
``model.safetensors.index.json`` when ``max_shard_size`` (HF's size strings: ``"500MB"``, ``"5GB"``) is
exceeded. Shards are planned with huggingface_hub's splitter, the one transformers uses. Tensors are converted
and streamed one at a time (memory stays at one tensor beyond the model). bfloat16 rounds to nearest even, like
torch's ``.to(torch.bfloat16)``.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from ..fileio import atomic_writer, write_text_atomic
from .config import ModelConfig

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
SHARD_PATTERN = "model{suffix}.safetensors"   # huggingface_hub fills in "-00001-of-00003"
GENERATION_CONFIG = "generation_config.json"

# --dtype name -> (safetensors dtype, bytes per value, config.json's dtype name)
DTYPES = {"fp32": ("F32", 4, "float32"), "bf16": ("BF16", 2, "bfloat16"), "fp16": ("F16", 2, "float16")}


def to_bfloat16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even; NaN stays a (quiet) NaN."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = ((u + (((u >> 16) & 1) + np.uint32(0x7FFF))) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def _encoded(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bf16":
        return to_bfloat16_bits(a).astype("<u2", copy=False)
    if dtype == "fp16":
        with np.errstate(over="ignore"):
            h = np.asarray(a, dtype="<f2")
        if not np.isfinite(h).all() and np.isfinite(a).all():
            raise OverflowError("export: a weight exceeds float16's range (65504); export as bf16 or fp32")
        return h
    return np.asarray(a, dtype="<f4")


def _write_safetensors(path: Path, tensors: list[tuple[str, np.ndarray]], metadata: dict[str, str],
                       dtype: str = "fp32") -> None:
    """Streams tensors into one safetensors file in ``dtype`` (no in-memory copy of the model)."""
    code, width, _ = DTYPES[dtype]
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, a in tensors:
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + a.size * width]}
        offset += a.size * width
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data that follows stays 8-byte aligned
    with atomic_writer(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, a in tensors:
            f.write(memoryview(np.ascontiguousarray(_encoded(a, dtype))).cast("B"))


def write_folder(folder: str | os.PathLike, config: ModelConfig, tensors: list[tuple[str, np.ndarray]], *,
                 dtype: str = "fp32", max_shard_size: int | str | None = None,
                 pad_token_id: int | None = None) -> list[str]:
    """Writes config.json, generation_config.json and the weights (see the module docstring); returns the
    names of the files written. Stale weight files of an earlier export into ``folder`` are removed."""
    if dtype not in DTYPES:
        raise ValueError(f"export dtype {dtype!r}: choose from {', '.join(DTYPES)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _, width, torch_name = DTYPES[dtype]
    shards = _plan_shards(tensors, width, max_shard_size)
    written = []
    by_name = dict(tensors)
    for file, names in shards.items():
        _write_safetensors(folder / file, [(n, by_name[n]) for n in names], {"format": "pt"}, dtype)
        written.append(file)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(a.size * width for _, a in tensors)},
                 "weight_map": {n: file for file, names in shards.items() for n in names}}
        write_text_atomic(folder / SAFETENSORS_INDEX, json.dumps(index, indent=2, sort_keys=True) + "\n")
        written.append(SAFETENSORS_INDEX)
    _remove_stale(folder, set(written))
    hf = {**config.to_hf_dict(), "torch_dtype": torch_name, "dtype": torch_name}
    if pad_token_id is not None and pad_token_id >= 0:
        hf["pad_token_id"] = int(pad_token_id)
    write_text_atomic(folder / "config.json", json.dumps(hf, indent=2, sort_keys=True) + "\n")
    gen = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}
    if pad_token_id is not None and pad_token_id >= 0:
        gen["pad_token_id"] = int(pad_token_id)
    write_text_atomic(folder / GENERATION_CONFIG, json.dumps(gen, indent=2, sort_keys=True) + "\n")
    return written + ["config.json", GENERATION_CONFIG]


def _plan_shards(tensors, width: int, max_shard_size) -> dict[str, list[str]]:
    """{file name: tensor names}: one file, or huggingface_hub's split when max_shard_size is given."""
    if max_shard_size is None:
        return {SAFETENSORS: [n for n, _ in tensors]}
    from huggingface_hub import split_state_dict_into_shards_factory

    try:
        split = split_state_dict_into_shards_factory(dict(tensors), get_storage_size=lambda a: a.size * width,
                                                     filename_pattern=SHARD_PATTERN, max_shard_size=max_shard_size)
    except ValueError as e:
        raise ValueError(f"max shard size {max_shard_size!r}: {e}") from None
    order = {n: i for i, (n, _) in enumerate(tensors)}
    return {file: sorted(names, key=order.get) for file, names in split.filename_to_tensors.items()}


def _remove_stale(folder: Path, keep: set[str]) -> None:
    """An earlier export's weight files would shadow or confuse the new ones (a single file beside an index)."""
    for p in folder.iterdir():
        if p.name not in keep and (p.name == SAFETENSORS_INDEX or
                                   (p.name.startswith("model") and p.name.endswith(".safetensors"))):
            p.unlink()
