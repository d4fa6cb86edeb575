"""Training checkpoints: data, never code; written atomically, read back strictly.

A checkpoint is one file holding everything a trainer needs to continue as if
it had never stopped: the learning state of every core (weights, optimizer
moments and step counts, counters, weight stores), the position in the data
(epoch, offset, the epoch's sample order), the random-generator state, the
learning rate and the history so far.

File layout (format 2; all integers little-endian)::

    offset      size  content
    0           8     magic b"SPNRCKPT"
    8           4     uint32 format version (2)
    12          8     uint64 header length H (at most MAX_HEADER_BYTES)
    20          H     msgpack header: {"format": 2, "arrays": [[name, dtype, shape], ...], "state": tree}
    20 + H      D     the arrays' bytes, in the order of "arrays", C order, no padding
    20 + H + D  32    SHA-256 of every byte before it

The state tree holds only None, bools, ints, floats, strings, bytes, lists and
dicts (any of these as keys), plus four msgpack extension types: 1 = a tuple
(payload: a msgpack list), 2 = an int outside [-2**63, 2**64) (payload: its
ASCII decimal digits, e.g. PCG64's 128-bit state), 3 = the numpy array of that
index in "arrays", 4 = a numpy scalar (a 0-d entry of "arrays").  An array's
dtype is one of :data:`DTYPES` (bool, integers, floats, complex; little-endian)
and its byte count is ``prod(shape) x itemsize``.  Nothing in a checkpoint is
ever executed: there is no pickle.

Reading checks, in this order and before anything is used: the magic, the
SHA-256 of the whole file, the version, the header length, the header's
structure, every array's dtype and size against the bytes there are (so a
corrupt file cannot make the reader allocate more than the file holds).  Any
failure is a :class:`~spinnray.errors.DataError` naming the file and what is
wrong.  Format 1 files (a pickle, which runs code when read) are refused: see
:func:`convert_v1` for files you wrote yourself.  :meth:`Checkpointer.restore`
then checks the state against the run it continues (:func:`validate_state`).

A file is written to ``NAME.tmp``, flushed, fsynced and renamed over ``NAME``
(``os.replace`` is atomic on POSIX), then the directory is fsynced: a crash
leaves the previous checkpoint intact.  A :class:`Checkpointer` holds a lock
(``flock``) on :data:`LOCK_NAME` in its directory for as long as it lives, so two
runs cannot rotate each other's files; it deletes only files it wrote, and
removes ``*.ckpt.tmp`` files a crashed writer left behind.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import os
import re
import socket
import struct
import weakref
from dataclasses import asdict
from pathlib import Path

import msgpack
import numpy as np

from spinnray.backends import surviving_cluster
from spinnray.errors import ConfigError, DataError, MappingError
from spinnray.machine import quant

log = logging.getLogger("spinnray")

__all__ = ["MAGIC", "VERSION", "DTYPES", "LOCK_NAME", "Checkpointer", "save_checkpoint", "load_checkpoint",
           "validate_state", "convert_v1", "config_fingerprint", "settings", "setting_differences", "trajectory", "training_data", "latest",
           "warm_start"]

MAGIC = b"SPNRCKPT"
VERSION = 2
#: the format of spinnray before format 2: a pickle after the magic and version (refused)
PICKLE_VERSION = 1
#: bound on the msgpack header (the arrays are outside it; a header holds the tree and the array table)
MAX_HEADER_BYTES = 64 << 20
#: the lock file a Checkpointer holds in its directory
LOCK_NAME = ".spinnray-checkpoints.lock"
#: dtypes an array in a checkpoint may have (little-endian; bool and 1-byte types have no byte order)
DTYPES = {np.dtype(t).str: np.dtype(t) for t in (
    np.bool_, np.int8, np.uint8, "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8", "<c8", "<c16")}

_FIXED = 20                     # magic, version, header length
_HASH = 32                      # SHA-256
_MAX_NDIM = 32
_EXT_TUPLE, _EXT_INT, _EXT_ARRAY, _EXT_SCALAR = 1, 2, 3, 4
_INT_TEXT = re.compile(r"-?(0|[1-9][0-9]{0,3999})")
_NAME = re.compile(r"(?P<kind>[A-Za-z0-9_]+)-(?P<batches>[0-9]{9,})\.ckpt")
_POSITION_INTS = ("epoch", "first", "correct", "samples", "batches")
_POSITION_FLOATS = ("lr", "train_s")


def settings(**sections) -> dict:
    """The settings that must match between a run and its resume, flat: ``{"learning.lr": 0.01,
    ...}`` (nested mappings become dotted keys; other values are kept as plain data)."""
    out: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for k in sorted(value, key=str):
                walk(f"{prefix}.{k}", value[k])
        else:
            out[prefix] = list(value) if isinstance(value, tuple) else value

    for name, value in sections.items():
        walk(name, value)
    return out


def config_fingerprint(values: dict) -> str:
    """A short hash of the :func:`settings` that must match between a run and its resume."""
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def setting_differences(saved: dict, now: dict) -> list[str]:
    """``"key: A in the checkpoint, B now"`` for every setting that differs (or exists on one side only)."""
    out = []
    for key in sorted(set(saved) | set(now), key=str):
        a, b = saved.get(key, "(unset)"), now.get(key, "(unset)")
        if a != b:
            out.append(f"{key}: {a!r} in the checkpoint, {b!r} now")
    return out


def trajectory(learn) -> dict:
    """The learning options that shape the training up to any point: all but ``epochs``.

    A run resumed with a larger ``learning.epochs`` continues exactly as an uninterrupted run of
    that many epochs would (the epoch orders come from the checkpointed RNG), so training can be
    extended from a checkpoint.
    """
    return {k: v for k, v in asdict(learn).items() if k != "epochs"}


def training_data(data) -> dict:
    """The data options that shape the training: all but the test and validation sets' sizes and
    seeds.  A finished run resumed with another test set trains nothing more and tests its final
    weights on that set (``resume=RUN data.test_size=2000 data.test_seed=2``)."""
    return {k: v for k, v in asdict(data).items() if k not in ("test_size", "test_seed", "val_size", "val_seed")}


# ------------------------------------------------------------------------------------------------ encoding
class _Encoder:
    """A state tree -> msgpack-ready values (extension types for tuples, big ints, arrays) and the arrays."""

    def __init__(self):
        self.arrays: list[tuple[str, np.ndarray]] = []

    def value(self, x, name: str):
        t = type(x)
        if x is None or t is bool or t is str or t is bytes or t is float:
            return x
        if t is int:
            return x if -(1 << 63) <= x < (1 << 64) else msgpack.ExtType(_EXT_INT, str(x).encode("ascii"))
        if isinstance(x, np.ndarray):
            return msgpack.ExtType(_EXT_ARRAY, msgpack.packb(self.array(x, name)))
        if isinstance(x, np.generic):
            return msgpack.ExtType(_EXT_SCALAR, msgpack.packb(self.array(np.asarray(x), name)))
        if isinstance(x, dict):
            return {self.value(k, f"{name}[{k!r}]"): self.value(v, f"{name}[{k!r}]") for k, v in x.items()}
        if isinstance(x, list):
            return [self.value(v, f"{name}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, tuple):
            items = [self.value(v, f"{name}[{i}]") for i, v in enumerate(x)]
            return msgpack.ExtType(_EXT_TUPLE, msgpack.packb(items, use_bin_type=True, strict_types=True))
        for base in (int, float, str):              # IntEnum, str subclasses: their plain value
            if isinstance(x, base):
                return self.value(base(x), name)
        raise TypeError(f"checkpoint state{name}: a {t.__module__}.{t.__qualname__} cannot be saved; a checkpoint "
                        "holds None, bools, numbers, strings, bytes, lists, tuples, dicts and numeric numpy arrays")

    def array(self, a: np.ndarray, name: str) -> int:
        le = a.dtype.newbyteorder("<")
        if le.str not in DTYPES:
            raise TypeError(f"checkpoint state{name}: an array of dtype {a.dtype} cannot be saved; expected "
                            "bool, integer, float or complex")
        if a.ndim > _MAX_NDIM:
            raise TypeError(f"checkpoint state{name}: {a.ndim} dimensions; at most {_MAX_NDIM}")
        self.arrays.append((name or "state", np.asarray(a).astype(le, order="C", copy=False)))
        return len(self.arrays) - 1


def _encode(state: dict) -> tuple[bytes, list[np.ndarray]]:
    """The header bytes and the arrays (little-endian, C order) of ``state``."""
    enc = _Encoder()
    tree = enc.value(state, "")
    table = [[name, a.dtype.str, list(a.shape)] for name, a in enc.arrays]
    header = msgpack.packb({"format": VERSION, "arrays": table, "state": tree}, use_bin_type=True,
                           strict_types=True)
    if len(header) > MAX_HEADER_BYTES:
        raise ValueError(f"checkpoint header of {len(header)} bytes: more than {MAX_HEADER_BYTES} (too many "
                         "values outside arrays)")
    return header, [a for _, a in enc.arrays]


# ------------------------------------------------------------------------------------------------ decoding
class _Ref:
    """An array reference in a decoded header, replaced by the array once the table is read."""

    __slots__ = ("index", "scalar")

    def __init__(self, index: int, scalar: bool):
        self.index, self.scalar = index, scalar


def _unpack(data: bytes):
    # unpackb bounds every string, array and map length by len(data)
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True, ext_hook=_ext)


def _ext(code: int, data: bytes):
    if code == _EXT_TUPLE:
        items = _unpack(data)
        if type(items) is not list:
            raise ValueError("a tuple extension that holds no list")
        return tuple(items)
    if code == _EXT_INT:
        text = data.decode("ascii")
        if not _INT_TEXT.fullmatch(text):
            raise ValueError(f"an integer extension holding {text[:40]!r}")
        return int(text)
    if code in (_EXT_ARRAY, _EXT_SCALAR):
        index = _unpack(data)
        if type(index) is not int or index < 0:
            raise ValueError(f"an array reference {index!r}")
        return _Ref(index, code == _EXT_SCALAR)
    raise ValueError(f"unknown extension type {code}")


def _has_ref(x) -> bool:
    return isinstance(x, _Ref) or (type(x) is tuple and any(_has_ref(v) for v in x))


def _resolve(x, arrays: list, used: list):
    """``x`` with every array reference replaced by its array (each array referenced exactly once)."""
    if isinstance(x, _Ref):
        if x.index >= len(arrays) or used[x.index]:
            raise ValueError(f"array reference {x.index}: {'used twice' if x.index < len(arrays) else 'no such array'}")
        used[x.index] = True
        a = arrays[x.index]
        if x.scalar:
            if a.ndim:
                raise ValueError(f"array {x.index} of shape {a.shape} used as a scalar")
            return a[()]
        return a
    t = type(x)
    if t is dict:
        out = {}
        for k, v in x.items():
            if _has_ref(k):
                raise ValueError("an array used as a dict key")
            out[k] = _resolve(v, arrays, used)
        return out
    if t is list:
        return [_resolve(v, arrays, used) for v in x]
    if t is tuple:
        return tuple(_resolve(v, arrays, used) for v in x)
    return x


def _old_format(path) -> str:
    return (f"{path}: a checkpoint in the old pickle format (format {PICKLE_VERSION}, written by spinnray before "
            f"format {VERSION}). Reading it would run whatever code the file holds, so it was not loaded, for safety. "
            f"If you wrote it yourself and trust it, convert it once with `python -m spinnray.experiments.checkpoint "
            f"convert --trust {path} NEW.ckpt` and continue from NEW.ckpt; otherwise start the run afresh")


def _decode(buf: bytes, path) -> dict:
    """The state of the checkpoint bytes ``buf`` (read from ``path``); DataError naming the path."""
    n = len(buf)
    if n < 12 or buf[:8] != MAGIC:
        raise DataError(f"{path}: not a spinnray checkpoint (bad magic)")
    (version,) = struct.unpack_from("<I", buf, 8)
    intact = n >= _FIXED + _HASH and hashlib.sha256(memoryview(buf)[:n - _HASH]).digest() == buf[n - _HASH:]
    if not intact:
        if version == PICKLE_VERSION:
            raise DataError(_old_format(path))
        if version != VERSION:
            raise DataError(f"{path}: corrupt checkpoint, or of an unknown format {version} (this spinnray "
                            f"reads format {VERSION}); not loaded")
        raise DataError(f"{path}: corrupt checkpoint: its SHA-256 does not match its {n} bytes (truncated, or "
                        "changed after it was written); not loaded")
    if version != VERSION:
        raise DataError(f"{path}: checkpoint format {version}; this spinnray reads format {VERSION}")
    (hlen,) = struct.unpack_from("<Q", buf, 12)
    if hlen > MAX_HEADER_BYTES or _FIXED + hlen > n - _HASH:
        raise DataError(f"{path}: corrupt checkpoint: a header of {hlen} bytes in a file of {n}")
    try:
        header = _unpack(buf[_FIXED:_FIXED + hlen])
    except Exception as e:        # noqa: BLE001 - whatever msgpack or the extension hook raise
        raise DataError(f"{path}: corrupt checkpoint header ({type(e).__name__}: {e})") from None
    if type(header) is not dict or set(header) != {"format", "arrays", "state"} or header["format"] != VERSION \
            or type(header["arrays"]) is not list:
        raise DataError(f"{path}: corrupt checkpoint header (expected the keys format = {VERSION}, arrays, state)")
    # every array's size is checked against the bytes there are before any is allocated
    data_end, off, spans = n - _HASH, _FIXED + hlen, []
    for i, entry in enumerate(header["arrays"]):
        ok = type(entry) is list and len(entry) == 3 and type(entry[0]) is str and type(entry[1]) is str \
            and type(entry[2]) is list and len(entry[2]) <= _MAX_NDIM \
            and all(type(s) is int and s >= 0 for s in entry[2])
        if not ok:
            raise DataError(f"{path}: corrupt checkpoint: array entry {i} is {str(entry)[:80]}; expected "
                            "[name, dtype, shape]")
        name, dt, shape = entry
        if dt not in DTYPES:
            raise DataError(f"{path}: array {name!r} has dtype {dt!r}; a checkpoint holds only {sorted(DTYPES)}")
        count = math.prod(shape)
        nbytes = count * DTYPES[dt].itemsize
        if nbytes > data_end - off:
            raise DataError(f"{path}: corrupt checkpoint: array {name!r} of shape {tuple(shape)} {dt} needs "
                            f"{nbytes} bytes; {data_end - off} remain")
        spans.append((DTYPES[dt], tuple(shape), count, off))
        off += nbytes
    if off != data_end:
        raise DataError(f"{path}: corrupt checkpoint: {data_end - off} bytes after the last array")
    arrays = [np.frombuffer(buf, dt, count, o).reshape(shape).copy() for dt, shape, count, o in spans]
    used = [False] * len(arrays)
    try:
        state = _resolve(header["state"], arrays, used)
    except (ValueError, RecursionError) as e:
        raise DataError(f"{path}: corrupt checkpoint state ({e})") from None
    if not all(used):
        raise DataError(f"{path}: corrupt checkpoint: array {used.index(False)} is not part of the state")
    if type(state) is not dict:
        raise DataError(f"{path}: corrupt checkpoint (expected a dict, got {type(state).__name__})")
    return state


# ------------------------------------------------------------------------------------------------ files
def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return                                   # no directory handles (Windows): the rename is what we have
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (``path.tmp``, fsync, rename, fsync of the directory);
    returns the path.  TypeError naming the entry for a value a checkpoint cannot hold."""
    path = Path(path)
    header, arrays = _encode(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as f:
            for chunk in (MAGIC + struct.pack("<IQ", VERSION, len(header)), header,
                          *(memoryview(a.reshape(-1).view(np.uint8)) for a in arrays)):
                h.update(chunk)
                f.write(chunk)
            f.write(h.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path, kind: str | None = None, fingerprint: str | None = None,
                    values: dict | None = None) -> dict:
    """Read a checkpoint (a file; a directory: its newest ``{kind}-NNNNNNNNN.ckpt``, also in its
    ``checkpoints/`` subdirectory, so a run's output directory will do); ``kind`` and ``fingerprint``,
    when given, must match (``values``: the run's :func:`settings`, so that a refusal names every
    setting that differs).

    Raises :class:`DataError` naming the path for a missing, foreign, old-format, corrupt or
    mismatching file.
    """
    path = Path(path)
    if path.is_dir() and not (latest(path, kind) or latest(path)) and (path / "checkpoints").is_dir():
        path = path / "checkpoints"            # a run's output directory
    if path.is_dir():
        found = latest(path, kind) or latest(path)
        if found is None:
            raise DataError(f"resume = {str(path)!r}: no checkpoint ({kind or 'KIND'}-NNNNNNNNN.ckpt) in that "
                            "directory")
        path = found
    if not path.is_file():
        raise DataError(f"resume = {str(path)!r}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:8] != MAGIC:
                raise DataError(f"{path}: not a spinnray checkpoint (bad magic)")
            buf = head + f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read the checkpoint ({e.strerror or e})") from None
    state = _decode(buf, path)
    if kind is not None and state.get("kind") != kind:
        raise DataError(f"{path}: a checkpoint of a {state.get('kind')!r} run; this run is {kind!r}")
    if fingerprint is not None and state.get("fingerprint") != fingerprint:
        diff = setting_differences(state["settings"], values) if isinstance(state.get("settings"), dict) and \
            values is not None else []
        why = "; ".join(diff[:12]) + (f"; and {len(diff) - 12} more" if len(diff) > 12 else "") if diff else \
            f"fingerprint {state.get('fingerprint')} != {fingerprint}"
        raise DataError(f"{path}: written by a run with a different network/data/learning configuration ({why}); "
                        "a resume needs the same settings (learning.epochs may grow; data.test_size and "
                        "data.test_seed may change)")
    state["path"] = str(path)
    return state


def latest(directory, kind: str | None = None) -> Path | None:
    """The newest ``{kind}-NNNNNNNNN.ckpt`` in ``directory`` (the most mini-batches; any kind when
    ``kind`` is None), or None.  Other files are ignored."""
    found = []
    for p in Path(directory).glob("*.ckpt"):
        m = _NAME.fullmatch(p.name)
        if m and (kind is None or m["kind"] == kind) and p.is_file():
            found.append((int(m["batches"]), p.name, p))
    return max(found)[2] if found else None


# ------------------------------------------------------------------------------------------------ checks
def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape} {x.dtype}"
    return f"a {type(x).__name__}" if not isinstance(x, (int, float, str)) or isinstance(x, bool) else \
        f"{x!r} ({type(x).__name__})"


def _holds_array(x) -> bool:
    if isinstance(x, np.ndarray):
        return True
    if isinstance(x, dict):
        return any(_holds_array(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return any(_holds_array(v) for v in x)
    return False


def _fits(want, got, where: str, key: str) -> None:
    """DataError unless ``got`` has the structure, array shapes and dtypes of ``want`` (module docstring)."""
    at = key or "the state"
    if isinstance(want, np.ndarray):
        if not isinstance(got, np.ndarray) or got.dtype != want.dtype or got.shape != want.shape:
            raise DataError(f"{where}: {at} is {_describe(got)}; this run's core holds {_describe(want)}")
        if got.dtype.kind in "fc" and not np.isfinite(got).all():
            bad = int(got.size - np.count_nonzero(np.isfinite(got)))
            raise DataError(f"{where}: {at} holds {bad} NaN or infinite values")
        return
    if isinstance(want, dict):
        if not isinstance(got, dict):
            raise DataError(f"{where}: {at} is {_describe(got)}; expected a dict")
        extra = [k for k in got if k not in want]
        if extra:
            raise DataError(f"{where}: {key + '.' if key else ''}{extra[0]} is not part of this run's core state")
        for k, v in want.items():
            sub = f"{key}.{k}" if key else str(k)
            if k in got:
                _fits(v, got[k], where, sub)
            elif _holds_array(v):
                raise DataError(f"{where}: {sub} is missing; this run's core holds {_describe(v)}"
                                if isinstance(v, np.ndarray) else f"{where}: {sub} is missing")
        return
    if isinstance(want, (list, tuple)):
        if type(got) is not type(want) or len(got) != len(want):
            raise DataError(f"{where}: {at} is {_describe(got)}"
                            f"{f' of {len(got)}' if isinstance(got, (list, tuple)) else ''}; this run's core "
                            f"holds a {type(want).__name__} of {len(want)}")
        for i, (w, g) in enumerate(zip(want, got)):
            _fits(w, g, where, f"{key}[{i}]")
        return
    if want is None or isinstance(want, (bool, str, bytes)):
        if type(got) is not type(want):
            raise DataError(f"{where}: {at} is {_describe(got)}; expected {_describe(want)}")
        return
    if isinstance(want, (int, float)):
        ok = type(got) is int if isinstance(want, int) else type(got) in (int, float)
        if not ok or (isinstance(got, float) and not math.isfinite(got)):
            raise DataError(f"{where}: {at} is {_describe(got)}; expected a finite {type(want).__name__}")
        return
    if type(got) is not type(want):
        raise DataError(f"{where}: {at} is {_describe(got)}; expected {_describe(want)}")


def validate_state(expected: dict, got, where: str = "checkpoint", labels: dict | None = None) -> None:
    """Check core states ``got`` (``{core id: learning state}`` from a checkpoint) against ``expected``
    (the same from the live cores, :meth:`trainer.state`) before they are loaded.

    The same cores; per core the same entries, every array of the same shape and dtype and, if
    floating, finite (weights, Adam moments, accumulators, device states); numbers of the same kind
    (an int stays an int).  A live entry that is not an array and is absent from the checkpoint keeps
    its value.  Raises DataError naming ``where``, the core (``labels[core id]`` when given) and
    the entry.
    """
    labels = labels or {}

    def name(cid):
        return f"core {labels.get(cid, cid)}"

    if not isinstance(got, dict):
        raise DataError(f"{where}: the checkpoint holds no core states")
    missing = [c for c in expected if c not in got]
    if missing:
        raise DataError(f"{where}: no state for {name(missing[0])}; this run's cores are {sorted(expected)} and the "
                        f"checkpoint's {sorted(got, key=str)}: the checkpoint's network and mapping must match this run's")
    extra = [c for c in got if c not in expected]
    if extra:
        raise DataError(f"{where}: a state for core {extra[0]!r}, which this run does not have (its cores are "
                        f"{sorted(expected)}): the checkpoint's network and mapping must match this run's")
    for cid in sorted(expected):
        _fits(expected[cid], got[cid], f"{where}: {name(cid)}", "")


def _check_position(st: dict, where: str) -> None:
    """The loop position of a checkpoint: counts >= 0, a finite learning rate, the epoch order a permutation."""
    for k in _POSITION_INTS:
        if type(st.get(k)) is not int or st[k] < 0:
            raise DataError(f"{where}: {k} = {st.get(k)!r}; expected an integer >= 0")
    for k in _POSITION_FLOATS:
        if type(st.get(k)) not in (int, float) or not math.isfinite(st[k]):
            raise DataError(f"{where}: {k} = {st.get(k)!r}; expected a finite number")
    order = st.get("order", ())
    if order is not None:
        if not isinstance(order, np.ndarray) or order.ndim != 1 or order.dtype.kind not in "iu" \
                or not np.array_equal(np.sort(order), np.arange(order.size)):
            raise DataError(f"{where}: order is {_describe(order)}; expected None or a permutation of the "
                            "training samples")
        if st["first"] > order.size:
            raise DataError(f"{where}: first = {st['first']} is past the epoch's {order.size} samples")
    for k, typ in (("history", list), ("losses", list)):
        if type(st.get(k)) is not typ:
            raise DataError(f"{where}: {k} is {_describe(st.get(k))}; expected a {typ.__name__}")
    if not all(type(h) is dict for h in st["history"]) or \
            not all(type(v) in (int, float) for v in st["losses"]):
        raise DataError(f"{where}: history must be a list of dicts and losses a list of numbers")


def warm_start(path, kind: str, network, mapping) -> str:
    """Give ``network`` the weights the cores of a ``kind`` checkpoint held (``init_from=PATH``).

    For fine-tuning (say, at a lower learning rate) and for moving a trained
    model to another weight precision: only the weights are taken; the
    optimizer moments, the data order, the learning-rate schedule and the
    epoch count start fresh.  The weights are written into the projections of
    ``network`` in place (before the trainer is built from it, so a weight
    store's range is set from them).  ``mapping`` places ``network`` as the
    checkpointed run did: every core's slice and weight shapes must match, or
    a :class:`ConfigError` names the core and the shapes.  Replicas hold equal
    weights, so replica 0's cores are read.  Returns the source's identity
    (fingerprint and mini-batch count) for the new run's fingerprint.
    """
    st = load_checkpoint(path, kind)
    cores = st.get("cores")
    if not isinstance(cores, dict):
        raise DataError(f"init_from = {str(path)!r}: the checkpoint holds no core states")
    for pl in mapping.placements:
        if pl.replica != 0:
            continue
        sl = pl.slice
        incoming = network.incoming(network[sl.population])
        if not incoming:
            continue
        got = cores.get(pl.core_id, {}).get("weights") if isinstance(cores.get(pl.core_id), dict) else None
        where = f"init_from = {st['path']!r}: core {pl.core_id} ({sl.population}[{sl.lo}:{sl.hi}])"
        if got is None or len(got) != len(incoming):
            raise ConfigError(f"{where} holds {'no' if got is None else len(got)} weight matrices; this network "
                              f"expects {len(incoming)} ({', '.join(p.name for p in incoming)}): the checkpoint's "
                              "network and cores per population must match this run's")
        for proj, w in zip(incoming, got):
            w = np.asarray(w)
            want = (proj.pre.size, sl.hi - sl.lo)
            if w.shape != want:
                raise ConfigError(f"{where} holds {proj.name} weights of shape {w.shape}; this network expects "
                                  f"{want}: the checkpoint's network and cores per population must match this run's")
            if not np.all(np.isfinite(w)):
                raise DataError(f"{where}: {proj.name} weights are not finite")
            m = None if proj.mask is None else proj.mask[:, sl.lo:sl.hi]
            proj.weights[:, sl.lo:sl.hi] = w if m is None else np.where(m, w, 0.0)
    log.info("weights from %s (%s, %d mini-batches trained); optimizer, data order and schedule start fresh",
             st["path"], kind, int(st.get("batches", 0)))
    return f"{st.get('fingerprint')}@{int(st.get('batches', 0))}"


# ------------------------------------------------------------------------------------------------ the lock
def _holder() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


class _DirectoryLock:
    """An exclusive ``flock`` on ``directory/LOCK_NAME``, held until :meth:`release` (or the process ends)."""

    def __init__(self, directory: Path):
        self.fd = None
        try:
            import fcntl
        except ImportError:                       # no flock (Windows): run unlocked, and say so
            log.warning("checkpoint.dir = %s: no file locks on this system; do not let two runs share it", directory)
            return
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            if holder == _holder():
                holder += (": an earlier run in this process whose Checkpointer is still alive, e.g. kept by the "
                           "traceback of its failure; close() it")
            raise ConfigError(f"checkpoint.dir = {str(directory)!r}: another run holds this checkpoint directory "
                              f"({holder}); two runs rotating the same directory would delete each other's "
                              "checkpoints. Give this run its own checkpoint.dir (or none: RUN_DIR/checkpoints), or "
                              "wait for the other run to end") from None
        except OSError as e:                      # a file system without locks: run unlocked, and say so
            os.close(fd)
            log.warning("checkpoint.dir = %s: cannot lock %s (%s); do not let two runs share it", directory, path,
                        e.strerror or e)
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{_holder()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)                     # closing the descriptor drops the flock
            self.fd = None


class Checkpointer:
    """Writes a trainer's state every ``cfg.checkpoint.every`` mini-batches and reads it back.

    A checkpoint holds ``trainer.state()`` (every core's learning state), the
    bit generator state of ``rng`` (data order) and the loop position ``pos``
    (epoch, sample, history, ...), under ``kind`` and a fingerprint of the
    configuration: :meth:`restore` refuses another kind or configuration, and
    a state that does not fit the live cores (:func:`validate_state`).

    With checkpoints on, the Checkpointer locks its directory for as long as it
    lives (until :meth:`close`, the end of a ``with`` block, its collection or
    the end of the process): a second Checkpointer on the same directory gets a
    ConfigError.  Starting, it removes the ``*.ckpt.tmp`` files a crashed
    writer left; rotating (``keep``), it deletes only files it wrote.
    """

    def __init__(self, cfg, out_dir, kind: str, values: dict):
        c = cfg.checkpoint
        self.every, self.keep, self.max_restarts = c.every, c.keep, c.max_restarts
        self.enabled = c.every > 0
        self.dir = Path(c.dir) if c.dir else Path(out_dir) / "checkpoints"
        self.kind, self.values, self.fingerprint = kind, values, config_fingerprint(values)
        self.backend, self.cluster = cfg.backend, cfg.cluster
        self.last: str | None = None
        self.restarts = 0
        self.written: list[Path] = []             # the files this run wrote and has not deleted, oldest first
        self._lock = None
        if self.enabled:
            try:
                self._lock = _DirectoryLock(self.dir)
                weakref.finalize(self, self._lock.release)
                for stale in self.dir.glob("*.ckpt.tmp"):
                    log.info("removing %s, left by a writer that stopped", stale)
                    stale.unlink(missing_ok=True)
            except OSError as e:
                raise ConfigError(f"checkpoint.dir = {str(self.dir)!r}: cannot use it for checkpoints "
                                  f"({type(e).__name__}: {e.strerror or e})") from None

    def close(self) -> None:
        """Release the directory's lock (the files stay)."""
        if self._lock is not None:
            self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def due(self, batches: int) -> bool:
        return self.enabled and batches % self.every == 0

    def save(self, pos: dict, trainer, rng) -> None:
        state = {"kind": self.kind, "fingerprint": self.fingerprint, "settings": self.values,
                 "rng": rng.bit_generator.state,
                 "cores": trainer.state(), **{k: v for k, v in pos.items() if k != "path"}}
        path = save_checkpoint(self.dir / f"{self.kind}-{pos['batches']:09d}.ckpt", state)
        self.last = str(path)
        if path in self.written:
            self.written.remove(path)
        self.written.append(path)
        while len(self.written) > self.keep:
            self.written.pop(0).unlink(missing_ok=True)
        log.info("checkpoint %s (epoch %d, sample %d)", path, pos["epoch"] + 1, pos["first"])

    def restore(self, path, trainer, rng) -> dict:
        """Load ``path`` (a file, or a directory: its newest) into the trainer and ``rng``.

        Everything is checked before anything is loaded: the file (:func:`load_checkpoint`), the
        core states against the trainer's own (:func:`validate_state`), the random generator state
        and the loop position; DataError naming the file, the core and the entry otherwise."""
        if path is None:
            raise DataError("no checkpoint to continue from")
        st = load_checkpoint(path, self.kind, self.fingerprint, self.values)
        where = st["path"]
        validate_state(trainer.state(), st.get("cores"), where, _core_labels(trainer))
        gen = st.get("rng")
        want = type(rng.bit_generator).__name__
        if not isinstance(gen, dict) or gen.get("bit_generator") != want:
            raise DataError(f"{where}: rng is {_describe(gen)}; expected the state of a {want} bit generator")
        probe = type(rng.bit_generator)()
        try:
            probe.state = gen
        except (TypeError, ValueError, KeyError, OverflowError) as e:
            raise DataError(f"{where}: rng is not a valid {want} state ({e})") from None
        _check_position(st, where)
        trainer.load_state(st["cores"])
        rng.bit_generator.state = gen
        self.last = where
        return {k: v for k, v in st.items() if k not in ("kind", "fingerprint", "settings", "rng", "cores", "version")}

    def recover(self, error: Exception, trainer, make_trainer, rng):
        """After a failure during training: rebuild the cores with
        ``make_trainer(cluster)`` and load the last checkpoint; returns
        ``(new trainer, loop position)``.

        Re-raises ``error`` when it is not a machine failure (a ConfigError or
        DataError), when checkpoints are off, or after ``max_restarts`` restarts.
        On ``ray``, when the placement cannot be made again because nodes were
        lost and ``cluster.replace_lost_nodes`` is on, the chips are spread over
        the nodes still alive (:func:`spinnray.backends.surviving_cluster`).
        """
        if isinstance(error, (ConfigError, DataError)) or not self.enabled or self.restarts >= self.max_restarts:
            raise error
        self.restarts += 1
        log.warning("training failed (%s); rebuilding the cores and continuing from the last checkpoint "
                    "(restart %d of %d)", error, self.restarts, self.max_restarts)
        trainer.close()
        try:
            trainer = make_trainer(self.cluster)
        except MappingError as e:
            if self.backend != "ray" or not getattr(self.cluster, "replace_lost_nodes", False):
                raise
            smaller = surviving_cluster(self.cluster)
            log.warning("cannot place the machine as before (%s); continuing on %d node(s) %s",
                        e, smaller.nodes, list(smaller.node_ids) if smaller.node_ids else "(the alive ones)")
            self.cluster = smaller
            trainer = make_trainer(self.cluster)
        return trainer, self.restore(self.last, trainer, rng)


def _core_labels(trainer) -> dict:
    """``{core id: "3 (hidden[0:5])"}`` of the trainer's mapping, to name cores in messages."""
    try:
        return {pl.core_id: f"{pl.core_id} ({pl.slice.population}[{pl.slice.lo}:{pl.slice.hi}]"
                            f"{f', replica {pl.replica}' if pl.replica else ''})"
                for pl in trainer.sim.mapping.placements}
    except AttributeError:
        return {}


# ------------------------------------------------------------------------------------------------ format 1
_V1_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__generator_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pcg64", "PCG64"), ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
}
_V1_STORES = ("Noise", "Quantizer", "MixedPrecisionWeights", "PCMWeights", "PCMParams")


def convert_v1(src, dst, *, trust: bool = False) -> Path:
    """Rewrite a format-1 (pickle) checkpoint ``src`` that you wrote yourself as a format-2 file ``dst``.

    Reading a pickle runs code, so this needs ``trust=True`` (``--trust`` on the command line),
    and even then only numpy arrays, numpy random generators and spinnray's weight stores are
    let in (any other class or function in the file is a DataError).  Weight stores become their
    plain :meth:`state`.  Returns ``dst``.
    """
    import pickle   # here only: nothing else in spinnray may read a pickle

    src = Path(src)
    if not trust:
        raise DataError(f"{src}: converting a pickle checkpoint runs code from the file; pass trust=True "
                        "(--trust) only for a file you wrote yourself")

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in _V1_GLOBALS:
                return super().find_class(module, name)
            if module in ("spinnray.quant", "spinnray.machine.quant") and name in _V1_STORES:
                return getattr(quant, name)
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint")

    with open(src, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:8] != MAGIC:
            raise DataError(f"{src}: not a spinnray checkpoint (bad magic)")
        if struct.unpack("<I", head[8:])[0] != PICKLE_VERSION:
            raise DataError(f"{src}: not a format-{PICKLE_VERSION} (pickle) checkpoint")
        try:
            state = Restricted(io.BytesIO(f.read())).load()
        except Exception as e:      # noqa: BLE001 - a corrupt pickle raises anything
            raise DataError(f"{src}: not converted ({type(e).__name__}: {e})") from None

    def plain(x):
        if isinstance(x, (quant.MixedPrecisionWeights, quant.PCMWeights)):
            return x.state()
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(plain(v) for v in x)
        return x

    if not isinstance(state, dict):
        raise DataError(f"{src}: not converted (expected a dict, got {type(state).__name__})")
    try:
        return save_checkpoint(dst, plain(state))
    except (TypeError, AttributeError) as e:
        raise DataError(f"{src}: not converted ({e})") from None


def main(argv=None) -> int:
    """``python -m spinnray.experiments.checkpoint info FILE`` | ``convert --trust OLD NEW``."""

    ap = argparse.ArgumentParser(prog="python -m spinnray.experiments.checkpoint",
                                 description="Inspect a checkpoint, or convert a format-1 (pickle) one you wrote.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    info = sub.add_parser("info", help="check a checkpoint and print what it holds")
    info.add_argument("path")
    conv = sub.add_parser("convert", help="rewrite a format-1 (pickle) checkpoint you wrote yourself as format 2")
    conv.add_argument("--trust", action="store_true", help="the file is yours: reading a pickle runs code")
    conv.add_argument("src")
    conv.add_argument("dst")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "convert":
            if not a.trust:
                ap.error("convert reads a pickle, which runs code from the file: pass --trust for a file you wrote")
            print(convert_v1(a.src, a.dst, trust=True))
        else:
            st = load_checkpoint(a.path)
            print(json.dumps({"path": st["path"], "kind": st.get("kind"), "fingerprint": st.get("fingerprint"),
                              "epoch": st.get("epoch"), "batches": st.get("batches"),
                              "cores": len(st.get("cores") or {})}))
    except DataError as e:
        print(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
