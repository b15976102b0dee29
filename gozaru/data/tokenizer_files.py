"""Tokenizer files for an exported HF model folder: ``tokenizer.json`` (what ``AutoTokenizer`` loads as a fast
tokenizer), ``tokenizer_config.json`` and ``special_tokens_map.json``; a SentencePiece model is also copied as
``spiece.model``.

A SentencePiece model becomes a ``tokenizers`` unigram model with its pieces and scores, byte fallback and the
model's own normalizer settings (precompiled NFKC map, extra-whitespace removal, dummy prefix), following
transformers' ``SpmConverter``; user-defined pieces are emitted whole as SentencePiece does. rinna's newline
convention (``\\n`` written as ``<NL>``) is part of the normalizer and the decoder, so
``AutoTokenizer(export).encode(text)`` equals ``Tokenizer.encode(text)`` for any text, newlines included.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..fileio import atomic_writer, write_text_atomic
from .hf_tokenizer import HFTokenizer, SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG, TOKENIZER_JSON, special_token_texts
from .tokenizer import NEWLINE_PIECE, Tokenizer
from .tokenizer_base import BaseTokenizer

# sentencepiece_model.proto's piece types
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _BYTE = 1, 2, 3, 4, 5


def sentencepiece_to_tokenizers(tok: Tokenizer):
    """A ``tokenizers.Tokenizer`` that encodes and decodes like ``tok`` (see the module docstring)."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as _Tokenizer
    from tokenizers.models import Unigram

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(tok.model_proto())
    if proto.trainer_spec.model_type != 1:  # 1 = UNIGRAM; rinna's and the lab's models are unigram
        raise ValueError(f"{tok.source}: only unigram SentencePiece models can be written as tokenizer.json "
                         f"(this one has model_type {proto.trainer_spec.model_type})")
    spec = proto.normalizer_spec
    vocab = [(p.piece, float(p.score)) for p in proto.pieces]
    tk = _Tokenizer(Unigram(vocab, unk_id=proto.trainer_spec.unk_id, byte_fallback=proto.trainer_spec.byte_fallback))

    # normalizer, in SentencePiece's order, after the lab's newline convention (to_nl)
    newlines = tok.newline_id is not None
    steps = [normalizers.Replace("\r\n", "\n"), normalizers.Replace("\n", NEWLINE_PIECE)] if newlines else []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "\u2581"))
    if spec.add_dummy_prefix:
        steps.append(normalizers.Replace(Regex(r"\A\u2581"), "\u2581\u2581"))
    tk.normalizer = normalizers.Sequence(steps)

    user_defined = [p.piece for p in proto.pieces if p.type == _USER_DEFINED]
    pre = []
    if spec.add_dummy_prefix:
        pre.append(pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False))
    if user_defined:  # SentencePiece emits them whole and never as part of a longer piece
        pattern = "|".join(re.escape(p) for p in sorted(user_defined, key=len, reverse=True))
        pre.append(pre_tokenizers.Split(Regex(pattern), behavior="isolated"))
    if pre:
        tk.pre_tokenizer = pre_tokenizers.Sequence(pre)

    dec = [decoders.Replace("\u2581", " ")]
    if proto.trainer_spec.byte_fallback:
        dec.append(decoders.ByteFallback())
    dec.append(decoders.Fuse())
    if spec.add_dummy_prefix:
        dec.append(decoders.Strip(content=" ", left=1))
    if newlines:
        dec.append(decoders.Replace(NEWLINE_PIECE, "\n"))
    tk.decoder = decoders.Sequence(dec)

    # Control pieces ([PAD], <s>, </s>) are special tokens: transformers adds them as such on loading anyway,
    # so a literal "</s>" in a text is the eos id there (SentencePiece spells it out); skipped on decode.
    tk.add_special_tokens([AddedToken(p.piece, special=True, normalized=False)
                           for p in proto.pieces if p.type == _CONTROL])

    return tk


def write_tokenizer_files(tok: BaseTokenizer, folder: str | os.PathLike, *, model_max_length: int) -> list[str]:
    """Writes the tokenizer files into ``folder`` (atomically, one file at a time); returns their names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(tok, Tokenizer):
        tk = sentencepiece_to_tokenizers(tok)
        with atomic_writer(folder / "spiece.model", "wb") as f:
            f.write(tok.model_proto())
        written = ["spiece.model"]
    elif isinstance(tok, HFTokenizer):
        tk, written = tok.tk, []
    else:
        raise TypeError(f"cannot write tokenizer files for {type(tok).__name__}")
    write_text_atomic(folder / TOKENIZER_JSON, tk.to_str(pretty=True))
    special = dict(special_token_texts(tok))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": int(model_max_length),
              "clean_up_tokenization_spaces": False, **special}
    if tok.chat_template:
        config["chat_template"] = tok.chat_template
    write_text_atomic(folder / TOKENIZER_CONFIG, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(folder / SPECIAL_TOKENS_MAP, json.dumps(special, indent=2, ensure_ascii=False) + "\n")
    return written + [TOKENIZER_JSON, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP]
