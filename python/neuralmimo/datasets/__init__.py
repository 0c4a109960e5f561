"""Data for training and evaluation: synthetic frames over any channel model (:mod:`.synthetic`):
frames with pilots (:func:`draw_frames`) and batches of channels at random SNRs with known or
LS-estimated CSI (:func:`draw_channel_batch`, used by HyperMIMO and DetNet/WeSNet training)."""

from .synthetic import CSI_KINDS, PILOTS, ChannelBatch, Frames, draw_channel_batch, draw_frames

__all__ = ["CSI_KINDS", "PILOTS", "ChannelBatch", "Frames", "draw_channel_batch", "draw_frames"]
