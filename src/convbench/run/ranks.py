"""Where this process stands among a run's processes, and what they do together: PyTorch's own
machinery (torchrun's environment, a gloo process group), no scheduler of ours.

`torchrun --nproc-per-node=N -m convbench train ...` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK and the rendezvous in their environment (`convbench train trainer.devices=N` starts
them itself, convbench.launch.distributed). Every process joins one process group: gloo, which
carries the small control messages (the run folder's name, a stop request, the epoch's sums) on
the CPU whatever the device, and, for CUDA training, an NCCL group for DistributedDataParallel's
gradients.

What each rank does:
- rank 0 alone writes the run folder (config, TensorBoard, checkpoints, status, metrics, lock);
  the others log nothing to it;
- every rank takes an equal shard of each epoch's permutation (see convbench.data.Batches);
- sums that make a metric (loss, correct predictions, images, the confusion matrix) are added
  over the ranks, so every rank reports the same numbers;
- a stop signal on any rank stops every rank after the same step.
"""

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Place:
    """Where this process stands in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def place() -> Place:
    """From torchrun's environment; a single process when it is not set."""
    if not all(name in os.environ for name in ENVIRONMENT):
        return Place()
    return Place(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    )


def join(here: Place) -> None:
    """Join the run's process group (gloo; idempotent). The rendezvous is torchrun's."""

    if here.is_distributed and not dist.is_initialized():
        dist.init_process_group("gloo", rank=here.rank, world_size=here.world_size)


def broadcast_text(text: str | None, here: Place) -> str:
    """Rank 0's `text`, on every rank."""

    if not here.is_distributed:
        return text or ""
    holder = [text if here.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


class Solo:
    """The collective operations of a single process: nothing to add up, nobody to wait for."""

    place = Place()

    def sum(self, values):
        return values

    def any(self, flag: bool) -> bool:
        return flag

    def gather(self, value) -> list:
        return [value]


class Group:
    """The collective operations of one rank among several (over the gloo group, on the CPU, so
    no control message waits for a GPU)."""

    def __init__(self, here: Place):
        self.place = here

    def sum(self, values):
        """Element-wise sum over the ranks of a tensor (a CPU copy is sent; the result comes
        back on the tensor's device)."""

        total = values.detach().to("cpu", copy=True)
        dist.all_reduce(total)
        return total.to(values.device)

    def any(self, flag: bool) -> bool:

        return bool(self.sum(torch.tensor([int(flag)])).item())

    def gather(self, value) -> list:
        """Every rank's `value` (picklable), in rank order, on every rank."""

        gathered = [None] * self.place.world_size
        dist.all_gather_object(gathered, value)
        return gathered


def collective(here: Place):
    return Group(here) if here.is_distributed else Solo()


def leave() -> None:
    """Leave the process group, if this process joined one, after its peers have finished
    too (a barrier), and before the interpreter's own teardown: a rank that destroys its group
    while a peer still talks to it, or one that exits holding it, may abort ("terminate called
    without an active exception"). Only on the way out of a run that ended well: after a
    failure a peer may never reach the barrier, and torchrun stops the others anyway."""

    if "torch.distributed" not in sys.modules:
        return

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
