"""The checkpoint file format: data, never code.

A pickle checkpoint (format 1) is refused without being read; a file whose bytes changed is
refused by its SHA-256, and a file whose hash was recomputed over a crafted header is refused
by the size and structure checks before anything is allocated; every value type round-trips;
a state that does not fit the run it would continue is refused naming the core and the array;
a checkpoint directory is locked by the run writing it.
"""

import hashlib
import os
import pickle
import struct
import sys

import msgpack
import numpy as np
import pytest
from test_checkpoint import _cfg

from spinnray.config import RunConfig, from_dict
from spinnray.errors import ConfigError, DataError
from spinnray.experiments.checkpoint import (LOCK_NAME, MAGIC, VERSION, Checkpointer, convert_v1, latest,
                                             load_checkpoint, main, save_checkpoint, validate_state)
from spinnray.experiments.runner import run


def _v1(state_bytes: bytes) -> bytes:
    """A format-1 file: magic, version 1, then a pickle."""
    return MAGIC + struct.pack("<I", 1) + state_bytes


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    """The bytes of a real checkpoint of a small 4-bit stochastic e-prop run (stores, PCG64 states)."""
    d = tmp_path_factory.mktemp("real")
    run(_cfg(learning={"epochs": 1}, machine={"weight_bits": 4, "rounding": "stochastic"}), d, "t")
    path = latest(d / "checkpoints")
    return path.read_bytes()


