"""spinnray._moved: a module name of the flat layout before 0.2 is refused naming where it went."""

import importlib
import importlib.util

import pytest

from spinnray._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_name_names_the_new_module(old):
    with pytest.raises(ImportError) as e:
        importlib.import_module(old)
    assert old in str(e.value) and MOVED[old] in str(e.value)


def test_other_names_stay_plain_import_errors():
    with pytest.raises(ModuleNotFoundError, match="No module named 'spinnray.nonexistent'"):
        importlib.import_module("spinnray.nonexistent")


def test_every_module_an_entry_names_exists():
    """The first word and every spinnray.* name in the parentheses of an entry is an importable module."""
    missing = []
    for old, new in MOVED.items():
        words = new.replace("(", " ").replace(")", " ").replace(";", " ").replace(",", " ").split()
        missing += [f"{old} -> {w}" for w in words if w.startswith("spinnray.") and importlib.util.find_spec(w) is None]
    assert not missing, f"MOVED names modules that do not exist: {missing}"
