"""Modules of the flat layout before 0.2 and where their contents live now.

Importing an old name raises an ImportError that names the new module, instead of Python's
bare "No module named ..." (docs/design.md, "How it works", shows the tree).
"""

from __future__ import annotations

import importlib.abc
import sys

MOVED = {
    "spinnray.neuron": "spinnray.model.neurons",
    "spinnray.network": "spinnray.model.network",
    "spinnray.packet": "spinnray.machine.packet",
    "spinnray.router": "spinnray.machine.router",
    "spinnray.core": "spinnray.machine.core",
    "spinnray.metrics": "spinnray.machine.counters",
    "spinnray.quant": "spinnray.machine.quant",
    "spinnray.weight_stores": "spinnray.rules.learning (WeightStoreSpec, LearningCore)",
    "spinnray.eventprop": "spinnray.rules.eventprop.numerics",
    "spinnray.eventprop_core": "spinnray.rules.eventprop.core",
    "spinnray.eprop": "spinnray.rules.eprop (BPTT: spinnray.rules.bptt.dense)",
    "spinnray.eprop_core": "spinnray.rules.eprop.core",
    "spinnray.bptt": "spinnray.rules.bptt.dense (Adam: spinnray.rules.optim; loss: spinnray.rules.losses)",
    "spinnray.dense_train": "spinnray.rules.bptt.dense (run: spinnray.experiments.dense)",
    "spinnray.train": "spinnray.experiments.trainer (Trainer; the rule is spinnray.rules.eventprop, data spinnray.data.yinyang)",
    "spinnray.eprop_train": "spinnray.experiments.trainer (Trainer; the rule is spinnray.rules.eprop, data spinnray.data.cue, spinnray.data.speech)",
    "spinnray.loop": "spinnray.experiments.loop",
    "spinnray.checkpoint": "spinnray.experiments.checkpoint",
    "spinnray.runner": "spinnray.experiments.runner",
    "spinnray.backend": "spinnray.backends",
    "spinnray.transport": "spinnray.backends.transport",
    "spinnray.report.build": "spinnray.report (spinnray.report.runs, spinnray.report.run_report, spinnray.report.compare)",
}


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Refuses the old module names with the new one in the message."""

    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is not None:
            raise ImportError(f"{fullname} moved to {new} (spinnray 0.2 layout; see docs/design.md)",
                              name=fullname)
        return None


def install() -> None:
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