def _rehash(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def _forge(header: dict, data: bytes = b"") -> bytes:
    """A file with a valid SHA-256 around an arbitrary header: only the structure checks stand."""
    h = msgpack.packb(header, use_bin_type=True)
    return _rehash(MAGIC + struct.pack("<IQ", VERSION, len(h)) + h + data)


# ------------------------------------------------------------------------------------ pickle refused
def test_a_pickle_checkpoint_runs_no_code_and_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "eprop-000000002.ckpt"
    evil.write_bytes(_v1(pickle.dumps({"kind": "eprop", "x": _Payload(marker)}, protocol=5)))
    assert pickle.loads(pickle.dumps(_Payload(tmp_path / "probe"))) == 0 and (tmp_path / "probe").exists()
    for target in (evil, tmp_path):                   # the file, and its directory (the newest)
        with pytest.raises(DataError, match=r"old pickle format .* not loaded, for safety.*convert --trust"):
            load_checkpoint(target, "eprop")
    with pytest.raises(DataError, match="old pickle format"):
        run(_cfg(resume=str(evil)), tmp_path / "resumed", "t")
    with pytest.raises(DataError, match="old pickle format"):
        run(_cfg(init_from=str(evil)), tmp_path / "warm", "t")
    # conversion needs trust, and even trusted lets in no function but numpy's and spinnray's stores
    with pytest.raises(DataError, match="trust"):
        convert_v1(evil, tmp_path / "new.ckpt")
    with pytest.raises(DataError, match=r"not converted .*posix.system is not allowed"):
        convert_v1(evil, tmp_path / "new.ckpt", trust=True)
    assert main(["info", str(evil)]) == 1
    assert not marker.exists()
    assert not (tmp_path / "new.ckpt").exists()


def test_a_trusted_format_1_checkpoint_converts(tmp_path, monkeypatch):
    """A format-1 file of a low-precision run (live store objects inside, pickled under the module
    name of before the package's layers) becomes a format-2 file holding the stores' plain states,
    and resumes as the format-2 checkpoint of the same run would."""
    cfg = _cfg(learning={"epochs": 1}, machine={"weight_bits": 4, "rounding": "stochastic"})
    full = run(_cfg(machine={"weight_bits": 4, "rounding": "stochastic"}), tmp_path / "full", "t")
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
    resumed = run(_cfg(machine={"weight_bits": 4, "rounding": "stochastic"}, resume=str(out)), tmp_path / "r", "t")
    assert resumed["weights_crc32"] == full["weights_crc32"]


# ------------------------------------------------------------------------------------ corruption
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


@pytest.mark.parametrize("header,data,why", [
    ({"format": 2, "arrays": [["w", "<f8", [1 << 40, 1 << 20]]], "state": {}}, b"", "needs .* bytes; 0 remain"),
    ({"format": 2, "arrays": [["w", "|O", [1]]], "state": {}}, b"\0" * 8, "dtype '|O'"),
    ({"format": 2, "arrays": [["w", ">f8", [1]]], "state": {}}, b"\0" * 8, "dtype '>f8'"),
    ({"format": 2, "arrays": [["w", "<f8", [-1]]], "state": {}}, b"", r"array entry 0 .*expected \[name"),
    ({"format": 2, "arrays": [["w", "<f8", [1]]], "state": {}}, b"\0" * 9, "1 bytes after the last array"),
    ({"format": 2, "arrays": [["w", "<f8", [1]]], "state": {}}, b"\0" * 8, "array 0 is not part of the state"),
    ({"format": 2, "arrays": [["w", "<f8", [1]]],
      "state": {"a": msgpack.ExtType(3, b"\x00"), "b": msgpack.ExtType(3, b"\x00")}}, b"\0" * 8, "used twice"),
    ({"format": 2, "arrays": [], "state": {"a": msgpack.ExtType(3, b"\x05")}}, b"", "no such array"),
    ({"format": 2, "arrays": [], "state": {"a": msgpack.ExtType(9, b"")}}, b"", "unknown extension type 9"),
    ({"format": 2, "arrays": [], "state": {"a": msgpack.ExtType(2, b"1e999")}}, b"", "integer extension"),
    ({"format": 2, "arrays": [], "state": [1, 2]}, b"", "expected a dict"),
    ({"format": 3, "arrays": [], "state": {}}, b"", "expected the keys format = 2"),
    ({"format": 2, "arrays": [], "state": {}, "code": "x"}, b"", "expected the keys"),
])
def test_a_crafted_header_with_a_valid_hash_is_refused_before_allocating(tmp_path, header, data, why):
    p = tmp_path / "eprop-000000001.ckpt"
    p.write_bytes(_forge(header, data))
    with pytest.raises(DataError, match=why):
        load_checkpoint(p)


def test_header_length_and_version_are_checked(tmp_path):
    p = tmp_path / "c.ckpt"
    p.write_bytes(_rehash(MAGIC + struct.pack("<IQ", VERSION, 1 << 62)))
    with pytest.raises(DataError, match="a header of 4611686018427387904 bytes"):
        load_checkpoint(p)
    p.write_bytes(_rehash(MAGIC + struct.pack("<IQ", 7, 0)))
    with pytest.raises(DataError, match="checkpoint format 7; this spinnray reads format 2"):
        load_checkpoint(p)
    p.write_bytes(MAGIC + struct.pack("<IQ", 7, 0))
    with pytest.raises(DataError, match="unknown format 7"):
        load_checkpoint(p)


# ------------------------------------------------------------------------------------ round trip
def test_every_value_type_round_trips(tmp_path):
    g = np.random.default_rng(12)
    g.random(5)
    g.integers(0, 2 ** 32, dtype=np.uint32)                  # has_uint32 = 1
    state = {
        "none": None, "t": True, "f": False, "i": -7, "u64": 2 ** 64 - 1, "i64": -(2 ** 63),
        "big": 2 ** 64, "neg_big": -(2 ** 127) - 3, "huge": 3 ** 2000, "zero_float": 0.0, "one_float": 1.0,
        "one_int": 1, "nan": float("nan"), "inf": float("-inf"), "tiny": 5e-324, "s": "ü\u2603", "b": b"\x00\xff",
        "list": [1, [2, [3.5, "x"]], {"k": (1, 2)}], "tuple": (1, (2.0, ()), [()]), "empty": {},
        "int_keys": {0: "a", -3: "b", 2 ** 70: "c", (1, "x"): "d", None: "e", 1.5: "f"},
        "rng": g.bit_generator.state,
        "arrays": [np.arange(12, dtype=dt).reshape(3, 4) for dt in
                   (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
                    np.float16, np.float32, np.float64, np.complex64, np.complex128)],
        "bool_array": np.array([[True, False, True]]), "zero_d": np.array(2.5, np.float32),
        "empty_arrays": (np.zeros((0,)), np.zeros((3, 0, 2), np.int16)), "big_endian": np.arange(4, dtype=">f8"),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)), "view": np.arange(10.0)[::3],
        "scalars": [np.float32(1.25), np.int64(-4), np.bool_(True), np.uint8(255), np.float64(np.nan)],
        "nonfinite": np.array([np.nan, np.inf, -np.inf]),
    }
    p = save_checkpoint(tmp_path / "x-000000001.ckpt", state)
    got = load_checkpoint(p)
    assert got.pop("path") == str(p)

    def same(a, b, at):
        assert type(a) is type(b), at
        if isinstance(a, np.ndarray):
            assert a.shape == b.shape and a.dtype.newbyteorder("<") == b.dtype and b.flags.writeable, at
            np.testing.assert_array_equal(a, b, err_msg=at)
        elif isinstance(a, dict):
            assert list(a) == list(b), at
            for k in a:
                same(a[k], b[k], f"{at}[{k!r}]")
        elif isinstance(a, (list, tuple)):
            assert len(a) == len(b), at
            for i, (x, y) in enumerate(zip(a, b)):
                same(x, y, f"{at}[{i}]")
        elif isinstance(a, (float, np.floating)) and np.isnan(a):
            assert np.isnan(b), at
        else:
            assert a == b, at

    same(state, got, "state")
    g2 = np.random.default_rng()
    g2.bit_generator.state = got["rng"]
    assert g2.random(4).tolist() == g.random(4).tolist()


