"""spinnray.experiments.runner: a run refuses, before it starts, what its kind does not model."""

import pytest

from spinnray.errors import ConfigError

from helpers import composed as _compose

TINY_CUE = ("data.train_size=8", "data.test_size=4", "data.n_cues=1", "data.total_ms=400", "network.hidden=6",
            "learning.epochs=1", "learning.batch_size=4", "progress=false", "report=false")


def test_full_bptt_scenario_refuses_a_window(tmp_path):
    from spinnray.experiments.runner import run

    cfg = _compose("scenario=bptt_cue", *TINY_CUE, "learning.window=50")
    with pytest.raises(ConfigError, match="learning.rule = bptt with learning.window = 50"):
        run(cfg, tmp_path, "bptt_cue")


@pytest.mark.parametrize("override, text", [("machine.weight_bits=4", "machine.weight_bits = 4, machine.synapse = ideal"),
                                            ("machine.synapse=pcm", "machine.weight_bits = 32, machine.synapse = pcm")])
def test_dense_scenario_refuses_low_precision_weights_it_does_not_model(tmp_path, override, text):
    """A dense run keeps float weights: machine.weight_bits < 32 or a PCM synapse is refused, not ignored."""
    from spinnray.experiments.runner import run

    cfg = _compose("scenario=tlbptt_cue", *TINY_CUE, override)
    with pytest.raises(ConfigError, match=f"{text} with a scenario of kind bptt: .*expected machine.weight_bits=32"):
        run(cfg, tmp_path, "tlbptt_cue")
    assert not (tmp_path / "metrics.json").exists()


def test_forward_scenario_refuses_low_precision_weights(tmp_path):
    from spinnray.experiments.runner import run

    cfg = _compose("scenario=forward", "machine.weight_bits=8", "progress=false", "report=false")
    with pytest.raises(ConfigError, match="machine.weight_bits = 8, machine.synapse = ideal with a scenario of kind forward"):
        run(cfg, tmp_path, "forward")


@pytest.mark.parametrize("value, shown", [("0", "0"), ("-2.5", "-2.5"), ("abc", "'abc'")])
def test_bad_clip_norm_in_a_scenario_names_the_key(tmp_path, value, shown):
    from spinnray.experiments.runner import run

    cfg = _compose("scenario=tlbptt_cue", *TINY_CUE, f"learning.clip_norm={value}")
    with pytest.raises(ConfigError, match=rf"learning\.clip_norm = {shown}"):
        run(cfg, tmp_path, "tlbptt_cue")


@pytest.mark.parametrize("scenario, extra, bars", [
    ("eprop_cue", ("parallel.cores_per_population=2", "parallel.replicas=2", "backend=local"), ("epoch 1/1", "testing")),
    ("bptt_cue", ("learning.batch_size=4",), ("epoch 1/1", "testing")),
    ("eventprop_yinyang", ("data.limit=8", "data.val_size=4", "network.steps=40", "network.dt_ms=1.0",
                           "learning.batch_size=4", "backend=local"), ("epoch 1/1", "testing", "validation")),
])
def test_every_long_phase_has_a_progress_bar_and_progress_false_hides_them(tmp_path, capfd, scenario, extra, bars):
    """Training, the test pass (e-prop's too) and validation each show a bar on stderr; progress=false none."""
    from spinnray.experiments.runner import run

    tiny = [o for o in TINY_CUE if not o.startswith("progress")] if "cue" in scenario else ["learning.epochs=1",
                                                                                             "report=false"]
    for shown in (True, False):
        run(_compose(f"scenario={scenario}", *tiny, *extra, f"progress={str(shown).lower()}"),
            tmp_path / str(shown), scenario)
        err = capfd.readouterr().err
        for bar in bars:
            assert (f"{bar}: " in err) == shown, (bar, err[-500:])
