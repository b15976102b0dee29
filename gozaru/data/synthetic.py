"""An offline, seeded Japanese corpus shaped like dolly-15k-ja.

:class:`SyntheticCorpus` builds a table of made-up facts (towns, animals, inventors) from its seed and offers:

* :meth:`~SyntheticCorpus.instructions`: dolly-like instruction/answer records in the eight dolly categories
  (open_qa, closed_qa, classification, brainstorming, summarization, creative_writing, information_extraction,
  general_qa). Answers are short (one or two sentences) and every one ends in a polite form that
  :func:`gozaru.rewrite.to_gozaru` turns into a form containing ござる (です, ます, ました, ません, ましょう).
  Well over 20 000 distinct records are available.
* :meth:`~SyntheticCorpus.pretrain_texts`: plain Japanese prose (polite and plain style, no ござる) that states
  every fact of the table, for pretraining a tiny base model.
* :meth:`~SyntheticCorpus.heldout_questions`: questions about facts that never appear as questions in
  ``instructions()`` (the facts are in the prose), to measure knowledge before and after fine-tuning.

Everything is deterministic: the same seeds give the same lists on every run and platform.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Callable, Sequence

from .dolly import Record

CATEGORIES = ("open_qa", "closed_qa", "classification", "brainstorming", "summarization",
              "creative_writing", "information_extraction", "general_qa")

# -- vocabulary -------------------------------------------------------------------

_MORAE = list("アカサタナハマヤラワキシミリクスツヌムルケセネメレコソトノモヨロホフヒ")
_TOWN_SUFFIX = ("町", "村", "市")
_TOWN_KIND = {"町": "町", "村": "村", "市": "市"}
_PRODUCTS = ("りんご", "みかん", "お茶", "米", "塩", "はちみつ", "豆腐", "こんぶ", "わさび", "栗", "ぶどう",
             "しいたけ", "のり", "そば", "うどん", "織物", "陶器", "和紙", "鉄瓶", "竹細工", "漆器", "花火",
             "ろうそく", "扇子", "傘", "下駄", "人形", "ガラス細工", "味噌", "しょうゆ")
_LOCATIONS = ("北の海沿い", "南の島", "東の山あい", "西の平野", "湖のほとり", "大きな川の近く", "高原",
              "雪の多い谷", "静かな半島", "広い盆地")
_MONTHS = tuple(f"{m}月" for m in range(1, 13))
_COLORS = ("青色", "赤色", "白色", "黒色", "金色", "緑色", "紫色", "灰色", "茶色", "桃色")
_FOODS = ("木の実", "小魚", "花の蜜", "きのこ", "草の根", "小さな虫", "果物", "海藻", "米粒", "柔らかい葉")
_HABITATS = ("森", "湖", "砂漠", "洞窟", "草原", "高い山", "海辺", "竹林", "湿地", "川岸")
_SURNAMES = ("山田", "佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "中村", "小林", "加藤", "吉田", "山口",
             "松本", "井上", "木村", "林", "清水", "森", "池田", "橋本", "石川", "前田", "藤田", "岡田")
_GIVEN = ("太郎", "花子", "一郎", "春香", "健", "美咲", "大輔", "由美", "翔", "さくら", "誠", "葵", "悠斗",
          "彩", "陽介", "楓", "拓海", "千尋", "蓮", "結衣")
_INVENTIONS = ("風で動く時計", "光る傘", "歌う鍋", "空飛ぶ靴", "折りたためる橋", "水で走る車", "眠らない電球",
               "話す辞書", "雨を集める屋根", "音の出る地図", "曲がる鉛筆", "冷えない湯のみ", "自分で進む舟",
               "星を映す鏡", "重さのない箱", "香りの出る手紙", "色の変わる布", "雪を溶かす道",
               "夢を記録する枕", "影のできないランプ")
_CATEGORY_ITEMS = {
    "果物": ("りんご", "みかん", "ぶどう", "もも", "なし", "かき", "いちご", "バナナ", "メロン", "すいか",
           "さくらんぼ", "びわ"),
    "野菜": ("にんじん", "だいこん", "キャベツ", "トマト", "きゅうり", "なす", "ピーマン", "ほうれん草", "ねぎ",
           "かぼちゃ", "ごぼう", "れんこん"),
    "動物": ("犬", "猫", "馬", "牛", "うさぎ", "きつね", "たぬき", "くま", "さる", "しか", "ねずみ", "ひつじ"),
    "乗り物": ("電車", "自転車", "飛行機", "船", "バス", "タクシー", "車", "新幹線", "ヘリコプター", "バイク"),
    "楽器": ("ピアノ", "ギター", "太鼓", "笛", "バイオリン", "琴", "三味線", "トランペット", "ハープ", "ドラム"),
    "スポーツ": ("野球", "サッカー", "相撲", "柔道", "水泳", "テニス", "卓球", "剣道", "マラソン", "バレーボール"),
}
_SEASONS = ("春", "夏", "秋", "冬")
_PLACES = ("公園", "図書館", "駅", "海", "山", "川", "庭", "学校", "市場", "港", "森", "神社")
_ADJECTIVES = ("静かな", "明るい", "古い", "小さな", "大きな", "美しい", "不思議な", "にぎやかな", "やさしい",
               "元気な")
_PEOPLE = ("子ども", "友だち", "先生", "祖母", "旅人", "猫", "犬", "鳥", "漁師", "画家")
# (polite, plain) forms of everyday actions.
_ACTIONS = (("散歩します", "散歩する"), ("本を読みます", "本を読む"), ("歌を歌います", "歌を歌う"),
            ("絵を描きます", "絵を描く"), ("料理を作ります", "料理を作る"), ("写真を撮ります", "写真を撮る"),
            ("魚を釣ります", "魚を釣る"), ("花を育てます", "花を育てる"), ("星を眺めます", "星を眺める"),
            ("手紙を書きます", "手紙を書く"), ("お茶を飲みます", "お茶を飲む"), ("昼寝をします", "昼寝をする"))
_HOBBIES = ("散歩", "読書", "写生", "ピクニック", "釣り", "写真撮影", "バードウォッチング", "キャンプ",
            "星の観察", "花見", "スケッチ", "歌の練習", "料理", "山登り")
_SKILLS = ("料理", "水泳", "ピアノ", "書道", "英会話", "将棋", "テニス", "絵", "作文", "早起き")
_TIPS = ("毎日少しずつ続ける", "基本を丁寧に練習する", "上手な人のやり方をよく見る", "失敗を気にしすぎない",
         "目標を小さく分ける", "楽しみながら取り組む", "休みを上手に取る", "記録をつけて振り返る")
_WEATHER = ("晴れ", "雨", "雪", "くもり")


# -- facts ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Fact:
    kind: str        # town | animal | person
    entity: str
    attribute: str   # specialty | location | festival | color | food | habitat | invention | hometown | year
    value: str


@dataclasses.dataclass(frozen=True)
class FactQuestion:
    """A question about one fact; ``answer`` is the value a correct reply must contain."""
    question: str
    answer: str
    reference: str   # a full polite answer sentence
    fact: Fact

    def is_correct(self, text: str) -> bool:
        return self.answer in text

    def record(self) -> Record:
        return Record(instruction=self.question, output=self.reference, category="open_qa",
                      index=f"heldout-{self.fact.entity}-{self.fact.attribute}")


# Per attribute: question templates, answer templates (all ending in a ござる-producing polite form),
# a polite prose sentence and a plain one.
_FACT_TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str, str]] = {
    "specialty": (("{e}の名産品は何ですか？", "{e}では何が有名ですか？", "{e}の特産物を教えてください。"),
                  ("{e}の名産品は{v}です。", "{e}は{v}が有名です。", "{v}です。{e}の名産として知られています。"),
                  "{e}の名産品は{v}です。", "{e}の名産品は{v}だ。"),
    "location": (("{e}はどこにありますか？", "{e}の場所を教えてください。"),
                 ("{e}は{v}にあります。", "{v}にあります。"),
                 "{e}は{v}にあります。", "{e}は{v}にある。"),
    "festival": (("{e}のお祭りは何月ですか？", "{e}では何月に祭りがありますか？"),
                 ("{e}のお祭りは{v}です。", "毎年{v}に祭りが開かれます。"),
                 "{e}では毎年{v}に祭りが開かれます。", "{e}の祭りは{v}に開かれる。"),
    "color": (("{e}は何色の動物ですか？", "{e}の色を教えてください。"),
              ("{e}は{v}の動物です。", "{e}の体は{v}です。"),
              "{e}の体は{v}です。", "{e}は{v}の動物である。"),
    "food": (("{e}は何を食べますか？", "{e}の好物は何ですか？"),
             ("{e}は{v}を食べます。", "{e}の好物は{v}です。"),
             "{e}は{v}を好んで食べます。", "{e}の好物は{v}だ。"),
    "habitat": (("{e}はどこに住んでいますか？", "{e}のすみかを教えてください。"),
                ("{e}は{v}に住んでいます。", "{e}は主に{v}で暮らしています。"),
                "{e}は{v}に住んでいます。", "{e}は{v}に住む動物だ。"),
    "invention": (("{e}は何を発明しましたか？", "{e}の発明品は何ですか？"),
                  ("{e}は{v}を発明しました。", "{e}の発明品は{v}です。"),
                  "{e}は{v}を発明しました。", "{e}は{v}を発明した。"),
    "hometown": (("{e}の出身地はどこですか？", "{e}はどこで生まれましたか？"),
                 ("{e}は{v}の出身です。", "{e}は{v}で生まれました。"),
                 "{e}は{v}の出身です。", "{e}は{v}で生まれた。"),
    "year": (("{e}は何年に生まれましたか？", "{e}の生まれた年を教えてください。"),
             ("{e}は{v}に生まれました。", "{v}です。{e}はその年に生まれました。"),
             "{e}は{v}に生まれました。", "{e}が生まれたのは{v}である。"),
}
_ATTRIBUTES = {"town": ("specialty", "location", "festival"), "animal": ("color", "food", "habitat"),
               "person": ("invention", "hometown", "year")}


class SyntheticCorpus:
    """The made-up fact table for ``seed`` and the generators built on it."""

    def __init__(self, seed: int = 0, *, n_towns: int = 60, n_animals: int = 40, n_people: int = 40,
                 heldout_fraction: float = 0.2):
        rng = random.Random(f"facts-{seed}")
        self.seed = seed
        names: set[str] = set()
        self.towns = [self._town(rng, names) for _ in range(n_towns)]
        self.animals = [self._animal(rng, names) for _ in range(n_animals)]
        town_names = [t["name"] for t in self.towns]
        self.people = [self._person(rng, names, town_names) for _ in range(n_people)]
        self.facts: list[Fact] = []
        for kind, entities in (("town", self.towns), ("animal", self.animals), ("person", self.people)):
            for ent in entities:
                for attr in _ATTRIBUTES[kind]:
                    self.facts.append(Fact(kind, ent["name"], attr, ent[attr]))
        order = list(range(len(self.facts)))
        rng.shuffle(order)
        n_held = round(heldout_fraction * len(self.facts))
        self._heldout = frozenset(order[:n_held])
        self.train_facts = [f for i, f in enumerate(self.facts) if i not in self._heldout]
        self.heldout_facts = [f for i, f in enumerate(self.facts) if i in self._heldout]
        self._entity_names = frozenset(names)

    # -- entity generators (also used for fresh context entities) -------------------
    @staticmethod
    def _unique(rng: random.Random, names: set[str], make: Callable[[], str]) -> str:
        for _ in range(10_000):
            name = make()
            if name not in names:
                names.add(name)
                return name
        raise RuntimeError("synthetic corpus: ran out of distinct names")

    def _town(self, rng, names, morae=(2, 3)):
        name = self._unique(rng, names, lambda: "".join(rng.choice(_MORAE) for _ in range(rng.choice(morae)))
                            + rng.choice(_TOWN_SUFFIX))
        return {"name": name, "specialty": rng.choice(_PRODUCTS), "location": rng.choice(_LOCATIONS),
                "festival": rng.choice(_MONTHS)}

    def _animal(self, rng, names, morae=(3, 4)):
        name = self._unique(rng, names, lambda: "".join(rng.choice(_MORAE) for _ in range(rng.choice(morae))))
        return {"name": name, "color": rng.choice(_COLORS), "food": rng.choice(_FOODS),
                "habitat": rng.choice(_HABITATS)}

    def _person(self, rng, names, towns):
        name = self._unique(rng, names, lambda: rng.choice(_SURNAMES) + rng.choice(_GIVEN))
        return {"name": name, "invention": rng.choice(_INVENTIONS), "hometown": rng.choice(towns),
                "year": f"{rng.randrange(1800, 1950)}年"}

    def _fresh(self, rng: random.Random, kind: str) -> dict:
        """A context entity that is not in the fact table (so contexts never leak held-out facts)."""
        names = set(self._entity_names)
        if kind == "town":
            return self._town(rng, names, morae=(3, 4))
        if kind == "animal":
            return self._animal(rng, names, morae=(4, 5))
        towns = ["".join(rng.choice(_MORAE) for _ in range(3)) + rng.choice(_TOWN_SUFFIX) for _ in range(4)]
        return self._person(rng, names, towns)

    # -- public generators ------------------------------------------------------------
    def instructions(self, n: int, seed: int = 0, categories: Sequence[str] | None = None) -> list[Record]:
        """``n`` distinct dolly-like records (polite answers), drawn deterministically from ``seed``.

        Fact questions come only from the training facts; ``categories`` restricts the mix (default: all
        eight, chosen uniformly). Raises ValueError if the categories cannot give ``n`` distinct records.
        """
        cats = tuple(categories) if categories else CATEGORIES
        unknown = [c for c in cats if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown categories {unknown}; choose from {', '.join(CATEGORIES)}")
        rng = random.Random(f"instructions-{self.seed}-{seed}")
        out: list[Record] = []
        seen: set[tuple[str, str, str]] = set()
        attempts = 0
        while len(out) < n:
            attempts += 1
            if attempts > 50 * n + 1000:
                raise ValueError(f"only {len(out)} distinct records found for categories {cats}; asked for {n}")
            cat = rng.choice(cats)
            instruction, input_, output = getattr(self, f"_make_{cat}")(rng)
            key = (instruction, input_, output)
            if key in seen:
                continue
            seen.add(key)
            out.append(Record(instruction=instruction, input=input_, output=output, category=cat,
                              index=f"synthetic-{self.seed}-{seed}-{len(out)}"))
        return out

    def pretrain_texts(self, n: int, seed: int = 0) -> list[str]:
        """``n`` short paragraphs of prose. Every fact of the table (held-out ones included) appears in the
        first paragraphs and again as ``n`` grows; the rest is everyday description. No ござる anywhere."""
        rng = random.Random(f"prose-{self.seed}-{seed}")
        facts = list(self.facts)
        rng.shuffle(facts)
        out: list[str] = []
        k = 0
        while len(out) < n:
            sentences = []
            for _ in range(rng.randint(2, 3)):
                f = facts[k % len(facts)]
                k += 1
                _, _, polite, plain = _FACT_TEMPLATES[f.attribute]
                sentences.append((polite if rng.random() < 0.6 else plain).format(e=f.entity, v=f.value))
            for _ in range(rng.randint(1, 3)):
                sentences.append(self._everyday_sentence(rng))
            rng.shuffle(sentences)
            out.append("".join(sentences))
        return out

    def heldout_questions(self, seed: int = 0) -> list[FactQuestion]:
        """One question per held-out fact (template chosen by ``seed``), in fact-table order."""
        rng = random.Random(f"heldout-{self.seed}-{seed}")
        return [self._question(rng, f) for f in self.heldout_facts]

    def train_questions(self, seed: int = 0) -> list[FactQuestion]:
        """One question per training fact (these facts also appear as open_qa instructions)."""
        rng = random.Random(f"trainq-{self.seed}-{seed}")
        return [self._question(rng, f) for f in self.train_facts]

    @staticmethod
    def _question(rng: random.Random, f: Fact) -> FactQuestion:
        questions, answers, _, _ = _FACT_TEMPLATES[f.attribute]
        return FactQuestion(question=rng.choice(questions).format(e=f.entity),
                            answer=f.value, reference=answers[0].format(e=f.entity, v=f.value), fact=f)

    # -- per-category makers: rng -> (instruction, input, output) ------------------------
    def _make_open_qa(self, rng):
        if rng.random() < 0.7:
            f = rng.choice(self.train_facts)
            questions, answers, _, _ = _FACT_TEMPLATES[f.attribute]
            return (rng.choice(questions).format(e=f.entity), "",
                    rng.choice(answers).format(e=f.entity, v=f.value))
        cat, item = _pick_item(rng)
        q = rng.choice(("{x}は何の仲間ですか？", "{x}はどんな種類のものですか？", "{x}について一言で教えてください。"))
        a = rng.choice(("{x}は{c}の仲間です。", "{x}は{c}の一つです。"))
        return q.format(x=item), "", a.format(x=item, c=cat)

    def _make_closed_qa(self, rng):
        kind = rng.choice(("town", "animal", "person"))
        ent = self._fresh(rng, kind)
        attr = rng.choice(_ATTRIBUTES[kind])
        questions, answers, _, _ = _FACT_TEMPLATES[attr]
        instruction = rng.choice(("次の文章を読んで質問に答えてください。", "文章をもとに答えてください。", "")) \
            + questions[0].format(e=ent["name"])
        return instruction, _context(kind, ent), rng.choice(answers).format(e=ent["name"], v=ent[attr])

    def _make_classification(self, rng):
        style = rng.randrange(3)
        if style == 0:
            cat, item = _pick_item(rng)
            other = rng.choice([c for c in _CATEGORY_ITEMS if c != cat])
            a, b = (cat, other) if rng.random() < 0.5 else (other, cat)
            return f"{item}は{a}と{b}のどちらですか？", "", f"{item}は{cat}です。"
        if style == 1:
            cat, item = _pick_item(rng)
            others = [i for c, items in _CATEGORY_ITEMS.items() if c != cat for i in items]
            options = rng.sample(others, 3) + [item]
            rng.shuffle(options)
            return (f"次の中から{cat}を一つ選んでください。", "、".join(options),
                    rng.choice((f"{cat}は{item}です。", f"{item}が{cat}です。")))
        c1, c2 = rng.sample(list(_CATEGORY_ITEMS), 2)
        w1, w2 = rng.sample(_CATEGORY_ITEMS[c1], 2), rng.sample(_CATEGORY_ITEMS[c2], 2)
        words = w1 + w2
        rng.shuffle(words)
        return (f"次の言葉を{c1}と{c2}に分けてください。", "、".join(words),
                f"{c1}は{'と'.join(w1)}、{c2}は{'と'.join(w2)}です。")

    def _make_brainstorming(self, rng):
        season, place, person = rng.choice(_SEASONS), rng.choice(_PLACES), rng.choice(_PEOPLE)
        if rng.random() < 0.6:
            a, b, c = rng.sample(_HOBBIES, 3)
            q = rng.choice((f"{season}に{place}でできることを三つ挙げてください。",
                            f"{person}と一緒に{season}の{place}で過ごすアイデアをください。",
                            f"{season}の{place}で{person}が楽しめることは何ですか？"))
            ans = rng.choice((f"{a}、{b}、{c}などがおすすめです。", f"例えば{a}や{b}、{c}を楽しめます。",
                              f"{a}や{b}をしてみましょう。"))
            return q, "", ans
        adj = rng.choice(_ADJECTIVES)
        name = "".join(rng.choice(_MORAE) for _ in range(3))
        return (f"{adj}{person}が主人公の物語の題名を考えてください。", "",
                f"「{name}と{season}の{place}」という題名はいかがですか。")

    def _make_summarization(self, rng):
        kind = rng.choice(("town", "animal", "person"))
        ent = self._fresh(rng, kind)
        e = ent["name"]
        if kind == "town":
            summary = f"{e}は{ent['location']}にあり、{ent['specialty']}と{ent['festival']}の祭りで知られています。"
        elif kind == "animal":
            summary = f"{e}は{ent['habitat']}に住む{ent['color']}の動物です。"
        else:
            summary = f"{e}は{ent['hometown']}の出身で、{ent['invention']}を発明した人物です。"
        q = rng.choice(("次の文章を一文で要約してください。", "この文章の要点を短くまとめてください。"))
        return q, _context(kind, ent), summary

    def _make_creative_writing(self, rng):
        season, place, adj, person = (rng.choice(_SEASONS), rng.choice(_PLACES), rng.choice(_ADJECTIVES),
                                      rng.choice(_PEOPLE))
        action = rng.choice(_ACTIONS)[0]
        q = rng.choice((f"{adj}{person}が出てくる、{season}の{place}の短い文を書いてください。",
                        f"{season}の{place}を舞台に、{adj}{person}についての一文を書いてください。"))
        return q, "", f"{season}の{place}で、{adj}{person}が{action}。"

    def _make_information_extraction(self, rng):
        kind = rng.choice(("town", "animal", "person"))
        ent = self._fresh(rng, kind)
        label, attr = rng.choice(_EXTRACT_LABELS[kind])
        q = rng.choice((f"この文章から{label}を抜き出してください。", f"文章に書かれている{label}は何ですか？"))
        return q, _context(kind, ent), f"{label}は{ent[attr]}です。"

    def _make_general_qa(self, rng):
        if rng.random() < 0.5:
            skill = rng.choice(_SKILLS)
            tip = rng.choice(_TIPS)
            q = rng.choice((f"{skill}が上手になるこつは何ですか？", f"{skill}を上達させるにはどうすればいいですか？"))
            a = rng.choice((f"{tip}ことが大切です。", f"まずは{tip}ことから始めましょう。"))
            return q, "", a
        (c1, x), (c2, y) = _pick_item(rng), _pick_item(rng)
        if c1 == c2:
            return f"{x}と{y}は同じ種類ですか？", "", f"はい、どちらも{c1}です。"
        return f"{x}と{y}の違いは何ですか？", "", f"{x}は{c1}で、{y}は{c2}です。"

    # -- prose -----------------------------------------------------------------------
    @staticmethod
    def _everyday_sentence(rng: random.Random) -> str:
        season, place, adj, person = (rng.choice(_SEASONS), rng.choice(_PLACES), rng.choice(_ADJECTIVES),
                                      rng.choice(_PEOPLE))
        polite, plain = rng.choice(_ACTIONS)
        action = polite if rng.random() < 0.6 else plain
        return rng.choice((
            f"{season}になると、{adj}{person}が{place}で{action}。",
            f"{person}は毎朝{place}で{action}。",
            f"{rng.choice(_WEATHER)}の日には、{person}は{place}で{action}。",
            f"{place}には{adj}{person}がいて、よく{action}。",
        ))


_EXTRACT_LABELS = {
    "town": (("名産品", "specialty"), ("祭りの月", "festival"), ("場所", "location")),
    "animal": (("好物", "food"), ("すみか", "habitat"), ("体の色", "color")),
    "person": (("発明品", "invention"), ("生まれた年", "year"), ("出身地", "hometown")),
}


def _context(kind: str, ent: dict) -> str:
    e = ent["name"]
    if kind == "town":
        return (f"{e}は{ent['location']}にある{_TOWN_KIND[e[-1]]}です。名産品は{ent['specialty']}で、"
                f"毎年{ent['festival']}には祭りが開かれます。")
    if kind == "animal":
        return f"{e}は{ent['habitat']}に住む小さな動物です。体は{ent['color']}で、{ent['food']}を好んで食べます。"
    return (f"{e}は{ent['year']}に{ent['hometown']}で生まれました。のちに{ent['invention']}を発明し、"
            f"多くの人に知られるようになりました。")


def _pick_item(rng: random.Random) -> tuple[str, str]:
    cat = rng.choice(list(_CATEGORY_ITEMS))
    return cat, rng.choice(_CATEGORY_ITEMS[cat])
