"""spinnray.experiments.setup: every scenario composes and resolves to typed sections; what resolve refuses."""

import pytest

from spinnray.config import RunConfig, from_dict
from spinnray.errors import ConfigError
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
        # only batched e-prop models its lockstep traces in DRAM, and says so in its YAML
        assert cfg.machine.sram_per_pe_bytes == (4 * 1024 * 1024 if name == "eprop_cue" else 128 * 1024), name


def test_every_scenario_takes_network_steps():
    """README: every scenario takes network.steps (where the data set has its own length, check_steps
    holds the value to it when the run starts)."""
    for name in sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml")):
        assert resolve(composed(f"scenario={name}", "network.steps=100")).network.steps == 100, name


# ------------------------------------------------------------ resolve
@pytest.mark.parametrize("section, key, value, choices", [
    ("learning", "rule", "sgd", "['bptt', 'eprop', 'eventprop', 'none', 'tlbptt']"),
    ("network", "name", "resnet", "['deep_alif', 'feedforward', 'random', 'recurrent_alif']"),
    ("data", "name", "mnist", "['cue', 'files', 'keywords', 'poisson', 'speech_commands', 'yinyang']"),
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
