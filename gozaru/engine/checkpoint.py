"""gozaru HDF5 checkpoints seen from Python: ``load`` (model, optimizer and run info) and a look into a file's
metadata without loading its tensors (``gozaru info``). Saving is ``Model.save``; the file layout is in
docs/checkpoints.md.
"""
from __future__ import annotations

import json
import os
from typing import Any

from .. import _core
from .._core import CheckpointError
from .config import GPTNeoXConfig, LoraSpec
from .model import Model
from .optim import AdamW
from .placement import Placement


def config_from_meta(meta: dict[str, Any], path: str | os.PathLike) -> GPTNeoXConfig:
    """The GPTNeoXConfig stored in a checkpoint's metadata; CheckpointError naming the file if unusable."""
    text = meta.get("config_json") or ""
    if not text:
        raise CheckpointError(f"checkpoint {os.fspath(path)}: no model config stored")
    try:
        return GPTNeoXConfig.from_json(text, source=f"checkpoint {os.fspath(path)}: config")
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {os.fspath(path)}: stored config is not valid JSON ({e})") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(str(e)) from None


def check_size(config: GPTNeoXConfig, path: str | os.PathLike) -> None:
    """CheckpointError when the file is too small to hold the float32 parameters its config declares, so a
    small crafted file cannot make the reader allocate a huge model."""
    need, have = config.num_params() * 4, os.path.getsize(path)
    if need > have:
        raise CheckpointError(f"checkpoint {os.fspath(path)}: its config declares {config.num_params():,} "
                              f"parameters ({need:,} bytes) but the file has {have:,} bytes")


def lora_from_meta(meta: dict[str, Any], path: str | os.PathLike) -> tuple[LoraSpec, ...]:
    """The LoRA adapter specs stored beside the config (none for a plain model)."""
    try:
        specs = tuple(LoraSpec.from_dict(d) for d in json.loads(meta.get("config_json") or "{}").get("lora") or ())
    except (json.JSONDecodeError, TypeError, ValueError, KeyError, AttributeError, RecursionError) as e:
        raise CheckpointError(f"checkpoint {os.fspath(path)}: stored LoRA adapters are unusable ({e})") from None
    known = config_from_meta(meta, path).tensor_shapes() if specs else {}
    unknown = [s.target for s in specs if s.target not in known]
    if unknown:
        raise CheckpointError(f"checkpoint {os.fspath(path)}: stored LoRA adapter on {unknown[0]!r}, which the "
                              "model does not have")
    return specs


def read_config(path: str | os.PathLike) -> GPTNeoXConfig:
    """The model config of a checkpoint."""
    return config_from_meta(_core.read_checkpoint_meta(os.fspath(path)), path)


def read_info(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata of a checkpoint as plain Python values.

    Keys: path, size_bytes, format, version, step, tokens_seen, config (GPTNeoXConfig), num_params,
    has_optimizer, lr and adamw (None without optimizer), rng_bytes, extra_bytes.
    """
    p = os.fspath(path)
    meta = _core.read_checkpoint_meta(p)
    cfg = config_from_meta(meta, p)
    has_opt = bool(meta["has_optimizer"])
    return {
        "path": p, "size_bytes": os.path.getsize(p), "format": meta["format"], "version": meta["version"],
        "step": meta["step"], "tokens_seen": meta["tokens_seen"], "config": cfg, "num_params": cfg.num_params(),
        "has_optimizer": has_opt, "lr": meta["lr"] if has_opt else None,
        "adamw": dict(meta["adamw"]) if has_opt else None,
        "rng_bytes": len(meta["rng"]), "extra_bytes": len(meta["extra"]),
    }


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def describe(path: str | os.PathLike) -> str:
    """A short human-readable summary of a checkpoint (what ``gozaru info`` prints)."""
    i = read_info(path)
    c: GPTNeoXConfig = i["config"]
    lines = [
        f"{i['path']}: gozaru checkpoint v{i['version']}, {_size(i['size_bytes'])}",
        f"  model      GPT-NeoX {c.num_hidden_layers} layers, hidden {c.hidden_size}, {c.num_attention_heads} heads, "
        f"vocab {c.vocab_size}, {i['num_params'] / 1e6:.2f}M parameters",
        f"  progress   step {i['step']}, {i['tokens_seen']:,} tokens seen",
    ]
    lora = lora_from_meta(_core.read_checkpoint_meta(i["path"]), i["path"])
    if lora:
        ranks = sorted({s.r for s in lora})
        lines.append(f"  lora       {len(lora)} adapters (r {', '.join(map(str, ranks))}) on "
                     f"{', '.join(sorted({s.target.rsplit('.', 2)[-2] for s in lora}))}")
    if i["has_optimizer"]:
        a = i["adamw"]
        lines.append(f"  optimizer  AdamW lr {i['lr']:.3g}, betas ({a['beta1']:.3g}, {a['beta2']:.4g}), "
                     f"eps {a['eps']:.3g}, weight_decay {a['weight_decay']:.3g}"
                     f"{' (all tensors)' if a['decay_all'] else ''}")
    else:
        lines.append("  optimizer  none saved")
    lines.append(f"  extra      rng {i['rng_bytes']} bytes, data {i['extra_bytes']} bytes")
    return "\n".join(lines)


def load(path: str | os.PathLike, backend: str | None = None, precision: str | None = None, *,
         placement: Placement | None = None):
    """(model, optimizer or None, info) from a gozaru checkpoint; info = dict(step, tokens_seen, rng, extra)
    with rng/extra as the bytes that were saved. The model is placed as ``placement`` says (``backend`` /
    ``precision`` replace its fields): where and how it computes is the run's choice, a checkpoint holds fp32
    weights whatever precision trained them."""
    path = os.fspath(path)
    meta = _core.read_checkpoint_meta(path)
    config = config_from_meta(meta, path)
    check_size(config, path)
    model = Model(config, seed=None, lora=lora_from_meta(meta, path),
                  placement=Placement.of(placement, backend=backend, precision=precision))
    optimizer = None
    if meta["has_optimizer"]:
        a = meta["adamw"]
        optimizer = AdamW(model, lr=meta["lr"], betas=(a["beta1"], a["beta2"]), eps=a["eps"],
                          weight_decay=a["weight_decay"], decay_all=a["decay_all"])
    model._core.load_checkpoint(path, optimizer.core if optimizer is not None else None)
    info = {"step": meta["step"], "tokens_seen": meta["tokens_seen"], "rng": meta["rng"], "extra": meta["extra"]}
    return model, optimizer, info