@pytest.mark.parametrize("bad,why", [
    ({"x": object()}, r"state\['x'\]: a builtins.object cannot be saved"),
    ({"x": [np.array(["a"])]}, r"state\['x'\]\[0\]: an array of dtype <U1 cannot be saved"),
    ({"x": np.array([None])}, "dtype object cannot be saved"),
    ({"x": {1, 2}}, "a builtins.set cannot be saved"),
])
def test_values_a_checkpoint_cannot_hold_are_refused_when_written(tmp_path, bad, why):
    with pytest.raises(TypeError, match=why):
        save_checkpoint(tmp_path / "a.ckpt", bad)
    assert not list(tmp_path.iterdir())                     # no file, no .tmp


# ------------------------------------------------------------------------------------ validation
def test_validate_state_names_the_core_and_the_array():
    want = {3: {"weights": [np.zeros((4, 5), np.float32)], "opts": [{"m": np.zeros((4, 5), np.float32), "t": 2,
                                                                      "lr": 0.1}], "counters": {"steps": 1}}}

    def got(**change):
        st = {3: {"weights": [np.zeros((4, 5), np.float32)], "opts": [{"m": np.zeros((4, 5), np.float32), "t": 2,
                                                                        "lr": 0.1}], "counters": {"steps": 1}}}
        st[3].update(change)
        return st

    labels = {3: "3 (hidden[0:5])"}
    validate_state(want, got(), "f.ckpt", labels)
    cases = [
        (got(weights=[np.zeros((4, 6), np.float32)]),
         (r"f.ckpt: core 3 \(hidden\[0:5\]\): weights\[0\] is an array of shape \(4, 6\) float32; this run's core "
          r"holds an array of shape \(4, 5\) float32")),
        (got(weights=[np.zeros((4, 5), np.float64)]), r"weights\[0\] is an array of shape \(4, 5\) float64"),
        (got(weights=[np.full((4, 5), np.nan, np.float32)]), r"core 3 \(hidden\[0:5\]\): weights\[0\] holds 20 NaN"),
        (got(opts=[{"m": np.zeros((4, 5), np.float32), "t": 2.0, "lr": 0.1}]),
         r"opts\[0\].t is 2.0 \(float\); expected a finite int"),
        (got(opts=[{"m": np.zeros((4, 5), np.float32), "t": 2, "lr": float("inf")}]), r"opts\[0\].lr is inf"),
        (got(opts=[{"t": 2, "lr": 0.1}]), r"opts\[0\].m is missing"),
        (got(weights=[]), r"weights is a list of 0; this run's core holds a list of 1"),
        (got(code="x"), "code is not part of this run's core state"),
        ({}, r"no state for core 3 \(hidden\[0:5\]\)"),
        ({**got(), 4: {}}, "a state for core 4, which this run does not have"),
    ]
    for bad, why in cases:
        with pytest.raises(DataError, match=why):
            validate_state(want, bad, "f.ckpt", labels)
    validate_state(want, got(counters={}), "f.ckpt")          # a counter absent: the live value stays


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


