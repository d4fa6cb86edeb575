"""Format 1 (pickle) checkpoints of spinnray before 0.2: the one place that may unpickle, only on
request (``trust=True``) and only numpy and spinnray's weight-store classes."""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path

from spinnray.errors import DataError
from spinnray.experiments.checkpoint.codec import MAGIC, PICKLE_VERSION, save_checkpoint
from spinnray.machine import quant

log = logging.getLogger("spinnray")


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
    import pickle  # here only: nothing else in spinnray may read a pickle

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
