"""The ござる rewriter is linear (no rescans per unclosed bracket or quote) and uses no sentinel characters:
any number of protected spans works and private-use characters in the input come back as they were."""
import time

import pytest

from gozaru.data import to_gozaru


@pytest.mark.parametrize("opener", ["「", "『", "“", "`", '"', "```"])
def test_many_unclosed_openers_are_linear(opener):
    text = ("確認します" + opener) * 20_000 + "です。"
    t = time.perf_counter()
    out = to_gozaru(text)
    assert time.perf_counter() - t < 2.0
    assert out.endswith("でござる。")


def test_200k_unclosed_brackets_under_2s():
    text = "「" * 200_000 + "です。"
    t = time.perf_counter()
    assert to_gozaru(text) == "「" * 200_000 + "でござる。"
    assert time.perf_counter() - t < 2.0


def test_more_than_131072_protected_spans():
    text = "「a」" * 140_000 + "です。"
    assert to_gozaru(text) == "「a」" * 140_000 + "でござる。"


@pytest.mark.parametrize("pua", ["\U000F0000", "\U000F0001", "\ue000", "\ufffc", "\U0010FFFD"])
def test_private_use_characters_round_trip(pua):
    text = f"「引用」{pua}と{pua}「もう一つ」です。"
    assert to_gozaru(text) == f"「引用」{pua}と{pua}「もう一つ」でござる。"
    plain = f"{pua}「x」"
    assert to_gozaru(plain) == plain
