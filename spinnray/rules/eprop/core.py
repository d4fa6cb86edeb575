"""Cores that learn with e-prop (model parallel: every core keeps its slice).

A hidden core holds an ALIF slice: its neurons' incoming weight columns (input
and recurrent), their gradients, Adam moments and the e-prop traces, and
nothing else.  The readout core holds the LI readout, its weights and the
feedback matrix.  Per step, hidden cores exchange spikes through the router
as any core does; at the end of a sample the readout core sends the learning
signals ``L_j`` as error events (float payload), one per hidden neuron and
sample, through the router to the cores that own those neurons.  Weights never
leave their core: each applies Adam to its own slice.

Data parallel (``parallel.replicas`` = R): R copies of this model-parallel network, each on its
own cores, each running a shard of the mini-batch; the loss scale is 1 / (the whole mini-batch),
so each copy's gradients are its samples' terms of the one-copy sum, and the trainer sums every
slice's :meth:`~EPropCore.reduction_terms` over the copies before every copy applies the same
Adam step.  The regulariser's gradient is not a sum over samples (its signal uses the batch's
rate), so a hidden core's terms are the learning signals' part of its gradient, its summed
unfiltered traces and its spike counts; :meth:`~EPropCore.apply` forms the regulariser's part
from the sums.  R copies of B / R samples (any shards, an empty one too) then give the update
of one copy running the B samples in lockstep, up to the order of float additions.

The equations are in :mod:`spinnray.rules.eprop`.  A hidden core is built from an
:class:`EPropHiddenSpec`, the readout core from an :class:`EPropReadoutSpec`; their
``memory(shape)`` is the one memory model of each (the mapping's budget check and the
cores' own reports).

Memory (per core, from the arrays held): for a hidden slice of ``n`` neurons
with ``P`` pre neurons over all incoming projections and batch ``B``:
weights, gradients, two Adam moments (``4 P n``), ``eps_v`` (``B P``) and
two per-synapse traces ``d`` and ``acc`` (``2 B P n``; ``d`` only for ALIF,
beta > 0).  ``d = eps_v - beta eps_a`` (so that ``e = psi d``) obeys its own
recurrence, exact algebra on the equations of :mod:`spinnray.rules.eprop`::

    d_ij[t] = (rho - beta (1 - rho) psi_j[t-1]) d_ij[t-1] + (eps_v_i[t] - rho eps_v_i[t-1])

a scale per post neuron plus a term per pre neuron: two passes over the
per-synapse array instead of the six that ``eps_a`` and ``e`` take.  The
readout-filtered trace ``ebar`` of the equations is not kept either: since
the loss window and the readout delay (``EPropHiddenSpec.readout_delay``) are known
in advance, the sum over the window of ``ebar[s]`` equals ``sum_t c_t e[t]`` with
per-step constants ``c_t``, so ``acc`` takes ``c_t psi[t] d[t]`` directly.
Steps whose ``c_t`` is below ``eps(dtype)^2`` times the largest (long before a
short loss window: ``c_t`` decays as ``kappa`` per step) add nothing that the
dtype could hold and are skipped.
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
knows its own neurons' spikes (with replicas, the copies' counts are summed first).  The gradient
is that signal times ``E_ji = sum_{b,t} e_ji[t]`` (the unfiltered eligibility trace: the loss is on
``z`` itself), kept summed over the batch as ``(post, pre)`` (``traces``); with no recurrence it is
BPTT's gradient of the same loss (tested).

Weight storage (``spec.learning.weight_store``, from ``machine.weight_bits``,
``rounding``, ``accumulate``, ``weight_max``, ``synapse``, ``pcm``,
``weight_seed``; see :func:`~spinnray.rules.learning.weight_store_options`): None, the core
keeps float weights and Adam updates them in place; given, each incoming
projection's slice lives in a :mod:`spinnray.machine.quant` store, built, seeded, read,
updated and counted as :mod:`spinnray.rules.learning` describes (the same for the
EventProp cores).  The device clock: a PCM store is read once per run at the
emulated time ``t = samples_seen x T x dt`` (``samples_seen`` counts every
sample this core ran before, training and test; with a lockstep batch of B
samples the B samples share one read, and the clock advances by ``B T dt``, as
if run one after the other).  With replicas every copy's clock advances by the
mapped batch ``spec.batch x T x dt`` per run whatever its shard (the copies run
side by side, as EventProp's), so copies with uneven shards hold identical
devices.  Adam's step is given to the store as a delta at the time the run
ended.  Training is bit-identical for 1, 3 or 12 cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinnray.errors import NetworkError, SpinnrayError
from spinnray.machine.core import CoreShape, CoreSpec, forward_memory
from spinnray.model.neurons import ALIF, LI
from spinnray.rules.losses import SurrogateSpec, pseudo_derivative, softmax_cross_entropy
from spinnray.rules.learning import LearningCore, WeightStoreSpec, learning_memory
from spinnray.rules.optim import AdamSpec

__all__ = ["EPropHiddenSpec", "EPropReadoutSpec", "EPropCore", "EPropHiddenCore", "EPropReadoutCore"]


@dataclass(frozen=True)
class EPropHiddenSpec:
    """An e-prop hidden (ALIF) core: Adam, L2, the loss window (None = every step), the
    readout's time constant and the delay of this population's projection into the readout
    (the traces are filtered with both), the pseudo-derivative and the firing-rate
    regulariser (``rate_reg`` 0 = off)."""

    adam: AdamSpec
    tau_out_ms: float
    surrogate: SurrogateSpec
    weight_decay: float = 0.0
    window_steps: int | None = None
    rate_reg: float = 0.0
    rate_target_hz: float = 10.0
    weight_store: WeightStoreSpec | None = None
    readout_delay: int = 1

    def __post_init__(self):
        d = self.readout_delay
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 1:
            raise NetworkError(f"e-prop: readout_delay = {d!r}; expected an int >= 1 (steps from a hidden "
                               "spike to the readout)")

    @property
    def core_class(self):
        return EPropHiddenCore

    def static_memory(self, shape: CoreShape) -> dict[str, int]:
        """Stores, gradients, Adam, masks, error keys; traces ``eps_v`` (B P), ``d`` (B n P, ALIF
        only), ``acc`` (B n P), ``psi`` (B n) and the regulariser's (n P and n spike counts);
        the learning signals (B n); one scratch array (B n P) for numpy temporaries."""
        item, B, n = shape.itemsize, shape.batch, shape.n
        P = sum(s.pre_size for s in shape.incoming)
        per_syn = B * P * n
        reg = (P * n * item + n * 8) if self.rate_reg else 0
        beta = getattr(shape.model, "beta", 0.0)
        return {**learning_memory(shape, self.weight_store),
                "traces": (B * P + (2 if beta else 1) * per_syn + B * n) * item + reg,
                "learning_signal": B * n * item, "scratch": per_syn * item}

    def memory(self, shape: CoreShape) -> dict[str, int]:
        return {**forward_memory(shape), **self.static_memory(shape)}


@dataclass(frozen=True)
class EPropReadoutSpec:
    """The e-prop readout (LI) core: Adam, L2, the loss window and the feedback weights of the
    learning signals (``symmetric``: W_out; ``random``: fixed, seeded)."""

    adam: AdamSpec
    weight_decay: float = 0.0
    window_steps: int | None = None
    feedback: str = "symmetric"
    feedback_seed: int = 0
    weight_store: WeightStoreSpec | None = None

    @property
    def core_class(self):
        return EPropReadoutCore

    def static_memory(self, shape: CoreShape) -> dict[str, int]:
        """Stores, gradients, Adam, masks, error keys; traces ``zbar``, ``acc_z`` (B P) and the
        windowed readout sum (B n); the random feedback matrix (P n) if any."""
        item, B, n = shape.itemsize, shape.batch, shape.n
        P = sum(s.pre_size for s in shape.incoming)
        return {**learning_memory(shape, self.weight_store), "traces": (2 * B * P + B * n) * item,
                **({"feedback": P * n * item} if self.feedback == "random" else {})}

    def memory(self, shape: CoreShape) -> dict[str, int]:
        return {**forward_memory(shape), **self.static_memory(shape)}


class EPropCore(LearningCore):
    """What the hidden and the readout cores share: the loss window, L2, Adam on their own
    gradients, and the deferred trace update of a round's last step."""

    steps_copies = True         # every sum over samples is kept per copy (port_grads, port_ereg)

    def __init__(self, spec: CoreSpec):
        for inc in spec.incoming:
            if not np.isscalar(inc.delays):
                raise NetworkError(f"e-prop needs one delay per projection; {inc.name!r} has per-synapse delays")
        super().__init__(spec)
        L = spec.learning
        self._pending = None                   # the round's last trace update, until flush()
        self.pre_total = sum(inc.pre_size for inc in spec.incoming)
        self.offsets = np.cumsum([0] + [inc.pre_size for inc in spec.incoming])
        self.window_steps = L.window_steps
        self.weight_decay = float(L.weight_decay)
        self.labels = None
        self.outputs: dict[str, np.ndarray] = {}
        self.has_grads = False

    def reset(self, steps, batch=None, inputs=None, record=("spikes",), layered=False) -> None:
        """``inputs``: the analog input dict (hidden), the labels ``(batch,)`` (readout), or a
        dict holding both (``"targets"``)."""
        super().reset(steps, batch, inputs if isinstance(inputs, dict) else None, record, layered)
        self._pending = None                   # a trace update left by an interrupted run
        self.steps = steps
        w = self.window_steps or steps
        if w > steps:
            raise SpinnrayError(f"learning.window_steps = {w} exceeds the run's {steps} steps")
        self.window_start = steps - w
        self.window = w
        # this run's effective weights; the clock advances by B T dt, or with replicas (copies side
        # by side) by the mapped batch whatever the shard, so uneven shards age every copy alike
        self._read_stores(self.batch if self.spec.replicas == 1 else self.ports[0].copy.batch, steps)
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
        raise NotImplementedError

    def apply(self, grads=None, lr: float | None = None) -> None:
        """One Adam step of this core's own weights (plus L2) with ``grads``: the replicas' sums of
        :meth:`reduction_terms` (data parallel), or None: this core's own gradient."""
        if not self.has_grads:
            raise SpinnrayError(f"core {self.id}: apply before a backward round")
        if not self._later_copy(grads):
            grads = self.gradients() if grads is None else self._reduced(grads)
            for j, (w, g) in enumerate(zip(self.weights, grads)):
                if self.weight_decay:
                    g = g + self.weight_decay * w
                self._adam_step(j, g, lr)
        self.has_grads = bool(self._to_apply)       # stepping copies: until every copy was told

    def _reduced(self, terms) -> list[np.ndarray]:
        """The gradients from the replicas' sums of :meth:`reduction_terms` (checked against this
        core's own terms: a wrong count or shape is an error naming both)."""
        want = [np.shape(t) for t in self.reduction_terms()]
        got = [np.shape(t) for t in terms]
        if got != want:
            raise SpinnrayError(f"core {self.id}: reduced terms of shapes {got}; expected {want} "
                                "(the replicas' sums of reduction_terms())")
        return self._from_terms(list(terms))

    def _from_terms(self, terms: list) -> list[np.ndarray]:
        """The gradients from summed :meth:`reduction_terms` (here: the gradients themselves)."""
        return [np.asarray(g, w.dtype) for g, w in zip(terms, self.weights)]

    def backward_layer(self, steps: int) -> list[bytes]:
        raise SpinnrayError(f"core {self.id}: e-prop runs lockstep; the layered schedule has no learning signals")


