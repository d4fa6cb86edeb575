"""Any rule on any data set its network can take, by configuration: EventProp (feed-forward with a TTFS loss,
recurrent with a voltage loss) and e-prop train on a data set a user brings as files (data.name=files), with no
library edit, and learn it."""

from pathlib import Path

import numpy as np
import pytest

from spinnray.config import RunConfig
from spinnray.data.files import write_events
from spinnray.errors import ConfigError
from spinnray.experiments.runner import run

import helpers


def write_task(root: Path, seed: int = 0, channels: int = 10, steps: int = 30) -> Path:
    """Two classes of spike patterns: which half of the inputs fires early."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 96), ("test", 48)):
        labels = rng.integers(0, 2, n)
        s, c, t = [], [], []
        for i, y in enumerate(labels):
            for ch in range(channels):
                early = (ch < channels // 2) == (y == 0)
                if rng.random() < (0.9 if early else 0.3):
                    s.append(i)
                    c.append(ch)
                    t.append(int(rng.integers(1, 8) if early else rng.integers(10, 25)))
        write_events(root / f"{split}.npz", labels, s, c, t, channels=channels, steps=steps,
                     class_names=["early-low", "early-high"])
    return root


def composed(*overrides) -> RunConfig:
    return helpers.composed("backend=local", "progress=false", "report=false", *overrides)


@pytest.mark.parametrize("rule, network, extra", [
    ("eventprop", "feedforward", ("network.steps=30", "network.dt_ms=1.0", "network.hidden=20",
                                  "learning.batch_size=8", "learning.epochs=3", "learning.lr=0.01")),
    # a recurrent LIF network with a leaky-integrator readout and the voltage loss; delays of 2 steps, K = 2
    ("eventprop", "recurrent_lif", ("learning.loss=mean_voltage", "network.hidden=20", "network.w_in_mean=1.0",
                                    "network.w_in_std=0.5", "network.w_rec_std=0.1", "network.w_out_std=0.3",
                                    "network.delay=2", "network.rec_delay_max=3", "parallel.exchange_interval=2",
                                    "parallel.cores_per_population=2", "learning.batch_size=8", "learning.epochs=3",
                                    "learning.lr=0.01")),
    ("eprop", "recurrent_alif", ("network.hidden=16", "parallel.cores_per_population=2", "learning.batch_size=8",
                                 "learning.epochs=3", "learning.lr=0.02", "network.v_th=0.6", "network.tau_mem_ms=10",
                                 "network.w_in_scale=4", "learning.surrogate=triangle", "learning.gamma=0.3")),
])
def test_both_rules_learn_a_users_spike_files(tmp_path, rule, network, extra):
    data = write_task(tmp_path / "data")
    m = run(composed(f"learning={rule}", f"network={network}", "data=files", f"data.path={data}", *extra),
            tmp_path / "out", "files")
    assert (m["rule"], m["data"], m["inputs"], m["classes"]) == (rule, "files", 10, ["early-low", "early-high"])
    assert m["test_accuracy"] >= 0.75, m["history"]          # chance is 0.5 (48 test samples)
    if network == "recurrent_lif":                            # errors about hidden spikes from the readout and itself
        layers = m["layers"]
        assert layers["hidden"]["error_events_about_per_sample"] == pytest.approx(
            layers["hidden"]["error_events_sent_per_sample"] + layers["output"]["error_events_sent_per_sample"])
        assert layers["input"]["error_events_about_per_sample"] == 0.0


def test_eventprop_refuses_analog_data_naming_the_option(tmp_path):
    with pytest.raises(ConfigError, match="network.name = feedforward takes spike input; the data set gives analog"):
        run(composed("learning=eventprop", "network=feedforward", "data=cue", "data.train_size=4",
                     "data.test_size=2", "data.n_cues=3", "data.total_ms=600", "network.steps=600",
                     "network.dt_ms=1.0"),
            tmp_path / "out", "x")
