"""Data-parallel EventProp training: it learns, Ray equals local bit for bit, and a validation set is
tested every epoch and never trained on (replicas and splits: tests/unit/rules/eventprop/test_core.py)."""

import json

import numpy as np
import pytest

from helpers import ROOT, spikes_split
from unit.rules.eventprop.test_core import data, train_steps, trainer


def test_tiny_network_learns_above_chance():
    x, y = data(480, 42)
    xt, yt = data(300, 40)
    tr = trainer(dtype="float32", lr=1e-2)
    try:
        before, _ = tr.evaluate(spikes_split(xt, yt), 24)
        rng = np.random.default_rng(0)
        for epoch in range(4):
            order = rng.permutation(len(y))
            for first in range(0, len(y), 24):
                idx = order[first:first + 24]
                tr.train_batch(x[:, idx], y[idx])
        after, _ = tr.evaluate(spikes_split(xt, yt), 24)
    finally:
        tr.close()
    assert after > 0.6 and after > before + 0.1, (before, after)   # chance is 1/3


@pytest.mark.ray
def test_ray_training_is_bit_identical_to_local(ray_session):
    x, y = data(48, 42)
    results, events = [], []
    for backend in ("local", "ray"):
        tr = trainer(replicas=2, backend=backend, dtype="float32")
        try:
            results.append(train_steps(tr, x, y, 2))
            m = tr.sim.metrics()["traffic"]
            assert m["error_events"] > 0 and m["dropped"] == 0 and m["rejected"] == 0
            # the progress display's count is the cores' own counters, without an extra call on ray
            events.append(tr.sim.events_sent())
            assert events[-1] == m["spike_events_sent"] + m["error_events_sent"] > 0
        finally:
            tr.close()
    for name in results[0]:
        assert np.array_equal(results[0][name], results[1][name]), name
    assert events[0] == events[1]


def test_validation_set_is_tested_every_epoch_and_never_trained_on(tmp_path):
    """The scenario with and without a validation set trains the same weights; the
    selected epoch's test figures are that epoch's."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from spinnray.config import RunConfig, from_dict
    from spinnray.experiments.runner import run

    root = ROOT

    def metrics(val_size: int, out):
        with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=["scenario=eventprop_yinyang", "backend=local", "learning.epochs=3",
                                               "data.limit=64", "network.steps=40", "network.dt_ms=1.0",
                                               "progress=false", "report=false", f"data.val_size={val_size}"])
        out.mkdir()
        run(from_dict(RunConfig, OmegaConf.to_container(cfg, resolve=True)), out, "eventprop_yinyang")
        return json.loads((out / "metrics.json").read_text())

    with_val, without = metrics(48, tmp_path / "a"), metrics(0, tmp_path / "b")
    assert with_val["weights_crc32"] == without["weights_crc32"]
    assert [h["test_accuracy"] for h in with_val["history"]] == [h["test_accuracy"] for h in without["history"]]
    assert "val_selected_epoch" not in without and "val_accuracy" not in without["history"][0]
    e = with_val["val_selected_epoch"]
    vals = [h["val_accuracy"] for h in with_val["history"]]
    assert 1 <= e <= 3 and vals[e - 1] == max(vals) and vals.index(max(vals)) == e - 1
    assert with_val["val_selected_test_accuracy"] == with_val["history"][e - 1]["test_accuracy"]
    assert all(0.0 <= v <= 1.0 and (v * 48) == round(v * 48) for v in vals)     # 48 samples were tested
