"""docs/options.md, the options reference: regenerated from conf/ it is unchanged, and its keys are the keys of
conf/ both ways (read back from the Markdown, against conf/ as the override checker reads it)."""

import re

import pytest

from spinnray.errors import ConfigError
from spinnray.experiments.cli import known_keys
from spinnray.experiments.options import option_rows, reference
from spinnray.config import ParallelConfig

from helpers import ROOT

DOC = ROOT / "docs" / "options.md"


def _rows(text: str, columns: int) -> list[list[str]]:
    """The body rows of the Markdown tables with ``columns`` columns whose first cell is a `key`."""
    out = []
    for ln in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", ln.strip())[1:-1]]
        if len(cells) == columns and re.fullmatch(r"`[^`]+`", cells[0]):
            out.append([c.strip("`") for c in cells])
    return out


def test_the_reference_is_generated_from_conf_and_not_stale():
    assert DOC.read_text() == reference(ROOT / "conf"), (
        "docs/options.md is stale: python -m spinnray.experiments.options > docs/options.md")


def test_every_option_in_the_reference_is_in_conf_and_every_conf_key_in_the_reference():
    text = DOC.read_text()
    options = {key: allowed for key, _, allowed, _ in _rows(text, 4)}
    keys, choices = known_keys(ROOT / "conf")
    assert options and set(options) <= keys, sorted(set(options) - keys)
    # free-form values (network.populations, projections, machine.weight_ranges) are documented as one option
    free = [k for k, allowed in options.items() if "mapping" in allowed or "list" in allowed]
    for key in sorted(keys):
        inside = [k for k in free if key.startswith(k + ".")]
        section = any(k.startswith(key + ".") for k in options)     # network, cluster, machine.pcm: a heading
        assert key in options or inside or section, f"{key} is in conf/ but not in docs/options.md"
    groups = {g: c.replace("`", "").split(", ") for g, c in _rows(text, 2) if g in choices}
    assert groups == choices


def test_every_value_a_scenario_sets_is_an_option_of_the_reference():
    text = DOC.read_text()
    options = {key for key, *_ in _rows(text, 4)}
    scenario_part = text.split("## Scenarios", 1)[1]
    set_keys = [k for k, _ in _rows(scenario_part, 2)]
    assert len(set_keys) > 20
    for key in set_keys:
        assert key in options or any(key.startswith(k + ".") for k in options), key


def test_a_conf_key_that_no_typed_option_reads_is_refused_naming_it():
    with pytest.raises(ConfigError, match=r"conf/parallel/x.yaml: parallel.cores is in the file but no option of "
                                          r"ParallelConfig"):
        option_rows({"replicas": 2, "cores": 3}, ParallelConfig, "parallel.", "conf/parallel/x.yaml")
