"""Rule-based rewriting of polite Japanese endings into ござる speech, and the ござる-rate.

Only sentence-final endings change: an ending counts as final when what follows it (after optional spaces and an
optional short aside in parentheses, as in ``です（笑）。``) is a sentence mark (。．.！？!?…♪☆★), a newline,
an emoji or the end of the text. Quotes (「」『』"" “”), code (```…``` and `…`), URLs and numbers are masked
first, so nothing inside them changes.

Rules (checked longest first; ``V`` is the verb's masu-stem, conjugated by :func:`_verb_forms`):

    でございます → でござる          ございます → ござる
    でございました → でござった      ございました → ござった
    ではありません → ではござらぬ    ではありませんでした → ではござらなんだ  (じゃ… likewise)
    ありません → ござらぬ            ありませんでした → ござらなんだ
    Vます → V(dictionary)でござる     します → するでござる, 食べます → 食べるでござる
    Vました → V(past)でござる         しました → したでござる, 読みました → 読んだでござる
    Vません → V(negative)ぬでござる    わかりません → わからぬでござる, しません → せぬでござる
    Vませんでした → V(negative)なかったでござる
    Vましょう → V(dictionary)でござる  始めましょう → 始めるでござる
    です → でござる    でした → でござった    でしょう → でござろう
    である → でござる  であった → でござった
    ください / 下さい → くだされ / 下され

A sentence-final particle after the ending is kept, with ね → な and よね → よな (ですね → でござるな).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable

# -- masking of protected spans --------------------------------------------

_PAIRED_QUOTES = {"「": "」", "『": "』", "“": "”"}
_URL_RE = re.compile(r"(?:https?|ftp)://[^\s<>「」『』（）()\"'、。]+|www\.[^\s<>「」『』（）()\"'、。]+")
_NUMBER_RE = re.compile(r"[0-9０-９]+(?:[.,．，:：][0-9０-９]+)*")
# Stands for one protected span in the text the ending rules see: not a kana, kanji or sentence mark, so an
# ending next to a span is treated like one next to a symbol. Spans are put back by position, never by
# this character's value, so text that contains it (or any private-use character) round-trips.
_SPAN_MARK = "\ufffc"


class _Masked:
    """``text`` with each protected span (quote, code, URL, number) shown as one _SPAN_MARK in ``masked``;
    ``original(a, b)`` is the original text of ``masked[a:b]``."""

    def __init__(self, text: str):
        self.text = text
        chars: list[str] = []
        starts: list[int] = []  # where each char of `masked` starts in `text`
        closes = _matching_closes(text)
        missing: set[str] = set()  # closing tokens known to be absent after the current position

        def find(token: str, start: int) -> int:
            if token in missing:
                return -1
            j = text.find(token, start)
            if j < 0:
                missing.add(token)  # absent from here on: later searches would rescan to the end for nothing
            return j

        i, n = 0, len(text)
        while i < n:
            c = text[i]
            end = -1
            if text.startswith("```", i):
                j = find("```", i + 3)
                end = j + 3 if j >= 0 else -1
            if end < 0 and c == "`":
                j = find("`", i + 1)
                end = j + 1 if j >= 0 else -1
            if end < 0 and c in _PAIRED_QUOTES:
                j = closes.get(i, -1)
                end = j + 1 if j >= 0 else -1
            if end < 0 and c == '"':
                j = find('"', i + 1)
                end = j + 1 if j >= 0 else -1
            if end < 0:
                m = _URL_RE.match(text, i) or _NUMBER_RE.match(text, i)
                end = m.end() if m else -1
            starts.append(i)
            if end > i:
                chars.append(_SPAN_MARK)
                i = end
            else:
                chars.append(c)
                i += 1
        starts.append(n)
        self.masked = "".join(chars)
        self._starts = starts

    def original(self, a: int, b: int) -> str:
        return self.text[self._starts[a]: self._starts[b]]


def _matching_closes(text: str) -> dict[int, int]:
    """For each opening bracket of _PAIRED_QUOTES, the index of the bracket closing it (nesting of the same
    kind counted); unclosed ones are absent. One pass with a stack per kind."""
    closing = {v: k for k, v in _PAIRED_QUOTES.items()}
    stacks: dict[str, list[int]] = {k: [] for k in _PAIRED_QUOTES}
    out: dict[int, int] = {}
    for k, c in enumerate(text):
        if c in stacks:
            stacks[c].append(k)
        elif c in closing and stacks[closing[c]]:
            out[stacks[closing[c]].pop()] = k
    return out


# -- verb conjugation from the masu-stem --------------------------------------

_I_TO_U = dict(zip("いきぎしちにびみり", "うくぐすつぬぶむる"))
_I_TO_A = dict(zip("いきぎしちにびみり", "わかがさたなばまら"))
_I_TO_TA = {"い": "った", "ち": "った", "り": "った", "み": "んだ", "び": "んだ", "に": "んだ",
            "き": "いた", "ぎ": "いだ", "し": "した"}
_E_ROW = set("えけげせぜてでねへべぺめれ")
_I_ROW = set(_I_TO_U)

# Stems whose forms are irregular: stem → (dictionary, past, negative stem).
_SPECIAL_STEMS = {
    "いらっしゃい": ("いらっしゃる", "いらっしゃった", "いらっしゃら"),
    "おっしゃい": ("おっしゃる", "おっしゃった", "おっしゃら"),
    "なさい": ("なさる", "なさった", "なさら"),
    "ください": ("くださる", "くださった", "くださら"),
    "下さい": ("下さる", "下さった", "下さら"),
    "ござい": ("ござる", "ござった", "ござら"),
    "いたし": ("いたす", "いたした", "いたさ"),
    "行き": ("行く", "行った", "行か"),
    "ていき": ("ていく", "ていった", "ていか"),
    "でいき": ("でいく", "でいった", "でいか"),
    "てき": ("てくる", "てきた", "てこ"),
    "んでき": ("んでくる", "んできた", "んでこ"),
    "でき": ("できる", "できた", "でき"),
    "てみ": ("てみる", "てみた", "てみ"),
    "でみ": ("でみる", "でみた", "でみ"),
    "来": ("来る", "来た", "来"),
}
# Ichidan verbs whose stem ends in an i-row kana (the rest of the i-row stems are godan).
_ICHIDAN_I_STEMS = (
    "起き", "生き", "過ぎ", "落ち", "借り", "降り", "足り", "浴び", "伸び", "延び", "満ち", "飽き", "尽き",
    "用い", "報い", "老い", "悔い", "強い", "見", "着", "似", "煮", "居", "射", "干",
)
# Single kanji that take する (愛する, 関する …); other single kanji + し are godan す verbs (話す, 出す).
_SURU_SINGLE_KANJI = set("愛察関対発要課属接反適訳略称達介解熱欲罰害損得徳")
# Kana after which a bare い stem is the verb いる (ている, ここにいる, 何人もいる).
_BEFORE_IRU = set("てでにはもがとんへや")
# Okurigana that make "kanji + kana + し" a godan す verb (動かす, 果たす, 減らす, 増やす).
_GODAN_S_OKURI = set("かさたらわまばやな")


def _is_kanji(c: str) -> bool:
    return "\u4e00" <= c <= "\u9fff" or c in "々〆"


def _is_hiragana(c: str) -> bool:
    return "\u3041" <= c <= "\u309f"


def _verb_forms(stem: str) -> tuple[int, str, str, str] | None:
    """For a text ending in a masu-stem: (chars to cut, dictionary tail, past tail, negative-stem tail).

    ``text[:-cut] + tail`` gives the form. None when the text does not end in a recognisable stem.
    """
    if not stem:
        return None
    for special, (dic, past, neg) in _SPECIAL_STEMS.items():
        if stem.endswith(special):
            return len(special), dic, past, neg
    last = stem[-1]
    # いる (also ている, 家にいる): negative uses the humble おる (おらぬ).
    if last == "い" and (len(stem) == 1 or stem[-2] in _BEFORE_IRU
                         or not (_is_kanji(stem[-2]) or _is_hiragana(stem[-2]))):
        return 1, "いる", "いた", "おら"
    if last == "し":
        if _takes_suru(stem[:-1]):
            return 1, "する", "した", "せ"
        return 1, "す", "した", "さ"
    if any(stem.endswith(s) for s in _ICHIDAN_I_STEMS) or last == "じ" or last in _E_ROW or _is_kanji(last):
        return 1, last + "る", last + "た", last
    if last in _I_ROW:
        return 1, _I_TO_U[last], _I_TO_TA[last], _I_TO_A[last]
    return None


def _takes_suru(before: str) -> bool:
    """Whether ``before + "します"`` is a する verb (確認します, それにします) rather than a godan す verb."""
    if not before:
        return True
    c = before[-1]
    if _is_kanji(c):
        kanji_run = 0
        for ch in reversed(before):
            if not _is_kanji(ch):
                break
            kanji_run += 1
        return kanji_run >= 2 or c in _SURU_SINGLE_KANJI
    if _is_hiragana(c):
        return not (c in _GODAN_S_OKURI and len(before) >= 2 and _is_kanji(before[-2]))
    return True  # katakana, Latin, a masked span: a する noun (チェックします)


# -- the rewriter -------------------------------------------------------------

_ENDINGS = (
    "でございました", "ございました", "でございます", "ございます",
    "ではありませんでした", "じゃありませんでした", "ではありません", "じゃありません",
    "ありませんでした", "ありません",
    "ませんでした", "ません", "ましょう", "ました", "ます",
    "でしょう", "でした", "です", "であった", "である", "ください", "下さい",
)
_FIXED = {
    "でございました": "でござった", "ございました": "ござった", "でございます": "でござる", "ございます": "ござる",
    "ではありませんでした": "ではござらなんだ", "じゃありませんでした": "ではござらなんだ",
    "ではありません": "ではござらぬ", "じゃありません": "ではござらぬ",
    "ありませんでした": "ござらなんだ", "ありません": "ござらぬ",
    "でしょう": "でござろう", "でした": "でござった", "です": "でござる",
    "であった": "でござった", "である": "でござる", "ください": "くだされ", "下さい": "下され",
}
_PARTICLES = {"よね": "よな", "かね": "かな", "ね": "な", "よ": "よ", "か": "か", "な": "な", "わ": "わ", "ぞ": "ぞ"}
_EMOJI = "\U0001F000-\U0001FAFF\u2600-\u27BF"
# What may follow a final ending: spaces, an optional short aside in parentheses, then a sentence mark.
_FINAL = rf"(?=[ \t\u3000]*(?:[（(][^（）()\n]{{0,40}}[）)])?[ \t\u3000]*(?:[。．.！？!?…♪☆★\n{_EMOJI}]|$))"
_ENDING_RE = re.compile(
    "(" + "|".join(_ENDINGS) + ")(" + "|".join(sorted(_PARTICLES, key=len, reverse=True)) + ")?" + _FINAL)


def to_gozaru(text: str) -> str:
    """Rewrite the sentence-final polite endings of ``text`` into ござる speech (see the module docstring).

    Text without polite endings comes back unchanged; rewriting twice changes nothing more. Linear in the
    length of the text.
    """
    if not text:
        return text
    mk = _Masked(text)
    masked = mk.masked
    pieces: list[str] = []
    pos = 0
    for m in _ENDING_RE.finditer(masked):
        cut, new_ending = _rewrite_ending(masked[pos: m.start()], m.group(1))
        pieces.append(mk.original(pos, m.start() - cut))
        pieces.append(new_ending + _PARTICLES.get(m.group(2) or "", ""))
        pos = m.end()
    if not pieces:
        return text
    pieces.append(mk.original(pos, len(masked)))
    return "".join(pieces)


def _rewrite_ending(head: str, ending: str) -> tuple[int, str]:
    """(chars to cut from the end of ``head``, rewritten ending); verb endings change the stem's end."""
    if ending in _FIXED:
        return 0, _FIXED[ending]
    forms = _verb_forms(_stem_tail(head))
    if forms is None:  # no recognisable verb stem before the ending: leave it as written
        return 0, ending
    cut, dic, past, neg = forms
    if ending in ("ます", "ましょう"):
        return cut, dic + "でござる"
    if ending == "ました":
        return cut, past + "でござる"
    if ending == "ません":
        return cut, neg + "ぬでござる"
    return cut, neg + "なかったでござる"  # ませんでした


