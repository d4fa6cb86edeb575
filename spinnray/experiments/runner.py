"""What ``run.py`` runs: a typed run config to ``metrics.json``, by the kind its rule names.

Every run writes into its output directory ``metrics.json`` (the summary, documented key by key
in :mod:`spinnray.machine.counters`), ``config.json`` (the command and the configuration as typed
and checked, every default filled in: what the report's headline describes), ``cores.json`` (one
report per core: counters, memory by category, notes) and ``routers.json`` (one report per
router); Hydra writes ``.hydra/``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from spinnray.config import RunConfig
from spinnray.errors import ConfigError
from spinnray.experiments.dense import run_dense
from spinnray.experiments.forward import run_forward
from spinnray.experiments.plan import run_plan
from spinnray.experiments.setup import Run, check_parallel, resolve
from spinnray.experiments.summary import write_json
from spinnray.experiments.train import run_training
from spinnray.report import report_after_run

__all__ = ["run", "check_weight_store_kind", "RUNNERS", "typed_config"]

log = logging.getLogger("spinnray")

#: which experiment runs a rule (:attr:`spinnray.rules.registry.Rule.runner`)
RUNNERS = {"forward": run_forward, "on_chip": run_training, "dense": run_dense}


def check_weight_store_kind(run: Run) -> None:
    """Low-precision and PCM weights live in the learning cores; a forward run or a dense BPTT run
    keeps float weights, so asking it for them is a ConfigError instead of a run that silently
    ignores the setting (a sweep then lists the job with the reason)."""
    m = run.config.machine
    if run.rule.runner == "on_chip" or m.float_weights:
        return
    raise ConfigError(f"machine.weight_bits = {m.weight_bits}, machine.synapse = {m.synapse} with a scenario of "
                      f"kind {run.kind}: low-precision and PCM weights are modelled in the learning cores of "
                      "kinds eprop and eventprop only; expected machine.weight_bits=32 and machine.synapse=ideal")


def typed_config(run: Run, command: str | None = None, overrides=()) -> dict:
    """``config.json``: the command that started the run (None when it was not ``run.py``), its
    overrides, and every section as typed (``network``, ``data`` and ``learning`` by their
    registries, so defaults the YAML leaves out are filled in), with the rule's name and kind."""
    return {"command": command, "overrides": list(overrides), **asdict(run.config), "rule": run.rule.name,
            "kind": run.kind, "network": asdict(run.network), "data": asdict(run.data),
            "learning": asdict(run.learning)}


def run(cfg: RunConfig, out_dir: Path, scenario: str, command: str | None = None, overrides=()) -> dict:
    """Run ``cfg`` and write ``metrics.json``, ``config.json`` (and the reports) into ``out_dir``;
    ``command`` and ``overrides``: how ``run.py`` was called, for the report's headline.  With
    ``cfg.plan``, only map it (:mod:`~spinnray.experiments.plan`): ``plan.json`` instead of a run."""
    typed = resolve(cfg)
    check_weight_store_kind(typed)
    check_parallel(typed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", typed_config(typed, command, overrides))
    if cfg.plan:
        plan = run_plan(typed, out_dir, scenario)
        write_json(out_dir / "plan.json", plan)
        log.info("wrote %s (plan=true: nothing ran)", out_dir / "plan.json")
        return plan
    metrics = RUNNERS[typed.rule.runner](typed, out_dir, scenario)
    write_json(out_dir / "metrics.json", metrics)
    log.info("wrote %s", out_dir / "metrics.json")
    if cfg.report:
        report_after_run(out_dir)           # report.md, report.html, PNGs; a failure is logged, not raised
    return metrics
