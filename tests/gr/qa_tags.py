"""The tag contract's PMT conversions (gnuradio.neuralmimo.tags): every key once, CSI as a
row-major c32vector both ways, malformed values refused with the reason, UHD's rx_time."""

import numpy as np
import pmt
import pytest
import torch
from gnuradio.neuralmimo import tags


def test_every_key_is_defined_once_and_distinct():
    keys = [v for k, v in vars(tags).items() if k.isupper() and isinstance(v, str)]
    assert len(keys) == len(set(keys)) == 13 and "frame_start" in keys and tags.RX_TIME == "rx_time"


def test_user_phase_round_trips_and_refuses_what_no_oscillator_gives():
    """user_phase: each user's rotation at the first data vector, then its rate (issue 31)."""
    v = tags.user_phase_to_pmt(np.array([0.1, -0.2]), np.array([1e-3, -2e-3]))
    first, rate = tags.pmt_to_user_phase(v, 2)
    assert np.allclose(first, [0.1, -0.2]) and np.allclose(rate, [1e-3, -2e-3], rtol=1e-6)
    for bad, words in ((pmt.from_double(1.0), "not an f32vector"), (pmt.init_f32vector(3, [0.0] * 3), "2 Nt"),
                       (pmt.init_f32vector(4, [0.0, 0.0, 4.0, 0.0]), "beyond pi"),
                       (pmt.init_f32vector(4, [float("nan"), 0.0, 0.0, 0.0]), "NaN")):
        with pytest.raises(ValueError, match=words):
            tags.pmt_to_user_phase(bad, 2)


def test_csi_round_trips_row_major():
    h = torch.arange(6, dtype=torch.float32).reshape(2, 3).to(torch.complex64) * (1 + 2j)
    v = tags.csi_to_pmt(h)
    assert pmt.is_c32vector(v) and np.allclose(pmt.c32vector_elements(v), h.reshape(-1).numpy())
    assert torch.equal(tags.pmt_to_csi(v, 2, 3), h)
    assert torch.equal(tags.pmt_to_csi(tags.csi_to_pmt(h.conj()), 2, 3), h.conj().resolve_conj())


@pytest.mark.parametrize("value,words", [
    (pmt.from_double(1.0), "not a c32vector"),
    (pmt.init_c32vector(5, [0j] * 5), "5 entries"),
    (pmt.init_c32vector(6, [float("nan")] + [0j] * 5), "NaN"),
])
def test_malformed_csi_is_refused_with_the_reason(value, words):
    with pytest.raises(ValueError, match=words):
        tags.pmt_to_csi(value, 2, 3)


def test_numbers_and_rx_time():
    assert tags.tag_int(pmt.from_long(-3)) == -3 and tags.tag_int(pmt.from_uint64(2**40)) == 2**40
    assert tags.tag_int(pmt.from_double(1.0)) is None and tags.tag_int(pmt.intern("x")) is None
    assert tags.tag_float(pmt.from_long(2)) == 2.0 and tags.tag_float(pmt.intern("x")) is None
    whole, frac = tags.rx_time_value(tags.rx_time_pmt(12.25))
    assert (whole, frac) == (12, 0.25)
    assert tags.rx_time_value(pmt.from_double(1.0)) is None
    assert tags.rx_time_value(pmt.make_tuple(pmt.intern("a"), pmt.from_double(0.5))) is None


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(whole=st.integers(min_value=0, max_value=2**63 - 1),
       frac=st.floats(allow_nan=True, allow_infinity=True))
def test_rx_time_values_are_accepted_only_when_they_are_times(whole, frac):
    """Issue 29, class 4: a NaN/Inf fraction, or one outside [0, 1), is malformed (None): every
    block that follows rx_time (Frame Sync, the LS estimator, the recorder) then reports and ignores it."""
    import math

    import pmt

    from gnuradio.neuralmimo.tags import rx_time_value

    v = rx_time_value(pmt.make_tuple(pmt.from_uint64(whole), pmt.from_double(frac)))
    if math.isfinite(frac) and 0.0 <= frac < 1.0:
        assert v == (whole, frac)
    else:
        assert v is None
