"""spinnray.config: from_dict, the typed sections, and conf/ (Hydra) against them both ways."""

import pytest

from spinnray.config import ClusterConfig, MachineConfig, ParallelConfig, RunConfig, describe, from_dict
from spinnray.errors import ConfigError

from helpers import ROOT, composed


def test_overrides_reach_the_typed_config():
    cfg = composed("backend=local", "seed=5", "network.steps=17", "data.limit=3",
                   "parallel.cores_per_population=2", "parallel.exchange_interval=1", "learning.epochs=2",
                   "machine.neurons_per_core=64")
    assert (cfg.backend, cfg.seed, cfg.network["steps"], cfg.data["limit"]) == ("local", 5, 17, 3)
    assert cfg.parallel.cores_per_population == 2 and cfg.learning["epochs"] == 2
    assert cfg.machine.neurons_per_core == 64


@pytest.mark.parametrize("override, message", [
    ("backend=gpu", "backend = 'gpu': expected one of ['local', 'ray']"),
    ("machine.pes_per_chip=0", "machine.pes_per_chip = 0: expected >= 1"),
    ("machine.dtype=float16", "machine.dtype = 'float16'"),
    ("parallel.exchange_interval=two", "parallel.exchange_interval = 'two': expected an integer"),
    ("+machine.cache=1", "machine.cache: unknown key"),
])
def test_bad_values_name_key_value_and_allowed(override, message):
    with pytest.raises(ConfigError) as e:
        composed(override)
    assert message in str(e.value)


def _documented_keys(path, indent: int = 0) -> dict[str, str]:
    """Keys at ``indent`` spaces of a conf file and the comment on their line."""
    out = {}
    for ln in path.read_text().splitlines():
        body = ln[indent:]
        if ln.startswith(" " * indent) and body[:1].isalpha() and ":" in body:
            out[body.split(":", 1)[0]] = body.split("#", 1)[1].strip() if "#" in body else ""
    return out


def test_every_config_option_is_documented_in_conf_and_every_conf_key_is_an_option():
    """Each field of every typed section appears, with a comment, in its conf file, and every key of a
    conf file is a field: the groups machine, parallel, network, data and learning, checkpoint, cluster."""
    from spinnray.config import CheckpointConfig
    from spinnray.data.base import dataset_entry
    from spinnray.model.builders import builder
    from spinnray.rules import rule

    conf = ROOT / "conf"
    files = [(MachineConfig, conf / "machine" / "spinnaker2.yaml", 0),
             (ParallelConfig, conf / "parallel" / "default.yaml", 0)]
    top = _documented_keys(conf / "config.yaml")
    for section, cls in (("checkpoint", CheckpointConfig), ("cluster", ClusterConfig)):
        assert section in top
    files += [(CheckpointConfig, conf / "config.yaml", 2), (ClusterConfig, conf / "config.yaml", 2)]
    for p in sorted((conf / "network").glob("*.yaml")):
        files.append((builder(p.stem).config, p, 0))
    for p in sorted((conf / "data").glob("*.yaml")):
        files.append((dataset_entry(p.stem).config, p, 0))
    for p in sorted((conf / "learning").glob("*.yaml")):
        files.append((rule(p.stem).config, p, 0))
    for cls, path, indent in files:
        keys = _documented_keys(path, indent)
        names = [name for name, _, _ in describe(cls)]
        for name, _, help_text in describe(cls):
            assert help_text, f"{cls.__name__}.{name} has no help"
            assert name in keys and keys[name], f"{cls.__name__}.{name} is not documented in {path.name}"
        if indent == 0:
            extra = sorted(set(keys) - set(names) - {"pcm"})
            assert not extra, f"{path}: keys {extra} are no option of {cls.__name__}"


@pytest.mark.parametrize("changes, message", [
    ({"weight_bits": 3}, "machine.weight_bits = 3: expected one of [32, 16, 8, 4, 2]"),
    ({"rounding": "up"}, "machine.rounding = 'up'"),
    ({"synapse": "rram"}, "machine.synapse = 'rram'"),
    ({"weight_max": 0.0}, "machine.weight_max = 0.0: expected a finite number > 0 or null"),
    ({"synapse": "pcm", "weight_bits": 4}, "machine.weight_bits = 4 with machine.synapse = pcm: expected 32"),
    ({"pcm": {"t0_s": -1}}, "t0_s = -1"),
    ({"weight_seed": -2}, "machine.weight_seed = -2: expected >= 0"),
])
def test_bad_weight_options_name_the_value(changes, message):
    with pytest.raises(ConfigError) as e:
        from_dict(MachineConfig, changes, "machine")
    assert message in str(e.value)


