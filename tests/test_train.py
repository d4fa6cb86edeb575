"""Data-parallel EventProp training: it learns, and replicas/cores/backends agree."""

import json
from pathlib import Path

import numpy as np
import pytest

from spinnray.config import MachineConfig
from spinnray.data import encode_yin_yang, yin_yang
from spinnray.rules.eventprop import after_batch
from spinnray.rules.eventprop.core import EventPropCore

from helpers import EventPropConfig, FeedForwardConfig, eventprop_trainer, spikes_split, yinyang_net

NET = FeedForwardConfig(steps=50, hidden=40)


def trainer(replicas=1, cores=None, backend="local", dtype="float64", batch=24, lr=5e-3):
    learn = EventPropConfig(batch_size=batch, lr=lr)
    return eventprop_trainer(yinyang_net(NET, seed=0), learn, machine=MachineConfig(dtype=dtype),
                            cores_per_population=cores, replicas=replicas, backend=backend)


def data(n, seed):
    x, y = yin_yang(n, seed)
    return encode_yin_yang(x, scheme="wunderlich", steps=NET.steps), y


def train_steps(tr, x, y, batches, batch=24):
    for k in range(batches):
        idx = np.arange(k * batch, (k + 1) * batch) % len(y)
        tr.train_batch(x[:, idx], y[idx])
    return tr.weights()


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


@pytest.fixture(scope="module")
def reference_weights():
    x, y = data(72, 42)
    tr = trainer()
    try:
        return train_steps(tr, x, y, 3)
    finally:
        tr.close()


@pytest.mark.parametrize("replicas, cores", [(2, None), (3, None), (1, {"hidden": 3}), (3, {"hidden": 2})])
def test_replicas_and_hidden_split_give_the_same_weights(reference_weights, replicas, cores):
    x, y = data(72, 42)
    tr = trainer(replicas=replicas, cores=cores)
    try:
        w = train_steps(tr, x, y, 3)
        crcs = tr.checksums()
        assert all(len(set(c)) == 1 and len(c) == replicas for c in crcs.values())   # replicas identical
        for r in range(replicas):
            assert all(np.array_equal(tr.weights(r)[k], w[k]) for k in w)
    finally:
        tr.close()
    for name, ref in reference_weights.items():
        np.testing.assert_allclose(w[name], ref, rtol=1e-9, atol=1e-12, err_msg=name)
        assert not np.allclose(ref, yinyang_net(NET, seed=0).projections[0 if name.startswith("input") else 1].weights)


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


def test_training_never_writes_into_the_network():
    net = yinyang_net(NET, seed=0)
    before = [p.weights.copy() for p in net.projections]
    x, y = data(24, 42)
    tr = eventprop_trainer(net, EventPropConfig(batch_size=24), machine=MachineConfig(dtype="float64"),
                          cores_per_population=None, replicas=2, backend="local")
    try:
        tr.train_batch(x, y)
        assert not np.array_equal(tr.weights()["input->hidden"], before[0])
    finally:
        tr.close()
    assert all(np.array_equal(p.weights, b) for p, b in zip(net.projections, before))


def test_bump_raises_only_silent_label_neurons():
    """The silent-neuron remedy touches only the incoming weights of label neurons
    that did not fire for their sample, and the same ones on every replica (each
    replica sees other samples: the labels are pooled over the mini-batch)."""
    x, y = data(24, 42)
    order = np.argsort(y == 2, kind="stable")                  # class 2 only in replica 1's half
    x, y = x[:, order], y[order]
    assert (y[:12] != 2).all() and (y[12:] == 2).any()
    tr = trainer(replicas=2)
    try:
        outs = [pl for pl in tr.learners if pl.slice.population == "output"]
        for out in outs:
            w_big = tr.sim.call(EventPropCore.get_weights, cores=[out.core_id])[out.core_id]
            w_big[0][:, 2] = -5.0                              # output 2 can never fire
            tr.sim.call(EventPropCore.set_weights, {out.core_id: (w_big,)}, cores=[out.core_id])
        res = tr.forward(x, y)
        silent = res.outputs["label_silent"]
        assert silent[y == 2].all() and silent.any()
        before = tr.weights()["hidden->output"]
        after_batch(tr, res, y)
        assert tr.counters["weight_bumps"]["output"] == 1
        tr.check_replicas()                                    # the replicas stay identical
        diff = tr.weights(replica=1)["hidden->output"] - before
        assert np.allclose(diff[:, 2], tr.learn.bump)
        assert np.allclose(diff[:, [c for c in range(3) if not silent[y == c].any()]], 0.0)
    finally:
        tr.close()


