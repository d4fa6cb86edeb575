"""``python -m spinnray.nir export NETWORK_SOURCE OUT.nir`` | ``show FILE``."""

from __future__ import annotations

import argparse
import logging

from spinnray.errors import SpinnrayError
from spinnray.model.nirgraph import CONVENTIONS, MS_PER_UNIT
from spinnray.nir import export, read

log = logging.getLogger("spinnray")


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--convention", default="spinnray", choices=sorted(CONVENTIONS),
                   help="how the graph's parameters map to steps (default: spinnray)")
    p.add_argument("--dt", type=float, default=None, help="the step, in --time-unit (default: the convention's)")
    p.add_argument("--time-unit", default=None, choices=sorted(MS_PER_UNIT),
                   help="unit of dt and the time constants (default: the convention's)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spinnray.nir",
                                 description="Write a trained spinnray network as a NIR graph, or show how spinnray "
                                             "reads one.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="write the network of a training run (its newest checkpoint) as NIR")
    ex.add_argument("run_dir", help="a training run's output directory (trained with checkpoint.every > 0)")
    ex.add_argument("out", help="the .nir file to write")
    ex.add_argument("--checkpoint", default=None, help="this checkpoint file instead of the run's newest")
    _options(ex)
    sh = sub.add_parser("show", help="the populations, projections and time offsets spinnray reads from a NIR file")
    sh.add_argument("path")
    _options(sh)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if a.cmd == "export":
            graph = export(a.run_dir, a.out, dt=a.dt, convention=a.convention, time_unit=a.time_unit,
                           checkpoint=a.checkpoint)
            meta = graph.metadata
            print(f"wrote {a.out}: {len(graph.nodes)} nodes, convention {meta['spinnray_convention']}, "
                  f"dt {meta['spinnray_dt']} {meta['spinnray_time_unit']}")
        else:
            imp = read(a.path, dt=a.dt, convention=a.convention, time_unit=a.time_unit)
            net = imp.network
            print(f"{a.path}: convention {imp.convention}, dt {imp.dt} {imp.time_unit} ({net.dt_ms} ms per step)")
            for p in net.populations.values():
                print(f"  population {p.name}: {p.size} x {p.model}, offset {imp.offsets[p.name]} step(s)"
                      + (" [output]" if p.name in imp.outputs else ""))
            for q in net.projections:
                print(f"  projection {q.name}: delays {q.min_delay}..{q.max_delay} step(s)"
                      + ("" if q.mask is None else f", {int(q.mask.sum())} synapses"))
    except SpinnrayError as e:
        print(f"{type(e).__name__}: {e}")
        return 2
    return 0
