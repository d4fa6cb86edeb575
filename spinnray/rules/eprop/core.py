"""Cores that learn with e-prop (model parallel: every core keeps its slice).

A hidden core holds an ALIF slice: its neurons' incoming weight columns (input
and recurrent), their gradients, Adam moments and the e-prop traces, and
nothing else.  The readout core holds the LI readout, its weights and the
feedback matrix.  Per step, hidden cores exchange spikes through the router
as any core does; at the end of a sample the readout core sends the learning
signals ``L_j`` as error events (float payload), one per hidden neuron and
sample, through the router to the cores that own those neurons.  Weights never
leave their core: each applies Adam to its own slice.

The equations are in :mod:`spinnray.rules.eprop.numerics`.  ``spec.learning`` keys (all
cores): ``rule = "eprop"``, ``lr``, ``betas``, ``eps``, ``weight_decay``,
``window_steps`` (None = every step), ``tau_out_ms`` (the readout's time
constant; the hidden cores filter their traces with it); hidden cores:
``surrogate``, ``gamma``, ``lens``, ``scale``, ``height``, ``rate_reg`` and
``rate_target_hz`` (the firing-rate regulariser below); the readout core:
``feedback`` (``symmetric`` | ``random``), ``feedback_seed``.

Memory (per core, from the arrays held): for a hidden slice of ``n`` neurons
with ``P`` pre neurons over all incoming projections and batch ``B``:
weights, gradients, two Adam moments (``4 P n``), ``eps_v`` (``B P``) and
two per-synapse traces ``d`` and ``acc`` (``2 B P n``; ``d`` only for ALIF,
beta > 0).  ``d = eps_v - beta eps_a`` (so that ``e = psi d``) obeys its own
recurrence, exact algebra on the equations of :mod:`spinnray.rules.eprop.numerics`::

    d_ij[t] = (rho - beta (1 - rho) psi_j[t-1]) d_ij[t-1] + (eps_v_i[t] - rho eps_v_i[t-1])

a scale per post neuron plus a term per pre neuron: two passes over the
per-synapse array instead of the six that ``eps_a`` and ``e`` take.  The
readout-filtered trace ``ebar`` of the equations is not kept either: since
the loss window is known in advance, the sum over the window of ``ebar[s]``
equals ``sum_t c_t e[t]`` with per-step constants ``c_t``, so ``acc`` takes
``c_t psi[t] d[t]`` directly.  Steps whose ``c_t`` is below ``eps(dtype)^2``
times the largest (long before a short loss window: ``c_t`` decays as
``kappa`` per step) add nothing that the dtype could hold and are skipped.
One scratch array of the same size holds a numpy temporary (``scratch``:
counted against the budget, not as training state).  None of it grows with
the number of steps.

Refractory neurons (``ALIF.refractory_steps`` R > 0: no spike for R steps after one, as
Bellec et al.'s ``n_ref``): the pseudo-derivative is 0 at the steps where the neuron is
refractory (its spike cannot depend on its voltage); the traces are otherwise unchanged.

Firing-rate regulariser (``rate_reg`` = c > 0, Bellec et al.'s ``reg_f``; off at 0): the loss
gains ``c sum_j (r_j - r*)^2`` with ``r_j`` neuron j's rate over the batch and the run in spikes
per ms (Bellec et al.'s units) and ``r* = rate_target_hz / 1000``.  Its learning signal
``2 c (r_j - r*) / (B T dt)`` is the same at every step and sample and needs no message: a core
knows its own neurons' spikes.  The gradient is that signal times ``E_ji = sum_{b,t} e_ji[t]``
(the unfiltered eligibility trace: the loss is on ``z`` itself), kept summed over the batch as
``(post, pre)`` (``traces``); with no recurrence it is BPTT's gradient of the same loss (tested).

Weight storage (``spec.learning["weight_store"]``, from ``machine.weight_bits``,
``rounding``, ``accumulate``, ``weight_max``, ``synapse``, ``pcm``,
``weight_seed``; see :func:`weight_store_options`): absent (or None) the core
keeps float weights and Adam updates them in place; given, each incoming
projection's slice lives in a :mod:`spinnray.machine.quant` store, built, seeded, read,
updated and counted as :mod:`spinnray.rules.weight_stores` describes (the same for the
EventProp cores).  The device clock: a PCM store is read once per run at the
emulated time ``t = samples_seen x T x dt`` (``samples_seen`` counts every
sample this core ran before, training and test; with a lockstep batch of B
samples the B samples share one read, and the clock advances by ``B T dt``, as
if run one after the other).  Adam's step is given to the store as a delta at
the time the run ended.  Training is bit-identical for 1, 3 or 12 cores.
"""

