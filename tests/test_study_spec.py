"""Every study field is type- and range-checked before any run, with a one-line error naming the field:
fuzzed with hypothesis over wrong types, NaN and infinities, bools posing as ints, non-integer counts and
repeated values."""
import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from gozaru.lab.study.spec import PRESETS, StudySpec, load_spec_fields

COUNTS = ("sweep_widen", "sweep_steps", "bootstrap", "samples", "curve_every", "lora_rank", "shots")
NUMBERS = ("sweep_validation", "margin", "alpha")
NOT_A_NUMBER = st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.booleans(), st.text(max_size=3),
                         st.none(), st.lists(st.integers(), max_size=2))


def refused(fields: dict, name: str):
    with pytest.raises(ValueError) as e:
        StudySpec.from_dict({**PRESETS["quick"].to_dict(), **fields}).check()
    message = str(e.value)
    assert f"study field {name}" in message and "\n" not in message, message


def test_the_presets_pass():
    for spec in PRESETS.values():
        spec.check()


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(COUNTS),
       value=st.one_of(NOT_A_NUMBER, st.floats(allow_nan=False).filter(lambda x: x != int(x) if math.isfinite(x)
                                                                          else True), st.just(2.0)))
def test_counts_must_be_integers(name, value):
    refused({name: value}, name)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(COUNTS), value=st.integers(max_value=-1))
def test_counts_must_not_be_negative(name, value):
    refused({name: value}, name)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(NUMBERS), value=st.one_of(NOT_A_NUMBER, st.floats(max_value=0.0),
                                                       st.floats(min_value=1.0, allow_infinity=True)))
def test_fractions_must_be_finite_and_in_range(name, value):
    refused({name: value}, name)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(("seeds", "sweep_seeds")),
       value=st.one_of(st.lists(st.one_of(NOT_A_NUMBER, st.floats(0.5, 9.5).filter(lambda x: x != int(x))),
                                min_size=1, max_size=3),
                       st.integers(0, 50).map(lambda s: [s, s, s + 1])))        # a repeated seed
def test_seed_lists_hold_distinct_integers(name, value):
    refused({name: value}, name)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(("lrs", "sweep_factors")),
       bad=st.one_of(NOT_A_NUMBER, st.floats(max_value=0.0)))
def test_learning_rates_are_positive_finite_numbers(name, bad):
    good = [0.25, 0.5, 1.0, 2.0, 4.0]
    refused({name: good[:4] + [bad]}, name)


@pytest.mark.parametrize("fields, name", [
    ({"lrs": [0.002, 0.002]}, "lrs"),
    ({"sweep_factors": [1, 2, 4, 8]}, "sweep_factors"),                  # fewer than 5
    ({"sweep_factors": [1, 2, 3, 4, 5]}, "sweep_factors"),               # not log-spaced
    ({"seeds": [0]}, "seeds"),
    ({"seeds": [0, 1], "sweep_seeds": [1]}, "sweep_seeds"),              # tuning on an evaluation seed
    ({"positions": ["first", "first"]}, "positions"),
    ({"positions": ["top"]}, "positions"),
    ({"types": []}, "types"),
    ({"types": ["layers", 3]}, "types"),
    ({"head": "maybe"}, "head"),
    ({"head": True}, "head"),
    ({"shares": ["head", 1, 1]}, "shares"),
    ({"shares": ["head", 1.5]}, "shares"),
    ({"shares": ["head", True]}, "shares"),
    ({"shares": ["head", 0]}, "shares"),
    ({"shares": [math.nan]}, "shares"),
    ({"shares": []}, "shares"),
    ({"notes": 3}, "notes"),
])
def test_hand_picked_bad_values(fields, name):
    refused(fields, name)


def test_a_spec_file_with_nan_and_unknown_fields(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"lrs": [NaN]}')
    with pytest.raises(ValueError, match="study field lrs"):
        StudySpec.from_dict({**PRESETS["quick"].to_dict(), **load_spec_fields(str(path))}).check()
    path.write_text(json.dumps({"shots_": 1}))
    with pytest.raises(ValueError, match="unknown study field"):
        load_spec_fields(str(path))
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_spec_fields(str(path))
