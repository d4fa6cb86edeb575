"""The checkpoint file (format 2, the package docstring gives the layout): the state tree to msgpack
and raw arrays and back, with every check made before anything is used; atomic save, strict load."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import struct
from pathlib import Path

import msgpack
import numpy as np

from spinnray.errors import DataError
from spinnray.experiments.checkpoint.state import setting_differences

log = logging.getLogger("spinnray")


MAGIC = b"SPNRCKPT"
VERSION = 2
#: the format of spinnray before format 2: a pickle after the magic and version (refused)
PICKLE_VERSION = 1
#: bound on the msgpack header (the arrays are outside it; a header holds the tree and the array table)
MAX_HEADER_BYTES = 64 << 20
DTYPES = {np.dtype(t).str: np.dtype(t) for t in (
    np.bool_, np.int8, np.uint8, "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8", "<c8", "<c16")}

_FIXED = 20                     # magic, version, header length
_HASH = 32                      # SHA-256
_MAX_NDIM = 32
_EXT_TUPLE, _EXT_INT, _EXT_ARRAY, _EXT_SCALAR = 1, 2, 3, 4
_INT_TEXT = re.compile(r"-?(0|[1-9][0-9]{0,3999})")
NAME_PATTERN = re.compile(r"(?P<kind>[A-Za-z0-9_]+)-(?P<batches>[0-9]{9,})\.ckpt")


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
def fsync_dir(directory: Path) -> None:
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
    fsync_dir(path.parent)
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
        m = NAME_PATTERN.fullmatch(p.name)
        if m and (kind is None or m["kind"] == kind) and p.is_file():
            found.append((int(m["batches"]), p.name, p))
    return max(found)[2] if found else None