from __future__ import annotations

import numpy as np

from spinnray.machine.core import Core, CoreSpec
from spinnray.errors import NetworkError, SpinnrayError
from spinnray.rules.eprop.numerics import check_learning, pseudo_derivative, softmax_cross_entropy
from spinnray.rules.eventprop.numerics import Adam
from spinnray.model.neurons import ALIF, LI
# weight_store_options, _store_bytes and PCM_BYTES_PER_WEIGHT live in spinnray.rules.weight_stores (both
# learning cores use them); they stay importable from here.
from spinnray.rules.weight_stores import PCM_BYTES_PER_WEIGHT, _store_bytes  # noqa: F401  (re-exported)
from spinnray.rules.weight_stores import WeightStoreMixin, weight_store_bytes, weight_store_options

__all__ = ["EPropCore", "learning_bytes", "weight_store_options"]


def learning_bytes(network, pop, n: int, batch: int, dtype: str, feedback: str = "symmetric",
                   weight_store: dict | None = None, rate_reg: bool = False) -> dict[str, int]:
    """The e-prop state a core of ``pop`` with ``n`` neurons will hold (for the mapper's budget).

    ``weight_store`` (:func:`weight_store_options`): the ``weights`` and ``weight_accumulator``
    bytes of the stores, summed over the incoming projections (each packed separately).
    ``rate_reg``: the firing-rate regulariser's ``E`` (post x pre) and spike counts (int64).
    """
    item = np.dtype(dtype).itemsize
    pre = sum(p.pre.size for p in network.incoming(pop))
    stores = weight_store_bytes(network, pop, n, weight_store)
    if isinstance(pop.model, ALIF):
        per_syn = batch * pre * n
        reg = (pre * n * item + n * 8) if rate_reg else 0
        return {"gradients": pre * n * item, "optimizer": 2 * pre * n * item,
                "traces": (batch * pre + (2 if pop.model.beta else 1) * per_syn + batch * n) * item + reg,
                "learning_signal": batch * n * item, "scratch": per_syn * item, **stores}
    if isinstance(pop.model, LI):
        return {"gradients": pre * n * item, "optimizer": 2 * pre * n * item,
                "traces": (2 * batch * pre + batch * n) * item,
                **({"feedback": pre * n * item} if feedback == "random" else {}), **stores}
    return {}