# ------------------------------------------------------------ from_dict
def test_from_dict_builds_the_typed_sections():
    cfg = from_dict(RunConfig, {"seed": 4, "machine": {"dtype": "float64", "sram_per_pe_bytes": 4096},
                                "parallel": {"cores_per_population": {"hidden": 3}},
                                "cluster": {"round_timeout_s": 5, "node_ids": ["a", "b"]}})
    assert cfg.seed == 4 and cfg.machine == MachineConfig(dtype="float64", sram_per_pe_bytes=4096)
    assert cfg.parallel == ParallelConfig(cores_per_population={"hidden": 3})
    assert cfg.cluster.round_timeout_s == 5.0 and isinstance(cfg.cluster.round_timeout_s, float)   # ints pass as floats
    assert cfg.cluster.node_ids == ("a", "b")
    assert from_dict(RunConfig, None) == RunConfig() and from_dict(MachineConfig, cfg.machine) is cfg.machine


@pytest.mark.parametrize("cls, data, prefix, message", [
    (RunConfig, {"sed": 1}, "", "sed: unknown key; did you mean seed? allowed keys are ['kind', 'seed', "),
    (RunConfig, {"machine": {"dtpye": "float64"}}, "", "machine.dtpye: unknown key; did you mean dtype? allowed keys "
                                                       "are ["),
    (ParallelConfig, {"cores": 2}, "parallel", "parallel.cores: unknown key"),
])
def test_from_dict_names_an_unknown_key_and_the_allowed_ones(cls, data, prefix, message):
    with pytest.raises(ConfigError) as e:
        from_dict(cls, data, prefix)
    assert message in str(e.value)


@pytest.mark.parametrize("data, message", [
    ({"seed": "3"}, "seed = '3': expected an integer"),
    ({"seed": 2.0}, "seed = 2.0: expected an integer"),
    ({"seed": True}, "seed = True: expected an integer"),
    ({"progress": "yes"}, "progress = 'yes': expected true or false"),
    ({"backend": 1}, "backend = 1: expected a string"),
    ({"machine": {"dtype": None}}, "machine.dtype = None: expected a string"),
    ({"record": "spikes"}, "record = 'spikes': expected a list"),
    ({"record": ["spikes", 2]}, "record[1] = 2: expected a string"),
    ({"network": [1]}, "network = [1]: expected a mapping"),
    ({"machine": 3}, "machine = 3: expected a mapping"),
    ({"cluster": {"round_timeout_s": "fast"}}, "cluster.round_timeout_s = 'fast': expected a finite number"),
])
def test_from_dict_names_a_value_of_the_wrong_type(data, message):
    with pytest.raises(ConfigError) as e:
        from_dict(RunConfig, data)
    assert message in str(e.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_from_dict_refuses_a_non_finite_number(value):
    with pytest.raises(ConfigError) as e:
        from_dict(RunConfig, {"cluster": {"round_timeout_s": value}})
    assert f"cluster.round_timeout_s = {value!r}: expected a finite number" in str(e.value)
    with pytest.raises(ConfigError) as e:                      # an optional number too (float | None)
        from_dict(RunConfig, {"machine": {"weight_max": value}})
    assert str(e.value).startswith(f"machine.weight_max = {value!r}: expected ")


def test_machine_identity_keeps_old_fingerprints_and_resolves_the_range_defaults():
    """The checkpoint fingerprint of a float or PCM machine is what it was before the range options'
    defaults became null (old checkpoints resume); a digital store records the scope it resolved to,
    so a checkpoint of the earlier population default is refused rather than continued on another grid."""
    old_keys = {"weight_range": 2.0, "weight_range_scope": "population"}
    for m in (MachineConfig(), MachineConfig(synapse="pcm")):
        d = m.identity()
        assert "weight_range_recurrent" not in d and {k: d[k] for k in old_keys} == old_keys
    four = MachineConfig(weight_bits=4, weight_range_growth=1)
    assert (four.range_scope, four.range_factor, four.range_recurrent) == ("projection", 2.0, 7.0)
    assert four.identity()["weight_range_scope"] == "projection" and four.identity()["weight_range"] == 2.0
    # the default digital grid widens and starts at 1 x the peak: its fingerprint says so (an old 4-bit
    # checkpoint of the fixed 2 x / 7 x grid is refused, not continued on another grid)
    wide = MachineConfig(weight_bits=4)
    assert (wide.range_growth, wide.range_factor, wide.range_recurrent) == (64.0, 1.0, 1.0)
    assert {k: wide.identity()[k] for k in ("weight_range", "weight_range_growth")} == \
        {"weight_range": 1.0, "weight_range_growth": 64.0}
    assert MachineConfig(synapse="pcm", weight_range=1.5).range_recurrent == 1.5
    explicit = MachineConfig(weight_bits=4, weight_range_scope="population", weight_range_recurrent=3.0)
    assert (explicit.range_scope, explicit.identity()["weight_range_recurrent"]) == ("population", 3.0)