# ------------------------------------------------------------------------------------ lock, tmp, rotation
def _ck_cfg(d, **over):
    return from_dict(RunConfig, {"kind": "eprop", "backend": "local",
                                 "checkpoint": {"every": 1, "dir": str(d), "keep": 2, **over}})


class _Trainer:
    def state(self):
        return {0: {"w": np.arange(3.0)}}


def test_a_second_run_on_the_same_directory_is_refused(tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    stale = d / "eprop-000000004.ckpt.tmp"
    stale.write_bytes(b"half a file")
    other = d / "notes.tmp"
    other.write_text("not ours")
    a = Checkpointer(_ck_cfg(d), tmp_path, "eprop", "fp")
    assert not stale.exists() and other.exists()            # a crashed writer's file goes, others stay
    assert (d / LOCK_NAME).read_text().startswith(f"pid {os.getpid()} on ")
    with pytest.raises(ConfigError, match=rf"checkpoint.dir = '{d}': another run holds this checkpoint directory "
                                          rf"\(pid {os.getpid()} on .*: an earlier run in this process .*close\(\) it\)"):
        Checkpointer(_ck_cfg(d), tmp_path, "eprop", "fp")
    Checkpointer(_ck_cfg(d, every=0), tmp_path, "eprop", "fp")       # no checkpoints written: no lock needed
    a.close()
    with Checkpointer(_ck_cfg(d), tmp_path, "eprop", "fp"):
        pass
    b = Checkpointer(_ck_cfg(d), tmp_path, "eprop", "fp")
    del b                                                   # collected: the lock goes with it
    Checkpointer(_ck_cfg(d), tmp_path, "eprop", "fp").close()


def test_rotation_deletes_only_files_this_run_wrote(tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    foreign = save_checkpoint(d / "eprop-000000001.ckpt", {"kind": "eprop"})
    rng = np.random.default_rng(0)
    with Checkpointer(_ck_cfg(d), tmp_path, "eprop", "fp") as ck:
        for b in (2, 3, 4, 5):
            ck.save({"epoch": 0, "first": b, "batches": b}, _Trainer(), rng)
    assert sorted(p.name for p in d.glob("*.ckpt")) == [foreign.name, "eprop-000000004.ckpt",
                                                        "eprop-000000005.ckpt"]
    assert latest(d) == d / "eprop-000000005.ckpt" and not list(d.glob("*.tmp"))
    save_checkpoint(d / "eprop-1000000000.ckpt", {"kind": "eprop"})        # past 9 digits: still the newest
    save_checkpoint(d / "eventprop-000000009.ckpt", {"kind": "eventprop"})
    assert latest(d).name == "eprop-1000000000.ckpt"
    assert latest(d, "eventprop").name == "eventprop-000000009.ckpt"
    assert load_checkpoint(d, "eventprop")["kind"] == "eventprop"


def test_info_command(tmp_path, capsys):
    p = save_checkpoint(tmp_path / "eprop-000000003.ckpt", {"kind": "eprop", "fingerprint": "f", "batches": 3,
                                                             "epoch": 0, "cores": {0: {}, 1: {}}})
    assert main(["info", str(p)]) == 0
    assert '"batches": 3, "cores": 2' in capsys.readouterr().out
