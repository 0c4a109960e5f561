#!/usr/bin/env python3
"""Record a site's CSI log with the module's blocks, for per-site adaptation
(``neuralmimo learngene individual --site LOG``, ``neuralmimo adapt --csi LOG``):

    MIMO Frame Source -> MIMO Channel (the site) -> LS Channel Estimator -> CSI Logger

The default site is static: users that do not move, every frame UMi task 51's training channel 14
with fresh noise (generate the task once in the lab environment:
``neuralmimo umi generate --tasks 51 --ues 2000 --drop-per-ue``). Over the air, put the CSI Logger
after the receiver's LS Channel Estimator instead. Run with the rx environment::

    .venv/rx/bin/python examples/record_site_csi.py out/site/static-site-51 --frames 2000
"""

import argparse

from gnuradio import blocks, gr, neuralmimo

STATIC_SITE = ("{name: anchored, args: {rho: 1.0, anchor: 14, base: {name: umi-task, args: {task_id: 51, "
               "normalise: ue, ues_per_task: 2000, spatial_consistency: false}}}}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="CSI log folder (created; an existing log of the same size is continued)")
    p.add_argument("--frames", type=int, default=2000, help="frames to record (default 2000)")
    p.add_argument("--channel", default=STATIC_SITE, help="the site's channel (default: a static UMi site)")
    p.add_argument("--snr-db", type=float, default=25.0, help="SNR, project convention (default 25)")
    p.add_argument("--nr", type=int, default=32)
    p.add_argument("--nt", type=int, default=8)
    a = p.parse_args(argv)
    n_pilots, n_data = 16, 50
    tb = gr.top_block()
    src = neuralmimo.mimo_frame_source(nt=a.nt, n_pilots=n_pilots, n_data=n_data, modulation="qpsk", seed=1,
                                       n_frames=a.frames)
    chan = neuralmimo.mimo_channel(nt=a.nt, nr=a.nr, channel=a.channel, snr_db=a.snr_db,
                                   block_length=n_pilots + n_data, seed=2)
    est = neuralmimo.ls_channel_estimator(nr=a.nr, nt=a.nt, n_pilots=n_pilots, n_data=n_data)
    log = neuralmimo.csi_logger(nr=a.nr, nt=a.nt, folder=a.folder, chunk_frames=500, description=a.channel)
    for k in range(a.nt):
        tb.connect((src, k), (chan, k))
    for r in range(a.nr):
        tb.connect((chan, r), (est, r), (log, r))
        tb.connect((est, r), blocks.null_sink(gr.sizeof_gr_complex))
    tb.run()
    print(log.status())
    return log


if __name__ == "__main__":
    main()
