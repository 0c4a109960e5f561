"""The one training loop of every family: seeded epochs of mini-batches, an optimiser step per
batch, one history record per epoch, a progress hook -- data-parallel under ``torchrun`` and
resumable from checkpoints.

A family supplies ``batches(epoch)`` (its own seeded shuffling and data) and ``step(batch)``
returning ``(loss, value, weight)``: ``loss`` is back-propagated, ``value`` (a float, e.g. the
loss without a regulariser) enters the epoch's weighted mean with ``weight`` (e.g. the batch
size). The loop itself draws no random numbers, so a family's results depend only on its seeds.

**Data parallelism** (``docs/training.md``). Under ``torchrun`` (:func:`init_distributed`) every
process runs the same loop on its own share of each global batch and the gradients are averaged
over the processes before every optimiser step, weighted by each share's ``weight`` -- the
computation of PyTorch's ``DistributedDataParallel`` (one all-reduce of the flattened gradients
per step), done in the loop because the families' steps call their models in their own ways
(hypernetworks writing other networks' weights, bare parameter tensors). The global batch is
kept fixed and the learning rate unchanged: a family draws its share with :func:`shard` (slices
of the single-process batch: the same samples, the same result up to the order of a float sum)
or with :func:`local_batch` + :func:`rank_seed` (its own seeded draw of ``batch / world``
fresh samples). Float buffers (batch-norm running statistics) are averaged over the processes
at the end of every epoch, so every process holds the same model. :func:`solo` turns the
all-reduce off for independent runs spread over the processes (:func:`my_share`).

**Checkpoints.** Inside :func:`checkpointing` (set by the lab's run folder) and a named
:func:`checkpoint_stage`, the loop writes every ``every`` epochs the parameters, the model's
buffers, the optimiser state, the generators it was given, the global torch RNG state, the
family's ``state`` dict and the history (safetensors + JSON, atomically: never pickle); with
``resume`` it starts from the stage's last checkpoint, so a killed run continued with the same
seeds ends bit for bit where the uninterrupted run would (tested).
"""

from .checkpoint import Carry, Checkpoint, CheckpointPolicy, checkpoint_policy, checkpoint_stage, checkpointing
from .device import check_device, current_device, device_name, device_selected, to_device, use_device
from .distributed import (barrier, each_job, init_distributed, is_main, local_batch, my_share, process_count,
                          process_rank, rank_seed, shard, solo, world, writer)
from .loop import train_loop

__all__ = ["Carry", "Checkpoint", "CheckpointPolicy", "barrier", "check_device", "checkpoint_policy",
           "checkpoint_stage", "checkpointing", "current_device", "device_name", "device_selected", "each_job",
           "init_distributed", "is_main", "local_batch", "my_share", "process_count", "process_rank", "rank_seed",
           "shard", "solo", "to_device", "train_loop", "use_device", "world", "writer"]
