"""Figure helpers shared by the lab: headless matplotlib, saving, the SER-vs-SNR plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLES = ["-", "--", "-.", ":"]
MARKERS = "osv^D"


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Tight layout, write ``path`` (folder created), close the figure."""
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_ser(records: list[dict], path, title: str = "") -> None:
    """SER-vs-SNR PNG, one curve per ``detector``, 95 % intervals (``ci``) as error bars. A point
    without errors has no value on a log axis: it is drawn as its 95 % upper bound (``ci[1]``)
    with a downward triangle, never as an invented small value."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    any_bound = False
    for i, d in enumerate(dict.fromkeys(r["detector"] for r in records)):
        rs = [r for r in records if r["detector"] == d]
        seen = [r for r in rs if r["ser"] > 0]
        zero = [r for r in rs if r["ser"] <= 0]
        # distinct line styles and markers: detectors with identical decisions (ML, K-best with a
        # large K) stay visible on top of each other
        label = rs[0].get("label", d.upper())
        line = ax.errorbar([r["snr_db"] for r in seen], [r["ser"] for r in seen],
                           yerr=[[r["ser"] - r["ci"][0] for r in seen], [r["ci"][1] - r["ser"] for r in seen]],
                           marker=MARKERS[i % len(MARKERS)], linestyle=STYLES[i % len(STYLES)], capsize=3,
                           markersize=max(3, 7 - i), label=label)
        if zero:
            any_bound = True
            ax.plot([r["snr_db"] for r in zero], [r["ci"][1] for r in zero], linestyle="none", marker="v",
                    markersize=7, markerfacecolor="none", color=line[0].get_color())
    if any_bound:
        ax.plot([], [], linestyle="none", marker="v", markerfacecolor="none", color="gray",
                label="no errors: 95 % upper bound")
    ax.set_yscale("log")
    conv = records[0]["snr_convention"] if records else "project"
    ax.set_xlabel(f"SNR [dB] ({conv} convention)")
    ax.set_ylabel("SER (per complex symbol)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title)
    save_figure(fig, path)
