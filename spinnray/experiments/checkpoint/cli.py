"""``python -m spinnray.experiments.checkpoint info FILE`` | ``convert --trust OLD NEW``."""

from __future__ import annotations

import argparse
import json
import logging

from spinnray.errors import DataError
from spinnray.experiments.checkpoint.codec import load_checkpoint
from spinnray.experiments.checkpoint.convert import convert_v1

log = logging.getLogger("spinnray")


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
