"""Checkpoints: atomic files read back strictly; a stopped run resumes to the
same result as an uninterrupted one; a killed core actor is survived.

And the format checks that need a real run: every flipped byte of a real checkpoint is refused,
a trusted format-1 file converts and resumes, a state of another network or other store settings is
refused naming the core and the array."""

import pickle
import sys

import numpy as np
import pytest

from spinnray.config import from_dict
from spinnray.errors import ConfigError, DataError
from spinnray.experiments.checkpoint import latest, load_checkpoint, main, save_checkpoint
from spinnray.experiments.runner import run
from spinnray.experiments.trainer import Trainer

from helpers import training_run_cfg as _cfg
from unit.experiments.test_checkpoint import _v1


def _interrupt_after(monkeypatch, n, action, kind="eprop"):
    calls = {"n": 0}
    real = Trainer.train_batch

    def train_batch(self, x, y):
        calls["n"] += 1
        if calls["n"] == n:
            action(self)
        return real(self, x, y)

    monkeypatch.setattr(Trainer, "train_batch", train_batch)
    return calls


def _same_run(a, b):
    """Equal weights, counters and history (but for wall times)."""
    assert a["weights_crc32"] == b["weights_crc32"]
    strip = [{k: v for k, v in h.items() if k != "train_s"} for h in a["history"]]
    assert strip == [{k: v for k, v in h.items() if k != "train_s"} for h in b["history"]]
    for key in ("spike_events_sent", "error_events_sent"):
        assert a["traffic"][key] == b["traffic"][key] > 0, key


@pytest.mark.parametrize("kind", ["eprop", "eventprop"])
def test_stopped_run_resumes_to_the_same_result(tmp_path, monkeypatch, kind):
    full = run(_cfg(kind=kind), tmp_path / "full", "t")

    def stop(_):
        raise KeyboardInterrupt

    _interrupt_after(monkeypatch, 9, stop, kind)          # mid-way through epoch 2 (6 batches per epoch)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(kind=kind), tmp_path / "stopped", "t")
    monkeypatch.undo()
    ckpts = sorted((tmp_path / "stopped" / "checkpoints").glob("*.ckpt"))
    assert [p.name for p in ckpts] == [f"{kind}-000000006.ckpt", f"{kind}-000000008.ckpt"]   # keep = 2
    resumed = run(_cfg(kind=kind, resume=str(tmp_path / "stopped" / "checkpoints")), tmp_path / "resumed", "t")
    _same_run(resumed, full)
    # a resume with another configuration is refused, naming why
    with pytest.raises(DataError, match="different network/data/learning"):
        run(_cfg(kind=kind, resume=str(ckpts[-1]), learning={"lr": 0.02}), tmp_path / "other", "t")


LOW_PRECISION = {"4bit": {"weight_bits": 4, "rounding": "stochastic"}, "pcm": {"synapse": "pcm"}}


@pytest.mark.parametrize("store", list(LOW_PRECISION))
@pytest.mark.parametrize("kind", ["eprop", "eventprop"])
def test_stopped_low_precision_run_resumes_bit_for_bit(tmp_path, monkeypatch, kind, store):
    """With weight stores (4-bit stochastic rounding, PCM devices) the checkpoint holds each store's
    plain state (codes or devices, accumulators, random streams, device clock): a run stopped and
    resumed from the file ends with the weights (weights_crc32 of the stores) of an uninterrupted one."""
    machine = LOW_PRECISION[store]
    full = run(_cfg(kind=kind, machine=machine), tmp_path / "full", "t")

    def stop(_):
        raise KeyboardInterrupt

    _interrupt_after(monkeypatch, 9, stop, kind)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(kind=kind, machine=machine), tmp_path / "stopped", "t")
    monkeypatch.undo()
    st = load_checkpoint(tmp_path / "stopped" / "checkpoints")
    assert st["batches"] == 8
    stores = [s for c in st["cores"].values() for s in c.get("stores", ())]
    assert stores and all(type(s) is dict and s["kind"] == ("pcm" if store == "pcm" else "mixed_precision")
                          for s in stores)
    resumed = run(_cfg(kind=kind, machine=machine, resume=str(tmp_path / "stopped" / "checkpoints")),
                  tmp_path / "resumed", "t")
    _same_run(resumed, full)
    if kind == "eprop":         # the random streams matter: another position of one of them, another result
        rows = stores[0]["quantizer"]["rng"]["pcg64"] if store == "4bit" else stores[0]["read_rng"]["pcg64"]
        rows[:, 1] += np.uint64(1)
        st.pop("path")
        save_checkpoint(tmp_path / "moved" / "eprop-000000008.ckpt", st)
        moved = run(_cfg(kind=kind, machine=machine, resume=str(tmp_path / "moved")), tmp_path / "r2", "t")
        assert moved["weights_crc32"] != full["weights_crc32"]


