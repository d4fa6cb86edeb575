"""Low-precision weights and the PCM synapse model (spinnray.machine.quant).

References are independent: brute-force nearest-grid search, a hand-written integer loop of the
accumulate-then-apply rule, a hand-made nibble packing, the drift power law evaluated from the
device exponents, and the documented noise formulas checked by sampling statistics.
"""

import dataclasses
import math

import numpy as np
import pytest

from spinnray.config import from_dict
from spinnray.errors import ConfigError, DataError
from spinnray.machine.quant import MixedPrecisionWeights, Noise, PCMParams, PCMWeights, Quantizer, make_weight_store


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_grid_has_2L_plus_1_levels(bits):
    w_max = 0.8
    q = Quantizer(bits, w_max)
    L = 2 ** (bits - 1) - 1
    x = np.linspace(-2 * w_max, 2 * w_max, 400001)
    levels = np.unique(q.quantize(x))
    expected = np.array([k * w_max / L for k in range(-L, L + 1)], dtype=np.float32)
    assert levels.size == 2 * L + 1
    np.testing.assert_array_equal(levels, expected)
    np.testing.assert_array_equal(q.grid(), expected)
    if bits == 4:
        assert levels.size == 15
    if bits == 2:
        np.testing.assert_array_equal(levels, np.float32([-w_max, 0.0, w_max]))


def test_nearest_is_the_closest_level_within_half_a_step(rng):
    w_max = 1.3
    q = Quantizer(4, w_max, "nearest")
    grid = np.arange(-7, 8) * (w_max / 7)                       # float64 reference grid
    x = rng.uniform(-w_max, w_max, 3000)
    brute = grid[np.argmin(np.abs(x[:, None] - grid[None, :]), axis=1)].astype(np.float32)
    got = q.quantize(x)
    np.testing.assert_array_equal(got, brute)
    assert np.max(np.abs(got - x)) <= q.step / 2 + 1e-6


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_saturation_at_the_range_limits(rounding):
    w_max = 0.5
    q = Quantizer(4, w_max, rounding, seed=3)
    x = np.array([-1e6, -5.0, -w_max - 1e-4, w_max + 1e-4, 5.0, 1e6, -w_max, w_max])
    got = q.quantize(x)
    np.testing.assert_array_equal(got, np.float32(w_max) * np.sign(x).astype(np.float32))
    np.testing.assert_array_equal(q.encode(x), 7 * np.sign(x).astype(np.int8))


def test_stochastic_rounding_is_unbiased_and_nearest_is_not():
    q = Quantizer(4, 1.0, "stochastic", seed=11)
    step = q.step
    x = np.array([0.3, -0.55, 0.123, 0.97, -0.01]) * 0.999       # off-grid, inside the range
    N = 20000
    draws = q.quantize(np.broadcast_to(x, (N, x.size)))
    frac = x / step - np.floor(x / step)                          # P(round up)
    sigma = step * np.sqrt(frac * (1 - frac))                    # std of one draw
    bound = 5 * sigma / math.sqrt(N) + 1e-6
    assert np.all(np.abs(draws.mean(0) - x) <= bound)
    # every draw is one of the two neighbours
    lo, hi = np.floor(x / step) * step, np.ceil(x / step) * step
    assert np.all(np.isclose(draws, lo, atol=1e-6) | np.isclose(draws, hi, atol=1e-6))
    # the same statistic rejects nearest rounding on these values: the test can fail
    nearest = Quantizer(4, 1.0, "nearest").quantize(np.broadcast_to(x, (N, x.size)))
    assert np.all(np.abs(nearest.mean(0) - x) > bound)


def test_stochastic_rounding_is_seeded():
    x = np.random.default_rng(0).uniform(-1, 1, 500)
    a = Quantizer(4, 1.0, "stochastic", seed=5).quantize(x)
    b = Quantizer(4, 1.0, "stochastic", seed=5).quantize(x)
    c = Quantizer(4, 1.0, "stochastic", seed=6).quantize(x)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)
    q = Quantizer(4, 1.0, "stochastic", seed=99)
    d = q.quantize(x, rng=np.random.default_rng(42))
    e = Quantizer(4, 1.0, "stochastic", seed=1).quantize(x, rng=np.random.default_rng(42))
    np.testing.assert_array_equal(d, e)                           # an explicit rng overrides the seed


@pytest.mark.parametrize("bits,dtype", [(2, np.int8), (4, np.int8), (8, np.int8), (16, np.int16)])
def test_encode_decode_round_trip(bits, dtype, rng):
    q = Quantizer(bits, 0.7)
    L = 2 ** (bits - 1) - 1
    codes = np.arange(-L, L + 1)
    back = q.encode(q.decode(codes))
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, codes)
    w = rng.normal(0, 0.5, (40, 30))
    c = q.encode(w)
    assert c.dtype == dtype and np.abs(c.astype(np.int64)).max() <= L
    np.testing.assert_array_equal(q.decode(c), q.quantize(w))


