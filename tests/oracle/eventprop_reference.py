"""An independent dense, single-process EventProp of the same discrete recurrences.

Written from the equations in DESIGN.md section 6 (Béna et al.'s discretization),
PAPERS.md sections 1.2 and 3 (the TTFS loss derivative; Wunderlich & Pehle's jump
``theta lamV + W^T (lamV - lamI)`` for recurrent weights) and the docstring of
spinnray.rules.eventprop.numerics (delays, resets, voltage losses), with dense
numpy arrays over (step, sample, neuron) and no spinnray code, as the oracle for
the distributed implementation.

The network is a list of :class:`Layer` (the first one the spike source) and a list
of :class:`Conn` (weights ``W`` (n_pre, n_post) and delays ``D``, an int or an
(n_pre, n_post) int array, steps >= 1), recurrent or not.  :func:`run` steps every
population densely; :func:`adjoint` runs the reverse recurrence of every learning
population at once, step by step, the errors of a spike at s through delay d taken
from the post-synaptic adjoint at s + d.
"""

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Layer:
    """A population: ``kind`` "source" (given spikes), "lif" or "li" (leaky integrator)."""

    name: str
    n: int
    kind: str = "lif"
    tau_mem: float = 20.0
    tau_syn: float = 5.0
    v_th: float = 1.0
    v_reset: float = 0.0
    reset: str = "zero"


@dataclass
class Conn:
    pre: str
    post: str
    W: np.ndarray
    D: object = 1

    def delay_matrix(self):
        return np.full(self.W.shape, self.D, int) if np.isscalar(self.D) else np.asarray(self.D, int)


def run(layers, conns, x, dt):
    """Dense forward; per population dict(s, d = I - Vpre, vb = V before the step, vpre, v)."""
    T, B, _ = x.shape
    recs = {}
    for L in layers:
        if L.kind == "source":
            recs[L.name] = {"s": np.asarray(x, bool)}
        else:
            recs[L.name] = {k: np.zeros((T, B, L.n)) for k in ("d", "vb", "vpre", "v")}
            recs[L.name]["s"] = np.zeros((T, B, L.n), bool)
    state = {L.name: (np.zeros((B, L.n)), np.zeros((B, L.n))) for L in layers if L.kind != "source"}
    for t in range(T):
        for L in layers:
            if L.kind == "source":
                continue
            a, b = math.exp(-dt / L.tau_syn), math.exp(-dt / L.tau_mem)
            drive = np.zeros((B, L.n))
            for c in conns:
                if c.post != L.name:
                    continue
                D = c.delay_matrix()
                for d in np.unique(D):
                    if t - d >= 0:
                        drive += recs[c.pre]["s"][t - d].astype(float) @ (c.W * (D == d))
            I, V = state[L.name]
            I = a * I + drive
            rec = recs[L.name]
            rec["vb"][t] = V
            V = b * V + (1 - b) * I
            rec["vpre"][t] = rec["v"][t] = V
            rec["d"][t] = I - V
            if L.kind == "lif":
                s = V > L.v_th
                rec["s"][t] = s
                V = np.where(s, L.v_reset, V) if L.reset == "zero" else V - L.v_th * s
            state[L.name] = (I, V)
    return recs


def adjoint(layers, conns, recs, dt, guard, err_out=None, inject=None):
    """dL/dW of every conn.  ``err_out``: {population: (T, B, n)} dL/dt at spikes (already scaled);
    ``inject``: {population: (T, B, n)} added to lamV[i] after the update of step i."""
    by = {L.name: L for L in layers}
    learn = [L for L in layers if L.kind != "source"]
    T, B = next(iter(recs.values()))["s"].shape[:2]
    lam_v = {L.name: np.zeros((B, L.n)) for L in learn}
    lam_i = {L.name: np.zeros((B, L.n)) for L in learn}
    err = {L.name: np.zeros((T, B, L.n)) for L in learn if L.kind == "lif"}
    for name, e in (err_out or {}).items():
        err[name] += e
    grads = [np.zeros_like(c.W) for c in conns]
    for i in range(T - 1, -1, -1):
        # errors about pre spikes at s that reach the post population at s + d = i + 1, from lambda at i + 1
        for c in conns:
            if by[c.pre].kind == "source":
                continue
            D, diff = c.delay_matrix(), lam_v[c.post] - lam_i[c.post]
            for d in np.unique(D):
                s = i + 1 - d
                if s >= 0:
                    err[c.pre][s] += (diff @ (c.W * (D == d)).T) * recs[c.pre]["s"][s]
        for L in learn:
            a, b = math.exp(-dt / L.tau_syn), math.exp(-dt / L.tau_mem)
            new_i = a * lam_i[L.name] + (1 - a) * lam_v[L.name]
            new_v = b * lam_v[L.name]
            if L.kind == "lif" and i + 1 < T:
                rec = recs[L.name]
                jump = (L.v_th - L.v_reset) if L.reset == "zero" else L.v_th
                s1 = rec["s"][i + 1]
                new_v = new_v + np.where(s1, (jump * lam_v[L.name] + err[L.name][i + 1])
                                         / np.maximum(rec["d"][i + 1], guard), 0.0)
            if inject is not None and L.name in inject:
                new_v = new_v + inject[L.name][i]
            lam_v[L.name], lam_i[L.name] = new_v, new_i
        for k, c in enumerate(conns):
            D, tau_syn = c.delay_matrix(), by[c.post].tau_syn
            for d in np.unique(D):
                s = i + 1 - d
                if s >= 0:
                    grads[k] -= tau_syn * (recs[c.pre]["s"][s].astype(float).T @ lam_i[c.post]) * (D == d)
    return grads