@pytest.mark.parametrize("kind", ["eprop", "eventprop"])
def test_training_is_extended_from_a_finished_run(tmp_path, kind):
    """A finished 1-epoch run resumed with learning.epochs = 2 ends as an uninterrupted 2-epoch run."""
    full = run(_cfg(kind=kind), tmp_path / "full", "t")
    short = run(_cfg(kind=kind, learning={"epochs": 1}), tmp_path / "short", "t")
    assert len(short["history"]) == 1 and short["weights_crc32"] != full["weights_crc32"]
    extended = run(_cfg(kind=kind, resume=str(tmp_path / "short" / "checkpoints")), tmp_path / "ext", "t")
    _same_run(extended, full)
    # the finished run resumed with another test set trains no more and tests the same weights on it
    other = run(_cfg(kind=kind, resume=str(tmp_path / "ext" / "checkpoints"), data={"test_seed": 77}),
                tmp_path / "retest", "t")
    assert other["weights_crc32"] == full["weights_crc32"]
    assert [h["train_loss"] for h in other["history"]] == [h["train_loss"] for h in full["history"]]
    assert other["history"][-1]["test_loss"] != full["history"][-1]["test_loss"]        # another test set
    with pytest.raises(ConfigError, match=r"learning.epochs = 1: the resumed run has already trained 2 epochs"):
        run(_cfg(kind=kind, learning={"epochs": 1}, resume=str(tmp_path / "ext" / "checkpoints")),
            tmp_path / "shorter", "t")


@pytest.mark.ray
@pytest.mark.parametrize("kind", ["eprop", "eventprop"])
def test_killed_core_actor_is_survived(tmp_path, monkeypatch, ray_session, kind):
    import ray

    full = run(_cfg(kind=kind), tmp_path / "full", "t")

    def kill(trainer):
        actor = trainer.sim.backend.actors[trainer.sim.mapping.cores_of("hidden")[0].core_id]
        ray.kill(actor)

    _interrupt_after(monkeypatch, 7, kill, kind)
    got = run(_cfg("ray", kind=kind, cluster={"round_timeout_s": 20.0}), tmp_path / "killed", "t")
    assert got["restarts"] == 1
    _same_run(got, full)


def _core_weights(run_dir):
    """{core id: [weight matrices]} of a run's newest checkpoint."""
    cores = load_checkpoint(run_dir / "checkpoints")["cores"].items()
    return {cid: st["weights"] for cid, st in cores if "weights" in st}      # not the input source cores


