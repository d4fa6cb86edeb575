"""Bad configuration gets a clear error: non-finite numbers, values past the stated upper bounds,
unusable paths, unknown keys (with the nearest known), options a kind of run does not use."""

from pathlib import Path

import pytest

from spinnray.config import MAX_PATH, RunConfig, check_path, from_dict
from spinnray.errors import ConfigError
from spinnray.experiments.checkpoint import Checkpointer
from spinnray.experiments.cli import check_overrides, known_keys
from spinnray.experiments.setup import check_parallel, resolve

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.parametrize("section, message", [
    ({"network": {"name": "feedforward", "steps": 10_000_000_000}}, "network.steps = 10000000000: expected <= 1000000"),
    ({"learning": {"rule": "eprop", "lr": 1e30}}, "learning.lr = 1e+30: expected <= 10.0"),
    ({"learning": {"rule": "eprop", "lr": float("nan")}}, "learning.lr = nan: expected a finite number"),
    ({"learning": {"rule": "eventprop", "batch_size": 70000}}, "learning.batch_size = 70000: expected <= 65535"),
    ({"data": {"name": "cue", "train_size": 10**9}}, "data.train_size = 1000000000: expected <= 10000000"),
    ({"data": {"name": "files", "path": ""}}, "data.path = '': expected a path"),
    ({"data": {"name": "nope"}}, "data.name = 'nope': expected one of"),
    ({"network": {"name": "recurrent"}}, "network.name = 'recurrent': expected one of"),
    ({"learning": {"rule": "eprob"}}, "learning.rule = 'eprob': expected one of"),
    ({"kind": "eprop", "learning": {"rule": "eventprop"}}, "kind = 'eprop' with learning.rule = 'eventprop'"),
])
def test_typed_sections_refuse_bad_values_naming_them(section, message):
    with pytest.raises(ConfigError) as e:
        resolve(from_dict(RunConfig, section))
    assert message in str(e.value)


def test_nonfinite_rates_of_a_yaml_network_are_refused():
    cfg = from_dict(RunConfig, {"network": {"name": "random", "populations": {
        "inp": {"size": 3, "model": "source", "rate_hz": float("nan")}, "h": {"size": 2, "model": "lif"}},
        "projections": [{"pre": "inp", "post": "h"}]}})
    run = resolve(cfg)
    with pytest.raises(ConfigError, match=r"network.populations.inp.rate_hz = nan: a source needs a finite rate"):
        run.builder.build(run.network, None, 0)


def test_paths_are_checked_before_use(tmp_path):
    for bad in ("", "   ", "/" + "x" * 600, "a\x00b", "y" * (MAX_PATH + 1)):
        with pytest.raises(ConfigError, match="checkpoint.dir"):
            from_dict(RunConfig, {"checkpoint": {"dir": bad}})
    assert check_path("resume", str(tmp_path)) == str(tmp_path)
    for where in ("/proc/x/ckpt", str(tmp_path / "file" / "sub")):
        (tmp_path / "file").write_text("a file, not a directory")
        cfg = from_dict(RunConfig, {"checkpoint": {"every": 1, "dir": where}})
        with pytest.raises(ConfigError, match=f"checkpoint.dir = '{where}': cannot use it for checkpoints"):
            Checkpointer(cfg, tmp_path, "eprop", {"seed": 0})


def test_unknown_keys_and_choices_suggest_the_nearest():
    keys, choices = known_keys(CONF)
    assert {"parallel.cores_per_population", "learning.lr", "data.n_cues", "machine.pcm.g_max_us"} <= keys
    assert "eprop_kws" in choices["scenario"] and "cue" in choices["data"]
    with pytest.raises(ConfigError, match="parallel.core_per_population: unknown key; did you mean "
                                          "parallel.cores_per_population"):
        check_overrides(["scenario=forward", "parallel.core_per_population=4"], CONF)
    with pytest.raises(ConfigError, match="data=cuee: no conf/data/cuee.yaml; did you mean cue"):
        check_overrides(["data=cuee"], CONF)
    with pytest.raises(ConfigError, match="scenario=eprop_kwz: .* did you mean eprop_kws"):
        check_overrides(["-m", "scenario=eprop_kws,eprop_kwz"], CONF)
    # keys added on purpose, Hydra's own and flags pass
    check_overrides(["-m", "scenario=eprop_cue,bptt_cue", "+machine.new=1", "hydra.job.chdir=true", "learning.lr=0.1",
                     "data.n_cues=5", "machine.weight_ranges={a:1}"], CONF)


@pytest.mark.parametrize("argv, message", [
    # the scenario's own choice of network has no such key: Hydra would say "Key 'hidden' is not in struct"
    (["scenario=forward", "network.hidden=10"],
     "network.hidden: not a key of network=random (conf/network/random.yaml, chosen by scenario=forward); it is a key "
     "of network=deep_alif or feedforward or recurrent_alif or recurrent_lif: choose one with network=NAME"),
    (["learning.lr=0.1"], "learning.lr: not a key of learning=none (conf/learning/none.yaml, chosen by "
                          "scenario=forward); it is a key of learning=bptt or eprop or eventprop or tlbptt"),
    # every job of a sweep is checked: keywords has no n_cues
    (["-m", "scenario=eprop_cue", "data=cue,keywords", "data.n_cues=3"],
     "data.n_cues: not a key of data=keywords (conf/data/keywords.yaml, chosen by the command line, "
     "scenario=eprop_cue); it is a key of data=cue"),
    (["-m", "scenario=bptt_cue,eprop_cue", "network.w_ff_scale=3"],
     "network.w_ff_scale: not a key of network=recurrent_alif (conf/network/recurrent_alif.yaml, chosen by "
     "scenario=eprop_cue); it is a key of network=deep_alif"),
])
def test_a_key_of_another_group_choice_names_the_choices_that_have_it(argv, message):
    with pytest.raises(ConfigError) as e:
        check_overrides(argv, CONF)
    assert message in str(e.value)
    check_overrides(["network=feedforward", "network.hidden=3"], CONF)        # swapping the group makes it a key
    check_overrides(["scenario=eprop_kws", "network.steps=100", "data.per_word=3"], CONF)
    # a scenario built on another (eprop_cue_chip: "- eprop_cue") has that one's group choices and keys
    check_overrides(["scenario=eprop_cue_chip", "data.train_size=160", "learning.eval_every=1"], CONF)
    with pytest.raises(ConfigError, match="data.per_word: not a key of data=cue .*chosen by scenario=eprop_cue_chip"):
        check_overrides(["scenario=eprop_cue_chip", "data.per_word=3"], CONF)


def test_options_a_kind_of_run_does_not_use_are_refused():
    with pytest.raises(ConfigError, match="parallel.batch_size = 4: a training run's mini-batch is learning.batch_size"):
        check_parallel(resolve(from_dict(RunConfig, {"learning": {"rule": "eprop"}, "parallel": {"batch_size": 4}})))
    with pytest.raises(ConfigError, match=r"parallel.replicas = 2: learning.rule = bptt trains in one process"):
        check_parallel(resolve(from_dict(RunConfig, {"learning": {"rule": "bptt"}, "parallel": {"replicas": 2}})))
    check_parallel(resolve(from_dict(RunConfig, {"learning": {"rule": "none"}, "parallel": {"batch_size": 4}})))