class EPropHiddenCore(EPropCore):
    """An ALIF hidden slice: eligibility traces of its own synapses; takes the learning signals."""

    def __init__(self, spec: CoreSpec):
        if not isinstance(spec.model, ALIF):
            raise NetworkError(f"e-prop trains ALIF hidden neurons; population {spec.population!r} is "
                               f"{type(spec.model).__name__}")
        super().__init__(spec)
        L = spec.learning
        B, n = spec.batch, spec.n
        P = self.pre_total
        dt = self.dtype
        self.kappa = float(np.exp(-spec.dt_ms / float(L.tau_out_ms)))
        self.surrogate = L.surrogate
        self.eps_v = np.zeros((B, P), dt)        # (batch, pre) shared by all post neurons
        # Per-synapse arrays are (batch, post, pre): the long pre axis innermost
        # makes the broadcasting updates about 2x faster than (batch, pre, post).
        self.d = np.zeros((B, n, P) if spec.model.beta else (B, n, 0), dt)   # eps_v - beta eps_a
        self.acc = np.zeros((B, n, P), dt)       # sum over the loss window of ebar, as sum_t c_t e[t]
        self._tmp = np.zeros((B, n, P), dt)      # scratch (not state: counted apart)
        self.psi = np.zeros((B, n), dt)          # psi of the last step
        self.signal = np.zeros((B, n), dt)       # learning signals received
        self.rate_reg = float(L.rate_reg)
        self.rate_target = float(L.rate_target_hz) / 1000.0    # spikes per ms
        # per copy (one for a single core): sum_{b,t} e[t] and spikes per neuron over its samples
        self.port_ereg = [np.zeros((n, P) if self.rate_reg else (0, 0), dt) for _ in self.ports]
        self.port_zcount = [np.zeros(n if self.rate_reg else 0, np.int64) for _ in self.ports]
        self.ereg, self.zcount = self.port_ereg[0], self.port_zcount[0]

    def reset(self, steps, batch=None, inputs=None, record=("spikes",), layered=False) -> None:
        super().reset(steps, batch, inputs, record, layered)
        B = self.batch
        for a in (self.eps_v, self.d, self.acc, self.psi, self.signal):
            a[:B] = 0
        for a in (*self.port_ereg, *self.port_zcount):
            a[:] = 0
        # sum_{s in window} ebar[s] = sum_t c_t e[t], with ebar lagging e by the readout delay d
        # (ebar[t] = kappa ebar[t-1] + (1 - kappa) e[t-d]): c_t = 0 for t > T-1-d, and
        # c_t = kappa c_{t+1} + (1 - kappa) [t + d in window] below
        d = int(self.spec.learning.readout_delay)
        c = np.zeros(steps)
        for t in range(steps - 1 - d, -1, -1):
            c[t] = self.kappa * c[t + 1] + (1.0 - self.kappa) * (t + d >= self.window_start)
        self.c_read = c.astype(self.dtype)
        # below this, c_t e[t] is under the dtype's resolution of the window's sum: skipped
        self.c_skip = float(c.max()) * float(np.finfo(self.dtype).eps) ** 2

    def _traces(self, t, s, before, st, pre) -> None:
        """The trace update of step ``t`` (spikes ``s``, state ``before`` and after, ``st``,
        and the pre-synaptic activity ``pre`` of the step)."""
        B = self.batch
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
        psi[...] = pseudo_derivative((st.v - thr) / m.v_th, self.surrogate, float(m.v_th))     # psi[t]
        if m.refractory_steps:
            psi *= before.r[:B] == 0            # a refractory neuron cannot spike: dz/dv = 0
        w = self.c_read[t]
        if self.rate_reg:
            e = np.multiply(d, psi[:, :, None], out=self._tmp[:B])                   # e[t]
            for port, ereg, zcount in zip(self.ports, self.port_ereg, self.port_zcount):
                rows = slice(port.lo, port.lo + port.n)
                zcount += np.count_nonzero(s[rows], axis=0)
                ereg += e[rows].sum(axis=0)     # rows added in sample order: any core split agrees
            if w > self.c_skip:
                e *= w
                self.acc[:B] += e                                                    # c_t e[t]
        elif w > self.c_skip:
            self.acc[:B] += np.multiply(d, (psi * w)[:, :, None], out=self._tmp[:B])   # c_t e[t]

    def begin_backward(self, steps: int, scale: float) -> None:
        self.loss_scale = float(scale)
        self._begin_update()
        self.signal[:] = 0

    def backward_block(self, i: int, k: int = 1) -> list[bytes]:
        return []

    def deliver_errors(self, frames: list[bytes], i: int, span: int = 1) -> None:
        """Take the learning signals, then form their part of the gradient from the accumulated
        traces (the regulariser's part is added by :meth:`gradients` or, reduced, by :meth:`apply`)."""
        for b, local, value, _, _ in self._error_events(frames, i, "learning signals", None, span):
            np.add.at(self.signal, (b, local), value)
        for port, grads in zip(self.ports, self.port_grads):     # each copy sums its own samples
            for g, (a, b) in zip(grads, zip(self.offsets[:-1], self.offsets[1:])):
                for s in range(port.lo, port.lo + port.n):
                    g += self.signal[s][None, :] * self.acc[s, :, a:b].T
        self.has_grads = True

    def _with_regulariser(self, grads, ereg: np.ndarray, zcount: np.ndarray) -> list[np.ndarray]:
        """``grads`` (the learning signals' part) plus the regulariser's, from the batch's summed
        traces ``ereg`` and spike counts ``zcount`` (the rate needs the whole batch's count)."""
        if not self.rate_reg:
            return list(grads)
        per = self.loss_scale / (self.steps * self.spec.dt_ms)     # d r_j / d z_j[b, t]
        rate = zcount * per
        sig = (2.0 * self.rate_reg * per) * (rate - self.rate_target)
        return [g + (sig[:, None] * ereg[:, a:b]).T.astype(g.dtype, copy=False)
                for g, (a, b) in zip(grads, zip(self.offsets[:-1], self.offsets[1:]))]

    def gradients(self) -> list[np.ndarray]:
        """dL/dW of each incoming projection over this core's samples, regulariser included, masked."""
        return [g if m is None else g * m
                for g, m in zip(self._with_regulariser(self.grads, self.ereg, self.zcount), self.masks)]

    def reduction_terms(self) -> list[np.ndarray]:
        """The learning signals' part of the gradients (masked) and, with the regulariser, its
        summed traces ``ereg`` (n, P) and spike counts (n,): replicas sum these, and :meth:`apply`
        forms the regulariser's part from the whole batch's rate."""
        r = self.port
        own = [g if m is None else g * m for g, m in zip(self.port_grads[r], self.masks)]
        return own + [self.port_ereg[r], self.port_zcount[r]] if self.rate_reg else own

    def _from_terms(self, terms: list) -> list[np.ndarray]:
        k = len(self.weights)
        grads = [np.asarray(g, w.dtype) for g, w in zip(terms[:k], self.weights)]
        if not self.rate_reg:
            return grads
        full = self._with_regulariser(grads, np.asarray(terms[k], self.dtype), np.asarray(terms[k + 1], np.int64))
        return [g if m is None else g * m for g, m in zip(full, self.masks)]



