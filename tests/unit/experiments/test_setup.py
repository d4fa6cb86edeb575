"""spinnray.experiments.setup: every scenario composes and resolves to typed sections; what resolve refuses."""

import pytest

from spinnray.config import RunConfig, from_dict
from spinnray.errors import BudgetError, ConfigError
from spinnray.mapping.place import map_network
from spinnray.model.builders import DataShape
from spinnray.experiments.setup import resolve

from helpers import ROOT, composed


def test_every_scenario_composes_and_validates():
    names = sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml"))
    assert "forward" in names
    from spinnray.experiments.setup import resolve
    for name in names:
        cfg = composed(f"scenario={name}")
        run = resolve(cfg)                    # network, data and learning typed by their registries
        assert run.kind
        assert cfg.machine.pes_per_chip == 152
        # the chip's limits are the default: no scenario raises a PE's SRAM
        assert cfg.machine.sram_per_pe_bytes == 128 * 1024, name


@pytest.mark.parametrize("bits", [32, 4])
@pytest.mark.parametrize("scenario, shape, cores", [
    ("eprop_cue", DataShape(40, 2, "spikes"), 16 * (5 + 1)),
    ("eprop_kws", DataShape(80, 12, "analog"), 8 * (12 + 1)),
    ("eprop_cue_chip", DataShape(40, 2, "spikes"), 8 * (18 + 1)),      # all 152 PEs of the chip
])
def test_eprop_scenarios_batch_through_replicas_inside_one_chip(scenario, shape, cores, bits):
    """The e-prop scenarios' mini-batches run on copies of the network, each core inside the
    chip's 128 KB and all copies on one 152-PE chip (mapped as the Trainer maps them); with
    machine.weight_bits=4 alone too (4-bit codes + float32 accumulator)."""
    run = resolve(composed(f"scenario={scenario}", f"machine.weight_bits={bits}"))
    par, machine = run.config.parallel, run.config.machine
    assert par.replicas > 1 and run.learning.batch_size % par.replicas == 0
    net = run.builder.build(run.network, shape, 0)
    mapping = map_network(net, machine, run.rule.cores(net, par.cores_per_population),
                          batch=run.learning.batch_size // par.replicas, replicas=par.replicas,
                          learning=run.rule.learning(net, run.learning, machine))
    assert mapping.n_cores == cores <= machine.pes_per_chip
    largest = max(sum(m.values()) for m in mapping.memory)
    assert 0.5 * machine.sram_per_pe_bytes < largest <= machine.sram_per_pe_bytes == 128 * 1024
    # the same mini-batch in lockstep on one copy is what no longer fits the chip
    with pytest.raises(BudgetError):
        map_network(net, machine, run.rule.cores(net, par.cores_per_population), batch=run.learning.batch_size,
                    learning=run.rule.learning(net, run.learning, machine))


def test_every_scenario_takes_network_steps():
    """docs/running.md: every scenario takes network.steps (where the data set has its own length, check_steps
    holds the value to it when the run starts)."""
    for name in sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml")):
        assert resolve(composed(f"scenario={name}", "network.steps=100")).network.steps == 100, name


# ------------------------------------------------------------ resolve
@pytest.mark.parametrize("section, key, value, choices", [
    ("learning", "rule", "sgd", "['bptt', 'eprop', 'eventprop', 'none', 'tlbptt']"),
    ("network", "name", "resnet", "['deep_alif', 'feedforward', 'nir', 'random', 'recurrent_alif', 'recurrent_lif']"),
    ("data", "name", "mnist", "['cue', 'files', 'keyword_spikes', 'keywords', 'poisson', 'shd', 'speech_commands', 'ssc', "
                                 "'yinyang']"),
])
def test_an_unknown_name_is_refused_naming_the_key_and_the_choices(section, key, value, choices):
    with pytest.raises(ConfigError) as e:
        resolve(from_dict(RunConfig, {section: {key: value}}))
    assert str(e.value) == f"{section}.{key} = {value!r}: expected one of {choices}"


def test_a_name_that_is_no_string_is_refused():
    with pytest.raises(ConfigError, match=r"^learning.rule = 3: expected a name$"):
        resolve(from_dict(RunConfig, {"learning": {"rule": 3}}))


def test_kind_follows_the_rule_and_a_contradicting_kind_is_refused():
    run = resolve(from_dict(RunConfig, {"learning": {"rule": "tlbptt"}}))
    assert run.kind == "bptt" and run.rule.name == "tlbptt" and run.builder.name == "deep_alif"
    assert resolve(from_dict(RunConfig, {"kind": "eprop"})).rule.name == "eprop"        # the rule of a bare kind
    with pytest.raises(ConfigError) as e:
        resolve(from_dict(RunConfig, {"kind": "eprop", "learning": {"rule": "eventprop"}}))
    assert str(e.value).startswith("kind = 'eprop' with learning.rule = 'eventprop': the rule makes a run of "
                                   "kind 'eventprop'")


def test_sections_are_typed_by_the_registries_they_name():
    run = resolve(from_dict(RunConfig, {"learning": {"rule": "eventprop", "lr": 0.5},
                                        "network": {"hidden": 7}, "data": {"limit": 3}}))
    assert (run.learning.lr, run.network.hidden, run.data.limit) == (0.5, 7, 3)
    assert (run.dataset.name, run.builder.name) == ("yinyang", "feedforward")
    with pytest.raises(ConfigError, match=r"^learning.lr = 'fast': expected a finite number"):
        resolve(from_dict(RunConfig, {"learning": {"rule": "eventprop", "lr": "fast"}}))
