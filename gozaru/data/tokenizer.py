"""SentencePiece tokenizer with rinna's conventions.

rinna/japanese-gpt-neox-3.6b ships a unigram ``spiece.model`` used through a T5-style slow tokenizer:

* special pieces ``[PAD]``, ``<unk>``, ``<s>`` (bos, id 2) and ``</s>`` (eos, id 3); the ids used here are read
  from the loaded model with ``piece_to_id`` (falling back to the model's own ``pad_id()``/``unk_id()``/...), so a
  model with another layout works too;
* the vocabulary has no newline: newlines are written as the literal piece ``<NL>``;
* prompts are encoded without special tokens (no BOS, no EOS) and answers are terminated by ``</s>``.

:meth:`Tokenizer.train` builds a small unigram model with the same layout: ``[PAD]``=0, ``<unk>``=1, ``<s>``=2,
``</s>``=3, ``<NL>``=4 (user-defined), byte fallback for unseen characters, identity normalisation and no dummy
prefix, so ``decode(encode(text)) == text`` for any text (rinna's model normalises with NFKC, so there full-width
punctuation such as ``？`` comes back as ``?``).
"""
from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from ..fileio import atomic_writer
from .tokenizer_base import BaseTokenizer, pad_batch

NEWLINE_PIECE = "<NL>"

# Candidate piece spellings per special token, rinna's first.
_SPECIAL_PIECES = {
    "pad": ("[PAD]", "<pad>"),
    "unk": ("<unk>", "[UNK]"),
    "bos": ("<s>", "[BOS]"),
    "eos": ("</s>", "[EOS]"),
}

# Layout of a trained model: ids match rinna's bos/eos (2/3) and the GPTNeoXConfig defaults.
TRAIN_SPECIAL_IDS = {"pad": 0, "unk": 1, "bos": 2, "eos": 3}

# Names a model file may have inside a model folder.
_MODEL_FILE_NAMES = ("spiece.model", "tokenizer.model", "sentencepiece.model")


class Tokenizer(BaseTokenizer):
    """A loaded SentencePiece model plus rinna's newline and special-token conventions."""

    def __init__(self, processor: spm.SentencePieceProcessor, *, source: str = "<memory>"):
        self.sp = processor
        self.source = source
        self.vocab_size: int = processor.get_piece_size()
        ids = {kind: self._find_special(kind) for kind in _SPECIAL_PIECES}
        self.pad_id: int = ids["pad"]
        self.unk_id: int = ids["unk"]
        self.bos_id: int = ids["bos"]
        self.eos_id: int = ids["eos"]
        nl = processor.piece_to_id(NEWLINE_PIECE)
        self.newline_id: int | None = nl if processor.id_to_piece(nl) == NEWLINE_PIECE else None
        # Ids never shown when decoding (unk is kept: it marks lost text).
        self._hidden = {i for i in (self.pad_id, self.bos_id, self.eos_id) if i >= 0}

    def _find_special(self, kind: str) -> int:
        for piece in _SPECIAL_PIECES[kind]:
            i = self.sp.piece_to_id(piece)
            if 0 <= i < self.vocab_size and self.sp.id_to_piece(i) == piece:
                return i
        return getattr(self.sp, f"{kind}_id")()  # -1 when the model has none

    # -- construction ----------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load a ``.model`` file, or a folder holding ``spiece.model`` / ``tokenizer.model``."""
        p = Path(path)
        if p.is_dir():
            for name in _MODEL_FILE_NAMES:
                if (p / name).is_file():
                    p = p / name
                    break
            else:
                raise FileNotFoundError(f"{path}: no {' / '.join(_MODEL_FILE_NAMES)} in this folder")
        if not p.is_file():
            raise FileNotFoundError(f"{path}: no such tokenizer model file")
        return cls.from_bytes(p.read_bytes(), source=str(p))

    @classmethod
    def from_bytes(cls, model_proto: bytes, *, source: str = "<memory>") -> "Tokenizer":
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(model_proto)
        except (RuntimeError, OSError) as e:
            raise ValueError(f"{source}: not a SentencePiece model ({e})") from None
        return cls(sp, source=source)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4000,
              model_prefix_or_dir: str | os.PathLike | None = None, seed: int = 0, *,
              num_threads: int = 2, input_sentence_size: int = 200_000,
              character_coverage: float = 0.9995) -> "Tokenizer":
        """Train a unigram model on ``texts``: the same texts, seed and ``num_threads`` give the same model
        file in every process (the thread count changes the result, so it is fixed at 2 by default).

        ``model_prefix_or_dir``: None keeps the model in memory; an existing folder (or a path ending in ``/``)
        receives ``spiece.model``; anything else is a prefix and receives ``<prefix>.model``.
        ``vocab_size`` is an upper bound: on a small corpus the model may come out smaller (check
        ``.vocab_size``). Texts are split into lines; at most ``input_sentence_size`` lines (a sample drawn with
        ``seed``) are used, which bounds the time.
        """
        lines = []
        for text in texts:
            for line in str(text).replace("\r\n", "\n").split("\n"):
                if line.strip():
                    lines.append(line)
        if not lines:
            raise ValueError("Tokenizer.train: no non-empty text to train on")
        if len(lines) > input_sentence_size:
            # Sample here: sentencepiece's own sampler ignores its seed across processes.
            keep = sorted(random.Random(f"spm-sample-{seed}").sample(range(len(lines)), int(input_sentence_size)))
            lines = [lines[i] for i in keep]
        out = io.BytesIO()
        try:
            _train_unigram(lines, out, vocab_size, character_coverage, num_threads)
        except RuntimeError as e:  # sentencepiece reports bad settings (e.g. vocab too small) this way
            raise ValueError(f"Tokenizer.train: {e}") from None
        tok = cls.from_bytes(out.getvalue(), source="<trained>")
        if model_prefix_or_dir is not None:
            target = str(model_prefix_or_dir)
            if os.path.isdir(target) or target.endswith(("/", os.sep)):
                os.makedirs(target, exist_ok=True)
                path = os.path.join(target, "spiece.model")
            else:
                os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
                path = target + ".model"
            tok.save(path)
        return tok

    def save(self, path: str | os.PathLike) -> str:
        """Write the model file (``spiece.model`` format); returns the path."""
        path = str(path)
        with atomic_writer(path, "wb") as f:
            f.write(self.model_proto())
        self.source = path
        return path

    def model_proto(self) -> bytes:
        return self.sp.serialized_model_proto()

    # -- single texts ----------------------------------------------------
    def _encode_text(self, text: str) -> list[int]:
        return self.sp.encode(to_nl(text), out_type=int)

    def _decode_kept(self, ids: list[int], newlines: bool) -> str:
        text = self.sp.decode(ids)
        return from_nl(text) if newlines else text

    # -- inspection ----------------------------------------------------------
    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def piece_to_id(self, piece: str) -> int:
        return self.sp.piece_to_id(piece)

    def pieces(self, text: str) -> list[str]:
        return self.sp.encode(to_nl(text), out_type=str)

