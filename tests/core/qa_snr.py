"""SNR conventions and their converter."""

import math

from neuralmimo.snr import convert_snr_db, noise_variance


def test_snr_conventions_convert_consistently():
    kw = dict(channel_energy=32 * 8, nr=32, nt=8)
    nv = noise_variance(10.0, "project", **kw)
    assert math.isclose(nv, 8 / 10.0)  # E||Hx||^2 / Nr = Nt for unit-power entries
    for conv in ("deepsic", "detnet"):
        s = convert_snr_db(10.0, "project", conv, **kw)
        assert math.isclose(noise_variance(s, conv, **kw), nv, rel_tol=1e-12)
    # DetNet: mean column energy (Nr) over per-dimension noise (nv / 2)
    assert math.isclose(convert_snr_db(10.0, "project", "detnet", **kw), 10 * math.log10(32 / (nv / 2)), rel_tol=1e-12)
