"""The emulated machine against a dense single-process oracle.

The oracle below is written from the equations in neuron.py's docstring with
dense numpy (per-synapse delays by gathering the delayed spike matrix), with no
spinnray numerics: same inputs -> same spikes, and the same voltages to float64
rounding.
"""

import math

import numpy as np
import pytest

from spinnray.config import MachineConfig
from spinnray.simulator import Simulator

from helpers import (
    EQ_BATCH as BATCH,
    EQ_STEPS as STEPS,
    equivalence_inputs as make_inputs,
    equivalence_network as make_network,
)


def oracle(net, inputs, steps):
    """Dense reference: returns spikes and v (pre-reset for LIF) per population."""
    pops = net.populations
    spikes = {n: np.zeros((steps, BATCH, p.size), bool) for n, p in pops.items()}
    v_rec = {n: np.zeros((steps, BATCH, p.size)) for n, p in pops.items()}
    state = {n: {k: np.zeros((BATCH, p.size)) for k in ("i", "v", "a", "z", "r")} for n, p in pops.items()}
    for n, x in inputs.items():
        spikes[n][:] = x
    for t in range(steps):
        for name, pop in pops.items():
            kind = pop.model.kind
            if kind == "source":
                continue
            inp = np.zeros((BATCH, pop.size))
            for proj in net.incoming(pop):
                d = np.broadcast_to(np.asarray(proj.delays), proj.weights.shape).astype(int)
                src = t - d                                                  # (n_pre, n_post) emission step
                pre_idx = np.arange(proj.pre.size)[:, None].repeat(pop.size, 1)
                for b in range(BATCH):
                    s = np.where(src >= 0, spikes[proj.pre.name][np.maximum(src, 0), b, pre_idx], False)
                    inp[b] += (proj.weights * s).sum(axis=0)
            st, m = state[name], pop.model
            if kind in ("lif", "li"):
                a = 0.0 if m.tau_syn_ms == 0 else math.exp(-1.0 / m.tau_syn_ms)
                bdec = math.exp(-1.0 / m.tau_mem_ms)
                st["i"] = a * st["i"] + inp
                st["v"] = bdec * st["v"] + (1 - bdec) * st["i"]
                v_rec[name][t] = st["v"]
                if kind == "lif":
                    s = st["v"] > m.v_th
                    spikes[name][t] = s
                    st["v"] = np.where(s, m.v_reset, st["v"]) if m.reset == "zero" else st["v"] - m.v_th * s
            elif kind == "alif":
                alpha, rho = math.exp(-1.0 / m.tau_mem_ms), math.exp(-1.0 / m.tau_adapt_ms)
                st["a"] = rho * st["a"] + (1 - rho) * st["z"]
                thr = m.v_th + m.beta * st["a"]
                st["v"] = alpha * st["v"] + (1 - alpha) * inp - st["z"] * thr
                s = (st["v"] > thr) & (st["r"] == 0)
                st["r"] = np.where(s, m.refractory_steps, np.maximum(st["r"] - 1, 0))
                st["z"] = s.astype(float)
                spikes[name][t] = s
                v_rec[name][t] = st["v"]
    return spikes, v_rec


@pytest.mark.parametrize("cores", [1, 3])
def test_machine_matches_dense_oracle(cores):
    net = make_network()
    x = make_inputs()
    want_s, want_v = oracle(net, x, STEPS)
    with Simulator(net, MachineConfig(dtype="float64"), cores_per_population=cores, batch_size=BATCH,
                   exchange_interval=3) as sim:
        got = sim.run(STEPS, x, record=("spikes", "v"))
    for name in ("hid", "ada"):
        assert want_s[name].any()
        assert np.array_equal(got.spikes[name], want_s[name]), name
    for name in ("hid", "ada", "out"):
        np.testing.assert_allclose(got.v[name], want_v[name], rtol=0, atol=1e-9, err_msg=name)


def test_float32_machine_close_to_oracle():
    """float32 cores track the float64 oracle until the first rounding-induced spike flip."""
    net = make_network()
    x = make_inputs()
    _, want_v = oracle(net, x, STEPS)
    with Simulator(net, batch_size=BATCH) as sim:
        got = sim.run(STEPS, x, record=("v",))
    assert got.v["out"].dtype == np.float32
    np.testing.assert_allclose(got.v["out"][:20], want_v["out"][:20], rtol=1e-4, atol=1e-5)
