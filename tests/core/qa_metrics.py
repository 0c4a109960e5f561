"""Error-rate intervals: Wilson, frame-clustered and their union."""

import pytest
import torch
from neuralmimo.metrics import clustered_interval, error_rate_interval, wilson_interval


def test_clustered_interval_is_the_standard_error_over_frames():
    e = torch.tensor([0, 10, 0, 10])  # all-or-nothing frames: strongly clustered errors
    lo, hi = clustered_interval(e, 10)
    se = float((e / 10.0).std()) / 2
    assert (lo, hi) == pytest.approx((max(0, 0.5 - 1.959964 * se), min(1, 0.5 + 1.959964 * se)), rel=1e-5)
    # the binomial interval ignores the clustering and is much narrower
    w = wilson_interval(20, 40)
    assert (hi - lo) > 1.5 * (w[1] - w[0])
    u = error_rate_interval(e, 10)
    assert u[0] <= min(lo, w[0]) + 1e-12 and u[1] >= max(hi, w[1]) - 1e-12
    # unequal frame sizes: the ratio estimator
    lo2, hi2 = clustered_interval([1, 3, 3], [10, 20, 30])
    assert lo2 < 7 / 60 < hi2
