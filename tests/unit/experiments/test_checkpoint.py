"""spinnray.experiments.checkpoint: the file format (data, never code) and the directory it lives in.

A pickle checkpoint (format 1) is refused without being read; a file whose hash was recomputed
over a crafted header is refused by the size and structure checks before anything is allocated;
every value type round-trips; a state that does not fit is named by core and array; a checkpoint
directory is locked by the run writing it.  (What needs a real run -- every flipped byte refused,
format-1 conversion, resuming -- is in tests/integration/test_checkpoint.py.)
"""

import hashlib
import os
import pickle
import struct

import msgpack
import numpy as np
import pytest

from spinnray.config import RunConfig, from_dict
from spinnray.errors import ConfigError, DataError
from spinnray.experiments.checkpoint import (
    LOCK_NAME,
    MAGIC,
    VERSION,
    Checkpointer,
    convert_v1,
    latest,
    load_checkpoint,
    main,
    config_fingerprint,
    save_checkpoint,
    settings,
    validate_state,
)
from spinnray.experiments.runner import run

from helpers import training_run_cfg as _cfg


def test_roundtrip_atomic_and_strict(tmp_path):
    state = {"kind": "eprop", "fingerprint": "abc", "w": np.arange(5.0), "epoch": 3}
    p = save_checkpoint(tmp_path / "eprop-000000003.ckpt", state)
    assert not list(tmp_path.glob("*.tmp"))
    got = load_checkpoint(p, "eprop", "abc")
    np.testing.assert_array_equal(got["w"], state["w"])
    assert got["epoch"] == 3 and got["path"] == str(p)
    save_checkpoint(tmp_path / "eprop-000000004.ckpt", dict(state, epoch=4))
    save_checkpoint(tmp_path / "zzz.ckpt", dict(state, epoch=5))         # not a KIND-NNNNNNNNN.ckpt name
    assert load_checkpoint(tmp_path)["epoch"] == 4                      # a directory: the newest
    with pytest.raises(DataError, match="a 'eprop' run; this run is 'eventprop'"):
        load_checkpoint(p, "eventprop")
    with pytest.raises(DataError, match="different network/data/learning"):
        load_checkpoint(p, "eprop", "xyz")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(DataError, match="bad.ckpt: corrupt checkpoint"):
        load_checkpoint(bad)
    (tmp_path / "x.ckpt").write_bytes(b"hello world!")
    with pytest.raises(DataError, match="not a spinnray checkpoint"):
        load_checkpoint(tmp_path / "x.ckpt")
    with pytest.raises(DataError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.ckpt")


def _v1(state_bytes: bytes) -> bytes:
    """A format-1 file: magic, version 1, then a pickle."""
    return MAGIC + struct.pack("<I", 1) + state_bytes


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _rehash(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def _forge(header: dict, data: bytes = b"") -> bytes:
    """A file with a valid SHA-256 around an arbitrary header: only the structure checks stand."""
    h = msgpack.packb(header, use_bin_type=True)
    return _rehash(MAGIC + struct.pack("<IQ", VERSION, len(h)) + h + data)


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


def test_a_refused_resume_names_each_differing_setting(tmp_path):
    """Not two fingerprints: every setting that differs, with the checkpoint's value and this run's."""
    saved = settings(learning={"lr": 0.01, "batch_size": 32}, seed=0, network={"hidden": 100})
    p = save_checkpoint(tmp_path / "eprop-000000002.ckpt",
                        {"kind": "eprop", "fingerprint": config_fingerprint(saved), "settings": saved})
    now = settings(learning={"lr": 0.02, "batch_size": 32}, seed=0, network={"hidden": 100, "n_lif": 20})
    with pytest.raises(DataError) as e:
        load_checkpoint(p, "eprop", config_fingerprint(now), now)
    msg = str(e.value)
    assert "learning.lr: 0.01 in the checkpoint, 0.02 now" in msg
    assert "network.n_lif: '(unset)' in the checkpoint, 20 now" in msg
    assert "batch_size" not in msg and "fingerprint" not in msg


def test_resume_from_a_run_directory_finds_its_checkpoints(tmp_path):
    """resume=RUN_DIR: the newest checkpoint of RUN_DIR/checkpoints (where a run writes them)."""
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    for batches in (2, 10, 4):
        save_checkpoint(ckpts / f"eprop-{batches:09d}.ckpt", {"kind": "eprop", "batches": batches})
    got = load_checkpoint(tmp_path / "run", "eprop")
    assert got["batches"] == 10 and got["path"] == str(ckpts / "eprop-000000010.ckpt")
    with pytest.raises(DataError, match="a checkpoint of a 'eprop' run; this run is 'eventprop'"):
        load_checkpoint(tmp_path / "run", "eventprop")        # only another kind's: refused, naming both
    with pytest.raises(DataError, match="no checkpoint"):
        load_checkpoint(tmp_path, "eprop")                    # neither here nor in ./checkpoints
