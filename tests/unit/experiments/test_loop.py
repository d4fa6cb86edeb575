"""The epoch loop (spinnray.experiments.loop) with data made per mini-batch: a run stopped mid-epoch
and resumed from its last checkpoint trains on exactly the trials of the uninterrupted run."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from spinnray.config import from_dict
from spinnray.data.base import Timing
from spinnray.data.cue import CueConfig, load
from spinnray.experiments.loop import Position, run_epochs


class Checkpoints:
    """Keeps the position and the order generator after every mini-batch, as a checkpoint does."""

    def __init__(self):
        self.saved = None

    def due(self, batches):
        return True

    def save(self, state, trainer, rng):
        self.saved = copy.deepcopy(state), copy.deepcopy(rng.bit_generator.state)


def train(cfg, epochs: int, seen: list, ck: Checkpoints, stop_after=None, resume: Checkpoints | None = None):
    """The loop on a freshly loaded data set; each mini-batch is only fingerprinted into ``seen``
    (epoch, labels, bytes of every trial); KeyboardInterrupt once ``stop_after`` batches are seen."""
    data = load(cfg, Timing(1.0))
    rng = np.random.default_rng([3, 1])
    pos = Position(lr=0.1)
    if resume is not None:
        pos = Position.from_dict(copy.deepcopy(resume.saved[0]))
        rng.bit_generator.state = resume.saved[1]

    def step(tr, idx, pos):
        if stop_after is not None and len(seen) >= stop_after:
            raise KeyboardInterrupt
        x = data.train.batch(idx)
        seen.append((pos.epoch, data.train.labels[idx].tolist(), [x[:, j].tobytes() for j in range(len(idx))]))
        return SimpleNamespace(outputs={"loss": np.zeros(len(idx)), "pred": np.zeros(len(idx), np.int64)})

    box = {"trainer": SimpleNamespace(lr=0.0, sim=SimpleNamespace(events_sent=lambda: 0)), "pos": pos}
    run_epochs(box, epochs=epochs, labels=lambda: data.train.labels, batch_size=2, ck=ck, rng=rng,
               make_trainer=None, step=step, end_epoch=lambda *a: None, show_progress=False,
               begin_epoch=data.begin_epoch)


@pytest.mark.parametrize("resample", [True, False])
def test_a_run_stopped_mid_epoch_resumes_on_exactly_the_same_trials(resample):
    cfg = from_dict(CueConfig, {"name": "cue", "train_size": 5, "data_seed": 2, "resample": resample,
                                "n_cues": 3, "total_ms": 600.0}, "data")
    full = []
    train(cfg, 3, full, Checkpoints())
    assert len(full) == 9                                  # mini-batches of 2, 2 and 1 in each of 3 epochs
    trials = [sorted(t for b in full if b[0] == e for t in b[2]) for e in range(3)]
    assert (trials[0] != trials[1]) == resample and (trials[1] != trials[2]) == resample
    first, ck = [], Checkpoints()
    with pytest.raises(KeyboardInterrupt):
        train(cfg, 3, first, ck, stop_after=4)             # stopped after the first batch of epoch 2
    rest = []
    train(cfg, 3, rest, Checkpoints(), resume=ck)
    assert first + rest == full and len(first) == 4
