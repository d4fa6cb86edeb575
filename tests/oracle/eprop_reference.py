"""A plain, independent e-prop of the recurrent ALIF network, for tests.

Written from the equations of the e-prop brief (Bellec et al. 2020 with the
(1 - alpha), (1 - rho) factors) with explicit Python loops over time, pre and
post neurons, in float64, and no spinnray numerics: it is the second
implementation that ``bptt_reference`` (and the distributed e-prop) are
checked against.  Slow on purpose; use tiny networks.

Parameters come as a plain mapping ``p`` with the keys of the network
config: tau_m_ms, tau_a_ms, tau_out_ms, dt_ms, beta (a number, or one per hidden neuron), v_th, surrogate, gamma,
refractory_steps (optional, 0)
(None = default), mg_lens, mg_scale, mg_height, steepness, loss_window, and the delays in steps
rec_delay and out_delay (optional, 1; out_delay a number or one per hidden neuron): hidden spike
z_j[t] reaches the other hidden neurons at step t + rec_delay and the readout at t + out_delay_j
(a neuron's own reset and adaptation use its z[t-1]).
Weights are (pre, post) float64 arrays; ``x`` is (T, B, n_in).
"""

import math

import numpy as np


def _consts(p):
    return (math.exp(-p["dt_ms"] / p["tau_m_ms"]), math.exp(-p["dt_ms"] / p["tau_a_ms"]),
            math.exp(-p["dt_ms"] / p["tau_out_ms"]))


def _beta(p, j):
    b = p["beta"]
    return float(b[j]) if hasattr(b, "__len__") else b


def _normal_pdf(h, mu, sigma):
    return math.exp(-((h - mu) ** 2) / (2.0 * sigma * sigma)) / (sigma * math.sqrt(2.0 * math.pi))


def spike_and_psi(p, v, thr):
    """One neuron: (z, psi) for membrane ``v`` and threshold ``thr`` (python floats)."""
    v_th = p["v_th"]
    h = (v - thr) / v_th
    kind = p["surrogate"]
    if kind == "sigmoid":
        k = p["steepness"]
        z = 1.0 / (1.0 + math.exp(-k * h))
        return z, k / v_th * z * (1.0 - z)
    z = 1.0 if v > thr else 0.0
    if kind == "triangle":
        gamma = 0.3 if p.get("gamma") is None else p["gamma"]
        return z, gamma / v_th * max(0.0, 1.0 - abs(h))
    if kind == "multi_gaussian":
        gamma = 0.5 if p.get("gamma") is None else p["gamma"]
        lens, scale, height = p["mg_lens"], p["mg_scale"], p["mg_height"]
        psi = ((1.0 + height) * _normal_pdf(h, 0.0, lens) - height * _normal_pdf(h, lens, scale * lens)
               - height * _normal_pdf(h, -lens, scale * lens))
        return z, gamma / v_th * psi
    raise ValueError(kind)


def _delays(p, n_h):
    """(rec_delay, out_delay per hidden neuron)."""
    d = p.get("out_delay", 1)
    return p.get("rec_delay", 1), [int(d[j]) if hasattr(d, "__len__") else int(d) for j in range(n_h)]


def delayed(z, d):
    """``z[t - d_j]`` for every step t of ``z`` (T, n), ``d`` one delay or one per column: zero before."""
    out = np.zeros_like(z)
    for j in range(z.shape[1]):
        dj = d[j] if hasattr(d, "__len__") else d
        out[dj:, j] = z[:len(z) - dj, j]
    return out


def forward_sample(p, w_in, w_rec, w_out, x, reset=None):
    """One sample ``x`` (T, n_in): dict of v, a, z, psi (T, n_h), y (T, n_out), logits (n_out,).

    ``reset`` (T, n_h), if given, replaces the reset term z[t-1] A[t].
    """
    alpha, rho, kappa = _consts(p)
    T, n_in = x.shape
    n_h, n_out = w_out.shape
    t_w = T if p.get("loss_window") is None else p["loss_window"]
    out = {k: np.zeros((T, n_h)) for k in ("v", "a", "z", "psi")}
    out["y"] = np.zeros((T, n_out))
    d_rec, d_out = _delays(p, n_h)
    v, a, z, y = [0.0] * n_h, [0.0] * n_h, [0.0] * n_h, [0.0] * n_out
    n_ref = p.get("refractory_steps", 0)     # no spike for n_ref steps after one; psi = 0 meanwhile
    left = [0] * n_h
    for t in range(T):
        z_prev = list(z)                                                    # own z[t-1]
        z_rec = out["z"][t - d_rec] if t >= d_rec else [0.0] * n_h          # z[t - d_rec]
        z_out = [out["z"][t - d_out[j], j] if t >= d_out[j] else 0.0 for j in range(n_h)]   # z_j[t - d_out_j]
        for j in range(n_h):
            a[j] = rho * a[j] + (1.0 - rho) * z_prev[j]
            thr = p["v_th"] + _beta(p, j) * a[j]
            drive = 0.0
            for i in range(n_in):
                drive += x[t, i] * w_in[i, j]
            for i in range(n_h):
                if i != j:                       # no self-connection
                    drive += z_rec[i] * w_rec[i, j]
            r = z_prev[j] * thr if reset is None else reset[t, j]
            v[j] = alpha * v[j] + (1.0 - alpha) * drive - r
            z[j], psi = spike_and_psi(p, v[j], thr)
            if left[j] > 0:
                z[j], psi = 0.0, 0.0
                left[j] -= 1
            elif z[j] and n_ref:
                left[j] = n_ref
            out["v"][t, j], out["a"][t, j], out["z"][t, j], out["psi"][t, j] = v[j], a[j], z[j], psi
        for k in range(n_out):
            s = 0.0
            for j in range(n_h):
                s += z_out[j] * w_out[j, k]
            y[k] = kappa * y[k] + (1.0 - kappa) * s
            out["y"][t, k] = y[k]
    out["logits"] = out["y"][T - t_w:].mean(axis=0)
    return out


