"""run.py's own logic: the label of a run whose groups were swapped, and the one-line summary."""

import importlib.util

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
    assert "50 spikes sent (0.0500 of dense 1000)" in line and "200 deliveries to cores" in line
    assert "3 error events sent" in line and "test accuracy 75.00 %" in line
    assert "largest core 64.0 KB of its 128 KB" in line
