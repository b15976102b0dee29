"""What every tokenizer of the lab offers (SentencePiece in ``tokenizer``, ``tokenizer.json`` in
``hf_tokenizer``): the prompt/answer conventions, batches, decoding that hides special ids, and the check
against a model's config. A subclass sets ``vocab_size``, ``pad_id``/``unk_id``/``bos_id``/``eos_id`` (-1 when
absent), ``newline_id``, ``source`` and ``_hidden``, and implements ``_encode_text``, ``_decode_kept``,
``id_to_piece``, ``piece_to_id`` and ``pieces``."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


class BaseTokenizer:
    vocab_size: int
    pad_id: int
    unk_id: int
    bos_id: int
    eos_id: int
    newline_id: int | None
    source: str
    chat_template: str | None = None
    _hidden: set

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of ``text`` (SentencePiece: newlines become ``<NL>``). No special tokens unless asked."""
        ids = self._encode_text(text)
        if add_bos:
            ids.insert(0, self._require("bos"))
        if add_eos:
            ids.append(self._require("eos"))
        return ids

    def _encode_text(self, text: str) -> list[int]:
        raise NotImplementedError

    def _decode_kept(self, ids: list[int], newlines: bool) -> str:
        raise NotImplementedError

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt as the model sees it in training and generation: no special tokens."""
        return self.encode(text)

    def encode_answer(self, text: str) -> list[int]:
        """An answer as the model must produce it: its ids followed by eos."""
        return self.encode(text, add_eos=True)

    def decode(self, ids: Iterable[int], *, newlines: bool = True) -> str:
        """Text of ``ids``. Pad/bos/eos and negative ids (generation's filler) are dropped; with SentencePiece,
        ``<NL>`` becomes a newline unless ``newlines=False``."""
        keep = []
        for i in ids:
            i = int(i)
            if i < 0 or i in self._hidden:
                continue
            if i >= self.vocab_size:
                raise ValueError(f"token id {i} is out of range for vocab_size {self.vocab_size}")
            keep.append(i)
        return self._decode_kept(keep, newlines)

    def decode_answer(self, ids: Iterable[int], *, newlines: bool = True) -> str:
        """Decode generated ids up to (not including) the first eos or negative filler id."""
        cut = []
        for i in ids:
            i = int(i)
            if i < 0 or i == self.eos_id:
                break
            cut.append(i)
        return self.decode(cut, newlines=newlines)

    def _require(self, kind: str) -> int:
        i = getattr(self, f"{kind}_id")
        if i < 0:
            raise ValueError(f"{self.source}: this tokenizer has no {kind} token")
        return i

    def apply_chat_template(self, messages: list[dict], *, add_generation_prompt: bool = False, **kwargs) -> str:
        raise ValueError(f"{self.source}: this tokenizer has no chat template")

    # -- batches -----------------------------------------------------------
    def encode_batch(self, texts: Sequence[str], *, add_bos: bool = False, add_eos: bool = False,
                     max_len: int | None = None, pad_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Encode texts into ``(ids int32 [B, T], lens int32 [B])``, right-padded with ``pad_id``
        (default: the model's pad, else 0). ``max_len`` truncates (keeping the start) and fixes T."""
        seqs = [self.encode(t, add_bos=add_bos, add_eos=add_eos) for t in texts]
        if max_len is not None:
            seqs = [s[:max_len] for s in seqs]
        width = max_len if max_len is not None else max((len(s) for s in seqs), default=0)
        return pad_batch(seqs, width, self.pad_id if pad_id is None else pad_id)

    def decode_batch(self, ids: np.ndarray | Sequence[Sequence[int]], lens: Sequence[int] | None = None,
                     *, newlines: bool = True) -> list[str]:
        """Decode each row (only its first ``lens[b]`` ids when lens is given)."""
        rows = [list(r) for r in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
        if lens is not None:
            rows = [r[: int(n)] for r, n in zip(rows, lens)]
        return [self.decode(r, newlines=newlines) for r in rows]

    # -- checks ------------------------------------------------------------
    def check_model(self, config, model_name: str = "the model") -> None:
        """ValueError naming both sides when this tokenizer cannot feed a model of ``config`` (a GPTNeoXConfig):
        pieces past the model's vocabulary (ids it has no embedding for), or special ids (BOS, EOS, padding) that
        differ from the model's (answers would end in the wrong id). A model vocabulary larger than the
        tokenizer's is fine (HF models pad theirs to a multiple of 64/128); an ``eos_token_id`` list fits when it
        holds the tokenizer's EOS."""
        where = f"tokenizer {self.source} and {model_name}"
        if self.vocab_size > config.vocab_size:
            raise ValueError(f"{where} do not fit: the tokenizer has {self.vocab_size:,} pieces, the model's "
                             f"vocabulary only {config.vocab_size} (its vocab_size is {config.vocab_size}: ids past "
                             f"{config.vocab_size - 1} have no embedding; a tokenizer for another model?)")
        eos_ids = (config.eos_token_id, *getattr(config, "extra_eos_token_ids", ()))
        checks = [("BOS", self.bos_id, (config.bos_token_id,), "bos_token_id"),
                  ("EOS", self.eos_id, eos_ids, "eos_token_id")]
        if getattr(config, "pad_token_id", None) is not None:
            checks.append(("padding", self.pad_id, (config.pad_token_id,), "pad_token_id"))
        for what, tok_id, model_ids, field in checks:
            if tok_id >= 0 and tok_id not in model_ids:
                shown = model_ids[0] if len(model_ids) == 1 else list(model_ids)
                raise ValueError(f"{where} do not fit: the tokenizer's {what} id is {tok_id}, the model's {field} "
                                 f"is {shown}")

    def id_to_piece(self, i: int) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source!r}, vocab_size={self.vocab_size}, pad={self.pad_id}, "
                f"unk={self.unk_id}, bos={self.bos_id}, eos={self.eos_id}, newline={self.newline_id})")


def pad_batch(seqs: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists into ``(int32 [B, width], lens int32 [B])``; longer lists are an error."""
    pad_id = pad_id if pad_id >= 0 else 0
    out = np.full((len(seqs), width), pad_id, dtype=np.int32)
    lens = np.zeros(len(seqs), dtype=np.int32)
    for b, s in enumerate(seqs):
        if len(s) > width:
            raise ValueError(f"sequence {b} has {len(s)} ids, more than the width {width}")
        out[b, : len(s)] = s
        lens[b] = len(s)
    return out, lens
