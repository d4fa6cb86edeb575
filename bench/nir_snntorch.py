"""An snnTorch network through spinnray and back (docs/nir.md, "Measured"); needs snnTorch (torch).

Usage::

    python bench/nir_snntorch.py make OUT.nir              # snnTorch's Yin-Yang network, exported by snnTorch
    python run.py scenario=eventprop_yinyang network=nir network.path=OUT.nir network.convention=snntorch \\
        network.dt_ms=0.1 network.steps=400 checkpoint.every=157 ...        # train it with EventProp
    python bench/nir_snntorch.py compare RUN_DIR [--samples N]

``compare`` exports the run's trained network for snnTorch (``spinnray.nir.export(...,
convention="snntorch")``), imports it with ``snntorch.import_nir.import_from_nir`` and runs both
spinnray and snnTorch on the run's test samples: it prints the output spikes of each and how
many spike entries differ (spinnray's output at step t + offset against snnTorch's at t).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DT_MS, TAU_SYN_MS, TAU_MEM_MS, HIDDEN = 0.1, 5.0, 20.0, 100


def make(out: str) -> None:
    import nir
    import snntorch as snn
    import torch
    from snntorch.export_nir import export_to_nir

    alpha, beta = math.exp(-DT_MS / TAU_SYN_MS), math.exp(-DT_MS / TAU_MEM_MS)

    def synaptic(n, output=False):        # per-neuron parameters: snnTorch's scalar ones fail NIR's type check
        return snn.Synaptic(alpha=torch.full((n,), alpha), beta=torch.full((n,), beta), threshold=torch.ones(n),
                            reset_mechanism="zero", reset_delay=False, init_hidden=True, output=output)

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, HIDDEN, bias=False), synaptic(HIDDEN),
                              torch.nn.Linear(HIDDEN, 3, bias=False), synaptic(3, output=True))
    with torch.no_grad():                 # spinnray's Yin-Yang initial weights, in snnTorch's units (x (1 - beta))
        net[0].weight.normal_(1.5, 0.78).mul_(1 - beta)
        net[2].weight.normal_(0.93, 0.1).mul_(1 - beta)
    nir.write(out, export_to_nir(net, torch.zeros(1, 5), ignore_dims=[0]))
    print(f"wrote {out}")


def compare(run_dir: str, samples: int | None) -> None:
    import nir
    import torch
    from snntorch.import_nir import import_from_nir

    import spinnray.nir as snir
    from spinnray import MachineConfig, Simulator
    from spinnray.data.base import Timing, load_dataset
    from spinnray.experiments.setup import resolve
    from spinnray.experiments.trained import run_config

    run = resolve(run_config(run_dir))
    data = load_dataset(run.data, Timing(run.network.dt_ms, run.network.steps))
    path = Path(tempfile.mkdtemp()) / "trained.nir"
    snir.export(run_dir, path, convention="snntorch")
    imp = snir.read(path, convention="snntorch")
    out = imp.outputs[0]
    k, steps = imp.offsets[out], data.steps
    n = min(samples or len(data.test), len(data.test))
    counts, differ = [0, 0], 0
    for lo in range(0, n, 100):
        idx = np.arange(lo, min(n, lo + 100))
        x = data.test.batch(idx)
        with Simulator(imp.network, MachineConfig(sram_per_pe_bytes=1 << 24), backend="local",
                       batch_size=len(idx)) as sim:
            ours = sim.run(steps + k, {imp.nodes["input"]: np.concatenate([x, np.zeros((k, len(idx), 5), bool)])},
                           record=("spikes",)).spikes[out][k:]
        model = import_from_nir(nir.read(path))        # a fresh module: init_hidden keeps state between calls
        state, theirs = None, []
        with torch.no_grad():
            for t in range(steps):
                y, state = model(torch.tensor(x[t], dtype=torch.float32), state)
                theirs.append(y.numpy())
        theirs = np.array(theirs) > 0
        counts[0] += int(ours.sum())
        counts[1] += int(theirs.sum())
        differ += int((ours != theirs).sum())
    print(f"{n} test samples of {run_dir}: output spikes spinnray {counts[0]}, snnTorch {counts[1]}; "
          f"differing spike entries {differ}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("make").add_argument("out")
    c = sub.add_parser("compare")
    c.add_argument("run_dir")
    c.add_argument("--samples", type=int, default=None)
    a = ap.parse_args()
    make(a.out) if a.cmd == "make" else compare(a.run_dir, a.samples)


if __name__ == "__main__":
    main()
