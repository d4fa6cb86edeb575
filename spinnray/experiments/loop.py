"""The one epoch loop of every training run on the cores.

Mini-batches in a seeded order per epoch, a progress bar (loss, accuracy, events/s),
checkpoints every ``checkpoint.every`` mini-batches, and a restart from the last checkpoint
after a machine failure.  What differs between runs comes in as two callables:
``step(trainer, idx, pos)`` trains one mini-batch of the training samples ``idx`` and returns
the forward result (with ``outputs["loss"]`` and ``outputs["pred"]``); ``end_epoch(trainer,
epoch, pos)`` tests, appends the history row and sets the next learning rate.

:class:`Position` is everything the loop needs to continue exactly where it was (it is what a
checkpoint stores besides the cores' state and the random generator).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from spinnray.errors import ConfigError, SpinnrayError
from spinnray.experiments.summary import events_rate, progress

__all__ = ["Position", "run_epochs"]


@dataclass
class Position:
    """Where training is: ``epoch`` (0-based), ``first`` (the next sample of the epoch's
    ``order``), the learning rate, the history rows so far, the epoch's ``losses`` and ``correct``
    count, the time and events spent training (``train_s``; the epoch's ``epoch_s`` and
    ``epoch_events``), samples trained and tested, mini-batches done, and the rule's own
    ``counters`` (e.g. EventProp's weight bumps)."""

    lr: float
    epoch: int = 0
    first: int = 0
    order: np.ndarray | None = None
    history: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    correct: int = 0
    train_s: float = 0.0
    samples: int = 0
    tested_samples: int = 0
    batches: int = 0
    epoch_s: float = 0.0
    epoch_events: int = 0
    counters: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Position":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def run_epochs(box: dict, *, epochs: int, labels, batch_size: int, ck, rng, make_trainer,
               step, end_epoch, show_progress: bool, loss_window: int = 50, begin_epoch=None) -> Position:
    """Train until ``pos.epoch == epochs``; returns the final position.

    ``box["trainer"]`` is the trainer; after a restart it holds the rebuilt one (the caller
    closes whatever is there at the end).  ``box["pos"]`` is the position to start from.
    ``labels()`` gives the training labels of the current epoch; ``begin_epoch(epoch)``, if
    given, runs before every epoch's batches (and before the rest of an epoch a resume or
    restart continues), with the 0-based epoch.
    """
    pos: Position = box["pos"]
    n = len(labels())
    done = pos.epoch + (pos.first >= n)
    if done > epochs:
        raise ConfigError(f"learning.epochs = {epochs}: the resumed run has already trained {done} epochs; "
                          f"expected at least {done} (a resume can extend training, not shorten it)")
    while pos.epoch < epochs:
        trainer = box["trainer"]
        epoch = pos.epoch
        if begin_epoch is not None:
            begin_epoch(epoch)
        y = labels()
        if pos.order is None:
            pos.order = rng.permutation(n)
            pos.losses, pos.correct, pos.epoch_s, pos.epoch_events = [], 0, 0.0, 0
        order = pos.order
        trainer.lr = pos.lr
        t0 = t_bar = time.perf_counter()
        ev0 = ev_bar = trainer.sim.events_sent()
        try:
            with progress(n, f"epoch {epoch + 1}/{epochs}", show_progress) as bar:
                bar.update(pos.first)
                while pos.first < n:
                    first = pos.first
                    idx = order[first:first + batch_size]
                    res = step(trainer, idx, pos)
                    pos.losses.append(float(res.outputs["loss"].mean()))
                    pos.correct += int((res.outputs["pred"] == y[idx]).sum())
                    pos.first = first + len(idx)
                    pos.batches += 1
                    bar.update(len(idx))
                    bar.set_postfix(loss=f"{np.mean(pos.losses[-loss_window:]):.3f}",
                                    acc=f"{pos.correct / pos.first:.3f}",
                                    events_per_s=events_rate(trainer.sim.events_sent() - ev_bar, t_bar))
                    if ck.due(pos.batches):
                        t0, ev0 = _account(pos, trainer, t0, ev0)
                        ck.save(pos.as_dict(), trainer, rng)
            _account(pos, trainer, t0, ev0)
            pos.samples += n
            end_epoch(trainer, epoch, pos)        # the test pass is recovered like training
        except SpinnrayError as e:
            box["trainer"], state = ck.recover(e, trainer, make_trainer, rng)
            box["pos"] = pos = Position.from_dict(state)
            continue
        pos.epoch, pos.first, pos.order = epoch + 1, 0, None
    return pos


def _account(pos: Position, trainer, t0: float, ev0: int) -> tuple[float, int]:
    """Add the time and events since ``(t0, ev0)`` to the position; returns the new marks."""
    now, ev = time.perf_counter(), trainer.sim.events_sent()
    pos.train_s += now - t0
    pos.epoch_s += now - t0
    pos.epoch_events += ev - ev0
    return now, ev