def test_4bit_codes_fit_in_nibbles_and_stored_bytes(rng):
    shape = (3, 5)
    q4 = Quantizer(4, 1.0)
    codes = q4.encode(rng.uniform(-1.2, 1.2, shape)).ravel()
    # pack two 4-bit two's-complement codes per byte, by hand
    nib = codes.astype(np.uint8) & 0x0F
    nib = np.concatenate([nib, np.zeros(nib.size % 2, np.uint8)])
    packed = nib[0::2] | (nib[1::2] << 4)
    assert packed.nbytes == q4.stored_bytes(shape)
    lo, hi = packed & 0x0F, packed >> 4
    unpacked = np.stack([lo, hi], 1).ravel()[: codes.size].astype(np.int16)
    unpacked = np.where(unpacked >= 8, unpacked - 16, unpacked)
    np.testing.assert_array_equal(unpacked, codes)
    # byte-aligned widths equal the numpy arrays that would hold them
    assert Quantizer(8, 1.0).stored_bytes(shape) == np.zeros(shape, np.int8).nbytes
    assert Quantizer(16, 1.0).stored_bytes(shape) == np.zeros(shape, np.int16).nbytes
    assert Quantizer(32, 1.0).stored_bytes(shape) == np.zeros(shape, np.float32).nbytes
    # 15 values: 4-bit -> 8 bytes (7.5 rounded up), 2-bit -> 4 bytes
    assert q4.stored_bytes(shape) == 8
    assert Quantizer(2, 1.0).stored_bytes(shape) == 4


def test_32_bits_is_a_float32_passthrough(rng):
    w = rng.normal(0, 3.0, (20, 7))
    q = Quantizer(32, 1.0, "stochastic")
    np.testing.assert_array_equal(q.quantize(w), w.astype(np.float32))   # no grid, no saturation
    assert q.encode(w).dtype == np.float32
    with pytest.raises(ConfigError, match="bits = 32"):
        q.grid()


