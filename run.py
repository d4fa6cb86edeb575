"""Run a spinnray scenario: ``python run.py scenario=NAME key=value ...``.

``python run.py -m ...`` sweeps (Hydra multirun).  Every run writes ``metrics.json`` into its
Hydra output directory.  Exit status: 0 when every run succeeded; 2 for a refused configuration,
a data or machine error (the message names the key, the value and what is allowed); 1 when some
jobs of a sweep failed (each left an ``error.txt``; the comparison lists them).
"""

import logging
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from spinnray.backends import ensure_ray
from spinnray.config import RunConfig, from_dict
from spinnray.errors import ConfigError, SpinnrayError
from spinnray.experiments.cli import check_overrides
from spinnray.experiments.runner import run
from spinnray.experiments.setup import resolve
from spinnray.report.headline import summary_line

log = logging.getLogger("spinnray")
CONF = Path(__file__).resolve().parent / "conf"
JOBS = {"run": 0, "failed": []}          # this process's jobs (a sweep runs them one after the other)


def summary(scenario: str, m: dict) -> str:
    """The run's one-line result (:func:`spinnray.report.headline.summary_line`, the report's headline
    on one line): spikes sent and deliveries apart, error events against spikes, accuracy, the
    largest core against its budget."""
    return summary_line(scenario, m)


GROUPS = ("network", "data", "learning", "parallel", "machine")


def command(overrides) -> str:
    """The command that runs this job again (a sweep's job: with its own values)."""
    return " ".join(["python run.py", *map(shlex.quote, overrides)])


def run_label(scenario: str, overrides) -> str:
    """The scenario's name, with the config groups the command line swapped (``forward +
    learning=eventprop data=files``), so that logs, metrics.json and reports say what ran."""
    swapped = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in GROUPS and "=" in o]
    return " + ".join([scenario, " ".join(swapped)]) if swapped else scenario


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    hc = HydraConfig.get()
    scenario = run_label(hc.runtime.choices.get("scenario", "?"), hc.overrides.task)
    JOBS["run"] += 1
    try:
        typed = from_dict(RunConfig, OmegaConf.to_container(cfg, resolve=True))
        if typed.backend == "ray" and not typed.plan and resolve(typed).rule.runner != "dense":   # dense: no cores
            ensure_ray(typed.cluster.address, typed.cluster.num_cpus,      # once per process
                       ship_code=typed.cluster.ship_code)
        metrics = run(typed, hc.runtime.output_dir, scenario, command=command(hc.overrides.task),
                      overrides=list(hc.overrides.task))
    except (SpinnrayError, OSError) as e:
        # a configuration, data or machine error names its cause; an OSError names the path
        log.error("%s: %s", type(e).__name__, e)
        if hc.mode == RunMode.MULTIRUN:
            # One bad job must not end the sweep: the comparison lists it with this reason.
            (Path(hc.runtime.output_dir) / "error.txt").write_text(f"{type(e).__name__}: {e}\n")
            JOBS["failed"].append(hc.runtime.output_dir)
            return None
        sys.exit(2)
    if typed.plan:
        return None
    log.info("%s", summary(scenario, metrics))
    return metrics.get("test_accuracy", metrics["wall_s"])


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:], CONF)
    except ConfigError as e:
        print(f"ConfigError: {e}", file=sys.stderr)
        sys.exit(2)
    main()
    if JOBS["failed"]:
        print(f"{len(JOBS['failed'])} of {JOBS['run']} jobs failed (each left an error.txt): "
              + ", ".join(JOBS["failed"]), file=sys.stderr)
        sys.exit(1)
