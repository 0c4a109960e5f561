"""Zero-error SER points (issue 14, class 10): drawn as their 95 % upper bound with a legend
entry saying so, printed as a bound; never as an invented value like 1e-9."""

import numpy as np

from neuralmimo.lab import figures
from neuralmimo.lab.sim import format_table
from neuralmimo.metrics import ErrorRate


def _records():
    out = []
    for snr, errors in ((0.0, 300), (10.0, 12), (20.0, 0)):
        n = 16_000
        r = ErrorRate(errors, n, "complex symbol")
        out.append({"snr_db": snr, "detector": "mmse", "ser": r.rate, "ci": list(r.ci), "ber": r.rate / 2,
                    "ber_ci": [0.0, 1.0], "n_symbols": n, "symbol_errors": errors, "snr_convention": "project",
                    "nt": 2, "nr": 4})
    return out


def test_zero_error_point_is_an_upper_bound_on_the_plot(tmp_path, monkeypatch):
    captured = {}
    real_save = figures.save_figure

    def keep(fig, path):
        captured["fig"] = fig
        real_save(fig, path)

    monkeypatch.setattr(figures, "save_figure", keep)
    recs = _records()
    figures.plot_ser(recs, tmp_path / "ser.png", "t")
    assert (tmp_path / "ser.png").stat().st_size > 5000
    ax = captured["fig"].axes[0]
    ys = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines() if len(line.get_ydata())])
    bound = recs[2]["ci"][1]
    assert 0 < bound < 4.0 / recs[2]["n_symbols"]  # the 95 % Wilson bound with no errors: 1.96^2 / n
    assert np.isclose(ys, bound).any()  # drawn at the bound
    assert ys.min() >= min(bound, recs[1]["ci"][0]) * 0.999  # nothing invented below
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("upper bound" in t for t in labels)


def test_zero_error_point_is_printed_as_a_bound():
    text = format_table(_records())
    row = [line for line in text.splitlines() if line.strip().startswith("20")][0]
    assert "<" in row and "0 errors" in row