def _stem_tail(head: str) -> str:
    """The last word-ish run of ``head`` (at most 8 chars), where the masu-stem must end."""
    return head[-8:]


# -- measuring the style ---------------------------------------------------------

GOZARU = "ござる"
_GOZA_ENDING_RE = re.compile(
    r"ござ(?:る|った|ろう|らぬ|らなんだ|ります|いました|います)(?:よな|かな|な|よ|か|ぞ|ね|わ)?"
    rf"[\s。．.！？!?…♪☆★」』）)\]〜～ー{_EMOJI}]*$")


def ends_in_gozaru(text: str) -> bool:
    """Whether the text (ignoring trailing punctuation, spaces and emoji) ends in a ござ-form."""
    return bool(_GOZA_ENDING_RE.search(text))


@dataclasses.dataclass(frozen=True)
class GozaruRate:
    """Share of texts containing ござる, with a Wilson 95 % interval, and the share ending in a ござ-form."""
    rate: float
    low: float
    high: float
    n: int
    k: int
    ending_rate: float
    ending_k: int

    def __str__(self) -> str:
        return (f"ござる-rate {100 * self.rate:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] "
                f"({self.k}/{self.n}); ending {100 * self.ending_rate:.1f}%")


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (statsmodels' ``proportion_confint``; 95 % by default);
    (0, 1) when n == 0. The bound at k = 0 (k = n) is exactly 0 (1): floating-point dust such as 3.5e-18 would
    print as a number where the bound is the end of the scale."""
    if n <= 0:
        return 0.0, 1.0
    from scipy.stats import norm
    from statsmodels.stats.proportion import proportion_confint
    low, high = proportion_confint(k, n, alpha=2 * float(norm.sf(z)), method="wilson")
    return (0.0 if k == 0 else float(low)), (1.0 if k == n else float(high))


def gozaru_rate(texts: Iterable[str]) -> GozaruRate:
    """ござる-rate of ``texts``: a text counts when it contains the substring ござる anywhere
    (so でござる, ござるよ … count; ござった / ござらぬ alone do not). ``rate`` is NaN for no texts."""
    texts = list(texts)
    n = len(texts)
    k = sum(GOZARU in t for t in texts)
    ending_k = sum(ends_in_gozaru(t) for t in texts)
    low, high = wilson_interval(k, n)
    nan = float("nan")
    return GozaruRate(rate=k / n if n else nan, low=low, high=high, n=n, k=k,
                      ending_rate=ending_k / n if n else nan, ending_k=ending_k)
