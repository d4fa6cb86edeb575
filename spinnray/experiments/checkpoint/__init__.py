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

Modules: ``codec`` (the file), ``state`` (what a checkpoint must agree with), ``checkpointer`` (writing,
rotating, restoring, recovering), ``convert`` (format 1), ``cli``.
"""

from spinnray.experiments.checkpoint.checkpointer import LOCK_NAME, Checkpointer, warm_start
from spinnray.experiments.checkpoint.cli import main
from spinnray.experiments.checkpoint.codec import DTYPES, MAGIC, VERSION, latest, load_checkpoint, save_checkpoint
from spinnray.experiments.checkpoint.convert import convert_v1
from spinnray.experiments.checkpoint.state import (config_fingerprint, setting_differences, settings, training_data,
                                                   trajectory, validate_state)

__all__ = ["MAGIC", "VERSION", "DTYPES", "LOCK_NAME", "Checkpointer", "save_checkpoint", "load_checkpoint",
           "validate_state", "convert_v1", "config_fingerprint", "settings", "setting_differences", "trajectory",
           "training_data", "latest", "warm_start", "main"]
