"""The options reference, ``docs/options.md``, generated from ``conf/`` and the typed configs so that it
cannot go stale: ``python -m spinnray.experiments.options > docs/options.md``.

Every key of every file under ``conf/`` is looked up in the typed dataclass that reads it (the
sections of :mod:`spinnray.config`; the network builder, data set and learning rule a file names);
a key that no dataclass field reads is an error here.  A row shows the file's value, what the field
allows and its help.  Scenario files get a table of the values they set.
``tests/unit/experiments/test_options.py`` regenerates the file and compares, and checks the keys of
its tables against ``conf/`` both ways.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path

import yaml

from spinnray.config import CheckpointConfig, ClusterConfig, MachineConfig, ParallelConfig, RunConfig
from spinnray.data.base import DATASETS, dataset_entry
from spinnray.errors import ConfigError
from spinnray.model.builders import builder
from spinnray.rules import rule

__all__ = ["reference", "option_rows", "CONF"]

#: the conf/ directory of this checkout
CONF = Path(__file__).resolve().parents[2] / "conf"

#: the config groups in the order the reference shows them, and the typed config of one of their files
_GROUP_CONFIG = {"machine": lambda name: MachineConfig, "parallel": lambda name: ParallelConfig,
                 "network": lambda name: builder(name).config, "data": lambda name: dataset_entry(name).config,
                 "learning": lambda name: rule(name).config}

_TYPE_NAMES = {type(None): "null", str: "string", int: "integer", float: "number", bool: "true/false",
               dict: "mapping", typing.Any: "any"}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _type(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return "list"
    if origin is dict:
        return "mapping"
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _allowed(f: dataclasses.Field, tp) -> str:
    meta = f.metadata
    if meta.get("choices") is not None:
        out = " | ".join(str(c) for c in meta["choices"])
        return out + (" or null" if "null" in _type(tp) else "")
    out = _type(tp)
    if meta.get("min") is not None:
        out += f", >= {_bound(meta['min'])}"
    if meta.get("max") is not None:
        out += f", <= {_bound(meta['max'])}"
    return out


def _bound(b) -> str:
    """A range bound; the large ones as powers of two (2^63 - 1, 2^34)."""
    if isinstance(b, int) and b >= 2**16:
        for off in (0, 1):
            if (b + off) & (b + off - 1) == 0:
                return f"2^{(b + off).bit_length() - 1}" + (" - 1" if off else "")
    return str(b)


def _value(v) -> str:
    if isinstance(v, (dict, list)) and len(yaml.safe_dump(v, default_flow_style=True).strip()) > 60:
        return f"({'a mapping' if isinstance(v, dict) else 'a list'}: see the file)"
    text = yaml.safe_dump(v, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()          # a scalar's document end marker


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def option_rows(body: dict, cls, prefix: str, where: str) -> list[tuple[str, str, str, str]]:
    """(key, value, allowed, help) of each key of a conf file's mapping ``body`` read by dataclass ``cls``;
    a nested dataclass (``machine.pcm``) gets a row per field.  ConfigError for a key no field reads."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    rows = []
    for key, value in body.items():
        if key not in fields:
            raise ConfigError(f"{where}: {prefix}{key} is in the file but no option of {cls.__name__}")
        f, tp = fields[key], hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            rows.append((f"{prefix}{key}", "", "mapping", f.metadata.get("help", "")))
            rows += option_rows(value, tp, f"{prefix}{key}.", where)
        else:
            rows.append((f"{prefix}{key}", _value(value), _allowed(f, tp), f.metadata.get("help", "")))
    return rows


def _table(rows) -> list[str]:
    out = ["| key | value | allowed | meaning |", "|---|---|---|---|"]
    out += [f"| `{k}` | {_cell(f'`{v}`') if v else ''} | {_cell(a)} | {_cell(h)} |" for k, v, a, h in rows]
    return out + [""]


def _comment(path: Path) -> str:
    """The comment lines that open a conf file, as one paragraph."""
    lines = []
    for ln in path.read_text().splitlines():
        if not ln.startswith("#"):
            break
        if not ln.startswith("# @package"):
            lines.append(ln.lstrip("# ").rstrip())
    return " ".join(lines)


