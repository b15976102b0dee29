"""to_gozaru: a hand-written table of sentences and their expected ござる rewrites, plus properties."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gozaru.data.rewrite import to_gozaru

# (input, expected) — expectations written by hand, not produced by the rewriter.
TABLE = [
    # です / でした / でしょう / である
    ("日本で一番高い山は富士山です。", "日本で一番高い山は富士山でござる。"),
    ("この問題は少し難しいです。", "この問題は少し難しいでござる。"),
    ("お会いできてうれしいです。", "お会いできてうれしいでござる。"),
    ("昨日は雨でした。", "昨日は雨でござった。"),
    ("明日は晴れるでしょう。", "明日は晴れるでござろう。"),
    ("東京は日本の首都である。", "東京は日本の首都でござる。"),
    ("彼は医者であった。", "彼は医者でござった。"),
    ("これは本です。あれはノートです。", "これは本でござる。あれはノートでござる。"),
    # ございます family
    ("ご協力ありがとうございます。", "ご協力ありがとうござる。"),
    ("こちらが会場でございます。", "こちらが会場でござる。"),
    ("大変お世話になりました。ありがとうございました。", "大変お世話になったでござる。ありがとうござった。"),
    # ます → dictionary form
    ("明日の会議は午後から始まります。", "明日の会議は午後から始まるでござる。"),
    ("書類を確認します。", "書類を確認するでござる。"),
    ("猫は魚を食べます。", "猫は魚を食べるでござる。"),
    ("毎朝コーヒーを飲みます。", "毎朝コーヒーを飲むでござる。"),
    ("友人が家に来ます。", "友人が家に来るでござる。"),
    ("駅まで歩いて行きます。", "駅まで歩いて行くでござる。"),
    ("彼女は英語を話します。", "彼女は英語を話すでござる。"),
    ("この方法なら簡単にできます。", "この方法なら簡単にできるでござる。"),
    ("家族と一緒に夕食を作ります。", "家族と一緒に夕食を作るでござる。"),
    ("それは良い考えだと思います。", "それは良い考えだと思うでござる。"),
    ("ますます寒くなります。", "ますます寒くなるでござる。"),
    # ている
    ("彼は東京に住んでいます。", "彼は東京に住んでいるでござる。"),
    ("電車が遅れています。", "電車が遅れているでござる。"),
    ("子どもたちは公園で遊んでいました。", "子どもたちは公園で遊んでいたでござる。"),
    ("まだ誰も来ていません。", "まだ誰も来ておらぬでござる。"),
    # ました → past
    ("昨日、資料を送信しました。", "昨日、資料を送信したでござる。"),
    ("私はその映画を見ました。", "私はその映画を見たでござる。"),
    ("昨年、京都へ行きました。", "昨年、京都へ行ったでござる。"),
    ("友だちに手紙を書きました。", "友だちに手紙を書いたでござる。"),
    ("夏休みに川で泳ぎました。", "夏休みに川で泳いだでござる。"),
    ("この本は図書館で借りました。", "この本は図書館で借りたでござる。"),
    ("気温が上がってきました。", "気温が上がってきたでござる。"),
    ("先生がいらっしゃいました。", "先生がいらっしゃったでござる。"),
    ("本を三冊読みました。", "本を三冊読んだでござる。"),
    # ません / ませんでした / ありません
    ("詳しいことはわかりません。", "詳しいことはわからぬでござる。"),
    ("残念ながら参加できません。", "残念ながら参加できぬでござる。"),
    ("特に問題はありません。", "特に問題はござらぬ。"),
    ("それは正しい方法ではありません。", "それは正しい方法ではござらぬ。"),
    ("そのとき、私は何も知りませんでした。", "そのとき、私は何も知らなかったでござる。"),
    ("駅に着いたら電話しますが、少し遅れるかもしれません。",
     "駅に着いたら電話しますが、少し遅れるかもしれぬでござる。"),
    # ましょう / ください
    ("一緒に頑張りましょう。", "一緒に頑張るでござる。"),
    ("AとBを比較してみましょう。", "AとBを比較してみるでござる。"),
    ("もう少し待ちましょうか。", "もう少し待つでござるか。"),
    ("こちらに名前を書いてください。", "こちらに名前を書いてくだされ。"),
    ("少々お待ち下さい。", "少々お待ち下され。"),
    ("新しい機能を追加しました。ぜひ試してみてください。", "新しい機能を追加したでござる。ぜひ試してみてくだされ。"),
    # sentence-final particles and marks
    ("そうですね。", "そうでござるな。"),
    ("これはあなたの傘ですか？", "これはあなたの傘でござるか？"),
    ("明日も来ますか？", "明日も来るでござるか？"),
    ("準備ができました！楽しみです😊", "準備ができたでござる！楽しみでござる😊"),
    ("ABCを使用します", "ABCを使用するでござる"),
    ("はい、できます。ただし注意が必要です（詳細は後述）。",
     "はい、できるでござる。ただし注意が必要でござる（詳細は後述）。"),
    ("手順は以下の通りです。\n1. 電源を入れます。\n2. ボタンを押します。",
     "手順は以下の通りでござる。\n1. 電源を入れるでござる。\n2. ボタンを押すでござる。"),
    # only sentence-final endings change
    ("日曜日は休みですが、月曜日は営業します。", "日曜日は休みですが、月曜日は営業するでござる。"),
    ("材料は次の通りです：小麦粉と砂糖", "材料は次の通りです：小麦粉と砂糖"),
    # nothing inside quotes, code, URLs or numbers
    ("彼は「今日は休みです」と言いました。", "彼は「今日は休みです」と言ったでござる。"),
    ("『吾輩は猫である』は夏目漱石の小説です。", "『吾輩は猫である』は夏目漱石の小説でござる。"),
    ("「ありがとうございます。」", "「ありがとうございます。」"),
    ('彼は"OK です"と書きました。', '彼は"OK です"と書いたでござる。'),
    ("詳しくは https://example.com/help をご覧ください。", "詳しくは https://example.com/help をご覧くだされ。"),
    ("`git status` を実行します。", "`git status` を実行するでござる。"),
    ("コードは ```print('です。')``` です。", "コードは ```print('です。')``` でござる。"),
    ("円周率はおよそ3.14です。", "円周率はおよそ3.14でござる。"),
    ("価格は1,000円です。", "価格は1,000円でござる。"),
    # text without polite endings stays as it is
    ("今日は晴れだ。", "今日は晴れだ。"),
    ("拙者は侍でござる。", "拙者は侍でござる。"),
    ("", ""),
]


def test_table_is_large_enough():
    assert len(TABLE) >= 40
    assert len({src for src, _ in TABLE}) == len(TABLE)


@pytest.mark.parametrize("source,expected", TABLE, ids=[s[:12] or "empty" for s, _ in TABLE])
def test_rewrite_table(source, expected):
    assert to_gozaru(source) == expected


@pytest.mark.parametrize("source,expected", TABLE, ids=[s[:12] or "empty" for s, _ in TABLE])
def test_rewriting_twice_changes_nothing_more(source, expected):
    assert to_gozaru(expected) == expected


_JA = st.text(alphabet=list("ですますしたでしょうくださいありません山田本を読み食べ行き見来、。！？ 1.5"), max_size=30)


@settings(max_examples=200, deadline=None)
@given(_JA, _JA)
def test_quoted_text_never_changes(before, inside):
    inside = inside.replace("」", "").replace("「", "")
    text = before + "「" + inside + "」"
    out = to_gozaru(text)
    assert out.endswith("「" + inside + "」")


@settings(max_examples=200, deadline=None)
@given(_JA)
def test_idempotent_on_random_text(text):
    once = to_gozaru(text)
    assert to_gozaru(once) == once


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=list("山川空海花鳥風月あいうえおかきくけこ、。"), max_size=40))
def test_text_without_polite_endings_is_unchanged(text):
    assert to_gozaru(text) == text