# ------------------------------------------------------------------------ losses
def ttfs(out, labels, T, dt, tau0, tau1, alpha, v_th=1.0):
    """Interpolated first-spike times, Wunderlich & Pehle's loss and dL/dt (1/ms)."""
    B, n = out["s"].shape[1:]
    t = np.full((B, n), T * dt)
    fired = out["s"].any(axis=0)
    first = out["s"].argmax(axis=0)
    for bb in range(B):
        for k in range(n):
            if fired[bb, k]:
                i = first[bb, k]
                vb, vp = out["vb"][i, bb, k], out["vpre"][i, bb, k]
                t[bb, k] = dt * (i - 1 + (v_th - vb) / (vp - vb))
    loss = np.zeros(B)
    g = np.zeros((B, n))
    for bb in range(B):
        e = np.exp(-t[bb] / tau0 - np.max(-t[bb] / tau0))
        p = e / e.sum()
        lab = labels[bb]
        loss[bb] = -math.log(p[lab]) + alpha * (math.exp(t[bb, lab] / tau1) - 1)
        for k in range(n):
            g[bb, k] = (1.0 / tau0) * ((k == lab) - p[k])
        g[bb, lab] += alpha / tau1 * math.exp(t[bb, lab] / tau1)
    g[~fired] = 0.0
    return t, fired, first, loss, g


def bena(out, labels, T, dt, xi=1.5, alpha=1e-2, beta=100.0, v_th=1.0):
    """Béna et al.'s SpikeCELoss (constants in steps) on the interpolated first-spike times."""
    t, fired, first, _, _ = ttfs(out, labels, T, dt, 1.0, 1.0, 0.0, v_th)
    tau0, tau1 = xi * dt, beta * dt
    B, n = t.shape
    loss, g = np.zeros(B), np.zeros((B, n))
    for bb in range(B):
        e = np.exp(-(t[bb] - t[bb].min()) / tau0)
        p = e / e.sum()
        lab = labels[bb]
        loss[bb] = -math.log(p[lab]) + alpha * (math.exp(t[bb, lab] / tau1) - 1)
        for k in range(n):
            g[bb, k] = ((k == lab) - p[k]) / tau0 + (alpha / tau1 * math.exp(t[bb, k] / tau1) if k == lab else 0.0)
    g[~fired] = 0.0
    return t, fired, first, loss, g


def ttfs_err(out, first, fired, g, scale):
    """dL/dt at the first-spike steps, (T, B, n), times ``scale``."""
    e = np.zeros(out["s"].shape)
    for bb, k in zip(*np.nonzero(fired)):
        e[first[bb, k], bb, k] = g[bb, k] * scale
    return e


def voltage(out, labels, kind):
    """Cross-entropy of a softmax over the LI output's mean, sum or max of V over the T steps;
    returns (logits, loss, dL/dV (T, B, n))."""
    v = out["v"]
    T, B, n = v.shape
    if kind == "mean_voltage":
        z = v.mean(axis=0)
    elif kind == "sum_voltage":
        z = v.sum(axis=0)
    else:
        z = v.max(axis=0)
    loss, dz = np.zeros(B), np.zeros((B, n))
    for bb in range(B):
        e = np.exp(z[bb] - z[bb].max())
        p = e / e.sum()
        loss[bb] = -math.log(p[labels[bb]])
        dz[bb] = p
        dz[bb, labels[bb]] -= 1.0
    dv = np.zeros((T, B, n))
    if kind == "max_voltage":
        m = v.argmax(axis=0)                     # first step of the maximum
        for bb in range(B):
            for k in range(n):
                dv[m[bb, k], bb, k] = dz[bb, k]
    else:
        dv[:] = dz / (T if kind == "mean_voltage" else 1.0)
    return z, loss, dv


def voltage_inject(dv, tau_mem, tau_syn, dt, scale):
    """lamV additions of a voltage loss: -(1-b) / (tau_syn (1-a)) dL/dV[i] (the discrete
    kernel's factor that makes the output weights' gradient exact)."""
    a, b = math.exp(-dt / tau_syn), math.exp(-dt / tau_mem)
    return -(1 - b) / (tau_syn * (1 - a)) * dv * scale