@pytest.mark.parametrize("kind", ["eprop", "eventprop"])
def test_training_starts_from_the_weights_of_a_checkpoint(tmp_path, kind):
    """init_from takes a checkpoint's weights exactly, starts a fresh run whose fingerprint names the
    source, and refuses a network that does not fit, naming the shapes."""
    one = {"epochs": 1}
    run(_cfg(kind=kind, learning=one), tmp_path / "a", "t")
    src = str(tmp_path / "a" / "checkpoints")
    only_initial = {"every": 1000}              # just the checkpoint of the state training starts from
    b = run(_cfg(kind=kind, learning=one, init_from=src, checkpoint=only_initial), tmp_path / "b", "t")
    fresh = run(_cfg(kind=kind, learning=one, checkpoint=only_initial), tmp_path / "fresh", "t")
    a_w, b_w, f_w = (_core_weights(tmp_path / n) for n in ("a", "b", "fresh"))
    assert load_checkpoint(tmp_path / "b" / "checkpoints")["batches"] == 0
    assert a_w.keys() == b_w.keys() and len(a_w) >= 3
    for cid in a_w:
        for wa, wb, wf in zip(a_w[cid], b_w[cid], f_w[cid]):
            np.testing.assert_array_equal(wb, wa)
            assert not np.array_equal(wf, wa)
    assert b["history"][0]["train_loss"] != fresh["history"][0]["train_loss"]
    # the warm-started run's checkpoints resume with the same init_from, not without it
    run(_cfg(kind=kind, learning=one, init_from=src, resume=str(tmp_path / "b" / "checkpoints")), tmp_path / "b2", "t")
    with pytest.raises(DataError, match="different network/data/learning"):
        run(_cfg(kind=kind, learning=one, resume=str(tmp_path / "b" / "checkpoints")), tmp_path / "b3", "t")
    bigger = {"hidden": 12} if kind == "eprop" else {"hidden": 22}
    with pytest.raises(ConfigError, match=r"init_from = .*core \d+ \(hidden\[0:\d+\]\) holds .* weights of shape "
                                          r"\(\d+, \d+\); this network expects \(\d+, \d+\)"):
        run(_cfg(kind=kind, learning=one, init_from=src, network=bigger), tmp_path / "c", "t")
    with pytest.raises(DataError, match="no such checkpoint"):
        run(_cfg(kind=kind, init_from=str(tmp_path / "missing.ckpt")), tmp_path / "d", "t")


def test_float_weights_move_onto_a_4_bit_grid_set_from_them(tmp_path):
    """A float32 checkpoint loaded at 4 bits: the grid's range follows the loaded weights (range 1 x
    each population's peak, set explicitly), so every weight lands within half a level of its float value."""
    run(_cfg(learning={"epochs": 1}), tmp_path / "a", "t")
    run(_cfg(learning={"epochs": 1}, init_from=str(tmp_path / "a" / "checkpoints"), checkpoint={"every": 1000},
             machine={"weight_bits": 4, "weight_range": 1.0, "weight_range_recurrent": 1.0,
                      "weight_range_scope": "population"}), tmp_path / "q", "t")
    a, q = _core_weights(tmp_path / "a"), _core_weights(tmp_path / "q")
    for pop_cores in ([c for c in a if len(a[c]) == 2], [c for c in a if len(a[c]) == 1]):   # hidden, output
        assert pop_cores
        step = max(np.abs(w).max() for c in pop_cores for w in a[c]) / 7          # L = 2**3 - 1 levels per sign
        for c in pop_cores:
            for wa, wq in zip(a[c], q[c]):
                assert np.abs(wq - wa).max() <= step / 2 * (1 + 1e-5)
                assert not np.array_equal(wq, wa)
                np.testing.assert_allclose(wq / step, np.rint(wq / step), atol=1e-4)


