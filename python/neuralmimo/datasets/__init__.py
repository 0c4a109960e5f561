"""Data for training and evaluation: synthetic frames over any channel model (:mod:`.synthetic`)."""

from .synthetic import PILOTS, Frames, draw_frames

__all__ = ["PILOTS", "Frames", "draw_frames"]
