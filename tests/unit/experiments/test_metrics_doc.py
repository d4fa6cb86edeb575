"""docs/metrics.md against what runs write: a tiny run of every kind (forward, EventProp, e-prop, full and
truncated BPTT, on ``local``) writes only keys the document has, and every key the document has is written by
one of them (but the Ray backend's own)."""

import json
import re

import pytest

from spinnray.experiments.runner import run

from helpers import ROOT, composed

DOC = ROOT / "docs" / "metrics.md"
QUIET = ("progress=false", "report=false")
TINY_CUE = ("data.train_size=8", "data.test_size=4", "data.n_cues=1", "data.total_ms=400", "network.hidden=6",
            "learning.epochs=1", "learning.batch_size=4", *QUIET)
RUNS = {
    "forward": ("scenario=forward", "backend=local", "network.steps=20", "data.trials=2", *QUIET),
    "eventprop_yinyang": ("scenario=eventprop_yinyang", "backend=local", "data.limit=8", "data.val_size=4",
                          "network.steps=40", "network.dt_ms=1.0", "learning.batch_size=4", "learning.epochs=1", *QUIET),
    "eprop_cue": ("scenario=eprop_cue", "backend=local", "parallel.cores_per_population=2", "parallel.replicas=2",
                  *TINY_CUE),
    "eprop_cue_4bit": ("scenario=eprop_cue", "backend=local", "parallel.cores_per_population=2",
                       "parallel.replicas=2", "machine.weight_bits=4", "machine.weight_range_growth=16", *TINY_CUE),
    "bptt_cue": ("scenario=bptt_cue", *TINY_CUE),
    "tlbptt_cue": ("scenario=tlbptt_cue", *TINY_CUE),
}
#: keys whose components after the first are names (populations, chips, ...): the document's placeholders
PLACEHOLDERS = [(r"machine\..*", "machine.OPTION"), (r"rates_hz\.[^.]+", "rates_hz.POP"),
                (r"layers\.[^.]+\.(\w+)", r"layers.POP.\1"), (r"mapping\.populations\.[^.]+\.(\w+)",
                                                               r"mapping.populations.POP.\1"),
                (r"mapping\.slices\.[^.]+", "mapping.slices.POP"),
                (r"mapping\.(routing_entries_per_chip|node_of_chip)\.[^.]+", r"mapping.\1.CHIP"),
                (r"mapping\.routing_entries_per_node\.[^.]+", "mapping.routing_entries_per_node.NODE"),
                (r"mapping\.routing_entries_per_router\.[^.]+", "mapping.routing_entries_per_router.ROUTER"),
                (r"memory\.by_category_bytes\.[^.]+", "memory.by_category_bytes.CATEGORY"),
                (r"training_memory\.[^.]+", "training_memory.CATEGORY"),
                (r"weight_store\.[^.]+\.(\w+)", r"weight_store.PROJ.\1"),
                (r"traffic\.by_link_class\.[^.]+\.(\w+)", r"traffic.by_link_class.CLASS.\1")]


def _flat(prefix: str, value, out: set) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else k, v, out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for v in value:
            _flat(prefix + "[]", v, out)
    else:
        out.add(prefix)


def _pattern(key: str) -> str:
    for rx, repl in PLACEHOLDERS:
        if re.fullmatch(rx, key):
            return re.sub(rx, repl, key)
    return key


def _documented() -> dict[str, str]:
    """key -> its row, from the key tables of docs/metrics.md (those from "## Every run" on)."""
    out = {}
    for ln in DOC.read_text().split("## Every run", 1)[1].splitlines():
        m = re.match(r"\| `([a-z_\[\].A-Z0-9]+)` \|(.*)", ln)
        if m:
            out[m.group(1)] = m.group(2)
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, set[str]]:
    keys = {}
    for scenario, overrides in RUNS.items():
        out = tmp_path_factory.mktemp(scenario)
        run(composed(*overrides), out, scenario)
        flat = set()
        _flat("", json.loads((out / "metrics.json").read_text()), flat)
        keys[scenario] = {_pattern(k) for k in flat}
    return keys


def test_every_key_a_run_writes_is_documented(written):
    documented = _documented()
    for scenario, keys in written.items():
        missing = sorted(keys - set(documented))
        assert not missing, f"{scenario} writes metrics.json keys that docs/metrics.md lacks: {missing}"


def test_every_documented_key_is_written_by_some_run(written):
    every = set().union(*written.values())
    for key, row in _documented().items():
        if "ray backend only" in row:
            continue
        assert key in every, f"docs/metrics.md documents {key}, which no run writes"