def test_fresh_cue_trials_every_epoch_resume_to_the_same_result(tmp_path, monkeypatch):
    """data.resample: epoch e trains on the trials of seed data_seed + RESAMPLE_STRIDE e (epoch 1 on
    the usual set), and a run stopped in epoch 2 resumes on epoch 2's trials."""
    from spinnray.data.cue import CueConfig, epoch_training_set

    fixed = run(_cfg(), tmp_path / "fixed", "t")
    seen = []
    real = Trainer.train_batch

    def spy(self, x, y):
        seen.extend(x.sum(axis=(0, 2)).tolist())         # spikes per trial: (steps, batch, inputs) -> (batch,)
        return real(self, x, y)

    monkeypatch.setattr(Trainer, "train_batch", spy)
    full = run(_cfg(data={"resample": True}), tmp_path / "full", "t")
    monkeypatch.undo()
    data = from_dict(CueConfig, _cfg(data={"resample": True}).data, "data")
    for epoch in (0, 1):
        x, _ = epoch_training_set(data, epoch, 1.0)
        assert sorted(seen[24 * epoch:24 * (epoch + 1)]) == sorted(x.sum(axis=(1, 2)).tolist())
    assert full["history"][0]["train_loss"] == fixed["history"][0]["train_loss"]      # same first epoch
    assert full["history"][1]["train_loss"] != fixed["history"][1]["train_loss"]
    assert full["weights_crc32"] != fixed["weights_crc32"]

    def stop(_):
        raise KeyboardInterrupt

    _interrupt_after(monkeypatch, 9, stop)                # mid-way through epoch 2
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(data={"resample": True}), tmp_path / "stopped", "t")
    monkeypatch.undo()
    resumed = run(_cfg(data={"resample": True}, resume=str(tmp_path / "stopped" / "checkpoints")),
                  tmp_path / "resumed", "t")
    _same_run(resumed, full)
    with pytest.raises(DataError, match="different network/data/learning"):     # resample is in the fingerprint
        run(_cfg(resume=str(tmp_path / "stopped" / "checkpoints")), tmp_path / "other", "t")


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    """The bytes of a real checkpoint of a small 4-bit stochastic e-prop run (stores, PCG64 states)."""
    d = tmp_path_factory.mktemp("real")
    run(_cfg(learning={"epochs": 1}, machine={"weight_bits": 4, "rounding": "stochastic"}), d, "t")
    path = latest(d / "checkpoints")
    return path.read_bytes()


def test_every_flipped_byte_and_truncation_is_refused(real_checkpoint, tmp_path):
    data = real_checkpoint
    rng = np.random.default_rng(0)
    path = tmp_path / "eprop-000000006.ckpt"
    path.write_bytes(data)
    load_checkpoint(path)                                                   # the intact file loads
    positions = np.concatenate([np.arange(40), rng.choice(len(data), 260, replace=False)])   # the fixed part too
    refused = 0
    for pos in positions:
        b = bytearray(data)
        b[pos] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(b))
        with pytest.raises(DataError, match=str(path.name)):
            load_checkpoint(path)
        refused += 1
    for n in np.unique(np.linspace(0, len(data) - 1, 20).astype(int)):
        path.write_bytes(data[:n])
        with pytest.raises(DataError, match=str(path.name)):
            load_checkpoint(path)
        refused += 1
    assert refused == 320
    path.write_bytes(data + b"\0")                                          # appended bytes too
    with pytest.raises(DataError, match="SHA-256 does not match"):
        load_checkpoint(path)


def test_a_trusted_format_1_checkpoint_converts(tmp_path, monkeypatch):
    """A format-1 file of a low-precision run (live store objects inside, pickled under the module
    name of before the package's layers) becomes a format-2 file holding the stores' plain states,
    and resumes as the format-2 checkpoint of the same run would."""
    fixed = {"weight_bits": 4, "rounding": "stochastic", "weight_range_growth": 1}     # format 1 knew no other grid
    cfg = _cfg(learning={"epochs": 1}, machine=fixed)
    full = run(_cfg(machine=fixed), tmp_path / "full", "t")
    run(cfg, tmp_path / "a", "t")
    new = load_checkpoint(tmp_path / "a" / "checkpoints")
    # the same state as format 1 wrote it: stores as objects, rebuilt from their states
    from spinnray.machine.quant import MixedPrecisionWeights, Noise, Quantizer

    def live(st):
        q = Quantizer(st["quantizer"]["bits"], st["quantizer"]["w_max"], st["quantizer"]["rounding"], 0,
                      st["quantizer"]["rng"]["columns"])
        s = MixedPrecisionWeights(np.zeros(st["shape"]), q, accumulate=st["accumulate"], transfer=st["transfer"])
        s.load_state(st)
        assert isinstance(s.q.rng, Noise)
        for attr in ("growth", "max_shift", "_shift"):       # a format-1 store had no widening grid
            del s.__dict__[attr]
        return s

    old = {k: v for k, v in new.items() if k != "path"}
    old["cores"] = {cid: dict(c, stores=[live(s) for s in c["stores"]]) if "stores" in c else c
                    for cid, c in new["cores"].items()}
    v1 = tmp_path / "old" / "eprop-000000006.ckpt"
    v1.parent.mkdir()
    from spinnray.machine import quant

    monkeypatch.setitem(sys.modules, "spinnray.quant", quant)          # the module of format-1 days
    for cls in (Noise, Quantizer, MixedPrecisionWeights):
        monkeypatch.setattr(cls, "__module__", "spinnray.quant")
    blob = pickle.dumps(old, protocol=5)
    monkeypatch.undo()
    assert b"spinnray.quant" in blob and b"MixedPrecisionWeights" in blob
    v1.write_bytes(_v1(blob))
    with pytest.raises(DataError, match="old pickle format"):
        load_checkpoint(v1)
    out = tmp_path / "conv" / "eprop-000000006.ckpt"
    assert main(["convert", "--trust", str(v1), str(out)]) == 0
    resumed = run(_cfg(machine=fixed, resume=str(out)), tmp_path / "r", "t")
    assert resumed["weights_crc32"] == full["weights_crc32"]


