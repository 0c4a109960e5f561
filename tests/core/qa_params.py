"""The one validation layer (neuralmimo.params) and the tables that use it, fuzzed with
hypothesis: a declared parameter accepts exactly its range, never raises anything but
ParamError (a ValueError), and every door (constructor, CLI type, config) uses the same entry."""

from __future__ import annotations

import argparse
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuralmimo.channels.impairments import PARAMS as RADIO, RadioImpairments, check_drop_length, check_stream_cfo
from neuralmimo.params import Param, ParamError, safe_name
from neuralmimo.receiver.framesync import PARAMS as SYNC
from neuralmimo.site.retrain import PARAMS as RETRAIN, RetrainSettings, check_extra_args, drift_frame

ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=20), st.lists(st.integers(), max_size=3), st.complex_numbers())
TABLES = {**{f"radio.{k}": v for k, v in RADIO.items()}, **{f"sync.{k}": v for k, v in SYNC.items()},
          **{f"retrain.{k}": v for k, v in RETRAIN.items()}}


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(TABLES)), value=ANYTHING)
def test_a_declared_parameter_accepts_its_range_and_refuses_the_rest_with_one_error_type(name, value):
    p = TABLES[name]
    try:
        v = p.check(value, name)
    except ParamError as exc:
        assert name in str(exc) and "\n" not in str(exc)
        return
    assert isinstance(v, p.kind)
    if p.kind is float:
        assert math.isfinite(v)
    if p.lo is not None:
        assert v >= p.lo and not (p.lo_open and v == p.lo)
    if p.hi is not None:
        assert v <= p.hi and not (p.hi_open and v == p.hi)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=30))
def test_the_command_line_type_is_the_same_declaration(text):
    p = RADIO["drop_rate"]
    parse = p.arg("--drop-rate")
    try:
        v = parse(text)
    except argparse.ArgumentTypeError:
        try:
            p.check(float(text))
        except (ValueError, ParamError):
            return
        raise AssertionError(f"the CLI refused {text!r}, the declaration accepts it")
    assert v == p.check(float(text))


@pytest.mark.parametrize("values", [dict(drop_rate=1.5), dict(sro_ppm=1e6), dict(cfo=float("nan")),
                                    dict(sro_ppm=-2e3), dict(phase_noise=-1), dict(drop_length=(5, 2))])
def test_radio_impairments_refuse_values_no_radio_has(values):
    with pytest.raises(ValueError, match=next(iter(values))):
        RadioImpairments(2, **values)


@settings(max_examples=200, deadline=None)
@given(value=ANYTHING)
def test_stream_cfo_and_drop_length_checks_raise_only_param_errors(value):
    for check in (lambda: check_stream_cfo(value, 2), lambda: check_drop_length(value)):
        try:
            check()
        except ParamError:
            pass


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=40))
def test_a_writer_name_never_leaves_its_folder(name):
    try:
        safe_name(name)
    except ParamError:
        return
    assert "/" not in name and "\\" not in name and not name.startswith(".") and name not in ("", ".", "..")


@settings(max_examples=200, deadline=None)
@given(frame=ANYTHING)
def test_a_drift_event_frame_is_a_whole_number_or_refused(frame):
    try:
        v = drift_frame({"event": "drift", "frame": frame})
    except ParamError:
        return
    assert isinstance(v, int) and v >= 0


@pytest.mark.parametrize("args, ok", [(("--lr", "1e-4"), True), (("--lr", "0"), False), (("--lr",), False),
                                      (("--out", "/tmp"), False), (("--batch", "64", "--seed", "3"), True),
                                      (("--batch", "x"), False)])
def test_retrainer_extra_args_are_checked_when_the_block_is_built(tmp_path, args, ok):
    if ok:
        assert check_extra_args(args) == args
        RetrainSettings(tmp_path, tmp_path, extra_args=args)
    else:
        with pytest.raises(ValueError):
            RetrainSettings(tmp_path, tmp_path, extra_args=args)


@pytest.mark.parametrize("field, value", [("nice", -5), ("nice", 40), ("budget_s", float("nan")), ("budget_s", 0),
                                          ("min_frames", 0), ("steps", 1.5)])
def test_retrainer_settings_are_checked(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        RetrainSettings(tmp_path, tmp_path, **{field: value})


def test_a_malformed_drift_event_is_ignored_and_the_next_one_served(tmp_path):
    from neuralmimo.site.retrain import BackgroundRetrainer

    r = BackgroundRetrainer(RetrainSettings(tmp_path / "log", tmp_path / "watch"), base=str(tmp_path / "m"))
    for bad in ("seven", float("nan"), [3], -1, True):
        (e,) = r.on_status({"event": "drift", "frame": bad})
        assert e["event"] == "retrain-ignored" and "malformed" in e["reason"] and r.state == "idle"
    (e,) = r.on_status({"event": "drift", "frame": 12})
    assert e["event"] == "retrain-collecting" and r.drift_frame == 12


def test_param_declarations_describe_themselves():
    assert Param(float, 0, 1, hi_open=True, unit="x").describe() == "a finite number in [0, 1) [x]"
    assert Param(int, 1).describe() == "a whole number >= 1"
