"""The processes of a run: one, or one per GPU under torchrun (RANK, WORLD_SIZE, LOCAL_RANK).

    procs = start_processes("cuda")        # under torchrun: joins the process group (nccl on CUDA, gloo on
                                           # CPU), even as its only process; procs.group says it did
    total = all_sum(local_sums, procs)     # a small tensor summed over the processes
    message = broadcast_text(text, procs)  # rank 0's string, in every process (e.g. an error to raise)
    broadcast_buffers(net, procs)          # rank 0's BatchNorm statistics, the checkpoint's, everywhere
    stop_processes(procs)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Processes:
    """This process's place in the run: rank, world size, device (cuda:LOCAL_RANK under DDP); group:
    whether it joined a process group (launched by torchrun), so the network is wrapped in DDP, with
    SyncBatchNorm where asked, at any world size (one process under torchrun runs what two would)."""

    rank: int
    world: int
    device: torch.device
    group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_processes(device: str) -> Processes:
    """One plain process, or this one of torchrun's (RANK in the environment): joins the process group
    (nccl on CUDA, gloo on CPU) and picks its GPU, also when torchrun started only this one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and "RANK" not in os.environ:
        return Processes(0, 1, torch.device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Processes(rank, world, torch.device(f"cuda:{local}" if cuda else device), group=True)


def stop_processes(procs: Processes) -> None:
    if procs.group and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: Tensor, procs: Processes) -> Tensor:
    """Sum a small tensor over the processes (itself with one process)."""
    if procs.world > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values


def broadcast_buffers(net: nn.Module, procs: Processes) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) in every process, in place. Without SyncBatchNorm
    each process updates them from its own share of the batch (DDP hands rank 0's out again at the start
    of each forward), so after an epoch they differ between processes; rank 0's are the checkpoint's."""
    if procs.world > 1:
        for buffer in net.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_text(text: str, procs: Processes) -> str:
    """Rank 0's `text` in every process (itself with one process)."""
    if procs.world == 1:
        return text
    box = [text]
    dist.broadcast_object_list(box, src=0)
    return box[0]