def _traces(p, pre, psi, kappa, skip_diagonal):
    """e-prop traces of one weight matrix for one sample.

    ``pre`` (T, n_pre): pre_i[t]; ``psi`` (T, n_h).  Returns eps_v (T, n_pre),
    eps_a, e, ebar (T, n_pre, n_h); ebar is filtered as the readout filters the
    spikes of post neuron j, out_delay_j steps late: ebar[t] = kappa ebar[t-1] + (1 - kappa) e[t - out_delay_j].
    """
    _, d_out = _delays(p, psi.shape[1])
    alpha, rho, _ = _consts(p)
    T, n_pre = pre.shape
    n_h = psi.shape[1]
    eps_v = np.zeros((T, n_pre))
    eps_a = np.zeros((T, n_pre, n_h))
    e = np.zeros((T, n_pre, n_h))
    ebar = np.zeros((T, n_pre, n_h))
    for t in range(T):
        for i in range(n_pre):
            ev_prev = eps_v[t - 1, i] if t > 0 else 0.0
            eps_v[t, i] = alpha * ev_prev + (1.0 - alpha) * pre[t, i]
            for j in range(n_h):
                if skip_diagonal and i == j:
                    continue
                if t > 0:
                    ea_prev, psi_prev = eps_a[t - 1, i, j], psi[t - 1, j]
                    eps_a[t, i, j] = rho * ea_prev + (1.0 - rho) * psi_prev * (ev_prev - _beta(p, j) * ea_prev)
                    late = e[t - d_out[j], i, j] if t >= d_out[j] else 0.0
                    ebar[t, i, j] = kappa * ebar[t - 1, i, j] + (1.0 - kappa) * late
                e[t, i, j] = psi[t, j] * (eps_v[t, i] - _beta(p, j) * eps_a[t, i, j])
    return {"eps_v": eps_v, "eps_a": eps_a, "e": e, "ebar": ebar}


def eprop(p, w_in, w_rec, w_out, x, labels, feedback=None, signal_dtype=None):
    """e-prop gradients of the mean cross-entropy over the batch.

    ``feedback`` (n_h, n_out): B; None = symmetric (B = W_out).  ``signal_dtype``:
    None keeps the learning signals L_j in float64; a dtype rounds them to it first
    (np.float32: as the routers carry them, so that the cores' float64 gradients
    can be compared to the last few ulps).  Returns
    ``(grads, traces, outs)``: grads a dict ``w_in, w_rec, w_out`` of
    (pre, post) arrays (the W_rec diagonal is 0), traces the dict
    ``{"in": ..., "rec": ...}`` of :func:`_traces` for sample 0, and the
    per-sample forward dicts.
    """
    alpha, rho, kappa = _consts(p)
    T, B, n_in = x.shape
    n_h, n_out = w_out.shape
    t_w = T if p.get("loss_window") is None else p["loss_window"]
    fb = w_out if feedback is None else feedback
    g_in, g_rec, g_out = np.zeros((n_in, n_h)), np.zeros((n_h, n_h)), np.zeros((n_h, n_out))
    traces0, outs = None, []
    for b in range(B):
        out = forward_sample(p, w_in, w_rec, w_out, x[:, b])
        outs.append(out)
        logits = out["logits"]
        m = max(logits)
        ex = [math.exp(u - m) for u in logits]
        err = [ex[k] / sum(ex) - (1.0 if k == labels[b] else 0.0) for k in range(n_out)]
        err = [e_k / (t_w * B) for e_k in err]
        learn = [sum(fb[j, k] * err[k] for k in range(n_out)) for j in range(n_h)]
        if signal_dtype is not None:
            learn = [float(np.asarray(v, signal_dtype)) for v in learn]
        d_rec, d_out = _delays(p, n_h)
        tr_in = _traces(p, x[:, b], out["psi"], kappa, skip_diagonal=False)
        tr_rec = _traces(p, delayed(out["z"], d_rec), out["psi"], kappa, skip_diagonal=True)
        if b == 0:
            traces0 = {"in": tr_in, "rec": tr_rec}
        for g, tr in ((g_in, tr_in), (g_rec, tr_rec)):
            n_pre = g.shape[0]
            for i in range(n_pre):
                for j in range(n_h):
                    s = 0.0
                    for t in range(T - t_w, T):
                        s += tr["ebar"][t, i, j]
                    g[i, j] += learn[j] * s
        # readout: zbar_j[t] = kappa zbar_j[t-1] + (1 - kappa) z_j[t - out_delay]
        z_late = delayed(out["z"], d_out)
        zbar = [0.0] * n_h
        zsum = [0.0] * n_h
        for t in range(T):
            for j in range(n_h):
                zbar[j] = kappa * zbar[j] + (1.0 - kappa) * z_late[t, j]
                if t >= T - t_w:
                    zsum[j] += zbar[j]
        for j in range(n_h):
            for k in range(n_out):
                g_out[j, k] += err[k] * zsum[j]
    for j in range(n_h):
        g_rec[j, j] = 0.0
    return {"w_in": g_in, "w_rec": g_rec, "w_out": g_out}, traces0, outs