def ttfs_silent(out, labels, T, dt, tau0, tau1, alpha, silent_ms):
    """The TTFS loss with the silent-output surrogate: a neuron that never fired
    counts as firing at T dt + silent_ms (1 - Vmax), Vmax its highest pre-reset
    voltage (first step of the maximum).  Returns (t_loss, fired, first, loss,
    dL/dt at the spikes, dL/dt at the silent neurons, step of Vmax)."""
    B, n = out["s"].shape[1:]
    t, fired, first, _, _ = ttfs(out, labels, T, dt, tau0, tau1, alpha)
    peak = np.zeros((B, n), int)
    for bb in range(B):
        for k in range(n):
            best = -math.inf
            for i in range(T):
                if out["vpre"][i, bb, k] > best:
                    best, peak[bb, k] = out["vpre"][i, bb, k], i
            if not fired[bb, k]:
                t[bb, k] = T * dt + silent_ms * max(1.0 - best, 0.0)
    loss = np.zeros(B)
    g = np.zeros((B, n))
    for bb in range(B):
        lab = labels[bb]
        denom = sum(math.exp(-(t[bb, k] - t[bb].min()) / tau0) for k in range(n))
        p = [math.exp(-(t[bb, k] - t[bb].min()) / tau0) / denom for k in range(n)]
        loss[bb] = -math.log(p[lab]) + alpha * (math.exp(t[bb, lab] / tau1) - 1)
        for k in range(n):
            g[bb, k] = ((k == lab) - p[k]) / tau0 + (alpha / tau1 * math.exp(t[bb, k] / tau1) if k == lab else 0.0)
    return t, fired, first, loss, np.where(fired, g, 0.0), np.where(fired, 0.0, g), peak


def silent_inject(g_silent, peak, T, silent_ms, tau_mem, tau_syn, dt, scale):
    """lamV additions (T, B, n) of the surrogate: at the step m of Vmax,
    silent_ms dL/dt~ (1-b) / (tau_syn (1-a)) -- with it, -tau_syn lamI summed over
    the pre spikes is exactly d L / d W_out through V[m] (the kernel of a silent
    neuron is (1-b) sum_j a^(j-i-1) b^(m-j), the reverse recurrence gives
    (1-a) sum_j a^(j-i-1) b^(m-j) per unit of lamV[m])."""
    a, b = math.exp(-dt / tau_syn), math.exp(-dt / tau_mem)
    inj = np.zeros((T,) + g_silent.shape)
    for bb, k in zip(*np.nonzero(g_silent)):
        inj[peak[bb, k], bb, k] += silent_ms * g_silent[bb, k] * (1 - b) / (tau_syn * (1 - a)) * scale
    return inj


def count_regulariser(rec, lam_upper, lam_lower, nu, scale):
    """The hidden spike-count regulariser of docs/rules.md on one LIF population's records:
    per sample R = sum_k lam/2 (N - nu)^2 (lam = lam_upper where N > nu, else lam_lower; N the
    neuron's spikes in the sample), and its lamV additions (T, B, n) for :func:`adjoint`: at
    step i, -scale lam (N - nu) for every neuron that spiked at i + 1 (a spike at step 0 has no
    reverse step after it)."""
    s = rec["s"]
    T, B, n = s.shape
    counts = s.sum(axis=0).astype(float)
    loss, slope = np.zeros(B), np.zeros((B, n))
    for bb in range(B):
        for k in range(n):
            lam = lam_upper if counts[bb, k] > nu else lam_lower
            loss[bb] += lam / 2 * (counts[bb, k] - nu) ** 2
            slope[bb, k] = lam * (counts[bb, k] - nu)
    inject = np.zeros((T, B, n))
    inject[:-1] = -scale * slope[None] * s[1:]
    return loss, inject


# ------------------------------------------------- the feed-forward chain of the first tests
def _chain(weights, tau_mem, tau_syn):
    layers = [Layer("x", weights[0].shape[0], "source")]
    layers += [Layer(f"l{k}", W.shape[1], "lif", tau_mem, tau_syn) for k, W in enumerate(weights)]
    conns = [Conn(layers[k].name, layers[k + 1].name, W, 1) for k, W in enumerate(weights)]
    return layers, conns


def forward(weights, x, tau_mem, tau_syn, dt):
    """Layers of LIF, delays 1: returns per layer dict(s, d=I-Vpre, vb=V before step, vpre)."""
    layers, conns = _chain(weights, tau_mem, tau_syn)
    recs = run(layers, conns, x, dt)
    return [recs[L.name] for L in layers[1:]]


def backward(weights, x, layers, first, dldt, tau_mem, tau_syn, dt, guard, scale, inject=None):
    """Gradients dL/dW per layer of :func:`forward` for the mean over the batch times ``scale``
    (TTFS: ``dldt`` at the top layer's first spikes); ``inject`` (T, B, n_out), if given, is
    added to the top layer's lamV[i] at step i after the usual update."""
    net, conns = _chain(weights, tau_mem, tau_syn)
    recs = {"x": {"s": np.asarray(x, bool)}, **{L.name: rec for L, rec in zip(net[1:], layers)}}
    top = net[-1].name
    fired = layers[-1]["s"].any(axis=0)
    err = {top: ttfs_err(layers[-1], first, fired, dldt, scale)}
    return adjoint(net, conns, recs, dt, guard, err, None if inject is None else {top: inject})
