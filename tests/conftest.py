"""Shared pytest configuration: one torch thread (the machines have 2 shared cores)."""

import torch

torch.set_num_threads(1)
