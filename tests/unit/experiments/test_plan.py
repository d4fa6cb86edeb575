"""plan=true: a run mapped as it would run, reported, and nothing started."""

import csv
import json

import pytest

from spinnray.errors import BudgetError, ConfigError
from spinnray.experiments.runner import run
from spinnray.experiments.setup import resolve
from spinnray.experiments.trainer import layout
from spinnray.mapping.place import map_network
from spinnray.model.builders import DataShape

from helpers import composed


def test_the_plan_of_eprop_cue_is_the_mapping_its_training_gets(tmp_path, caplog):
    """96 cores = 16 copies of 5 + 1, every figure equal to mapping the trainer's layout directly; the
    log names the largest core and its categories; no metrics.json, no Ray (backend=ray is the default)."""
    import ray

    cfg = composed("scenario=eprop_cue", "plan=true", "progress=false")
    assert cfg.plan and cfg.backend == "ray"
    with caplog.at_level("INFO", logger="spinnray"):
        plan = run(cfg, tmp_path, "eprop_cue")
    assert not ray.is_initialized() and not (tmp_path / "metrics.json").exists()
    assert json.loads((tmp_path / "plan.json").read_text()) == json.loads(json.dumps(plan))
    r = resolve(cfg)
    net = r.builder.build(r.network, DataShape(40, 2, "spikes"), cfg.seed)
    learning, parallel = layout(net, r.rule, r.learning, cfg.machine, cfg.parallel)
    mapping = map_network(net, cfg.machine, parallel.cores_per_population, parallel.batch_size, parallel.replicas,
                          learning)
    assert (plan["cores"], plan["replicas"], plan["cores_per_replica"], plan["samples_per_core"]) == (96, 16, 6, 2)
    biggest = max(sum(m.values()) for m in mapping.memory)
    assert plan["largest_core"]["bytes"] == biggest == plan["memory"]["per_core_max_bytes"]
    assert plan["largest_core"]["population"] == "hidden" and plan["chip_budget"]
    hidden = plan["populations"]["hidden"]
    assert (hidden["cores"], hidden["neurons_per_core"]) == (5, [20, 20])
    assert plan["populations"]["input"]["cores"] == 0          # analog input: written by the host
    text = caplog.text
    assert "96 cores = 16 copies x 6 cores on 1 chip(s)" in text and "largest core: hidden[0, 20)" in text
    assert "traces" in text and "beyond SpiNNaker2" not in text


def test_a_raised_budget_is_said_and_a_recipe_that_does_not_fit_is_refused(tmp_path, caplog):
    with caplog.at_level("INFO", logger="spinnray"):
        plan = run(composed("scenario=eprop_cue", "plan=true", "parallel.replicas=1", "parallel.cores_per_population=4",
                            "machine.sram_per_pe_bytes=4194304"), tmp_path, "eprop_cue")
    assert plan["cores"] == 5 and not plan["chip_budget"] and plan["largest_core"]["bytes"] > 128 * 1024
    assert "machine.sram_per_pe_bytes = 4194304 is not the chip's 128 KiB: this plan is beyond SpiNNaker2" in caplog.text
    with pytest.raises(BudgetError, match=r"population 'hidden' slice \[0, 25\) needs \d+ bytes"):
        run(composed("scenario=eprop_cue", "plan=true", "parallel.replicas=1", "parallel.cores_per_population=4"),
            tmp_path, "eprop_cue")


def test_input_spikes_count_on_the_source_cores_and_a_dense_rule_has_nothing_to_place(tmp_path):
    """A forward run's spike-source cores hold a run's input spikes (steps x batch x neurons bytes):
    the plan adds them and refuses a run whose spikes would not fit, as the run itself would."""
    plan = run(composed("scenario=forward", "plan=true"), tmp_path, "forward")
    cfg = composed("scenario=forward")
    src = plan["populations"]["input"]
    assert src["largest_core_by_category"]["input_spikes"] == cfg.network["steps"] * cfg.parallel.batch_size \
        * src["neurons_per_core"][1]
    with pytest.raises(BudgetError, match=r"population 'input' slice \[0, \d+\) would hold \d+ bytes with the input "
                                          r"spikes of 400000 steps"):
        run(composed("scenario=forward", "plan=true", "network.steps=400000"), tmp_path, "forward")
    with pytest.raises(ConfigError, match="plan=true with learning.rule = bptt: it trains in one process"):
        run(composed("scenario=bptt_cue", "plan=true"), tmp_path, "bptt_cue")


def test_a_sweep_of_plans_compares_cores_chips_and_memory(tmp_path):
    """Jobs that only planned are compared like runs (their plan.json); a dict override such as
    {hidden:4,output:1} is read as the dict the run got (Hydra's grammar, not YAML)."""
    from spinnray.report.compare import compare_runs

    jobs = []
    for i, hidden in enumerate((100, 110)):
        d = tmp_path / str(i)
        (d / ".hydra").mkdir(parents=True)
        over = [f"network.hidden={hidden}", "parallel.cores_per_population={hidden:10,output:1}"]
        (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in over))
        run(composed("scenario=eprop_cue", "plan=true", "parallel.replicas=8", *over), d, "eprop_cue")
        jobs.append(d)
    compare_runs(jobs, tmp_path)
    with open(tmp_path / "comparison.csv", newline="") as f:
        values = list(csv.DictReader(f))
    head = list(values[0])
    assert head[:3] == ["job", "network.hidden", "parallel.cores_per_population"]
    assert "cores" in head and "mapping.chips_used" in head and "memory.per_core_max_bytes" in head
    assert [v["cores"] for v in values] == ["88", "88"] and [v["status"] for v in values] == ["ok", "ok"]
    assert int(values[1]["memory.per_core_max_bytes"]) > int(values[0]["memory.per_core_max_bytes"])
    assert '{"hidden": 10, "output": 1}' in (tmp_path / "comparison.md").read_text()


def test_a_plan_refuses_an_exchange_interval_or_schedule_that_a_run_would_refuse(tmp_path):
    """K above the smallest delay and the layered schedule on a recurrent network are refused by the
    plan with the run's own errors (the plan used to map them and say nothing)."""
    with pytest.raises(ConfigError, match=r"parallel.exchange_interval = 2 exceeds the minimum synaptic delay of 1"):
        run(composed("scenario=eprop_cue", "plan=true", "parallel.exchange_interval=2"), tmp_path, "eprop_cue")
    with pytest.raises(ConfigError, match=r"parallel.schedule = 'layered' needs a feed-forward network"):
        run(composed("scenario=forward", "plan=true", "parallel.schedule=layered"), tmp_path, "forward")
    plan = run(composed("scenario=eprop_cue", "plan=true", "parallel.exchange_interval=2", "network.rec_delay=2",
                        "network.out_delay=2"), tmp_path, "eprop_cue")
    assert plan["cores"] == 96