def _rewrite(src_dir, dst, **change):
    """The newest checkpoint of ``src_dir`` written again (a valid file) with entries changed."""
    st = load_checkpoint(src_dir)
    st.pop("path")
    st.update(change)
    return save_checkpoint(dst, st)


def test_a_state_of_another_network_is_refused_naming_the_core_and_array(tmp_path):
    """Even with this run's fingerprint, a checkpoint of a network with another hidden size is refused
    before anything is loaded; so are non-finite weights."""
    one = {"epochs": 1}
    run(_cfg(learning=one, network={"hidden": 12}), tmp_path / "big", "t")
    run(_cfg(learning=one), tmp_path / "mine", "t")
    mine = load_checkpoint(tmp_path / "mine" / "checkpoints")
    forged = _rewrite(tmp_path / "big" / "checkpoints", tmp_path / "forged" / "eprop-000000006.ckpt",
                      fingerprint=mine["fingerprint"])
    with pytest.raises(DataError, match=r"forged.*eprop-000000006.ckpt: core \d+ \(hidden\[0:5\]\): weights\[0\] is an "
                                        r"array of shape \(\d+, 6\) float32; this run's core holds an array of shape "
                                        r"\(\d+, 5\) float32"):
        run(_cfg(learning={"epochs": 2}, resume=str(forged)), tmp_path / "r1", "t")
    cores = mine["cores"]
    cid = min(c for c in cores if "opts" in cores[c])
    cores[cid]["opts"][1]["v"][0, 0] = np.nan
    bad = _rewrite(tmp_path / "mine" / "checkpoints", tmp_path / "nan" / "eprop-000000006.ckpt", cores=cores)
    with pytest.raises(DataError, match=rf"core {cid} \(hidden\[0:5\]\): opts\[1\].v holds 1 NaN"):
        run(_cfg(learning={"epochs": 2}, resume=str(bad)), tmp_path / "r2", "t")
    bad = _rewrite(tmp_path / "mine" / "checkpoints", tmp_path / "order" / "eprop-000000006.ckpt",
                   order=np.zeros(24, np.int64))
    with pytest.raises(DataError, match="order is an array of shape .*expected None or a permutation"):
        run(_cfg(learning={"epochs": 2}, resume=str(bad)), tmp_path / "r3", "t")


def test_a_store_state_of_other_settings_is_refused(tmp_path):
    """A 4-bit run's state forged onto a 4-bit run with another range: the store names what differs."""
    m4 = {"weight_bits": 4, "rounding": "stochastic"}
    run(_cfg(learning={"epochs": 1}, machine={**m4, "weight_range": 3.0}), tmp_path / "a", "t")
    run(_cfg(learning={"epochs": 1}, machine=m4), tmp_path / "b", "t")
    fp = load_checkpoint(tmp_path / "b" / "checkpoints")["fingerprint"]
    forged = _rewrite(tmp_path / "a" / "checkpoints", tmp_path / "f" / "eprop-000000006.ckpt", fingerprint=fp)
    with pytest.raises(DataError, match=r"core \d+ \(hidden\[0:5\]\) stores\[0\] \(\w+->hidden\).quantizer.w_max = "):
        run(_cfg(learning={"epochs": 2}, machine=m4, resume=str(forged)), tmp_path / "r", "t")
