"""Background Re-trainer in a running flowgraph (gnuradio.neuralmimo.apps.adapt_demo): the users of a
loopback move from local-scattering drop 0 to drop 5 while the shipped HyperMIMO for drop 0 runs;
the detector's drift event starts `neuralmimo adapt` on the CSI Logger's frames since the
drift, the new bundle is swapped in at a frame boundary, no vector is lost, and the adapted
model detects the new positions better than the old one on the same vectors (> 4 standard
errors). A bare drift event with no model known is refused on the status port."""

import math
import time
from pathlib import Path

import pmt
import pytest
from gnuradio import blocks, gr
from gnuradio.neuralmimo import background_retrainer
from gnuradio.neuralmimo.apps.adapt_demo import AdaptDemoSettings, compare_on_channel, run_adapt_demo

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.timeout(600)


def test_users_move_drift_retrain_swap_and_recover(tmp_path):
    s = AdaptDemoSettings(model=ROOT / "models" / "hypermimo-ls12x6-drop0", out=tmp_path / "run", move_frame=400,
                          min_frames=400, post_frames=300, budget_s=150.0, steps=3000)
    res = run_adapt_demo(s, progress=False)
    assert res["swap_bundle"] is not None and "adapted-" in res["swap_bundle"], res["events"]
    assert res["lost_vectors"] == 0 and res["vectors_detected_mmse"] == res["vectors_sent"]
    assert res["move_frame"] <= res["drift_frame"] < res["swap_frame"]
    started = next(e for e in res["retrainer_events"] if e["event"] == "retrain-started")
    assert started["since_frame"] == res["drift_frame"]
    assert res["segments"]["after adaptation"]["neural"]["frames"] == 300
    assert (s.out / "adapt_demo.png").stat().st_size > 0 and (s.out / "results.json").is_file()
    # the shipped LMMSE-start model already beats MMSE on the new positions: the gain of a short
    # adaptation is ~10 %, so the comparison needs ~5.8 million symbols per model (a second or two)
    c = compare_on_channel({"old": s.model, "adapted": res["swap_bundle"]}, s.new_channel, s, [8.0], frames=4000)
    p_old, p_new, n = c["ser"]["old"][0], c["ser"]["adapted"][0], c["symbols_per_point"]
    se = math.sqrt((p_old * (1 - p_old) + p_new * (1 - p_new)) / n)
    assert p_old - p_new > 4 * se, (p_old, p_new, se)


def test_drift_without_a_known_model_is_refused_on_status(tmp_path):
    rt = background_retrainer(str(tmp_path / "log"), str(tmp_path / "watch"))
    src = blocks.message_strobe(pmt.to_pmt({"event": "drift", "frame": 7}), 100)
    dbg = blocks.message_debug()
    tb = gr.top_block()
    tb.msg_connect((src, "strobe"), (rt, "status"))
    tb.msg_connect((rt, "status"), (dbg, "store"))
    tb.start()
    t0 = time.monotonic()
    while dbg.num_messages() == 0 and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    tb.stop()
    tb.wait()
    first = pmt.to_python(dbg.get_message(0))
    assert first["event"] == "retrain-failed" and "no model in force" in first["reason"]
    assert rt.events()[0]["event"] == "retrain-failed"
