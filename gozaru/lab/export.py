"""``gozaru export-hf``: a checkpoint as a complete Hugging Face folder, optionally pushed to the Hub.

The folder holds what ``AutoModelForCausalLM`` and ``AutoTokenizer`` load: config.json, generation_config.json,
the weights (``--dtype``, ``--max-shard-size``; see ``gozaru.engine.hf_export``) and the tokenizer files
(``gozaru.data.tokenizer_files``). A LoRA run is exported merged into its base (``W + scale·B·A``) with
``merge_lora=True``, or as a PEFT adapter folder with ``gozaru.lora.save_adapter``.
"""
from __future__ import annotations

import os

from ..data.tokenizer_base import BaseTokenizer
from ..data.tokenizer_files import write_tokenizer_files
from ..engine import lora
from ..engine.model import Model


def export_hf(model: Model, folder: str | os.PathLike, *, tokenizer: BaseTokenizer | None = None,
              dtype: str = "fp32", max_shard_size: int | str | None = None, merge_lora: bool = False) -> list[str]:
    """Writes ``folder``; returns the names of the files written."""
    if model.lora:
        if not merge_lora:
            raise ValueError("this checkpoint has LoRA adapters: pass --merge-lora (merge_lora=True) for a plain "
                             "model, or write PEFT's adapter format with gozaru.lora.save_adapter")
        model = lora.merge(model)
    if tokenizer is not None:
        tokenizer.check_model(model.config)
    pad = tokenizer.pad_id if tokenizer is not None else None
    written = model.to_hf(folder, dtype=dtype, max_shard_size=max_shard_size, pad_token_id=pad)
    if tokenizer is not None:
        written += write_tokenizer_files(tokenizer, folder, model_max_length=model.config.max_position_embeddings)
    return written


def push_to_hub(folder: str | os.PathLike, repo_id: str, *, private: bool = False,
                commit_message: str = "gozaru export-hf") -> str:
    """Uploads ``folder`` to the Hub model repository ``repo_id`` (created when missing) through
    huggingface_hub, which reads the token from ``HF_TOKEN`` or ``hf auth login`` and the endpoint from
    ``HF_ENDPOINT``. Returns the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message=commit_message)
    except Exception as e:  # HTTP, auth and network errors come in many types; one sentence for the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeError(f"push to the Hub repository {repo_id!r} failed ({type(e).__name__}: {first})") from None
    return str(getattr(info, "commit_url", info))
