"""The one parser of rule and scale specs (used by convert() and the detectron2 config)."""

import math

import pytest

from signsym_det.feedback import (
    BACKPROP,
    PLAIN,
    SCALES,
    check_scale,
    parse_layer_spec,
    parse_rule,
)


def test_plain_is_none_in_any_case_and_rules_resolve_aliases():
    assert (PLAIN, BACKPROP) == ("none", "bp")
    for value in (None, "none", " NONE ", "None"):
        assert parse_rule(value) is None
    assert parse_rule("usf") == "sign_symmetry"
    assert parse_rule(" KP ") == "kolen_pollack"


@pytest.mark.parametrize("value", ["sgn", "", 3, ["fa"]])
def test_bad_rules_name_the_value(value):
    with pytest.raises(ValueError, match=repr(value).replace("[", r"\[").replace("]", r"\]")):
        parse_rule(value)


def test_scales_names_numbers_and_number_strings():
    assert [check_scale(name) for name in SCALES] == list(SCALES)
    assert check_scale(2) == 2.0 and isinstance(check_scale(2), float)
    assert check_scale("0.5") == 0.5  # as a YAML config holds it


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan, "inf", "0", "big", "", True, None])
def test_bad_scales_name_the_value_and_the_choices(value):
    with pytest.raises(ValueError, match=r"invalid feedback scale .*xiao, unit.* or a float > 0"):
        check_scale(value)


def test_layer_specs():
    assert parse_layer_spec("fa") == ("fa", None)
    assert parse_layer_spec(None, ("fa", "unit")) == (None, "unit")
    assert parse_layer_spec({"scale": "0.25"}, ("usf", None)) == ("sign_symmetry", 0.25)
    assert parse_layer_spec({"rule": "none", "scale": "xiao"}) == (None, "xiao")
    with pytest.raises(ValueError, match=r"here: unknown keys \['rul'\]; valid keys: rule, scale"):
        parse_layer_spec({"rul": "fa"}, where="here")
    with pytest.raises(ValueError, match=r"here: invalid feedback scale 'huge'"):
        parse_layer_spec({"rule": "fa", "scale": "huge"}, where="here")
