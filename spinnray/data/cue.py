"""The cue-accumulation ("evidence accumulation") task of Bellec et al. 2020.

Bellec et al., "A solution to the learning dilemma for recurrent networks of
spiking neurons", Nat. Commun. 11:3625 (2020), Fig. 3; the reference generator
is ``generate_click_task_data`` in IGITUGraz/eligibility_propagation.  This is
an independent reimplementation with ``numpy.random.default_rng``.

A trial (all times in ms, defaults in brackets) on ``4 * channels_per_group``
input channels [40], in four groups of ``channels_per_group`` [10]:

====================  ==========  ==================================================
group                 channels    fires (Bernoulli per step, p = rate * dt / 1000)
====================  ==========  ==================================================
left cues  (side 0)   0 .. 9      at ``rate_hz`` [40 Hz] during each left cue
right cues (side 1)   10 .. 19    at ``rate_hz`` during each right cue
recall                20 .. 29    at ``rate_hz`` during the recall period
background noise      30 .. 39    at ``background_hz`` [10 Hz] during the whole trial
====================  ==========  ==================================================

Time line (as in the reference: each cue is preceded by a gap)::

    gap | cue 0 | gap | cue 1 | ... | gap | cue n-1 | delay ... | recall
    cue k occupies [gap + k (cue + gap), gap + k (cue + gap) + cue)
    recall occupies the last ``recall_ms`` [150] of ``total_ms`` [2250]

With 7 cues of 100 ms spaced 150 ms the last cue ends at 1050 ms; the delay is
1050 ms and recall is 2100-2250 ms (2250 = 7 * 150 + 1200, the reference's
sequence length).  Each cue goes left or right with probability 1/2,
independently (``p_group=None``, the default); the reference code instead picks
a favoured side per trial and draws every cue on it with probability
``1 - p_group`` (``p_group=0.3``), which ``p_group`` reproduces.  The label is
the side that received more cues (0 = left, 1 = right); ``n_cues`` is odd so
there is no tie.  A trainer should put the loss only on the recall steps:
:meth:`CueLayout.decision_mask` / :func:`cue_decision_window`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from spinnray.checks import check_int, check_real
from spinnray.config import opt
from spinnray.data.base import Dataset, Split, Timing, check_indices, register
from spinnray.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "LEFT",
    "RIGHT",
    "N_GROUPS",
    "CueLayout",
    "cue_layout",
    "cue_decision_window",
    "CueTrials",
    "CueSplit",
    "cue_trials",
    "cue_accumulation",
]

#: Labels (and cue sides): the left cue group is 0, the right cue group is 1.
LEFT = 0
RIGHT = 1
#: Channel groups, in channel order: left cues, right cues, recall, background.
N_GROUPS = 4


def _steps(name: str, ms: float, dt_ms: float) -> int:
    """``ms / dt_ms`` as an int; ConfigError unless it is a whole number of steps."""
    ratio = ms / dt_ms
    steps = int(round(ratio))
    if abs(ratio - steps) > 1e-9 * max(1.0, abs(ratio)):
        raise ConfigError(f"{name} = {ms!r} ms: expected a whole multiple of dt_ms = {dt_ms!r} ms")
    return steps


@dataclass(frozen=True)
class CueLayout:
    """Where things happen in a cue-accumulation trial, in steps of ``dt_ms``.

    Attributes:
        n_cues: cues per trial (odd).
        steps: T, steps per trial (``total_ms / dt_ms``).
        cue_starts: first step of each cue, ``gap + k (cue + gap)`` in steps.
        cue_steps: steps of one cue.
        recall_start: first step of the recall period; it lasts to ``steps``.
        channels_per_group: channels of each of the four groups.
        dt_ms: ms per step.
    """

    n_cues: int
    steps: int
    cue_starts: tuple[int, ...]
    cue_steps: int
    recall_start: int
    channels_per_group: int
    dt_ms: float

    @property
    def n_channels(self) -> int:
        """Input channels, ``4 * channels_per_group``."""
        return N_GROUPS * self.channels_per_group

    def group(self, index: int) -> slice:
        """Channels of group ``index`` (0 left, 1 right, 2 recall, 3 background)."""
        if not 0 <= index < N_GROUPS:
            raise ConfigError(f"group index = {index!r}: expected 0..{N_GROUPS - 1}")
        c = self.channels_per_group
        return slice(index * c, (index + 1) * c)

    def cue_window(self, k: int) -> slice:
        """Steps of cue ``k`` (0-based)."""
        if not 0 <= k < self.n_cues:
            raise ConfigError(f"cue k = {k!r}: expected 0..{self.n_cues - 1}")
        return slice(self.cue_starts[k], self.cue_starts[k] + self.cue_steps)

    @property
    def decision_window(self) -> slice:
        """Steps of the recall period, ``slice(recall_start, steps)``: where the loss goes."""
        return slice(self.recall_start, self.steps)

    def decision_mask(self) -> np.ndarray:
        """Bool (steps,) mask, True on the recall steps."""
        mask = np.zeros(self.steps, dtype=bool)
        mask[self.decision_window] = True
        return mask


def cue_layout(
    *,
    n_cues: int = 7,
    dt_ms: float = 1.0,
    cue_ms: float = 100.0,
    gap_ms: float = 50.0,
    recall_ms: float = 150.0,
    total_ms: float = 2250.0,
    channels_per_group: int = 10,
) -> CueLayout:
    """Validate the timing parameters and return the :class:`CueLayout`.

    Every duration must be a whole number of steps of ``dt_ms``; ``cue_ms`` and
    ``recall_ms`` > 0, ``gap_ms`` >= 0; ``n_cues`` odd and >= 1; the cues must end
    no later than the recall period starts:
    ``gap + n_cues (cue + gap) - gap <= total - recall``.

    Raises:
        ConfigError: naming the parameter, its value and what is allowed.
    """
    n_cues = check_int("n_cues", n_cues, minimum=1)
    if n_cues % 2 == 0:
        raise ConfigError(f"n_cues = {n_cues}: expected an odd number, so that one side always has more cues")
    dt_ms = check_real("dt_ms", dt_ms, 0.0, strict=True)
    cue = _steps("cue_ms", check_real("cue_ms", cue_ms, 0.0, strict=True), dt_ms)
    gap = _steps("gap_ms", check_real("gap_ms", gap_ms, 0.0, strict=False), dt_ms)
    recall = _steps("recall_ms", check_real("recall_ms", recall_ms, 0.0, strict=True), dt_ms)
    steps = _steps("total_ms", check_real("total_ms", total_ms, 0.0, strict=True), dt_ms)
    channels_per_group = check_int("channels_per_group", channels_per_group, minimum=1)
    if cue < 1 or recall < 1:
        raise ConfigError(f"cue_ms = {cue_ms!r}, recall_ms = {recall_ms!r}: expected at least one step of dt_ms = {dt_ms!r}")
    cue_starts = tuple(gap + k * (cue + gap) for k in range(n_cues))
    cues_end = cue_starts[-1] + cue
    recall_start = steps - recall
    if cues_end > recall_start:
        raise ConfigError(
            f"total_ms = {total_ms!r}: too short; {n_cues} cues of {cue_ms!r} ms with gaps of {gap_ms!r} ms end at "
            f"{cues_end * dt_ms:g} ms and recall_ms = {recall_ms!r} needs the last {recall * dt_ms:g} ms; "
            f"expected total_ms >= {(cues_end + recall) * dt_ms:g}"
        )
    return CueLayout(n_cues, steps, cue_starts, cue, recall_start, channels_per_group, dt_ms)


def cue_decision_window(**layout_kwargs) -> slice:
    """Steps on which the answer is read out (the recall period).

    Takes the keyword arguments of :func:`cue_layout` (the same defaults as
    :func:`cue_accumulation`) and returns ``slice(recall_start, T)``; with the
    defaults ``slice(2100, 2250)``.
    """
    return cue_layout(**layout_kwargs).decision_window


def _majority(sides: np.ndarray) -> np.ndarray:
    """int64 labels of bool (n, n_cues) cue sides: 1 (RIGHT) iff more than half were right."""
    return (2 * sides.sum(axis=1) > sides.shape[1]).astype(np.int64)


@dataclass(frozen=True)
class CueTrials:
    """The trials of one seed, any of them on demand (:func:`cue_trials` builds it).

    Trial ``i`` is a fixed number of draws (:attr:`draws`) of the one stream
    ``numpy.random.default_rng(seed)``, starting at draw ``i * draws``; PCG64 jumps there
    (``advance``) in a few microseconds, so any subset of trials, in any order or batch
    composition, is generated alone and equals the same rows of :func:`cue_accumulation`.
    """

    layout: CueLayout
    seed: int
    p_active: float
    p_background: float
    p_group: float | None

    @property
    def draws(self) -> int:
        """Doubles one trial takes from the stream: the favoured side (with ``p_group``), the
        cue sides and one uniform per (step, channel)."""
        return (self.p_group is not None) + self.layout.n_cues + self.layout.steps * self.layout.n_channels

    def _sides(self, rng: np.random.Generator) -> np.ndarray:
        if self.p_group is None:
            return rng.random(self.layout.n_cues) < 0.5
        favoured = rng.random() < 0.5
        return (rng.random(self.layout.n_cues) < 1.0 - self.p_group) == favoured

    def _prob(self, side: np.ndarray, prob: np.ndarray) -> np.ndarray:
        """Spike probability per (step, channel) of a trial with cue sides ``side``, into ``prob``."""
        lay = self.layout
        left, right, recall, background = (lay.group(g) for g in range(N_GROUPS))
        prob.fill(0.0)
        for k in range(lay.n_cues):
            prob[lay.cue_window(k), right if side[k] else left] = self.p_active
        prob[lay.decision_window, recall] = self.p_active
        prob[:, background] = self.p_background
        return prob

    def sides(self, n: int) -> np.ndarray:
        """Bool (n, n_cues), True = right: the cue sides of trials ``0 .. n-1`` (their spikes are
        skipped, not drawn)."""
        bits = np.random.PCG64(self.seed)
        rng = np.random.Generator(bits)
        out = np.empty((n, self.layout.n_cues), dtype=bool)
        skip = self.layout.steps * self.layout.n_channels
        for i in range(n):
            out[i] = self._sides(rng)
            bits.advance(skip)
        return out

    def labels(self, n: int) -> np.ndarray:
        """int64 (n,): the labels of trials ``0 .. n-1``."""
        return _majority(self.sides(n))

    def fill(self, idx, out: np.ndarray, axis: int) -> np.ndarray:
        """Write trial ``idx[j]`` into ``out`` at position ``j`` along ``axis`` (0: ``out`` is
        (len(idx), T, C); 1: (T, len(idx), C)); returns the bool (len(idx), n_cues) sides."""
        lay = self.layout
        start = np.random.PCG64(self.seed).state
        bits = np.random.PCG64()
        rng = np.random.Generator(bits)
        prob = np.empty((lay.steps, lay.n_channels), dtype=np.float64)
        sides = np.empty((len(idx), lay.n_cues), dtype=bool)
        for j, i in enumerate(idx):
            bits.state = start
            bits.advance(int(i) * self.draws)
            sides[j] = side = self._sides(rng)
            trial = rng.random((lay.steps, lay.n_channels)) < self._prob(side, prob)
            if axis == 0:
                out[j] = trial
            else:
                out[:, j] = trial
        return sides


def cue_trials(
    seed: int,
    *,
    n_cues: int = 7,
    dt_ms: float = 1.0,
    cue_ms: float = 100.0,
    gap_ms: float = 50.0,
    recall_ms: float = 150.0,
    total_ms: float = 2250.0,
    rate_hz: float = 40.0,
    background_hz: float = 10.0,
    channels_per_group: int = 10,
    p_group: float | None = None,
) -> CueTrials:
    """The :class:`CueTrials` of ``seed``; arguments and errors as :func:`cue_accumulation`."""
    seed = check_int("seed", seed, minimum=0)
    layout = cue_layout(
        n_cues=n_cues,
        dt_ms=dt_ms,
        cue_ms=cue_ms,
        gap_ms=gap_ms,
        recall_ms=recall_ms,
        total_ms=total_ms,
        channels_per_group=channels_per_group,
    )
    p_active = check_real("rate_hz", rate_hz, 0.0, strict=False) * layout.dt_ms / 1000.0
    p_background = check_real("background_hz", background_hz, 0.0, strict=False) * layout.dt_ms / 1000.0
    for name, value, p in (("rate_hz", rate_hz, p_active), ("background_hz", background_hz, p_background)):
        if p > 1.0:
            raise ConfigError(
                f"{name} = {value!r} Hz at dt_ms = {layout.dt_ms!r}: spike probability per step {p:g} > 1; "
                f"expected {name} <= {1000.0 / layout.dt_ms:g}"
            )
    if p_group is not None:
        p_group = check_real("p_group", p_group, 0.0, strict=False)
        if p_group > 1.0:
            raise ConfigError(f"p_group = {p_group!r}: expected a probability in [0, 1] or None")
    return CueTrials(layout, seed, p_active, p_background, p_group)


def cue_accumulation(
    size: int,
    seed: int,
    *,
    n_cues: int = 7,
    dt_ms: float = 1.0,
    cue_ms: float = 100.0,
    gap_ms: float = 50.0,
    recall_ms: float = 150.0,
    total_ms: float = 2250.0,
    rate_hz: float = 40.0,
    background_hz: float = 10.0,
    channels_per_group: int = 10,
    p_group: float | None = None,
    return_sides: bool = False,
):
    """Generate ``size`` cue-accumulation trials, all of them in memory (a run's data set makes
    them per mini-batch instead: :class:`CueSplit`).

    Random stream (``rng = numpy.random.default_rng(seed)``), trial by trial, so
    that the first ``n`` trials do not depend on ``size``:

    1. if ``p_group`` is None: ``sides = rng.random(n_cues) < 0.5`` (True =
       right); else ``favoured = rng.random() < 0.5`` (True = right) and
       ``sides = (rng.random(n_cues) < 1 - p_group) == favoured``;
    2. ``u = rng.random((T, 4 * channels_per_group))``; channel ``c`` spikes at
       step ``t`` iff ``u[t, c] < rate[t, c] * dt_ms / 1000`` (Bernoulli steps,
       the discrete Poisson process), with ``rate`` as in the module docstring.

    Every trial takes the same number of draws, so trial ``i`` starts at a known
    place in the stream (:class:`CueTrials`).

    Args:
        size: trials, >= 1.
        seed: seed of ``numpy.random.default_rng`` (any integer >= 0).
        n_cues, dt_ms, cue_ms, gap_ms, recall_ms, total_ms, channels_per_group:
            timing and size, checked by :func:`cue_layout`.
        rate_hz: rate of cue and recall channels when active (>= 0).
        background_hz: rate of the background channels (>= 0).  Both rates
            times ``dt_ms / 1000`` must be <= 1.
        p_group: None (each cue independently left/right with p = 1/2), or a
            number in [0, 1]: the reference's per-trial bias (see step 1).
        return_sides: also return the cue sides.

    Returns:
        ``(x, labels)``: ``x`` float32 (size, T, 4 * channels_per_group) of 0/1
        spikes, ``labels`` int64 (size,) with 1 (RIGHT) iff more than half of
        the cues were right.  With ``return_sides``, a third array: int64
        (size, n_cues), the side of each cue.

    Raises:
        ConfigError: an argument has the wrong type or is out of range.
    """
    size = check_int("size", size, minimum=1)
    trials = cue_trials(seed, n_cues=n_cues, dt_ms=dt_ms, cue_ms=cue_ms, gap_ms=gap_ms, recall_ms=recall_ms,
                        total_ms=total_ms, rate_hz=rate_hz, background_hz=background_hz,
                        channels_per_group=channels_per_group, p_group=p_group)
    x = np.empty((size, trials.layout.steps, trials.layout.n_channels), dtype=np.float32)
    sides = trials.fill(range(size), x, axis=0)
    labels = _majority(sides)
    if return_sides:
        return x, labels, sides.astype(np.int64)
    return x, labels


class CueSplit(Split):
    """The first ``size`` trials of a :class:`CueTrials`, made per mini-batch: only the labels
    are held (8 bytes a trial, against 4 T C bytes of float32 input), so memory does not grow
    with the number of trials.  :meth:`reseed` switches to another seed's trials (a fresh
    training set), refilling ``labels`` in place."""

    def __init__(self, trials: CueTrials, size: int):
        self.trials = trials
        self.labels = trials.labels(size)

    def reseed(self, seed: int) -> None:
        self.trials = replace(self.trials, seed=seed)
        self.labels[...] = self.trials.labels(len(self.labels))

    def batch(self, idx) -> np.ndarray:
        idx = check_indices(idx, len(self.labels), "cue trials")
        lay = self.trials.layout
        out = np.empty((lay.steps, len(idx), lay.n_channels), dtype=np.float32)
        self.trials.fill(idx, out, axis=1)
        return out


# --------------------------------------------------------------------------- #
# the data set of a run (data.name = cue)
# --------------------------------------------------------------------------- #
#: seed stride between the fresh training sets of ``data.resample`` (the test sets use 10,000 + test_seed)
RESAMPLE_STRIDE = 1_000_003


@dataclass(frozen=True)
class CueConfig:
    """Trials of the cue-accumulation task (Bellec et al. 2020) at the network's ``dt_ms``."""

    name: str = opt("cue", "data set", choices=("cue",))
    train_size: int = opt(2000, "training trials", min=1, max=10_000_000)
    test_size: int = opt(500, "test trials", min=1, max=10_000_000)
    data_seed: int = opt(0, "training-set seed", min=0, max=2**32 - 1)
    test_seed: int = opt(1, "test-set seed", min=0, max=2**32 - 1)
    n_cues: int = opt(7, "cues per trial (odd)", min=1, max=10_001)
    total_ms: float = opt(2250.0, "trial length (ms)", min=1.0, max=1e7)
    p_group: float | None = opt(None, "null = every cue left or right with p 1/2; p = each trial favours a random "
                                      "side and puts every cue there with p 1 - p (Bellec et al.'s generator: 0.3, "
                                      "an easier task)", min=0.0, max=1.0)
    resample: bool = opt(False, "train every epoch on fresh trials (epoch e >= 1 uses the seed data_seed + "
                                "RESAMPLE_STRIDE x e), as Bellec et al. did; false = the same train_size trials "
                                "every epoch")
    limit: int | None = opt(None, "use only the first N training and N test trials", min=1, max=10_000_000)


