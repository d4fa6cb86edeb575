"""run.py's own logic: the label of a run whose groups were swapped, the one-line summary and the
command recorded for the report."""

import importlib.util
import subprocess
import sys

from helpers import ROOT

_spec = importlib.util.spec_from_file_location("run_script", ROOT / "run.py")
run_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_script)


def test_label_names_the_swapped_groups_only():
    assert run_script.run_label("forward", ["backend=local", "learning.epochs=2"]) == "forward"
    assert run_script.run_label("forward", ["learning=eventprop", "data.path=/x", "data=files"]) == \
        "forward + learning=eventprop data=files"
    assert run_script.run_label("eprop_kws", ["+machine=big"]) == "eprop_kws + +machine=big"


def test_summary_gives_sent_and_delivered_apart_and_the_largest_core():
    m = {"backend": "local", "cores": 9, "wall_s": 1.5, "test_accuracy": 0.75,
         "traffic": {"dense_equivalent_events": 1000, "spike_events_sent": 50, "spike_events": 200,
                     "error_events": 3, "error_events_sent": 3},
         "memory": {"budget_bytes_per_core": 131072, "per_core_max_bytes": 65536}}
    line = run_script.summary("forward", m)
    assert line.startswith("forward on local, 9 cores: wall 1.5 s")
    assert "spikes: 50 sent = 5 % of dense 1,000; 200 deliveries to cores (4 per spike sent)" in line
    assert "error events: 3 sent = 6 % of the spikes sent; 3 deliveries to cores" in line
    assert "test accuracy 75 %" in line and "largest core 64.0 KiB of its 128 KiB budget (50 %)" in line
    m["memory"]["budget_bytes_per_core"] = 4 << 20                      # no longer the chip's PE: said so
    assert "of its 4.00 MiB budget (1.56 %), machine.sram_per_pe_bytes changed from the chip's 128 KiB" in \
        run_script.summary("forward", m)


def test_summary_of_a_dense_run_sends_nothing_between_cores():
    m = {"backend": "dense", "cores": 1, "wall_s": 75.0, "test_accuracy": 0.5, "train_samples_per_s": 61.1,
         "training_memory_bytes": 127421824,
         "traffic": {"spike_events": 144763, "error_events": 0, "dense_equivalent_events": 28800000},
         "memory": {"per_core_max_bytes": 127421824, "budget_bytes_per_core": None}}
    line = run_script.summary("bptt_cue", m)
    assert line == ("bptt_cue in one process (dense): wall 1 min 15 s; spikes: 144,763 hidden-layer spikes in the test "
                    "passes = 0.503 % of dense 28,800,000; test accuracy 50 %; training memory 122 MiB; "
                    "61.1 training samples/s")


def test_the_command_reruns_the_job():
    assert run_script.command(["scenario=forward", "data.path=/a b", "record=[spikes,v]"]) == \
        "python run.py scenario=forward 'data.path=/a b' 'record=[spikes,v]'"


def test_typos_are_refused_before_hydra_with_the_nearest_keys():
    """Exit status 2 and spinnray's message, not Hydra's "Key 'x' is not in struct" with status 1."""
    for argv, message in ((["parallel.core_per_population=4"],
                           "parallel.core_per_population: unknown key; did you mean parallel.cores_per_population"),
                          (["scenario=forward", "network.hidden=10"],
                           "network.hidden: not a key of network=random")):
        proc = subprocess.run([sys.executable, "run.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
