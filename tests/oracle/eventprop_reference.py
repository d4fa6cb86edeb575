"""An independent dense, single-process EventProp of the same discrete recurrences.

Written from the equations in DESIGN.md section 6 (Béna et al.'s discretization)
and PAPERS.md section 1.2 (the TTFS loss derivative), with dense numpy arrays
and no spinnray numerics, as the oracle for the distributed implementation.
"""

import math

import numpy as np


def forward(weights, x, tau_mem, tau_syn, dt):
    """Layers of LIF: returns per layer dict(s, d=I-Vpre, vb=V before step, vpre)."""
    a, b = math.exp(-dt / tau_syn), math.exp(-dt / tau_mem)
    T, B, _ = x.shape
    layers, inp_spikes = [], x
    for W in weights:
        n = W.shape[1]
        I, V = np.zeros((B, n)), np.zeros((B, n))
        rec = {k: np.zeros((T, B, n)) for k in ("d", "vb", "vpre")}
        rec["s"] = np.zeros((T, B, n), bool)
        for t in range(T):
            drive = inp_spikes[t - 1].astype(float) @ W if t >= 1 else 0.0
            I = a * I + drive
            rec["vb"][t] = V
            V = b * V + (1 - b) * I
            s = V > 1.0
            rec["s"][t], rec["vpre"][t], rec["d"][t] = s, V, I - V
            V = np.where(s, 0.0, V)
        layers.append(rec)
        inp_spikes = rec["s"]
    return layers


def ttfs(out, labels, T, dt, tau0, tau1, alpha):
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
                t[bb, k] = dt * (i - 1 + (1.0 - vb) / (vp - vb))
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


def ttfs_silent(out, labels, T, dt, tau0, tau1, alpha, silent_ms):
    """The same loss with the silent-output surrogate: a neuron that never fired
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


def backward(weights, x, layers, first, dldt, tau_mem, tau_syn, dt, guard, scale, inject=None):
    """Gradients dL/dW per layer for the mean over the batch times ``scale``;
    ``inject`` (T, B, n_out), if given, is added to the top layer's lamV[i] at
    step i after the usual update."""
    a, b = math.exp(-dt / tau_syn), math.exp(-dt / tau_mem)
    T, B, _ = x.shape
    grads = [np.zeros_like(W) for W in weights]
    # err[t] for the top layer: dL/dt at the first spike step.
    top = layers[-1]
    err = np.zeros(top["s"].shape)
    for bb in range(B):
        for k in range(top["s"].shape[2]):
            if top["s"][:, bb, k].any():
                err[first[bb, k], bb, k] = dldt[bb, k] * scale
    for li in reversed(range(len(weights))):
        W, rec = weights[li], layers[li]
        pre = x if li == 0 else layers[li - 1]["s"]
        n = W.shape[1]
        lam_v, lam_i = np.zeros((B, n)), np.zeros((B, n))
        err_below = np.zeros(pre.shape)
        for i in range(T - 1, -1, -1):
            err_below[i] = ((lam_v - lam_i) @ W.T) * pre[i]
            if i + 1 < T:
                s1, d1, e1 = rec["s"][i + 1], rec["d"][i + 1], err[i + 1]
            else:
                s1, d1, e1 = np.zeros((B, n), bool), np.ones((B, n)), np.zeros((B, n))
            new_i = a * lam_i + (1 - a) * lam_v
            new_v = b * lam_v + np.where(s1, (lam_v + e1) / np.maximum(d1, guard), 0.0)
            if inject is not None and li == len(weights) - 1:
                new_v = new_v + inject[i]
            lam_v, lam_i = new_v, new_i
            grads[li] -= tau_syn * pre[i].astype(float).T @ lam_i
        err = err_below
    return grads