def _top(conf_dir: Path) -> list[str]:
    body = {k: v for k, v in _load(conf_dir / "config.yaml").items() if k not in ("defaults", "hydra")}
    rows = []
    for key, value in body.items():
        cls = {"checkpoint": CheckpointConfig, "cluster": ClusterConfig}.get(key)
        if cls is not None:
            rows += option_rows(value, cls, f"{key}.", "conf/config.yaml")
        else:
            rows += option_rows({key: value}, RunConfig, "", "conf/config.yaml")
    return rows


def _scenario_rows(body: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in body.items():
        if key == "defaults":
            continue
        if isinstance(value, dict) and prefix == "" and key in (*_GROUP_CONFIG, "cluster", "checkpoint"):
            rows += _scenario_rows(value, f"{key}.")
        elif isinstance(value, dict) and prefix == "machine." and key == "pcm":
            rows += _scenario_rows(value, "machine.pcm.")
        else:
            rows.append((f"{prefix}{key}", _value(value)))
    return rows


def _scenario_groups(body: dict) -> list[str]:
    out = []
    for item in body.get("defaults", []):
        if isinstance(item, dict):
            out += [f"`{k.split()[-1].strip('/')}={v}`" for k, v in item.items()]
        elif isinstance(item, str) and item != "_self_":
            out.append(f"those of `scenario={item}` (and its values, changed by the table below)")
    return out


def reference(conf_dir: Path = CONF) -> str:
    """The text of docs/options.md for ``conf_dir``."""
    out = ["<!-- Generated by `python -m spinnray.experiments.options > docs/options.md` from conf/ and the typed",
           "     configs; tests/unit/experiments/test_options.py fails when it is stale.  Do not edit by hand. -->",
           "", "# Options", "",
           "Every option of `python run.py`, file by file of `conf/`: its value in that file, what it accepts and "
           "what it means (the help of the typed config that reads it; the file's own comments say more). A run "
           "composes `conf/config.yaml`, one file of each group (`network=recurrent_lif` picks "
           "`conf/network/recurrent_lif.yaml`) and a scenario (`scenario=NAME`, `scenarios/NAME.yaml`), which picks "
           "group files and sets values; `key=value` on the command line overrides all of them. A key of a "
           "group file that is not picked is refused, naming the files that have it.", "",
           "Contents: [top level](#top-level) · " + " · ".join(f"[{g}](#{g})" for g in _GROUP_CONFIG)
           + " · [scenarios](#scenarios)", "", "## Top level", "",
           f"`conf/config.yaml`. {_comment(conf_dir / 'config.yaml')}", "",
           "| group | choices (files) |", "|---|---|"]
    for group in (*_GROUP_CONFIG, "scenario"):
        names = [p.stem for p in sorted((conf_dir / group).glob("*.yaml"))]
        out.append(f"| `{group}` | {', '.join(f'`{n}`' for n in names)} |")
    out += ["", *_table(_top(conf_dir))]
    for group, config_of in _GROUP_CONFIG.items():
        out += [f"## {group}", ""]
        if group == "data":
            out += [f"Registered data sets (`data.name`): {', '.join(f'`{n}`' for n in DATASETS.names())}.", ""]
        for path in sorted((conf_dir / group).glob("*.yaml")):
            body = _load(path)
            cls = config_of(path.stem)
            out += [f"### {group}={path.stem}", "",
                    f"`conf/{group}/{path.name}` ({cls.__module__}.{cls.__name__}). {_comment(path)}", ""]
            out += _table(option_rows(body, cls, f"{group}.", f"conf/{group}/{path.name}"))
    out += ["## Scenarios", "", "A scenario picks group files and sets values over theirs; every value below is "
            "an option of the tables above.", ""]
    for path in sorted((conf_dir / "scenario").glob("*.yaml")):
        body = _load(path)
        out += [f"### scenario={path.stem}", "", f"`scenarios/{path.name}`. {_comment(path)}", "",
                f"Groups: {', '.join(_scenario_groups(body)) or 'the defaults'}.", "",
                "| key | value |", "|---|---|"]
        out += [f"| `{k}` | {_cell(f'`{v}`')} |" for k, v in _scenario_rows(body)]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference(Path(sys.argv[1]) if len(sys.argv) > 1 else CONF))