def test_stagger_interleaves_the_rounding_grids():
    """With stagger 0.5 the mirrored inputs round on a grid half a step off that of x, so the
    joint spike steps pin x down to half a step of input time; plain rounding to a whole step."""
    from spinnray.data.yinyang import spike_steps_yin_yang
    from spinnray.errors import ConfigError
    from spinnray.data.yinyang import YinYangConfig as YinYangDataConfig, encode_inputs

    xs = np.linspace(0.0, 1.0, 6001)
    samples = np.stack([xs, xs, 1 - xs, 1 - xs], axis=1)
    dt, t_max, steps = 0.5, 30.0, 100

    def widest_cell(raster):
        """Largest spread of x among samples that get identical spike steps."""
        codes = [tuple(c) for c in raster.argmax(axis=0)]
        cells = {}
        for code, x in zip(codes, xs):
            lo, hi = cells.get(code, (x, x))
            cells[code] = (min(lo, x), max(hi, x))
        return max(hi - lo for lo, hi in cells.values())

    plain = encode_inputs(samples, YinYangDataConfig(), steps, dt)
    assert np.array_equal(plain, encode_yin_yang(samples, scheme="wunderlich", steps=steps, dt_ms=dt))
    staggered = encode_inputs(samples, YinYangDataConfig(stagger=0.5), steps, dt)
    assert staggered.sum() == plain.sum() == 5 * len(xs)                 # still one spike per input
    assert np.array_equal(staggered[:, :, [0, 1, 4]], plain[:, :, [0, 1, 4]])
    # Mirrored columns by hand: rint((1 - x) * t_max / dt + 0.5).
    hand = np.rint((1 - xs) * t_max / dt + 0.5).astype(int)
    assert np.array_equal(staggered[:, :, 2].argmax(axis=0), hand)
    cell = dt / t_max                                                    # 1/60 of the input range
    assert widest_cell(plain) == pytest.approx(cell, abs=2e-4)
    assert widest_cell(staggered) == pytest.approx(cell / 2, abs=2e-4)
    assert np.array_equal(spike_steps_yin_yang(samples, scheme="wunderlich", steps=steps, dt_ms=dt)[:, 0],
                          staggered[:, :, 0].argmax(axis=0))
    with pytest.raises(ConfigError, match="stagger"):
        encode_inputs(samples, YinYangDataConfig(stagger=0.5, encoding="bena"), steps, dt)
    assert encode_inputs(samples, YinYangDataConfig(stagger=0.5), 61, dt).shape[0] == 61  # rint(60.5) = 60
    with pytest.raises(ConfigError, match="network.steps"):
        encode_inputs(samples, YinYangDataConfig(stagger=0.6), 61, dt)                # x = 0: step 61


# ------------------------------------------------------------ validation selection
def test_val_selection_takes_the_earliest_best_validation_epoch():
    from spinnray.experiments.train import val_selection

    hist = [{"epoch": e + 1, "val_accuracy": v, "test_accuracy": t, "test_loss": 1.0 - t}
            for e, (v, t) in enumerate([(0.5, 0.52), (0.7, 0.71), (0.7, 0.74), (0.6, 0.8)])]
    sel = val_selection(hist)
    assert sel == {"val_selected_epoch": 2, "val_accuracy": 0.7, "val_selected_test_accuracy": 0.71,
                   "val_selected_test_loss": pytest.approx(0.29)}
    assert val_selection([{"epoch": 1, "test_accuracy": 0.5, "test_loss": 1.0}]) == {}


def test_validation_set_is_tested_every_epoch_and_never_trained_on(tmp_path):
    """The scenario with and without a validation set trains the same weights; the
    selected epoch's test figures are that epoch's."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from spinnray.config import RunConfig, from_dict
    from spinnray.experiments.runner import run

    root = Path(__file__).resolve().parents[1]

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
