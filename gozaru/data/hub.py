"""Hugging Face Hub ids where the command line takes a path: ``--hf``, ``--tokenizer`` and ``--data`` accept
``org/name`` and resolve it through huggingface_hub's cache (``HF_HUB_CACHE``, layout
``models--org--name/snapshots/<hash>/…`` with ``refs/main``). The local cache is always tried first; when the
id is not cached, a download is tried unless the hub is offline (``HF_HUB_OFFLINE=1``), and a failure is one
clear sentence, never a traceback."""
from __future__ import annotations

import os
import re

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_repo_id(text: str) -> bool:
    """``org/name`` that is not an existing local path."""
    return bool(_REPO_ID.match(text)) and not os.path.exists(text)


def resolve(path_or_id: str, repo_type: str = "model") -> str:
    """A local path for ``path_or_id``: itself when it exists (or does not look like a Hub id), otherwise the
    snapshot folder of the Hub repository ``path_or_id`` (``repo_type`` "model" or "dataset")."""
    if path_or_id is None or not is_repo_id(str(path_or_id)):
        return path_or_id
    import huggingface_hub
    from huggingface_hub import snapshot_download
    try:
        return snapshot_download(path_or_id, repo_type=repo_type, local_files_only=True)
    except Exception:   # not cached (LocalEntryNotFoundError and friends): try the network below
        pass
    cache = huggingface_hub.constants.HF_HUB_CACHE
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise ValueError(f"{path_or_id}: no such local path, and the Hugging Face {repo_type} {path_or_id!r} is "
                         f"not in the hub cache {cache} (offline: HF_HUB_OFFLINE is set, so it is not downloaded)")
    try:
        return snapshot_download(path_or_id, repo_type=repo_type)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path_or_id}: no such local path, not in the hub cache {cache}, and the download "
                         f"failed ({first})") from None
