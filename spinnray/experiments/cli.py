"""Command-line overrides checked before Hydra composes anything: an unknown key or group choice is
refused with the nearest known ones ("did you mean ..."), instead of Hydra's generic message."""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from spinnray.errors import ConfigError

__all__ = ["GROUPS", "known_keys", "check_overrides"]

#: the config groups of conf/ (``data=cue`` picks conf/data/cue.yaml)
GROUPS = ("machine", "parallel", "network", "data", "learning", "scenario")


def _flatten(prefix: str, value, out: set[str]) -> None:
    out.add(prefix)
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)


def known_keys(conf_dir: Path) -> tuple[set[str], dict[str, list[str]]]:
    """Every dotted key some composition of ``conf_dir`` can have, and the choices of each group."""
    keys: set[str] = set()
    top = yaml.safe_load((conf_dir / "config.yaml").read_text()) or {}
    for k, v in top.items():
        if k not in ("defaults", "hydra"):
            _flatten(k, v, keys)
    choices = {}
    for group in GROUPS:
        files = sorted((conf_dir / group).glob("*.yaml"))
        choices[group] = [p.stem for p in files]
        for p in files:
            body = yaml.safe_load(p.read_text()) or {}
            if group == "scenario":       # @package _global_: its keys are top-level
                for k, v in body.items():
                    if k != "defaults":
                        _flatten(k, v, keys)
            else:
                _flatten(group, body, keys)
    return keys, choices


def check_overrides(argv: list[str], conf_dir: Path) -> None:
    """ConfigError for an override ``key=value`` whose key no config has, or a group choice that
    does not exist, naming the closest known keys.  Keys added on purpose (``+key=``, ``++key=``,
    ``~key``), Hydra's own (``hydra.*``) and flags are left to Hydra."""
    keys, choices = known_keys(conf_dir)
    for arg in argv:
        if arg.startswith(("-", "+", "~")) or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        if key.startswith("hydra.") or key == "hydra":
            continue
        if key in choices:
            values = [v.strip() for v in value.split(",")] if "," in value and "[" not in value else [value]
            for v in values:
                if v not in choices[key]:
                    near = difflib.get_close_matches(v, choices[key], n=3, cutoff=0.5)
                    raise ConfigError(f"{key}={v}: no conf/{'scenarios' if key == 'scenario' else key}/{v}.yaml; "
                                      f"{'did you mean ' + ' or '.join(near) + '? ' if near else ''}"
                                      f"the choices are {choices[key]}")
            continue
        if key not in keys:
            near = difflib.get_close_matches(key, sorted(keys), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(near)}? " if near else ""
            raise ConfigError(f"{key}: unknown key; {hint}(to add a key on purpose write +{key}=...)")
