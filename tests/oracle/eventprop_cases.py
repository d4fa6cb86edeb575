"""Small EventProp networks (recurrent or not, any delays, TTFS or voltage losses) built twice: for the
machine (spinnray's Network on a Simulator) and for the dense reference (oracle.eventprop_reference),
with the helpers that compare their gradients.  Shared by tests/oracle and tests/integration (ray)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spinnray.config import MachineConfig
from spinnray.model.network import Network
from spinnray.model.neurons import LI, LIF, SpikeSource
from spinnray.rules.learning import LearningCore
from spinnray.simulator import Simulator

from helpers import eventprop_learning
from oracle import eventprop_reference as ref

T, DT, B = 40, 1.0, 6
N_IN, N_HID, N_OUT = 4, 12, 3
TAU_MEM, TAU_SYN, GUARD = 20.0, 5.0, 1e-3
TTFS = {"tau0_ms": 0.5, "tau1_ms": 6.4, "alpha": 3e-3}
REF_TTFS = (TTFS["tau0_ms"], TTFS["tau1_ms"], TTFS["alpha"])
VOLTAGE = ("mean_voltage", "sum_voltage", "max_voltage")


@dataclass(frozen=True)
class Case:
    """A network: its loss, delays (an int, or a (low, high) range of per-synapse delays drawn
    from a fixed seed), recurrence, LIF parameters of hidden and output, and the TTFS silent
    surrogate; ``reg``: the hidden spike-count regulariser's (lambda_upper, lambda_lower, nu), or () for none."""

    loss: str = "mean_voltage"
    d_in: object = 1
    d_rec: object = 1
    d_out: object = 1
    recurrent: bool = True
    hid: dict = field(default_factory=dict)
    out: dict = field(default_factory=dict)
    silent_ms: float = 0.0
    seed: int = 0
    reg: tuple = ()

    @property
    def voltage(self) -> bool:
        return self.loss in VOLTAGE

    def delays(self, which: str, shape, seed: int):
        d = getattr(self, which)
        if np.isscalar(d):
            return int(d)
        return np.random.default_rng([seed, len(which)]).integers(d[0], d[1] + 1, shape)

    def min_delay(self) -> int:
        return min(d if np.isscalar(d) else d[0] for d in (self.d_in, self.d_rec if self.recurrent else 99,
                                                          self.d_out))


def conns(case: Case):
    """The reference's populations and projections of ``case`` (weights from its seed)."""
    rng = np.random.default_rng(case.seed)
    w_in = rng.normal(1.2, 0.6, (N_IN, N_HID))
    w_rec = rng.normal(0.0, 0.4, (N_HID, N_HID))
    w_out = rng.normal(0.5, 0.5, (N_HID, N_OUT)) if case.voltage else rng.normal(0.7, 0.5, (N_HID, N_OUT))
    layers = [ref.Layer("inp", N_IN, "source"),
              ref.Layer("hid", N_HID, "lif", TAU_MEM, TAU_SYN, **case.hid),
              ref.Layer("out", N_OUT, "li" if case.voltage else "lif", TAU_MEM, TAU_SYN, **case.out)]
    cs = [ref.Conn("inp", "hid", w_in, case.delays("d_in", w_in.shape, case.seed))]
    if case.recurrent:
        cs.append(ref.Conn("hid", "hid", w_rec, case.delays("d_rec", w_rec.shape, case.seed)))
    cs.append(ref.Conn("hid", "out", w_out, case.delays("d_out", w_out.shape, case.seed)))
    return layers, cs


def data(seed: int = 1, batch: int = B, steps: int = T):
    rng = np.random.default_rng(seed)
    return rng.random((steps, batch, N_IN)) < 0.08, rng.integers(0, N_OUT, batch)


