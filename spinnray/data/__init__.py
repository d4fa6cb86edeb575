"""Data sets and input encoders for spinnray: Yin-Yang, cue accumulation, Speech Commands v1 keywords."""

from spinnray.data.cue import cue_accumulation, cue_decision_window, cue_layout
from spinnray.data.speech import CLASS_NAMES, FeatureParams, load_speech_commands, speech_features
from spinnray.data.yinyang import encode_yin_yang, load_yin_yang_arrays, yin_yang

__all__ = [
    "yin_yang",
    "encode_yin_yang",
    "load_yin_yang_arrays",
    "cue_accumulation",
    "cue_layout",
    "cue_decision_window",
    "load_speech_commands",
    "speech_features",
    "FeatureParams",
    "CLASS_NAMES",
    "ensure_keyword_dataset",
]


def __getattr__(name):
    # imported on first use, so that ``python -m spinnray.data.keywords`` does not find the module
    # already imported by its package (runpy's RuntimeWarning)
    if name == "ensure_keyword_dataset":
        from spinnray.data.keywords import ensure_keyword_dataset

        return ensure_keyword_dataset
    raise AttributeError(f"module 'spinnray.data' has no attribute {name!r}")
