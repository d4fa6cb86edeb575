"""The epoch loop shared by the training runners (EventProp, e-prop).

Mini-batches in a seeded order per epoch, a progress bar (loss, accuracy,
events/s), checkpoints every ``checkpoint.every`` mini-batches, and a restart
from the last checkpoint after a machine failure.  What differs between the
schemes comes in as two callables: ``step(trainer, idx, pos)`` trains one
mini-batch of the training samples ``idx`` and returns the forward result
(with ``outputs["loss"]`` and ``outputs["pred"]``); ``end_epoch(trainer,
epoch, pos)`` tests, appends the history row and sets the next learning rate.

``pos`` is everything the loop needs to continue exactly where it was (it is
what a checkpoint stores besides the cores' state and the RNG): ``epoch``,
``first`` (the next sample of the epoch's ``order``), ``lr``, ``history``, the
epoch's ``losses`` and ``correct`` count, ``train_s``, ``samples``,
``batches``, and the epoch's ``epoch_s`` and ``epoch_events``.
"""

from __future__ import annotations

import time

import numpy as np

from spinnray.errors import ConfigError, SpinnrayError, TransportError

__all__ = ["new_position", "run_epochs"]


def new_position(lr: float, **extra) -> dict:
    """The loop position at the start of training (``extra``: scheme-specific keys)."""
    return {"epoch": 0, "first": 0, "order": None, "lr": lr, "history": [], "losses": [], "correct": 0,
            "train_s": 0.0, "samples": 0, "batches": 0, "epoch_s": 0.0, "epoch_events": 0, **extra}


def run_epochs(box: dict, *, epochs: int, labels: np.ndarray, batch_size: int, ck, rng, make_trainer,
               step, end_epoch, progress: bool, loss_window: int = 20, begin_epoch=None) -> dict:
    """Train until ``pos["epoch"] == epochs``; returns the final position.

    ``box["trainer"]`` is the trainer; after a restart it holds the rebuilt
    one (the caller closes whatever is there at the end).  ``box["pos"]`` is
    the position to start from.  ``begin_epoch(epoch)``, if given, runs before every epoch's
    batches (and before the rest of an epoch a resume or restart continues), with the 0-based epoch.
    """
    from spinnray.experiments.runner import _progress, events_rate

    pos = box["pos"]
    n = len(labels)
    done = pos["epoch"] + (pos["first"] >= n)
    if done > epochs:
        raise ConfigError(f"learning.epochs = {epochs}: the resumed run has already trained {done} epochs; "
                          f"expected at least {done} (a resume can extend training, not shorten it)")
    while pos["epoch"] < epochs:
        trainer = box["trainer"]
        epoch = pos["epoch"]
        if begin_epoch is not None:
            begin_epoch(epoch)
        if pos["order"] is None:
            pos["order"] = rng.permutation(n)
            pos.update(losses=[], correct=0, epoch_s=0.0, epoch_events=0)
        order = pos["order"]
        trainer.lr = pos["lr"]
        t0 = t_bar = time.perf_counter()
        ev0 = ev_bar = trainer.sim.events_sent()
        try:
            with _progress(n, f"epoch {epoch + 1}/{epochs}", progress) as bar:
                bar.update(pos["first"])
                while pos["first"] < n:
                    first = pos["first"]
                    idx = order[first:first + batch_size]
                    res = step(trainer, idx, pos)
                    pos["losses"].append(float(res.outputs["loss"].mean()))
                    pos["correct"] += int((res.outputs["pred"] == labels[idx]).sum())
                    pos["first"] = first + len(idx)
                    pos["batches"] += 1
                    bar.update(len(idx))
                    bar.set_postfix(loss=f"{np.mean(pos['losses'][-loss_window:]):.3f}",
                                    acc=f"{pos['correct'] / pos['first']:.3f}",
                                    events_per_s=events_rate(trainer.sim.events_sent() - ev_bar, t_bar))
                    if ck.due(pos["batches"]):
                        t0, ev0 = _account(pos, trainer, t0, ev0)
                        ck.save(pos, trainer, rng)
        except (TransportError, SpinnrayError) as e:
            box["trainer"], pos = ck.recover(e, trainer, make_trainer, rng)
            box["pos"] = pos
            continue
        _account(pos, trainer, t0, ev0)
        pos["samples"] += n
        end_epoch(trainer, epoch, pos)
        pos["epoch"], pos["first"], pos["order"] = epoch + 1, 0, None
    return pos


def _account(pos: dict, trainer, t0: float, ev0: int) -> tuple[float, int]:
    """Add the time and events since ``(t0, ev0)`` to the position; returns the new marks."""
    now, ev = time.perf_counter(), trainer.sim.events_sent()
    pos["train_s"] += now - t0
    pos["epoch_s"] = pos.get("epoch_s", 0.0) + now - t0
    pos["epoch_events"] = pos.get("epoch_events", 0) + ev - ev0
    return now, ev
