"""spinnray.report.headline and the units it writes in, on metrics written by hand (no run)."""

import pytest

from spinnray.report.document import Document, anchor
from spinnray.report.headline import bytes_text, headline, memory_text, spikes_text, store_text, summary_line
from spinnray.report.runs import count, human_bytes, human_seconds, pct, readable


@pytest.mark.parametrize("fn, value, text", [
    (human_bytes, 512, "512 B"), (human_bytes, 71756, "70.1 KiB"), (human_bytes, 131072, "128 KiB"),
    (human_bytes, 2218516, "2.12 MiB"), (human_bytes, 5 * 2**30, "5.00 GiB"),
    (human_seconds, 0.0085, "8.5 ms"), (human_seconds, 1.915, "1.92 s"), (human_seconds, 192, "3 min 12 s"),
    (human_seconds, 7300, "2 h 02 min"),
    (pct, 0.0176625, "1.77 %"), (pct, 0, "0 %"), (pct, 1, "100 %"), (pct, 22.5, "2250 %"),
    (count, 1200000, "1,200,000"),
])
def test_human_units(fn, value, text):
    assert fn(value) == text


def test_the_raw_key_table_reads_each_key_in_its_unit():
    assert readable("traffic.bytes", 2218516) == "2.12 MiB" and readable("traffic.bytes", 100) == ""
    assert readable("wall_s", 75.0) == "1 min 15 s" and readable("memory.max_utilisation", 0.5) == "50 %"
    assert readable("traffic.spike_events", 138220) == "138,220" and readable("scenario", "forward") == ""


FORWARD = {"backend": "local", "kind": "forward", "cores": 12, "samples": 8, "steps": 500, "wall_s": 1.915,
           "setup_s": 0.0085, "run_s": 1.8947, "ms_per_step": 0.4737, "realtime_factor": 2.111,
           "traffic": {"spike_events": 138220, "spike_events_sent": 21195, "error_events": 0, "error_events_sent": 0,
                       "packets": 91112, "bytes": 2218516, "dense_equivalent_events": 1200000},
           "memory": {"per_core_max_bytes": 71756, "budget_bytes_per_core": 131072, "total_bytes": 354576},
           "mapping": {"chips_used": 1, "replicas": 1, "populations": {
               "input": {"model": "source", "neurons": 100, "cores": 4, "spiking": True, "sends_to": ["hidden"]},
               "hidden": {"model": "lif", "neurons": 200, "cores": 4, "spiking": True,
                          "sends_to": ["hidden", "output"]},
               "output": {"model": "lif", "neurons": 20, "cores": 4, "spiking": True, "sends_to": []}}}}


def test_the_headline_of_a_forward_run():
    rows = {what: text for what, text, _ in headline(FORWARD, {"command": "python run.py scenario=forward",
                                                               "network": {"dt_ms": 1.0}})}
    assert list(rows) == ["command", "network", "learning", "spikes", "bytes", "memory", "time"]
    assert rows["command"] == "`python run.py scenario=forward`"
    assert rows["network"] == ("input: 100 spike sources on 4 cores; hidden: 200 LIF on 4 cores, recurrent; "
                               "output: 20 LIF on 4 cores. 12 cores on 1 chip")
    assert rows["learning"] == "none: a forward run of 8 samples x 500 steps of 1 ms"
    assert rows["spikes"].startswith("21,195 sent = 1.77 % of dense 1,200,000 (")
    assert rows["spikes"].endswith("; 138,220 deliveries to cores (6.52 per spike sent)")
    assert rows["bytes"] == "2.12 MiB (2,218,516 bytes) in 91,112 packets, 16.1 bytes per event delivered"
    assert rows["memory"] == "largest core 70.1 KiB of its 128 KiB budget (54.7 %); all 12 cores 346 KiB"
    assert rows["time"].startswith("wall 1.92 s (setup 8.5 ms); emulation 1.89 s, 0.474 ms per step; 2.11 x real")
    # over several chips and nodes the bytes between routers are told apart
    multi = {**FORWARD, "traffic": {**FORWARD["traffic"], "inter_chip": {"bytes": 3072}, "inter_node": {"bytes": 1024}}}
    assert bytes_text(multi).endswith("; 3.00 KiB between the chips' routers of a node; 1.00 KiB between nodes")


def test_summary_line_and_headline_say_the_same():
    line = summary_line("forward", FORWARD)
    assert "spikes: " + spikes_text(FORWARD, brief=True) in line and memory_text(FORWARD, brief=True) in line
    assert "dense 1,200,000;" in line and "(steps x samples" not in line            # brief: no explanation


def test_contents_link_every_later_heading_in_markdown_and_html(tmp_path):
    doc = Document()
    doc.h(1, "Run report")
    doc.h(2, "Summary")
    doc.toc()
    doc.h(2, "Routing-table occupancy per chip")
    doc.h(3, "a detail")
    doc.h(2, "All `metrics.json` keys")
    doc.p("see [the keys](#all-metricsjson-keys)")
    md = doc.markdown()
    assert "- [Routing-table occupancy per chip](#routing-table-occupancy-per-chip)\n" \
           "- [All `metrics.json` keys](#all-metricsjson-keys)" in md
    assert "[Summary]" not in md and "[a detail]" not in md           # level 2, after the contents only
    html = doc.html("t", tmp_path)
    assert "<h2 id='routing-table-occupancy-per-chip'>" in html and "href='#all-metricsjson-keys'" in html
    assert "<a href='#all-metricsjson-keys'>the keys</a>" in html
    assert anchor("Events per sample against the dense equivalent") == "events-per-sample-against-the-dense-equivalent"


def test_the_weight_store_line_names_saturation_widening_and_refused_updates():
    m = {"weight_store": {
        "input->hidden": {"at_limit_fraction": 0.0, "growth_reached": 2.0, "dropped_abs": 0.0},
        "hidden->hidden": {"at_limit_fraction": 0.125, "growth_reached": 64.0, "dropped_abs": 0.5},
        "hidden->output": {"at_limit_fraction": 0.01, "growth_reached": 1.0},
        "pcm->out": {"set_pulses": 3}}}                     # no digital grid: not named
    assert store_text(m) == ("weights at the grid's limit: input->hidden 0 % (grids widened up to 2x), "
                             "hidden->hidden 12.5 % (grids widened up to 64x) (updates refused there: 0.5 in "
                             "weight units), hidden->output 1 %")
    assert "refused" not in store_text(m, brief=True) and store_text({"weight_store": None}) == ""