class EPropReadoutCore(EPropCore):
    """The LI readout: its weights, the windowed loss, and the learning signals it sends."""

    def __init__(self, spec: CoreSpec):
        m = spec.model
        if not isinstance(m, LI):
            raise NetworkError(f"e-prop reads out with an LI population; {spec.population!r} is {type(m).__name__}")
        if m.tau_syn_ms != 0:
            raise NetworkError(f"e-prop: readout {spec.population!r} has tau_syn_ms = {m.tau_syn_ms}; "
                               "expected 0 (y = kappa y + (1 - kappa) input)")
        super().__init__(spec)
        L = spec.learning
        B, n = spec.batch, spec.n
        P = self.pre_total
        dt = self.dtype
        self.zbar = np.zeros((B, P), dt)         # kappa-filtered input of the readout
        self.acc_z = np.zeros((B, P), dt)
        self.ysum = np.zeros((B, n), dt)
        self.feedback_kind = L.feedback
        if L.feedback == "random":
            rng = np.random.default_rng(int(L.feedback_seed))
            self.feedback = [rng.normal(0.0, 1.0 / np.sqrt(inc.pre_size), (inc.pre_size, n)).astype(dt)
                             for inc in spec.incoming]
        else:
            self.feedback = None
        self.err = None

    def reset(self, steps, batch=None, inputs=None, record=("spikes",), layered=False) -> None:
        labels = inputs.get("targets") if isinstance(inputs, dict) else inputs
        super().reset(steps, batch, inputs, record, layered)
        B = self.batch
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

    def _traces(self, t, s, before, st, pre) -> None:
        B = self.batch
        b = self.consts["b"]
        zbar = self.zbar[:B]
        zbar *= b
        zbar += (1.0 - b) * pre
        if t >= self.window_start:
            self.acc_z[:B] += zbar
            self.ysum[:B] += st.v

    def finish(self) -> None:
        """Logits, loss, prediction and the per-sample output error."""
        self.flush()
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

    def begin_backward(self, steps: int, scale: float) -> None:
        """Its own gradient and the learning signals; ``scale`` = 1 / total batch."""
        self.loss_scale = float(scale)
        if self.err is None:
            raise SpinnrayError(f"core {self.id}: e-prop backward needs a forward run with labels")
        self._begin_update()
        err = self.err * self.dtype.type(self.loss_scale)
        for port, grads in zip(self.ports, self.port_grads):     # each copy sums its own samples
            for g, (a, b) in zip(grads, zip(self.offsets[:-1], self.offsets[1:])):
                for s in range(port.lo, port.lo + port.n):       # in order (any batch split agrees)
                    g += self.acc_z[s, a:b, None] * err[s][None, :]
        self.err_scaled = err
        self.has_grads = True

    def backward_block(self, i: int, k: int = 1) -> list[bytes]:
        """The learning signals of every hidden neuron, one error event per (sample, neuron)."""
        err = self.err_scaled
        keys, payload, bidx = [], [], []
        for j, inc in enumerate(self.spec.incoming):
            if inc.error_keys is None:
                continue
            fb = self.weights[j] if self.feedback is None else self.feedback[j]   # (pre, n_out)
            # (B, pre); per copy, as its own PE would multiply (a product's rows can depend on its height)
            sig = np.concatenate([err[p.lo:p.lo + p.n] @ fb.T for p in self.ports]) if len(self.ports) > 1 \
                else err @ fb.T
            b, pre = np.nonzero(sig)
            keys.append((j, pre))
            payload.append(sig[b, pre])
            bidx.append(b)
        return self._error_frames(i, keys, bidx, payload)

    def deliver_errors(self, frames: list[bytes], i: int, span: int = 1) -> None:
        refuse = f"core {self.id} is a readout and takes no learning signals"
        for _ in self._error_events(frames, i, "learning signals", refuse, span):
            pass