class EPropCore(WeightStoreMixin, Core):
    """An ALIF hidden slice or the LI readout, trained with e-prop."""

    def __init__(self, spec: CoreSpec):
        m = spec.model
        if not isinstance(m, (ALIF, LI)):
            raise NetworkError(f"e-prop trains ALIF hidden neurons and an LI readout; population "
                               f"{spec.population!r} is {type(m).__name__}")
        if isinstance(m, LI) and m.tau_syn_ms != 0:
            raise NetworkError(f"e-prop: readout {spec.population!r} has tau_syn_ms = {m.tau_syn_ms}; "
                               "expected 0 (y = kappa y + (1 - kappa) input)")
        for inc in spec.incoming:
            if not np.isscalar(inc.delays):
                raise NetworkError(f"e-prop needs one delay per projection; {inc.name!r} has per-synapse delays")
        check_learning(spec.learning)
        self._pending = None                   # the round's last trace update, until flush()
        super().__init__(spec)

    # ------------------------------------------------------------------ state
    def _init_learning(self) -> None:
        L, spec = self.spec.learning, self.spec
        self.hidden = isinstance(spec.model, ALIF)
        B, n = spec.batch, spec.n
        self.pre_total = sum(inc.pre_size for inc in spec.incoming)
        self.offsets = np.cumsum([0] + [inc.pre_size for inc in spec.incoming])
        self.window_steps = L.get("window_steps")
        self.weight_decay = float(L.get("weight_decay", 0.0))
        self.grads = [np.zeros_like(w) for w in self.weights]
        self.opts = [Adam(w.shape, w.dtype, float(L["lr"]), tuple(L.get("betas", (0.9, 0.999))),
                          float(L.get("eps", 1e-5))) for w in self.weights]
        self.masks = [inc.mask for inc in spec.incoming]
        P = self.pre_total
        dt = self.dtype
        if self.hidden:
            self.kappa = float(np.exp(-spec.dt_ms / float(L["tau_out_ms"])))
            self.surrogate = dict(kind=L.get("surrogate", "triangle"), gamma=float(L.get("gamma", 0.3)),
                                  v_th=float(spec.model.v_th), lens=float(L.get("lens", 0.5)),
                                  scale=float(L.get("scale", 6.0)), height=float(L.get("height", 0.15)))
            self.eps_v = np.zeros((B, P), dt)        # (batch, pre) shared by all post neurons
            # Per-synapse arrays are (batch, post, pre): the long pre axis innermost
            # makes the broadcasting updates about 2x faster than (batch, pre, post).
            self.d = np.zeros((B, n, P) if spec.model.beta else (B, n, 0), dt)   # eps_v - beta eps_a
            self.acc = np.zeros((B, n, P), dt)       # sum over the loss window of ebar, as sum_t c_t e[t]
            self._tmp = np.zeros((B, n, P), dt)      # scratch (not state: counted apart)
            self.psi = np.zeros((B, n), dt)          # psi of the last step
            self.signal = np.zeros((B, n), dt)       # learning signals received
            self.rate_reg = float(L.get("rate_reg", 0.0))
            self.rate_target = float(L.get("rate_target_hz", 10.0)) / 1000.0    # spikes per ms
            self.ereg = np.zeros((n, P) if self.rate_reg else (0, 0), dt)       # sum_{b,t} e[t]
            self.zcount = np.zeros(n if self.rate_reg else 0, np.int64)         # spikes per neuron
        else:
            self.zbar = np.zeros((B, P), dt)         # kappa-filtered input of the readout
            self.acc_z = np.zeros((B, P), dt)
            self.ysum = np.zeros((B, n), dt)
            fb = L.get("feedback", "symmetric")
            self.feedback_kind = fb
            if fb == "random":
                rng = np.random.default_rng(int(L.get("feedback_seed", 0)))
                self.feedback = [rng.normal(0.0, 1.0 / np.sqrt(inc.pre_size), (inc.pre_size, n)).astype(dt)
                                 for inc in spec.incoming]
            else:
                self.feedback = None
            self.err = None
        self.labels = None
        self.outputs: dict[str, np.ndarray] = {}
        self.has_grads = False
        self._init_stores(L.get("weight_store"))

    def memory(self) -> dict[str, int]:
        mem = super().memory()                  # weights (stores), gradients, optimizer
        if any(m is not None for m in self.masks):
            mem["masks"] = sum(m.nbytes for m in self.masks if m is not None)
        keys = [inc.error_keys for inc in self.spec.incoming if inc.error_keys is not None]
        if keys:
            mem["error_keys"] = sum(k.nbytes for k in keys)
        if self.hidden:
            mem["traces"] = sum(a.nbytes for a in (self.eps_v, self.d, self.acc, self.psi, self.ereg, self.zcount))
            mem["learning_signal"] = self.signal.nbytes
            # numpy temporaries of the trace update; a PE loops synapse by synapse
            # without them.  Counted against the budget, not as training state.
            mem["scratch"] = self._tmp.nbytes
        else:
            mem["traces"] = self.zbar.nbytes + self.acc_z.nbytes + self.ysum.nbytes
            if self.feedback is not None:
                mem["feedback"] = sum(f.nbytes for f in self.feedback)
        return mem

    # ---------------------------------------------------------------- forward
    def reset(self, steps, batch=None, inputs=None, record=("spikes",)) -> None:
        """``inputs``: the analog input dict (hidden), the labels ``(batch,)``
        (readout), or a dict holding both (``"targets"``)."""
        labels = inputs.get("targets") if isinstance(inputs, dict) else inputs
        super().reset(steps, batch, inputs if isinstance(inputs, dict) else None, record)
        self._pending = None                   # a trace update left by an interrupted run
        self.steps = steps
        w = self.window_steps or steps
        if w > steps:
            raise SpinnrayError(f"learning.window_steps = {w} exceeds the run's {steps} steps")
        self.window_start = steps - w
        self.window = w
        B = self.batch
        self._read_stores(B, steps)            # this run's effective weights; the clock advances by B T dt
        if self.hidden:
            for a in (self.eps_v, self.d, self.acc, self.psi, self.signal):
                a[:B] = 0
            self.ereg[:] = 0
            self.zcount[:] = 0
            # sum_{s in window} ebar[s] = sum_t c_t e[t]: c_{T-1} = 0,
            # c_t = kappa c_{t+1} + (1 - kappa) [t + 1 in window]  (ebar lags e by one step)
            c = np.zeros(steps)
            for t in range(steps - 2, -1, -1):
                c[t] = self.kappa * c[t + 1] + (1.0 - self.kappa) * (t + 1 >= self.window_start)
            self.c_read = c.astype(self.dtype)
            # below this, c_t e[t] is under the dtype's resolution of the window's sum: skipped
            self.c_skip = float(c.max()) * float(np.finfo(self.dtype).eps) ** 2
        else:
            for a in (self.zbar, self.acc_z, self.ysum):
                a[:B] = 0
            self.err = None
            self.labels = None
            if labels is not None:
                y = np.asarray(labels)
                if y.shape != (B,) or not np.issubdtype(y.dtype, np.integer) \
                        or (y.size and (y.min() < 0 or y.max() >= self.spec.n)):
                    raise SpinnrayError(f"core {self.id}: labels of shape {y.shape}; expected ({B},) "
                                        f"ints in [0, {self.spec.n})")
                self.labels = y.astype(np.int64)
        self.has_grads = False

    def _pre_activity(self, t: int) -> np.ndarray:
        """What each pre neuron put into this core at step ``t``: (batch, pre_total)."""
        B = self.batch
        parts = []
        for inc in self.spec.incoming:
            if inc.analog:
                parts.append(self.analog[inc.pre][t])
            else:
                ring = self.hist[inc.pre]
                parts.append(ring[(t - int(inc.delays)) % len(ring), :B])
        x = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        return x.astype(self.dtype, copy=False)

    def _after_step(self, t, s, before, fired) -> None:
        # The traces never feed back into the forward pass, so the last step of a round may
        # update them later (flush): on `ray` while the router routes the round.  What the
        # update reads is taken now: the round's delivery overwrites the spike history.
        pending = (t, s, before, self.state, self._pre_activity(t))
        if t == self._last_step:
            self._pending = pending
        else:
            self._traces(*pending)

    def flush(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._traces(*pending)

    def _traces(self, t, s, before, st, pre) -> None:
        """The trace update of step ``t`` (spikes ``s``, state ``before`` and after, ``st``,
        and the pre-synaptic activity ``pre`` of the step)."""
        B = self.batch
        if self.hidden:
            c, m = self.consts, self.model
            beta, alpha = m.beta, c["alpha"]
            eps_v, psi = self.eps_v[:B], self.psi[:B]         # eps_v[t-1] (B, P), psi[t-1] (B, n); 0 at t = 0
            if beta:
                rho = c["rho"]
                g = eps_v * -rho                              # - rho eps_v[t-1]
                eps_v *= alpha
                eps_v += (1.0 - alpha) * pre                  # eps_v[t]
                g += eps_v
                d = self.d[:B]                                # (B, n, P)
                d *= (rho - beta * (1.0 - rho) * psi)[:, :, None]
                d += g[:, None, :]                            # d[t]
            else:                                             # LIF: e = psi eps_v, no per-synapse state
                eps_v *= alpha
                eps_v += (1.0 - alpha) * pre
                d = eps_v[:, None, :]
            thr = m.v_th + beta * st.a
            psi[...] = pseudo_derivative((st.v - thr) / m.v_th, **self.surrogate)     # psi[t]
            if m.refractory_steps:
                psi *= before.r[:B] == 0            # a refractory neuron cannot spike: dz/dv = 0
            w = self.c_read[t]
            if self.rate_reg:
                self.zcount += np.count_nonzero(s[:B], axis=0)
                e = np.multiply(d, psi[:, :, None], out=self._tmp[:B])                   # e[t]
                self.ereg += e.sum(axis=0)          # rows added in sample order: any core split agrees
                if w > self.c_skip:
                    e *= w
                    self.acc[:B] += e                                                    # c_t e[t]
            elif w > self.c_skip:
                self.acc[:B] += np.multiply(d, (psi * w)[:, :, None], out=self._tmp[:B])   # c_t e[t]
        else:
            b = self.consts["b"]
            zbar = self.zbar[:B]
            zbar *= b
            zbar += (1.0 - b) * pre
            if t >= self.window_start:
                self.acc_z[:B] += zbar
                self.ysum[:B] += st.v

    def finish(self) -> None:
        """Readout: logits, loss, prediction and the per-sample output error."""
        self.flush()
        if self.hidden:
            return
        B = self.batch
        logits = self.ysum[:B] / self.window
        pred = np.argmax(logits, axis=1)
        self.outputs = {"pred": pred, "logits": logits.copy()}
        if self.labels is not None:
            loss, p = softmax_cross_entropy(logits.astype(np.float64), self.labels)
            err = p
            err[np.arange(B), self.labels] -= 1.0
            self.err = (err / self.window).astype(self.dtype)   # (B, n_out), x 1/batch in begin_backward
            self.outputs["loss"] = loss
        self.recorded.update(self.outputs)

    # --------------------------------------------------------------- learning
    def begin_backward(self, steps: int, scale: float) -> None:
        """Readout: its own gradient and the learning signals; ``scale`` = 1 / total batch."""
        self.loss_scale = float(scale)
        for g in self.grads:
            g[:] = 0
        if self.hidden:
            self.signal[:] = 0
            return
        if self.err is None:
            raise SpinnrayError(f"core {self.id}: e-prop backward needs a forward run with labels")
        err = self.err * self.dtype.type(self.loss_scale)
        B = self.batch
        for g, inc, (a, b) in zip(self.grads, self.spec.incoming, zip(self.offsets[:-1], self.offsets[1:])):
            for s in range(B):                   # summed over samples in order (any batch split agrees)
                g += self.acc_z[s, a:b, None] * err[s][None, :]
        self.err_scaled = err
        self.has_grads = True

    def backward_block(self, i: int) -> list[bytes]:
        """Readout: the learning signals of every hidden neuron, one error event per (sample, neuron)."""
        if self.hidden:
            return []
        err = self.err_scaled
        keys, payload, bidx = [], [], []
        for j, inc in enumerate(self.spec.incoming):
            if inc.error_keys is None:
                continue
            fb = self.weights[j] if self.feedback is None else self.feedback[j]   # (pre, n_out)
            sig = err @ fb.T                                                     # (B, pre)
            b, pre = np.nonzero(sig)
            keys.append(inc.error_keys[pre])
            payload.append(sig[b, pre])
            bidx.append(b)
        return self._error_frames(i, keys, bidx, payload)

    def deliver_errors(self, frames: list[bytes], i: int, span: int = 1) -> None:
        """Hidden: take the learning signals, then form the gradient from the accumulated traces."""
        refuse = None if self.hidden else f"core {self.id} is a readout and takes no learning signals"
        for b, local, value, _, _ in self._error_events(frames, i, "learning signals", refuse, span):
            np.add.at(self.signal, (b, local), value)
        if self.hidden:
            B = self.batch
            for g, (a, b) in zip(self.grads, zip(self.offsets[:-1], self.offsets[1:])):
                for s in range(B):
                    g += self.signal[s][None, :] * self.acc[s, :, a:b].T
            if self.rate_reg:
                per = self.loss_scale / (self.steps * self.spec.dt_ms)     # d r_j / d z_j[b, t]
                rate = self.zcount * per
                sig = (2.0 * self.rate_reg * per) * (rate - self.rate_target)
                for g, (a, b) in zip(self.grads, zip(self.offsets[:-1], self.offsets[1:])):
                    g += (sig[:, None] * self.ereg[:, a:b]).T.astype(g.dtype, copy=False)
            self.has_grads = True

    def apply_own(self, lr: float) -> None:
        """:meth:`apply` (every e-prop core owns its gradient: nothing to reduce)."""
        self.apply(lr)

    def apply(self, lr: float | None = None) -> None:
        """One Adam step of this core's own weights with its own gradients (plus L2)."""
        if not self.has_grads:
            raise SpinnrayError(f"core {self.id}: apply before a backward round")
        for j, (w, g) in enumerate(zip(self.weights, self.gradients())):
            if self.weight_decay:
                g = g + self.weight_decay * w
            self._adam_step(j, g, lr)
        self.has_grads = False
