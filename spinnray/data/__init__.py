"""Data sets and input encoders for spinnray (Yin-Yang first)."""

from spinnray.data.yinyang import encode_yin_yang, load_yin_yang_arrays, yin_yang

__all__ = ["yin_yang", "encode_yin_yang", "load_yin_yang_arrays"]
