"""The copies engine on ``local``: a scenario's data-parallel copies stepped by one core object per slice
(``parallel.copies=true``, the default) against each copy apart (``false``), side by side, alternating,
on the same data and seed; the weights' CRC32 must agree.

    python bench/bench_copies.py --scenario eprop_kws --overrides data.limit=160 data.root=DIR --repeats 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(scenario: str, overrides: list[str], copies: bool, out: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "run.py"), f"scenario={scenario}", "backend=local", "report=false",
           "progress=false", "learning.epochs=1", f"parallel.copies={str(copies).lower()}",
           f"hydra.run.dir={out}", *overrides]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    m = json.loads((out / "metrics.json").read_text())
    return {"samples_per_s": m["train_samples_per_s"], "wall_s": m["wall_s"], "crc": m["weights_crc32"],
            "cores": m["cores"], "test_accuracy": m["history"][-1].get("test_accuracy")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", default="eprop_cue")
    p.add_argument("--overrides", nargs="*", default=["data.train_size=64", "data.test_size=32"])
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeats):
            for copies in (False, True):
                r = run(a.scenario, a.overrides, copies, Path(tmp) / f"{rep}-{copies}")
                rows.append((rep, copies, r))
                print(f"repeat {rep} copies={copies}: {r['samples_per_s']:.2f} training samples/s, "
                      f"wall {r['wall_s']:.1f} s, {r['cores']} cores, crc {r['crc']}", flush=True)
    crcs = {r["crc"] for _, _, r in rows}
    if len(crcs) != 1:
        print(f"DIFFERENT WEIGHTS: {sorted(crcs)}")
        return 1
    for rep in range(a.repeats):
        apart = next(r for k, c, r in rows if k == rep and not c)
        together = next(r for k, c, r in rows if k == rep and c)
        print(f"repeat {rep}: copies together / apart = {together['samples_per_s'] / apart['samples_per_s']:.2f}x "
              "training samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
