"""Run a spinnray scenario: ``python run.py scenario=NAME key=value ...``.

``python run.py -m ...`` sweeps (Hydra multirun).  Every run writes
``metrics.json`` into its Hydra output directory.
"""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("spinnray")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from spinnray.backends import ensure_ray
    from spinnray.config import RunConfig, from_dict
    from spinnray.errors import SpinnrayError
    from spinnray.experiments.runner import run

    hc = HydraConfig.get()
    scenario = hc.runtime.choices.get("scenario", "?")
    try:
        typed = from_dict(RunConfig, OmegaConf.to_container(cfg, resolve=True))
        if typed.backend == "ray":
            ensure_ray(typed.cluster.address, typed.cluster.num_cpus,      # once per process
                       ship_code=typed.cluster.ship_code)
        metrics = run(typed, hc.runtime.output_dir, scenario)
    except (SpinnrayError, OSError) as e:
        # a configuration, data or machine error names its cause; an OSError names the path
        log.error("%s: %s", type(e).__name__, e)
        if hc.mode == RunMode.MULTIRUN:
            # One bad job must not end the sweep: the comparison lists it with this reason.
            (Path(hc.runtime.output_dir) / "error.txt").write_text(f"{type(e).__name__}: {e}\n")
            return None
        sys.exit(2)
    log.info("scenario %s on %s: %d cores, %.2f s wall, %d spike events (%.4f of dense), "
             "max %.1f KB per core", scenario, metrics["backend"], metrics["cores"], metrics["wall_s"],
             metrics["traffic"]["spike_events"], metrics["traffic"]["sparsity"],
             metrics["memory"]["per_core_max_bytes"] / 1024)
    return metrics.get("test_accuracy", metrics["wall_s"])


if __name__ == "__main__":
    main()
