"""Data sets -> arrays, one module each: Yin-Yang, cue accumulation, Speech Commands v1 and the
offline espeak-ng keyword set, SHD / SSC (HDF5 spike files) and the keyword set as spikes in that
layout, a user's files, Poisson trials.  Every module registers its typed config and loader
(:mod:`spinnray.data.base`); importing this package imports them all, so a new data set is one
module here (and its ``conf/data/NAME.yaml``).  May import: ``errors``,
``checks``, ``config``."""

import importlib
import pkgutil

from spinnray.data.base import (
    Dataset,
    Split,
    Timing,
    dataset_entry,
    dataset_names,
    load_dataset,
)

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_") and _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

from spinnray.data.cue import cue_accumulation, cue_decision_window, cue_layout  # noqa: E402
from spinnray.data.keywords import ensure_keyword_dataset  # noqa: E402
from spinnray.data.speech import (  # noqa: E402
    CLASS_NAMES,
    FeatureParams,
    load_speech_commands,
    speech_features,
)
from spinnray.data.yinyang import encode_yin_yang, load_yin_yang_arrays, yin_yang  # noqa: E402

__all__ = [
    "Dataset", "Split", "Timing", "dataset_entry", "dataset_names", "load_dataset",
    "yin_yang", "encode_yin_yang", "load_yin_yang_arrays", "cue_accumulation", "cue_layout", "cue_decision_window",
    "load_speech_commands", "speech_features", "FeatureParams", "CLASS_NAMES", "ensure_keyword_dataset",
]