def epoch_seed(cfg: CueConfig, epoch: int) -> int:
    """Seed of the training trials of ``epoch`` (0-based): ``data_seed`` for the first epoch and
    whenever ``data.resample`` is false, else ``data_seed + RESAMPLE_STRIDE * epoch``."""
    return cfg.data_seed + (RESAMPLE_STRIDE * epoch if cfg.resample else 0)


def epoch_training_set(cfg: CueConfig, epoch: int, dt_ms: float = 1.0):
    """``(x (N, T, C) float32, y int64)``: the training trials of ``epoch`` (see :func:`epoch_seed`),
    all in memory (for checks; a run makes them per mini-batch)."""
    return cue_accumulation(_size(cfg.train_size, cfg), epoch_seed(cfg, epoch), n_cues=cfg.n_cues,
                            total_ms=cfg.total_ms, dt_ms=dt_ms, p_group=cfg.p_group)


def _size(size: int, cfg: CueConfig) -> int:
    return size if cfg.limit is None else min(size, cfg.limit)


@register("cue", CueConfig)
def load(cfg: CueConfig, timing: Timing, progress: bool = True) -> Dataset:
    """Training and test trials, made per mini-batch (:class:`CueSplit`); the loss window is the
    recall period.  With ``resample`` the training split switches to the epoch's seed at the
    start of every epoch (its labels are refilled in place)."""
    def split(size: int, seed: int) -> CueSplit:
        return CueSplit(cue_trials(seed, n_cues=cfg.n_cues, total_ms=cfg.total_ms, dt_ms=timing.dt_ms,
                                   p_group=cfg.p_group), _size(size, cfg))

    train = split(cfg.train_size, epoch_seed(cfg, 0))
    test = split(cfg.test_size, cfg.test_seed + 10_000)
    lay = train.trials.layout

    def begin_epoch(epoch: int) -> None:
        seed = epoch_seed(cfg, epoch)
        if seed != train.trials.seed:
            train.reseed(seed)
            log.info("epoch %d: %d fresh training trials (seed %d)", epoch + 1, len(train), seed)

    return Dataset("cue", "analog", lay.n_channels, lay.steps, ["left", "right"], train, test,
                   loss_window=lay.steps - lay.recall_start, begin_epoch=begin_epoch)
