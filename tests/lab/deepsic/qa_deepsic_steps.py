"""The DeepSIC pipeline's complexity analysis [MH] Prop. 1 / Corollary 1 from the actual parameter counts."""

import pytest
from neuralmimo.detectors.deepsic.model import (
    paper_hyper_params,
)
from neuralmimo.lab.deepsic import DeepSICConfig, complexity


@pytest.mark.parametrize("n,k", [(12, 8), (20, 14)])
def test_corollary_1_saving_below_paper_bound(n, k):
    """Sec. IV-B: C_hyper / C_online < 0.2 for both fixed-K configurations (from the counts)."""
    cfg = DeepSICConfig.from_dict({"receiver": {"n_rx": n, "k_max": n}})
    c = complexity(cfg, k, 800, 15_200)
    assert c["theta"] == 16 * (n + k + 1) + 18 and c["phi_hyper"] == paper_hyper_params(n, n)
    assert c["ratio_prop1"] < 0.2 and c["ratio_cor1"] < 0.2
