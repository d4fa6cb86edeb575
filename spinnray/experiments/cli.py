"""Command-line overrides checked before Hydra composes anything: an unknown key or group choice is
refused with the nearest known ones ("did you mean ..."), and a key that exists only in another file
of its group (``network.hidden`` with the random network) names the group choices that have it,
instead of Hydra's generic "Key 'hidden' is not in struct"."""

from __future__ import annotations

import difflib
import itertools
from pathlib import Path

import yaml

from spinnray.errors import ConfigError

__all__ = ["GROUPS", "known_keys", "composed_keys", "check_overrides"]

#: the config groups of conf/ (``data=cue`` picks conf/data/cue.yaml)
GROUPS = ("machine", "parallel", "network", "data", "learning", "scenario")


def _flatten(prefix: str, value, out: set[str]) -> None:
    out.add(prefix)
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _file_keys(conf_dir: Path, group: str, name: str) -> set[str]:
    """The dotted keys one file of a group brings (a scenario's are top-level: ``@package _global_``)."""
    keys: set[str] = set()
    body = _load(conf_dir / group / f"{name}.yaml")
    if group == "scenario":
        for parent in _parents(body):           # a scenario built on another has that one's keys too
            keys |= _file_keys(conf_dir, group, parent)
        for k, v in body.items():
            if k != "defaults":
                _flatten(k, v, keys)
    else:
        _flatten(group, body, keys)
    return keys


def _top_keys(conf_dir: Path) -> set[str]:
    keys: set[str] = set()
    for k, v in _load(conf_dir / "config.yaml").items():
        if k not in ("defaults", "hydra"):
            _flatten(k, v, keys)
    return keys


def known_keys(conf_dir: Path) -> tuple[set[str], dict[str, list[str]]]:
    """Every dotted key some composition of ``conf_dir`` can have, and the choices of each group."""
    keys = _top_keys(conf_dir)
    choices = {}
    for group in GROUPS:
        choices[group] = [p.stem for p in sorted((conf_dir / group).glob("*.yaml"))]
        for name in choices[group]:
            keys |= _file_keys(conf_dir, group, name)
    return keys, choices


def _parents(body: dict) -> list[str]:
    """The scenarios a scenario's defaults list builds on (plain names: ``- eprop_cue``)."""
    return [item for item in body.get("defaults", []) if isinstance(item, str) and item != "_self_"]


def _defaults(path: Path) -> dict[str, str]:
    """The group choices of a defaults list (``config.yaml``'s, or those a scenario overrides, after
    those of the scenarios it builds on)."""
    body = _load(path)
    out = {}
    for parent in _parents(body) if path.parent.name in ("scenario", "scenarios") else []:
        out.update(_defaults(path.parent / f"{parent}.yaml"))
    for item in body.get("defaults", []):
        if isinstance(item, dict):
            for k, v in item.items():
                g = k.split()[-1].strip("/")          # "override /network" -> network
                if g in GROUPS and isinstance(v, str):
                    out[g] = v
    return out


def composed_keys(conf_dir: Path, choice: dict[str, str]) -> set[str]:
    """The dotted keys of the config composed from these group choices (``{"scenario": "forward",
    "network": "random", ...}``): config.yaml's, each chosen file's and the scenario's."""
    keys = _top_keys(conf_dir)
    for group, name in choice.items():
        keys |= _file_keys(conf_dir, group, name)
    return keys


def _choices_of(value: str) -> list[str]:
    """A group override's choices: ``cue`` or a sweep ``cue,keywords``."""
    return [v.strip() for v in value.split(",")] if "," in value and "[" not in value else [value]


def check_overrides(argv: list[str], conf_dir: Path) -> None:
    """ConfigError for an override ``key=value`` whose key no config has, or a group choice that
    does not exist, naming the closest known keys; and for a key that the composed config lacks
    (it belongs to another choice of its group), naming the choices that have it.  Keys added on
    purpose (``+key=``, ``++key=``, ``~key``), Hydra's own (``hydra.*``) and flags are left to Hydra."""
    keys, choices = known_keys(conf_dir)
    picked: dict[str, list[str]] = {}
    values: list[str] = []
    for arg in argv:
        if arg.startswith(("-", "+", "~")) or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        if key.startswith("hydra.") or key.startswith("hydra/") or key == "hydra":
            continue
        if key in choices:
            for v in _choices_of(value):
                if v not in choices[key]:
                    near = difflib.get_close_matches(v, choices[key], n=3, cutoff=0.5)
                    raise ConfigError(f"{key}={v}: no conf/{'scenarios' if key == 'scenario' else key}/{v}.yaml; "
                                      f"{'did you mean ' + ' or '.join(near) + '? ' if near else ''}"
                                      f"the choices are {choices[key]}")
            picked[key] = _choices_of(value)
            continue
        if key not in keys:
            near = difflib.get_close_matches(key, sorted(keys), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(near)}? " if near else ""
            raise ConfigError(f"{key}: unknown key; {hint}(to add a key on purpose write +{key}=...)")
        values.append(key)
    if values:
        _check_composed(conf_dir, values, picked, choices)


def _check_composed(conf_dir: Path, values: list[str], picked: dict[str, list[str]], choices: dict) -> None:
    """Each key of ``values`` must be in every config the command line composes (each job of a sweep)."""
    base = _defaults(conf_dir / "config.yaml")
    for scenario in picked.get("scenario", [base.get("scenario", "forward")]):
        own = _defaults(conf_dir / "scenario" / f"{scenario}.yaml")
        chosen = {**base, "scenario": scenario, **own}
        by = {g: f"scenario={scenario}" if g in own else "the defaults" for g in chosen}
        swept = {g: v for g, v in picked.items() if g != "scenario"}
        for combo in itertools.product(*swept.values()):
            choice = {**chosen, **dict(zip(swept, combo))}
            src = {**by, **{g: "the command line" for g in swept}}
            have = composed_keys(conf_dir, choice)
            for key in values:
                if key in have:
                    continue
                group = key.split(".", 1)[0]
                if group not in GROUPS:
                    raise ConfigError(f"{key}: not a key of scenario={scenario}")
                hosts = [n for n in choices[group] if key in _file_keys(conf_dir, group, n)]
                raise ConfigError(
                    f"{key}: not a key of {group}={choice[group]} (conf/{group}/{choice[group]}.yaml, chosen by "
                    f"{src[group]}{', scenario=' + scenario if src[group] != f'scenario={scenario}' else ''}); "
                    f"it is a key of {group}={' or '.join(hosts)}: choose one with {group}=NAME, or a scenario "
                    "that does")