def reference(case: Case, x, y, dt: float = DT):
    """(records, per-sample loss, dL/dW per projection) of the dense reference, for the mean over
    the batch."""
    layers, cs = conns(case)
    recs = ref.run(layers, cs, x, dt)
    steps, batch = x.shape[:2]
    scale = 1.0 / batch
    out = recs["out"]
    reg_loss, inject = np.zeros(batch), {}
    if case.reg:
        reg_loss, inject["hid"] = ref.count_regulariser(recs["hid"], *case.reg, scale)
    if case.voltage:
        _, loss, dv = ref.voltage(out, y, case.loss)
        grads = ref.adjoint(layers, cs, recs, dt, GUARD, None,
                            {**inject, "out": ref.voltage_inject(dv, TAU_MEM, TAU_SYN, dt, scale)})
        return recs, loss + reg_loss, grads
    v_th = case.out.get("v_th", 1.0)
    if case.silent_ms:
        _, fired, first, loss, g, g_sil, peak = ref.ttfs_silent(out, y, steps, dt, *REF_TTFS, case.silent_ms)
        inject["out"] = ref.silent_inject(g_sil, peak, steps, case.silent_ms, TAU_MEM, TAU_SYN, dt, scale)
    else:
        if case.loss == "bena":
            _, fired, first, loss, g = ref.bena(out, y, steps, dt, v_th=v_th)
        else:
            _, fired, first, loss, g = ref.ttfs(out, y, steps, dt, *REF_TTFS, v_th=v_th)
    grads = ref.adjoint(layers, cs, recs, dt, GUARD, {"out": ref.ttfs_err(out, first, fired, g, scale)},
                        inject or None)
    return recs, loss + reg_loss, grads


def network(case: Case, dt: float = DT) -> Network:
    layers, cs = conns(case)
    net = Network(dt_ms=dt)
    for L in layers:
        if L.kind == "source":
            net.population(L.name, L.n, SpikeSource())
        elif L.kind == "li":
            net.population(L.name, L.n, LI(tau_mem_ms=L.tau_mem, tau_syn_ms=L.tau_syn))
        else:
            net.population(L.name, L.n, LIF(tau_mem_ms=L.tau_mem, tau_syn_ms=L.tau_syn, v_th=L.v_th,
                                            v_reset=L.v_reset, reset=L.reset))
    for c in cs:
        net.connect(c.pre, c.post, c.W, delays=c.D)
    return net


def simulator(case: Case, cores: int, replicas: int, k: int = 1, backend: str = "local", schedule="lockstep",
              batch: int = B, dt: float = DT, copies: bool = True):
    net = network(case, dt)
    machine = MachineConfig(dtype="float64")
    reg = dict(zip(("reg_lambda_upper", "reg_lambda_lower", "reg_nu_upper"), case.reg))
    learning = eventprop_learning(net, machine, loss=case.loss, guard=GUARD, lr=1e-3, silent_ms=case.silent_ms,
                                  **TTFS, **reg)
    sim = Simulator(net, machine, cores_per_population={"inp": 1, "hid": cores, "out": 1},
                    batch_size=-(-batch // replicas), replicas=replicas, exchange_interval=k, backend=backend,
                    learning=learning, schedule=schedule, copies=copies)
    return net, sim


def machine_gradients(sim: Simulator, net: Network) -> list[np.ndarray]:
    """Per projection (in the network's order): the full (n_pre, n_post) gradient, summed over replicas."""
    learners = [pl for pl in sim.mapping.placements if pl.slice.population in ("hid", "out")]
    got = sim.call(LearningCore.gradients, cores=[pl.core_id for pl in learners])
    full = {p.name: np.zeros(p.weights.shape) for p in net.projections}
    for pl in learners:
        for proj, g in zip(net.incoming(net[pl.slice.population]), got[pl.core_id]):
            full[proj.name][:, pl.slice.lo:pl.slice.hi] += g
    return [full[p.name] for p in net.projections]


def run_machine(case: Case, x, y, cores: int, replicas: int, k: int = 1, backend: str = "local",
                schedule: str = "lockstep"):
    """(forward result, gradients, metrics, core reports) of one training step's forward and reverse pass."""
    net, sim = simulator(case, cores, replicas, k, backend, schedule, batch=x.shape[1])
    with sim:
        res = sim.run(x.shape[0], {"inp": x}, targets={"out": y})
        sim.backward(scale=1.0 / len(y))
        return res, machine_gradients(sim, net), sim.metrics(), sim.reports()[0]


def relative_errors(got, want) -> list[float]:
    """Per projection: the largest deviation relative to the largest reference entry."""
    return [float(np.abs(g - w).max() / np.abs(w).max()) for g, w in zip(got, want)]