@pytest.mark.parametrize("kwargs,name", [
    (dict(bits=5), "bits"), (dict(bits=True), "bits"), (dict(w_max=0.0), "w_max"),
    (dict(w_max=float("nan")), "w_max"), (dict(w_max=-1.0), "w_max"), (dict(rounding="up"), "rounding"),
    (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"),
])
def test_bad_quantizer_arguments_raise(kwargs, name):
    args = dict(bits=4, w_max=1.0, rounding="nearest", seed=0) | kwargs
    with pytest.raises(ConfigError, match=f"^{name} = "):
        Quantizer(**args)


def test_non_finite_weights_raise():
    with pytest.raises(DataError, match="NaN or infinite"):
        Quantizer(8, 1.0).encode([0.1, np.nan])


@pytest.mark.parametrize("transfer", ["threshold", "round"])
def test_mixed_precision_conserves_updates_exactly_and_matches_a_loop(rng, transfer):
    # step 1/64 and deltas on a 2^-12 grid: every float operation below is exact
    q = Quantizer(8, 127 / 64)
    assert q.step == 1 / 64
    shape, T = (6, 4), 200
    k0 = rng.integers(-20, 21, shape)
    deltas = rng.integers(-32, 33, (T,) + shape) * 2.0 ** -12     # |delta| <= 2^-7: never saturates
    store = MixedPrecisionWeights(k0 / 64, q, transfer=transfer)
    w0 = store.read().astype(np.float64)
    for d in deltas:
        store.apply(d)
    assert store.counters["dropped_abs"] == 0.0
    acc = store.accumulator.astype(np.float64)
    assert np.all(np.abs(acc) < q.step) if transfer == "threshold" else np.all(np.abs(acc) <= q.step / 2)
    np.testing.assert_array_equal(store.read().astype(np.float64) - w0 + acc, deltas.sum(0))
    # independent reference: integers in units of 2^-12, one level = 64 units; threshold truncates
    # toward 0, round takes the nearest level (ties to even)
    units = (deltas * 2 ** 12).astype(np.int64)
    for idx in np.ndindex(shape):
        k, a = int(k0[idx]), 0
        for u in units[(slice(None),) + idx]:
            a += int(u)
            n = int(a / 64) if transfer == "threshold" else round(a / 64)
            k, a = max(-127, min(127, k + n)), a - 64 * n
        assert store.codes[idx] == k and acc[idx] == a * 2.0 ** -12


def test_round_transfer_follows_the_high_precision_weight():
    q = Quantizer(4, 7 / 16)                                      # step 1/16
    d = np.full(4, 2.0 ** -8)                                     # one sixteenth of a level
    rounded = MixedPrecisionWeights(np.zeros(4), q)               # transfer = round (default)
    lagging = MixedPrecisionWeights(np.zeros(4), q, transfer="threshold")
    for i in range(1, 17):
        rounded.apply(d)
        lagging.apply(d)
        np.testing.assert_array_equal(rounded.read(), np.float32((1 / 16) * (i > 8)))   # nearest of i/16 level
        np.testing.assert_array_equal(lagging.read(), np.float32((1 / 16) * (i >= 16)))  # only a whole level
    # stochastic rounding: the stored weight is the high-precision one in expectation, and exact with chi
    n = 20000
    sr = MixedPrecisionWeights(np.zeros(n), Quantizer(4, 7 / 16, "stochastic", seed=3))
    sr.apply(np.full(n, 0.3 / 16))
    stored = sr.read().astype(np.float64)
    assert set(np.unique(stored)) == {0.0, 1 / 16}
    sd = math.sqrt(0.3 * 0.7) / 16
    assert abs(stored.mean() - 0.3 / 16) <= 5 * sd / math.sqrt(n)
    np.testing.assert_allclose(stored + sr.accumulator, 0.3 / 16, atol=1e-8)
    with pytest.raises(ConfigError, match="machine.transfer = 'floor': expected one of"):
        MixedPrecisionWeights(np.zeros(2), q, transfer="floor")


def test_small_updates_wait_in_the_accumulator():
    q = Quantizer(4, 7 / 16)                                      # step 1/16
    d = np.full(4, 2.0 ** -8)                                     # one sixteenth of a level
    store = MixedPrecisionWeights(np.zeros(4), q, transfer="threshold")
    for _ in range(15):
        store.apply(d)
    np.testing.assert_array_equal(store.read(), 0.0)
    np.testing.assert_array_equal(store.accumulator, 15 * 2.0 ** -8)
    store.apply(d)
    np.testing.assert_array_equal(store.read(), np.float32(1 / 16))
    np.testing.assert_array_equal(store.accumulator, 0.0)
    # without the accumulator, nearest rounding loses every one of them ...
    lossy = MixedPrecisionWeights(np.zeros(4), q, accumulate=False)
    for _ in range(64):
        lossy.apply(d)
    np.testing.assert_array_equal(lossy.read(), 0.0)
    # ... and stochastic rounding keeps them only in expectation
    n = 20000
    sr = MixedPrecisionWeights(np.zeros(n), Quantizer(4, 7 / 16, "stochastic", seed=2), accumulate=False)
    for _ in range(16):
        sr.apply(np.full(n, 2.0 ** -8))
    # each apply adds a Bernoulli(1/16) level: mean 1/16, std per weight sqrt(16 p (1-p)) / 16
    sd = math.sqrt(16 * (1 / 16) * (15 / 16)) / 16
    assert abs(sr.read().mean() - 1 / 16) <= 5 * sd / math.sqrt(n)
    assert sr.accumulator_bytes == 0


def test_saturation_drops_and_counts_the_refused_levels():
    q = Quantizer(4, 7 / 16)
    store = MixedPrecisionWeights(np.array([7 / 16, -7 / 16]), q)
    delta = np.array([3 / 16 + 2.0 ** -8, -2 / 16])
    store.apply(delta)
    np.testing.assert_array_equal(store.codes, [7, -7])
    np.testing.assert_array_equal(store.accumulator, np.float32([2.0 ** -8, 0.0]))
    assert store.counters["dropped_abs"] == 5 / 16
    # sum of updates = stored change (0) + accumulator + dropped (signed)
    assert delta.sum() == store.accumulator.astype(np.float64).sum() + store.counters["dropped"]


def test_float32_store_adds_in_float32(rng):
    w0 = rng.normal(0, 1, (5, 3))
    store = MixedPrecisionWeights(w0, Quantizer(32, 1.0))
    ref = w0.astype(np.float32)
    for _ in range(10):
        d = rng.normal(0, 0.1, (5, 3))
        store.apply(d)
        ref = ref + d.astype(np.float32)
    np.testing.assert_array_equal(store.read(), ref)
    assert store.accumulator_bytes == 0 and store.stored_bytes == ref.nbytes


def test_store_bytes_and_read_only_view():
    s = MixedPrecisionWeights(np.zeros((10, 7)), Quantizer(4, 1.0))
    assert s.stored_bytes == 35 and s.accumulator_bytes == 10 * 7 * 4
    assert MixedPrecisionWeights(np.zeros((10, 7)), Quantizer(4, 1.0), accumulate=False).accumulator_bytes == 0
    w = s.read()
    with pytest.raises(ValueError):
        w[0, 0] = 1.0
    with pytest.raises(DataError, match="shape"):
        s.apply(np.zeros((7, 10)))


@pytest.mark.parametrize("changes,field", [
    (dict(g_max_us=-1.0), "g_max_us"), (dict(g_max_us=0.0), "g_max_us"), (dict(t0_s=0.0), "t0_s"),
    (dict(nu_std=-0.1), "nu_std"), (dict(read_noise_rel=float("nan")), "read_noise_rel"),
    (dict(refresh_threshold=1.5), "refresh_threshold"), (dict(dg_pulse_us=30.0), "dg_pulse_us"),
    (dict(g_reset_us=25.0), "g_reset_us"), (dict(prog_verify_coeffs=()), "prog_verify_coeffs"),
    (dict(refresh="yes"), "refresh"), (dict(refresh_threshold=0.02), "refresh_threshold"),
])
def test_bad_pcm_params_raise_naming_the_field(changes, field):
    with pytest.raises(ConfigError, match=f"PCMParams.{field} = "):
        PCMParams(**changes)


def test_pcm_params_through_the_config_loader():
    p = from_dict(PCMParams, {"g_max_us": 20, "prog_verify_coeffs": [0.1, 0.2]}, "machine.pcm")
    assert p.g_max_us == 20.0 and p.prog_verify_coeffs == (0.1, 0.2)
    with pytest.raises(ConfigError, match=r"machine\.pcm.*t0_s"):
        from_dict(PCMParams, {"t0_s": 0}, "machine.pcm")
    with pytest.raises(ConfigError, match=r"machine\.pcm\.gmax: unknown key"):
        from_dict(PCMParams, {"gmax": 3}, "machine.pcm")
    for f in dataclasses.fields(PCMParams):                       # every field says its unit or source
        assert "[" in f.metadata["help"], f.name


def _trajectory(seed, params=None, reads_between=0):
    rng = np.random.default_rng(100)
    w0 = rng.uniform(-0.4, 0.4, (6, 5))
    p = PCMWeights((6, 5), params or PCMParams(), seed, w_max=0.5, w_init=w0, t_s=0.0)
    out = []
    for i in range(12):
        t = 5.0 * (i + 1)
        for _ in range(reads_between):
            p.read(t)
        p.apply(rng.normal(0, 0.08, (6, 5)), t)
        out.append(p.read(t + 1.0))
    return p, np.stack(out)


def test_pcm_is_deterministic_under_its_seed():
    a, ra = _trajectory(7)
    b, rb = _trajectory(7)
    _, rc = _trajectory(8)
    assert ra.tobytes() == rb.tobytes()
    assert a.conductances(100.0).tobytes() == b.conductances(100.0).tobytes()
    assert not np.array_equal(ra, rc)
    assert a.counters["set_pulses"] > 0


def test_reading_does_not_change_the_programmed_devices():
    a, _ = _trajectory(3, reads_between=0)
    b, _ = _trajectory(3, reads_between=4)
    np.testing.assert_array_equal(a.conductances(200.0), b.conductances(200.0))


def test_drift_follows_the_power_law_and_shrinks_weights(rng):
    params = PCMParams.noise_free(nu_std=0.02, g_reset_us=0.0)
    w_max, t_p = 0.6, 5.0
    w0 = rng.uniform(-w_max, w_max, (8, 9))
    p = PCMWeights(w0.shape, params, seed=4, w_max=w_max, w_init=w0, t_s=t_p)
    g0 = p.conductances(t_p).copy()
    np.testing.assert_allclose(g0[0] - g0[1], w0 * params.g_max_us / w_max, rtol=1e-6, atol=1e-6)
    nu = p.nu.astype(np.float64)
    assert nu.min() >= 0 and abs(nu.mean() - params.nu_mean) < 5 * 0.02 / math.sqrt(nu.size)
    nu_programmed = np.where(w0 > 0, nu[0], nu[1])                # the partner device sits at G = 0
    moving = (nu_programmed > 0) & (np.abs(w0) > 0.01)
    prev = None
    for t in (t_p, t_p + 1, 25.0, 100.0, 1e3, 1e5):
        expected = g0 * ((t - t_p + params.t0_s) / params.t0_s) ** (-nu)
        np.testing.assert_allclose(p.conductances(t), expected, rtol=1e-6)
        mag = np.abs(p.read(t, noise=False))
        if prev is not None:
            assert np.all(mag <= prev) and np.all(mag[moving] < prev[moving])
        prev = mag
    assert moving.sum() > 60


def test_drift_restarts_at_each_programming():
    params = PCMParams.noise_free(nu_mean=0.06, g_reset_us=0.0, refresh=False)
    p = PCMWeights((4,), params, seed=1, w_max=1.0, w_init=np.array([0.5, 0.2, -0.3, 0.0]), t_s=0.0)
    g0 = p.conductances(0.0).copy()
    t1, t0 = 1000.0, params.t0_s
    n = 3
    p.apply(np.array([n * p.granularity, 0.0, 0.0, 0.0]) * (1 + 1e-6), t1)
    f1 = ((t1 + t0) / t0) ** -0.06
    g_t1 = g0[0, 0] * f1 + n * params.dg_pulse_us                 # drifted, then n pulses
    for t in (t1, t1 + 50.0, t1 + 1e4):
        g = p.conductances(t)
        assert g[0, 0] == pytest.approx(g_t1 * ((t - t1 + t0) / t0) ** -0.06, rel=1e-6)
        # untouched devices keep drifting from t = 0
        assert g[0, 1] == pytest.approx(g0[0, 1] * ((t + t0) / t0) ** -0.06, rel=1e-6)


def test_clipped_drift_exponents():
    p = PCMWeights((50, 40), PCMParams(nu_mean=0.0, nu_std=0.05), seed=0)
    assert p.nu.min() == 0.0 and 0.4 < np.mean(p.nu == 0.0) < 0.6


def test_read_noise_statistics():
    params = PCMParams(refresh=False)
    rng = np.random.default_rng(9)
    w0 = rng.uniform(-0.9, 0.9, (4, 5))
    p = PCMWeights(w0.shape, params, seed=12, w_max=1.0, w_init=w0, t_s=0.0)
    t, R = 100.0, 4000
    reads = np.stack([p.read(t) for _ in range(R)]).astype(np.float64)
    g = p.conductances(t)
    sig_dev = params.read_noise_rel * g + params.read_noise_abs_us                  # uS per device
    sig_w = np.sqrt(sig_dev[0] ** 2 + sig_dev[1] ** 2) * (1.0 / params.g_max_us)   # weight units
    w_nf = p.read(t, noise=False).astype(np.float64)
    assert np.all(np.abs(reads.mean(0) - w_nf) <= 5 * sig_w / math.sqrt(R) + 1e-6)
    assert np.all(np.abs(reads.std(0) / sig_w - 1) <= 5 / math.sqrt(2 * R))
    # a noise-free read draws nothing from the read stream
    a = PCMWeights(w0.shape, params, seed=12, w_max=1.0, w_init=w0)
    b = PCMWeights(w0.shape, params, seed=12, w_max=1.0, w_init=w0)
    a.read(t, noise=False)
    assert a.read(t).tobytes() == b.read(t).tobytes()


def test_pulse_programming_noise_grows_as_sqrt_of_the_change():
    params = PCMParams(g_reset_std_us=0.0, nu_mean=0.0, nu_std=0.0, refresh=False)
    shape, n = (200, 100), 4
    N = shape[0] * shape[1]
    p = PCMWeights(shape, params, seed=5, w_max=1.0, w_init=np.zeros(shape), t_s=0.0)
    p.apply(np.full(shape, (n + 0.5) * p.granularity), 1.0)
    g = p.conductances(1.0)
    change = g[0] - params.g_reset_us
    sd = params.prog_noise_pulse_us * math.sqrt(n)                 # documented sigma_prog(n dg)
    assert sd == pytest.approx(float(params.pulse_noise_std_us(n * params.dg_pulse_us)))
    assert abs(change.mean() - n * params.dg_pulse_us) <= 5 * sd / math.sqrt(N)
    assert abs(change.std() / sd - 1) <= 5 / math.sqrt(2 * N)
    np.testing.assert_allclose(g[1], params.g_reset_us, rtol=1e-6)  # G- untouched
    assert p.counters["set_pulses"] == n * N
    np.testing.assert_allclose(p.accumulator, 0.5 * p.granularity, rtol=1e-4)


def test_program_and_verify_noise_follows_the_polynomial():
    params = PCMParams(g_reset_std_us=0.0, nu_mean=0.0, nu_std=0.0)
    shape = (200, 100)
    N = shape[0] * shape[1]
    for frac in (0.1, 0.5, 0.9):
        w = np.full(shape, frac)
        p = PCMWeights(shape, params, seed=6, w_max=1.0, w_init=w)
        g_t = frac * params.g_max_us + params.g_reset_us
        x = g_t / params.g_max_us
        sd = 0.26348 + 1.9650 * x - 1.1731 * x ** 2                 # uS, g_max = 25 uS
        gp = p.conductances(0.0)[0]
        assert abs(gp.mean() - g_t) <= 5 * sd / math.sqrt(N)
        assert abs(gp.std() / sd - 1) <= 5 / math.sqrt(2 * N)


def test_pcm_accumulates_below_one_pulse():
    params = PCMParams.noise_free(nu_mean=0.0)
    p = PCMWeights((3,), params, seed=0, w_max=1.0, w_init=np.zeros(3))
    eps = p.granularity
    assert eps == pytest.approx(params.dg_pulse_us / params.g_max_us)
    d = np.array([0.3, -0.3, 0.05]) * eps
    g_before = p.conductances(0.0).copy()
    for i in range(3):
        p.apply(d, float(i))
    assert p.counters["set_pulses"] == 0
    np.testing.assert_array_equal(p.conductances(3.0), g_before)
    np.testing.assert_allclose(p.accumulator, 3 * d, rtol=1e-5)
    p.apply(d, 3.0)
    assert p.counters["set_pulses"] == 2
    np.testing.assert_allclose(p.read(3.0, noise=False), [eps, -eps, 0.0], atol=1e-6)
    np.testing.assert_allclose(p.read(3.0, noise=False) + p.accumulator, 4 * d, atol=1e-6)


def test_pcm_refresh_keeps_the_weight_and_frees_headroom():
    params = PCMParams.noise_free(nu_mean=0.0)
    eps = params.dg_pulse_us / params.g_max_us                    # w_max = 1
    w0 = np.array([0.37, -0.61]) * eps                            # off the pulse grid: refresh leaves a remainder
    p = PCMWeights((2,), params, seed=0, w_max=1.0, w_init=w0)
    total = w0.copy()
    for i in range(40):                                          # see-saw: both devices climb
        d = np.array([5.0, 3.0]) * eps * (1 if i % 2 == 0 else -1) * (1 + 1e-6)
        refreshes = p.counters["refreshes"]
        p.apply(d, float(i))
        total += d
        np.testing.assert_allclose(p.read(float(i), noise=False) + p.accumulator, total, atol=1e-5)
        g = p.conductances(float(i))
        assert g.max() < params.g_max_us
        if p.counters["refreshes"] > refreshes:                   # a refreshed pair restarts near RESET:
            assert g.min(0).min() <= params.g_reset_us + 5 * params.dg_pulse_us + 1e-4   # at most this apply's pulses
    assert p.counters["refreshes"] >= 4 and p.counters["saturated"] == 0
    assert np.any(np.abs(p.accumulator) > 0.1 * eps)


def test_explicit_refresh_rewrites_the_difference_on_one_device():
    # g_max 32 uS, 0.5 uS pulses, w_max 1: one pulse is 2^-6 exactly, so the deltas below are exact
    params = PCMParams.noise_free(nu_mean=0.0, refresh=False, g_max_us=32.0, dg_pulse_us=0.5)
    p = PCMWeights((1,), params, seed=0, w_max=1.0, w_init=np.array([0.4 * 2.0 ** -6]))
    assert p.granularity == 2.0 ** -6
    for i in range(5):                                            # G+ gets 5 x 10 pulses, G- 5 x 8 pulses
        p.apply(np.array([10 * 2.0 ** -6]), 2.0 * i)
        p.apply(np.array([-8 * 2.0 ** -6]), 2.0 * i + 1)
    assert p.counters["set_pulses"] == 90
    g = p.conductances(10.0).copy()
    assert g.max() >= params.refresh_threshold * params.g_max_us
    before = p.read(10.0, noise=False) + p.accumulator
    assert p.refresh(10.0) == 1 and p.counters["refreshes"] == 1
    after = p.conductances(10.0)
    n = np.rint((g[0, 0] - g[1, 0]) / params.dg_pulse_us)         # whole pulses of the old difference
    assert after[1, 0] == pytest.approx(params.g_reset_us, rel=1e-6)
    assert after[0, 0] == pytest.approx(params.g_reset_us + n * params.dg_pulse_us, rel=1e-6)
    np.testing.assert_allclose(p.read(10.0, noise=False) + p.accumulator, before, atol=1e-6)
    assert p.refresh(11.0) == 0                                   # nothing left to refresh


def test_pcm_misuse_raises():
    p = PCMWeights((2, 3), PCMParams(), seed=0)
    p.apply(np.zeros((2, 3)), 10.0)
    with pytest.raises(DataError, match="precedes the last programming"):
        p.read(5.0)
    with pytest.raises(DataError, match="precedes the last programming"):
        p.apply(np.zeros((2, 3)), 9.0)
    with pytest.raises(DataError, match="shape"):
        p.apply(np.zeros(6), 11.0)
    with pytest.raises(DataError, match="NaN"):
        p.apply(np.full((2, 3), np.inf), 11.0)
    with pytest.raises(DataError, match="t_s"):
        p.read(float("nan"))
    with pytest.raises(ConfigError, match="w_max"):
        PCMWeights((2,), w_max=0.0)
    with pytest.raises(ConfigError, match="seed"):
        PCMWeights((2,), seed=-3)


def test_pcm_bytes():
    p = PCMWeights((10, 7), PCMParams(), seed=0)
    assert p.devices == 140
    assert p.stored_bytes == 140 * (4 + 4 + 4)                     # G, t_p and nu, float32 each
    assert p.accumulator_bytes == 70 * 4


def test_make_weight_store(rng):
    w = rng.normal(0, 0.2, (12, 8))
    s = make_weight_store(w, weight_bits=4, rounding="nearest")
    assert isinstance(s, MixedPrecisionWeights)
    assert s.q.w_max == pytest.approx(2 * np.abs(w).max())
    np.testing.assert_array_equal(s.read(), Quantizer(4, 2 * np.abs(w).max()).quantize(w))
    pcm = make_weight_store(w, synapse="pcm", w_max=1.0, pcm=PCMParams.noise_free(), t_s=2.0)
    assert isinstance(pcm, PCMWeights)
    np.testing.assert_allclose(pcm.read(2.0), w, atol=1e-5)
    with pytest.raises(ConfigError, match="machine.weight_bits"):
        make_weight_store(w, synapse="pcm", weight_bits=4)
    with pytest.raises(ConfigError, match="machine.synapse"):
        make_weight_store(w, synapse="rram")
    with pytest.raises(ConfigError, match="machine.rounding"):
        make_weight_store(w, rounding="floor")
    with pytest.raises(ConfigError, match="machine.weight_max"):
        make_weight_store(w, w_max=-1.0)


def test_noise_without_columns_is_one_generator():
    a = Noise(7).standard_normal((3, 4))
    np.testing.assert_array_equal(a, np.random.default_rng(7).standard_normal((3, 4)))


def test_noise_per_column_ignores_the_other_columns():
    ss = np.random.SeedSequence(3, spawn_key=(11,))
    whole = Noise(ss, columns=np.arange(6)).random((4, 6))
    left = Noise(ss, columns=np.arange(0, 2)).random((4, 2))
    right = Noise(ss, columns=np.array([2, 3, 4, 5])).random((4, 4))
    np.testing.assert_array_equal(whole, np.concatenate([left, right], axis=1))
    other = Noise(np.random.SeedSequence(3, spawn_key=(12,)), columns=np.arange(6)).random((4, 6))
    assert not np.array_equal(whole, other)
    with pytest.raises(DataError, match="last axis"):
        Noise(0, columns=np.arange(3)).random((4, 2))
    with pytest.raises(ConfigError, match="columns"):
        Noise(0, columns=[1, 1])


@pytest.mark.parametrize("accumulate", [True, False])
def test_split_stochastic_store_equals_the_whole(rng, accumulate):
    w = rng.normal(0, 0.3, (9, 6))
    deltas = rng.normal(0, 0.05, (5, 9, 6))

    def store(cols):
        q = Quantizer(4, 1.0, "stochastic", seed=np.random.SeedSequence(5), columns=cols)
        s = MixedPrecisionWeights(w[:, cols], q, accumulate=accumulate)
        for d in deltas:
            s.apply(d[:, cols])
        return s.read()

    whole = store(np.arange(6))
    np.testing.assert_array_equal(whole, np.concatenate([store(np.arange(3)), store(np.arange(3, 6))], axis=1))


def test_split_pcm_store_equals_the_whole(rng):
    w = rng.uniform(-0.4, 0.4, (7, 5))
    deltas = rng.normal(0, 0.08, (6, 7, 5))

    def store(cols):
        p = PCMWeights((7, len(cols)), PCMParams(refresh_threshold=0.3), np.random.SeedSequence(9), w_max=0.5,
                       w_init=w[:, cols], columns=cols)
        reads = []
        for i, d in enumerate(deltas):
            p.apply(d[:, cols], 10.0 * (i + 1))
            reads.append(p.read(10.0 * (i + 1) + 1.0))
        return np.stack(reads), p

    whole, pw = store(np.arange(5))
    (a, pa), (b, pb) = store(np.arange(2)), store(np.arange(2, 5))
    np.testing.assert_array_equal(whole, np.concatenate([a, b], axis=2))
    assert pw.counters["refreshes"] == pa.counters["refreshes"] + pb.counters["refreshes"] > 0


def _plain(x) -> bool:
    """Only what a checkpoint file holds: None, bools, numbers, strings, lists, dicts, numeric arrays."""
    if isinstance(x, dict):
        return all(type(k) is str and _plain(v) for k, v in x.items())
    if isinstance(x, list):
        return all(_plain(v) for v in x)
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "biuf"
    return x is None or type(x) in (bool, int, float, str)


def _stores():
    """(name, builder) of every store kind; the builder takes the seed."""
    cols = np.arange(3, 8)
    return [
        ("4bit-stochastic-acc", lambda s: MixedPrecisionWeights(np.linspace(-1, 1, 20).reshape(4, 5), Quantizer(
            4, 1.0, "stochastic", s, cols), accumulate=True)),
        ("2bit-stochastic-direct", lambda s: MixedPrecisionWeights(np.linspace(-1, 1, 20).reshape(4, 5), Quantizer(
            2, 1.0, "stochastic", s), accumulate=False)),
        ("8bit-nearest-threshold", lambda s: MixedPrecisionWeights(np.linspace(-1, 1, 20).reshape(4, 5), Quantizer(
            8, 1.0, "nearest", s, cols), transfer="threshold")),
        ("4bit-nearest-widening", lambda s: MixedPrecisionWeights(np.linspace(-1, 1, 20).reshape(4, 5), Quantizer(
            4, 0.5, "nearest", s, cols), growth=8)),
        ("float32", lambda s: MixedPrecisionWeights(np.linspace(-1, 1, 20).reshape(4, 5), Quantizer(32, 1.0, seed=s))),
        ("pcm", lambda s: PCMWeights((4, 5), PCMParams(), s, w_max=1.0, w_init=np.linspace(-1, 1, 20).reshape(4, 5),
                                     columns=cols)),
    ]


def _drive(store, steps, t0=0.0):
    rng = np.random.default_rng(99)
    out = []
    for k in range(steps):
        t = t0 + 0.5 * k
        store.apply(rng.normal(0, 0.2, store.shape), t)
        out.append(store.read(t).copy())
    return out


@pytest.mark.parametrize("name,make", _stores(), ids=[n for n, _ in _stores()])
def test_store_state_is_plain_data_and_continues_bit_for_bit(name, make):
    a = make(7)
    _drive(a, 5)
    st = a.state()
    assert _plain(st), st
    want = _drive(a, 6, t0=3.0)
    b = make(123)                                   # another seed: every stream comes from the state
    b.load_state(st)
    got = _drive(b, 6, t0=3.0)
    for x, y in zip(want, got):
        np.testing.assert_array_equal(x, y)
    assert b.counters == a.counters
    c = make(7)
    c.load_state(a.state())
    assert c.state().keys() == st.keys()
    st["codes" if "codes" in st else "g"][...] = 0       # the state is a copy, not a view of the store
    assert not np.array_equal(a.state()["codes" if "codes" in st else "g"], st["codes" if "codes" in st else "g"])


def test_noise_state_round_trips_one_stream_and_per_column():
    for cols in (None, [4, 9, 2]):
        a = Noise(5, cols)
        a.random((2, 3))
        st = a.state()
        assert st["pcg64"].shape == (1 if cols is None else 3, 6) and st["pcg64"].dtype == np.uint64
        b = Noise(6, cols)
        b.load_state(st)
        np.testing.assert_array_equal(a.standard_normal((4, 3)), b.standard_normal((4, 3)))
    with pytest.raises(DataError, match=r"rng.columns: not this store's columns \(4, 9, 2\)"):
        Noise(5, [4, 9, 2]).load_state(Noise(5, [4, 9, 3]).state(), "rng")
    with pytest.raises(DataError, match="rng.columns: per-column streams; this run's store has one stream"):
        Noise(5).load_state(Noise(5, [1]).state(), "rng")


def _broken(st, **changes):
    out = dict(st)
    out.update(changes)
    return out


def test_store_load_state_refuses_what_does_not_fit_and_changes_nothing():
    make = dict(_stores())
    a = make["4bit-stochastic-acc"](1)
    _drive(a, 3)
    st = a.state()
    b = make["4bit-stochastic-acc"](2)
    before = b.state()
    q = st["quantizer"]
    cases = [
        (_broken(st, codes=st["codes"][:3]), r"s.codes: int8 \(3, 5\); expected int8 \(4, 5\)"),
        (_broken(st, codes=st["codes"].astype(np.int16)), r"s.codes: int16 \(4, 5\); expected int8"),
        (_broken(st, codes=np.full((4, 5), 8, np.int8)), r"s.codes: codes outside \[-7, 7\]"),
        (_broken(st, accumulator=np.full((4, 5), np.nan, np.float32)), "s.accumulator: holds NaN"),
        (_broken(st, accumulator=None), r"s.accumulator: NoneType; expected float32"),
        (_broken(st, transfer="threshold"), "s.transfer = 'threshold'; this run's store has 'round'"),
        (_broken(st, quantizer=_broken(q, bits=8)), "s.quantizer.bits = 8; this run's store has 4"),
        (_broken(st, quantizer=_broken(q, w_max=2.0)), "s.quantizer.w_max = 2.0; this run's store has 1.0"),
        (_broken(st, quantizer=_broken(q, rng=_broken(q["rng"], pcg64=q["rng"]["pcg64"][:2]))),
         r"s.quantizer.rng.pcg64: uint64 \(2, 6\); expected uint64 \(5, 6\)"),
        (_broken(st, counters={"updates": 1.5}), "s.counters = "),
        (_broken(st, extra=1), "s: unexpected extra"),
        ({k: v for k, v in st.items() if k != "codes"}, "s: missing codes"),
        (make["pcm"](1).state(), "s: missing .*unexpected"),
        ([1, 2], "s: expected a dict of the store's state, got list"),
    ]
    for bad, why in cases:
        with pytest.raises(DataError, match=why):
            b.load_state(bad, "s")
        now = b.state()
        np.testing.assert_array_equal(now["quantizer"]["rng"]["pcg64"], before["quantizer"]["rng"]["pcg64"])
        np.testing.assert_array_equal(now["codes"], before["codes"])
    p = make["pcm"](1)
    _drive(p, 2)
    ps = p.state()
    fresh = make["pcm"](2)
    for bad, why in [
        (_broken(ps, g=np.full((2, 4, 5), 30.0, np.float32)), r"s.g: conductances outside \[0, 25.0\] uS"),
        (_broken(ps, nu=-ps["nu"] - 1), "s.nu: negative drift exponents"),
        (_broken(ps, t_last=float("nan")), "s.t_last = nan"),
        (_broken(ps, params=_broken(ps["params"], dg_pulse_us=0.5)), "s.params = "),
        (_broken(ps, read_rng=_broken(ps["read_rng"], pcg64=ps["read_rng"]["pcg64"][:, :5])), "s.read_rng.pcg64"),
    ]:
        g0 = fresh.state()
        with pytest.raises(DataError, match=why):
            fresh.load_state(bad, "s")
        g1 = fresh.state()
        for k in ("g", "t_p", "nu"):
            np.testing.assert_array_equal(g0[k], g1[k])
        np.testing.assert_array_equal(g0["prog_rng"]["pcg64"], g1["prog_rng"]["pcg64"])
    fresh.load_state(ps, "s")
    assert fresh.state()["t_last"] == ps["t_last"]
