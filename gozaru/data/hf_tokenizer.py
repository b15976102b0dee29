"""Hugging Face ``tokenizer.json`` tokenizers (byte-level BPE as Llama 3 and Qwen use, unigram, WordPiece, …)
through the ``tokenizers`` package, with the same interface as the SentencePiece :class:`~.tokenizer.Tokenizer`.

A folder (or a ``tokenizer.json`` file beside its ``tokenizer_config.json``) gives:

* the special tokens: ``bos_token``, ``eos_token``, ``pad_token``, ``unk_token`` of ``tokenizer_config.json``
  (or ``special_tokens_map.json``), as strings or ``{"content": ...}`` objects; a token the config leaves out is
  looked for under its common spellings (``</s>``, ``<|endoftext|>``, …) and is otherwise absent (-1);
* the chat template: ``chat_template`` of ``tokenizer_config.json`` (a string, or a list of named templates of
  which ``default`` is used), else a ``chat_template.jinja`` file. :meth:`HFTokenizer.apply_chat_template`
  renders it the way transformers' ``apply_chat_template`` does (a sandboxed jinja2 environment with
  ``trim_blocks``/``lstrip_blocks``, ``raise_exception``, ``strftime_now`` and a non-escaping ``tojson``).

Text is encoded without the special tokens a post-processor would add (``add_special_tokens=False``): prompts
carry exactly what their format writes, and answers end in ``eos`` as with SentencePiece. Special tokens written
in the text (``<|im_end|>``) are recognised, as transformers does.
"""
from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Iterable

from .tokenizer_base import BaseTokenizer

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"

# Spellings tried when the config does not name a special token.
_FALLBACK_PIECES = {
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "unk": ("<unk>", "[UNK]"),
    "bos": ("<s>", "<|begin_of_text|>", "<bos>", "[BOS]"),
    "eos": ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "[EOS]"),
}


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return d


def _token_text(value, path: Path, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("content")
    if not isinstance(value, str):
        raise ValueError(f"{path}: field {field!r} must be a string or an object with 'content'")
    return value


class HFTokenizer(BaseTokenizer):
    """A ``tokenizers.Tokenizer`` plus the special tokens and chat template of its folder."""

    def __init__(self, tokenizer, *, special: dict[str, str | None] | None = None, chat_template: str | None = None,
                 source: str = "<memory>"):
        self.tk = tokenizer
        self.source = source
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        special = dict(special or {})
        self.special_tokens: dict[str, str] = {}
        for kind, names in _FALLBACK_PIECES.items():
            text = special.get(kind)   # None: not named, look for common spellings; "": named absent (null)
            candidates = (text,) if text is not None else names
            if text == "":
                candidates = ()
            i = next((tokenizer.token_to_id(t) for t in candidates if tokenizer.token_to_id(t) is not None), None)
            if text and i is None:
                raise ValueError(f"{source}: {kind}_token {text!r} is not in the vocabulary")
            setattr(self, f"{kind}_id", -1 if i is None else int(i))
            if i is not None:
                self.special_tokens[f"{kind}_token"] = tokenizer.id_to_token(i)
        self.newline_id = None   # newlines are ordinary text here (no <NL> convention)
        self.chat_template = chat_template
        self._hidden = {i for i in (self.pad_id, self.bos_id, self.eos_id) if i >= 0}

    # -- construction ----------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> "HFTokenizer":
        """A folder holding ``tokenizer.json`` (and usually ``tokenizer_config.json``), or the file itself."""
        from tokenizers import Tokenizer as _Tokenizer

        p = Path(path)
        folder = p if p.is_dir() else p.parent
        file = folder / TOKENIZER_JSON if p.is_dir() else p
        if not file.is_file():
            raise FileNotFoundError(f"{path}: no {TOKENIZER_JSON} here")
        try:
            tk = _Tokenizer.from_file(str(file))
        except Exception as e:  # the Rust side raises a bare Exception for a malformed file
            raise ValueError(f"{file}: not a tokenizers tokenizer.json ({e})") from None
        config = _read_json(folder / TOKENIZER_CONFIG) if (folder / TOKENIZER_CONFIG).is_file() else {}
        special_map = _read_json(folder / SPECIAL_TOKENS_MAP) if (folder / SPECIAL_TOKENS_MAP).is_file() else {}
        special = {}
        for kind in _FALLBACK_PIECES:
            field = f"{kind}_token"
            source_file = folder / (TOKENIZER_CONFIG if field in config else SPECIAL_TOKENS_MAP)
            named = field in config or field in special_map
            value = _token_text(config.get(field, special_map.get(field)), source_file, field)
            special[kind] = "" if named and value is None else value
        return cls(tk, special=special, chat_template=_chat_template(folder, config), source=str(file))

    # -- single texts ----------------------------------------------------
    def _encode_text(self, text: str) -> list[int]:
        return self.tk.encode(text, add_special_tokens=False).ids

    def _decode_kept(self, ids: list[int], newlines: bool) -> str:
        return self.tk.decode(ids, skip_special_tokens=False)

    def id_to_piece(self, i: int) -> str:
        return self.tk.id_to_token(int(i))

    def piece_to_id(self, piece: str) -> int:
        i = self.tk.token_to_id(piece)
        return -1 if i is None else int(i)

    def pieces(self, text: str) -> list[str]:
        return self.tk.encode(text, add_special_tokens=False).tokens

    # -- chat template ---------------------------------------------------
    def apply_chat_template(self, messages: list[dict], *, add_generation_prompt: bool = False, **kwargs) -> str:
        """The conversation rendered as text by the folder's chat template (like transformers'
        ``apply_chat_template(messages, tokenize=False, ...)``)."""
        if not self.chat_template:
            raise ValueError(f"{self.source}: this tokenizer has no chat template (no 'chat_template' in "
                             f"{TOKENIZER_CONFIG}, no {CHAT_TEMPLATE_FILE})")
        variables = {**self.special_tokens, **kwargs}
        return _compile(self.chat_template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                   **variables)


def _chat_template(folder: Path, config: dict) -> str | None:
    t = config.get("chat_template")
    if isinstance(t, list):  # named templates: [{"name": "default", "template": "..."}, ...]
        named = {d.get("name"): d.get("template") for d in t if isinstance(d, dict)}
        t = named.get("default")
    if t is not None and not isinstance(t, str):
        raise ValueError(f"{folder / TOKENIZER_CONFIG}: field 'chat_template' must be a string or a list of "
                         "named templates")
    if t is None and (folder / CHAT_TEMPLATE_FILE).is_file():
        t = (folder / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    return t


_COMPILED: dict[str, object] = {}


def _compile(template: str):
    """The template in a sandbox (templates from the Hub are untrusted), with transformers' helpers."""
    if template not in _COMPILED:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            _COMPILED[template] = env.from_string(template)
        except jinja2.exceptions.TemplateSyntaxError as e:
            raise ValueError(f"chat template: {e}") from None
    return _COMPILED[template]


def is_hf_tokenizer_path(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p.is_file() and p.suffix == ".json") or (p.is_dir() and (p / TOKENIZER_JSON).is_file())


def special_token_texts(tok: BaseTokenizer) -> Iterable[tuple[str, str]]:
    """(field, text) for each special token the tokenizer has, for writing a ``tokenizer_config.json``."""
    for kind in _FALLBACK_PIECES:
        i = getattr(tok, f"{kind}_id")
        if i >= 0:
            yield f"{kind}_token", tok.id_to_piece(i)
