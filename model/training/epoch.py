"""One epoch of training: `Trainer.train_epoch`, the step, the learning rate, the running sums.

    trainer = Trainer(config, procs, net, train_net, optimizer, runtime, train_data, steps)
    sums, lr = trainer.train_epoch(epoch, start_step, sums, bar, checkpoint)

A step never waits for the device: the running sums (SUMS: the prediction's cross-entropy, correct
predictions, the heads' summed loss, clips) stay there and are copied back without blocking every
LOG_EVERY steps (`SumsReader`); each copy is read when the next is sent, LOG_EVERY steps later, by when
it has long arrived. Every process reads the same sums (summed over the processes) at the same steps, so
a NaN loss stops them all at one step, within 2 x LOG_EVERY steps of it. (Reading a copy as soon as it
had arrived, which differs between GPUs, let one process stop while the others went on into the next
step's all-reduce; torchrun then tore the group down.) Labels were checked once per split (`SplitData`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.data.split import SplitData
from model.networks.ccdfarm import heads_loss
from model.networks.dropout import dropout_keys, sample_keys
from model.training.checkpoint import SUMS
from model.training.config import TrainConfig
from model.training.distributed import Processes, all_sum, broadcast_buffers
from model.training.runtime import Runtime
from ntu_pipeline.errors import NonFiniteLossError
from ntu_pipeline.progress import ProgressBar

LOG_EVERY = 10  # steps between progress updates and loss checks
LOSS, CORRECT, HEADS_LOSS, CLIPS = range(len(SUMS))


def learning_rate(step: int, total_steps: int, warmup_steps: int, base: float, schedule: str = "cosine",
                  decay: float = 1.0, steps_per_epoch: int = 1, milestones: tuple[int, ...] = ()) -> float:
    """lr at optimiser step `step` (0-based): linear warm-up to `base` over `warmup_steps`, then cosine
    annealing to 0 at `total_steps` ("cosine"), `decay` per epoch of `steps_per_epoch` ("exp"), or
    `decay` at each of `milestones` (epochs from the start, as CTR-GCN and mmcv's step policy count:
    the rate of epoch e is base x decay ** (milestones <= e), "step")."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    if schedule == "exp":
        return base * decay ** ((step - warmup_steps) / steps_per_epoch)
    if schedule == "step":
        epoch = step // steps_per_epoch
        return base * decay ** sum(epoch >= milestone for milestone in milestones)
    span = max(total_steps - warmup_steps, 1)
    return base * 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The torch seed set before a training step, a pure function of its arguments: for a random op a
    network draws from torch's generator (this project's dropout draws from `sample_keys` instead, the
    same for a sample whichever process holds it)."""
    return int(np.random.SeedSequence([seed, epoch, step, rank, 2]).generate_state(1, np.uint64)[0] >> 1)


class TrainProgress(ProgressBar):
    """The stdlib progress bar with the running loss, accuracy and learning rate after the rate."""

    postfix = ""

    def line(self) -> str:
        return f"{super().line()} {self.postfix}"


class SumsReader:
    """The running sums read back without making a step wait: `send` starts a non-blocking copy into
    pinned memory (CUDA), `take` gives the copy sent last (None before the first). Taken LOG_EVERY steps
    after it was sent, a copy has long arrived: the event's wait returns at once."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.host = torch.zeros(len(SUMS), dtype=torch.float64, pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None
        self.waiting = False

    def send(self, sums: Tensor) -> None:
        self.host.copy_(sums, non_blocking=self.cuda)
        if self.event is not None:
            self.event.record()
        self.waiting = True

    def take(self) -> Tensor | None:
        if not self.waiting:
            return None
        if self.event is not None:
            # not event.query(): whether the copy has arrived differs between processes, and every
            # process must decide on a NaN at the same step
            self.event.synchronize()
        self.waiting = False
        return self.host.clone()


def check_finite(sums: Tensor, epoch: int, step: int, lr: float) -> None:
    if not (math.isfinite(float(sums[LOSS])) and math.isfinite(float(sums[HEADS_LOSS]))):
        raise NonFiniteLossError(
            f"the training loss became {float(sums[HEADS_LOSS])} in epoch {epoch + 1} by step {step} (lr "
            f"{lr:.3g}); no checkpoint was written after it. Lower --lr or check the data")


@dataclass
class Trainer:
    """What one epoch needs: the config, the processes, the network (`net`, and `train_net` wrapping it
    in DDP and torch.compile where asked), the optimizer, the runtime, the data, steps per epoch."""

    config: TrainConfig
    procs: Processes
    net: nn.Module
    train_net: nn.Module
    optimizer: torch.optim.Optimizer
    runtime: Runtime
    data: SplitData
    steps: int

    def lr(self, global_step: int) -> float:
        c = self.config
        return learning_rate(global_step, c.epochs * self.steps, round(c.warmup_epochs * self.steps),
                             c.base_lr(), c.schedule, c.lr_decay, self.steps, c.recipe.milestones)

    def train_epoch(self, epoch: int, start_step: int, sums: Tensor, bar: TrainProgress,
                    checkpoint: Callable[[int, Tensor], None]) -> tuple[Tensor, float]:
        """Train one epoch from `start_step` on, adding into `sums` (SUMS, on the device); calls
        `checkpoint(step, global sums)` every `checkpoint_every` steps. Returns the sums and the last lr."""
        c, procs = self.config, self.procs
        reader = SumsReader(procs.device)
        lr = self.lr(epoch * self.steps + start_step)
        self.net.train()
        batches = self.data.batches(epoch, c.batch_size, True, start_step)
        for step, batch in enumerate(batches, start=start_step):
            torch.manual_seed(step_seed(c.seed, epoch, step, procs.rank))
            lr = self.lr(epoch * self.steps + step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            with dropout_keys(self.net, sample_keys(c.seed, epoch, batch.positions)):
                out = self.runtime.forward(self.train_net, batch.rgb, batch.skeleton, batch.motion,
                                           batch.heatmaps)
            loss = heads_loss(out, batch.labels, check_range=False)  # labels: checked per split
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c.clip_norm > 0:
                nn.utils.clip_grad_norm_(self.net.parameters(), c.clip_norm)
            self.optimizer.step()
            b = len(batch.labels)
            logits = out["logits"].detach().float()
            sums += torch.stack([F.cross_entropy(logits, batch.labels) * b,
                                 (logits.argmax(1) == batch.labels).sum(), loss.detach() * b,
                                 torch.full((), b, device=sums.device)]).double()
            bar.advance(c.batch_size)
            if (step + 1) % LOG_EVERY == 0:  # the same steps in every process
                seen = reader.take()  # the sums sent LOG_EVERY steps ago, every process's
                if seen is not None:
                    check_finite(seen, epoch, step, lr)
                    bar.postfix = (f"loss {seen[LOSS] / seen[CLIPS]:.4f} top1 "
                                   f"{seen[CORRECT] / seen[CLIPS]:.3f} lr {lr:.3g}")
                reader.send(all_sum(sums, procs))
            if c.checkpoint_every and (step + 1) % c.checkpoint_every == 0 and step + 1 < self.steps:
                total = all_sum(sums, procs)  # every process takes part; rank 0 writes
                check_finite(total.cpu(), epoch, step + 1, lr)
                checkpoint(step + 1, total)
        # the test split is evaluated, in every process, with the statistics last.pt holds (rank 0's)
        broadcast_buffers(self.net, procs)
        return sums, lr