def _train_unigram(lines: list[str], out, vocab_size: int, character_coverage: float, num_threads: int) -> None:
    """Run the SentencePiece trainer with the rinna-compatible layout (see the module docstring)."""
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out,
        model_type="unigram", vocab_size=int(vocab_size), hard_vocab_limit=False,
        character_coverage=character_coverage, byte_fallback=True,
        user_defined_symbols=[NEWLINE_PIECE],
        pad_id=TRAIN_SPECIAL_IDS["pad"], unk_id=TRAIN_SPECIAL_IDS["unk"],
        bos_id=TRAIN_SPECIAL_IDS["bos"], eos_id=TRAIN_SPECIAL_IDS["eos"],
        pad_piece="[PAD]", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
        # Exact round trip: no NFKC, no dummy "▁" prefix, whitespace kept as written.
        normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
        required_chars="\u2581",  # the space marker "▁" must be a piece, or spaces decode as "▁"
        split_digits=True, max_sentence_length=1 << 16,
        input_sentence_size=0, shuffle_input_sentence=False,  # the caller has sampled already
        num_threads=int(num_threads), minloglevel=2,
    )


def to_nl(text: str) -> str:
    """Write newlines as rinna's ``<NL>`` literal."""
    return text.replace("\r\n", "\n").replace("\n", NEWLINE_PIECE)


def from_nl(text: str) -> str:
    return text.replace(NEWLINE_PIECE, "\n")


def load_tokenizer(path: str | os.PathLike) -> BaseTokenizer:
    """The tokenizer at ``path``: a SentencePiece ``.model`` file, a ``tokenizer.json``, or a folder holding
    either. A folder with both (rinna's ships ``spiece.model`` and a converted ``tokenizer.json``) is read
    through SentencePiece, the model the lab trains with and whose ``<NL>`` convention it follows."""
    from .hf_tokenizer import HFTokenizer, is_hf_tokenizer_path

    p = Path(path)
    if p.is_dir() and any((p / name).is_file() for name in _MODEL_FILE_NAMES):
        return Tokenizer.load(p)
    if is_hf_tokenizer_path(p):
        return HFTokenizer.load(p)
    return Tokenizer.load(p)


__all__ = ["NEWLINE_PIECE", "TRAIN_SPECIAL_IDS", "Tokenizer", "from_nl", "load_tokenizer", "pad_batch", "to_nl"]
