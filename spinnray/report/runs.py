"""What a report reads from a run directory: ``metrics.json``, the Hydra overrides, ``cores.json``,
``routers.json`` and ``raster.npz`` (whose format :func:`save_raster` defines), checked on the way in;
and how numbers and their units are shown.

A run directory without ``metrics.json``, or with one that is not a JSON object carrying
``schema_version``, raises :class:`DataError` naming the path; so does a corrupt ``cores.json``,
``routers.json`` or ``raster.npz``."""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spinnray.errors import DataError

RASTER_FILE = "raster.npz"
RASTER_VERSION = 1

# Sections of metrics.json that have their own table (not repeated in "Key figures").
_OWN_TABLE = {"history", "layers", "machine", "memory.per_core_bytes", "memory.by_category_bytes",
              "mapping.slices", "mapping.routing_entries_per_chip", "traffic.bytes_by_link_class"}


# --------------------------------------------------------------------------- raster.npz
def save_raster(out_dir, spikes_by_population: dict, dt_ms: float, sample: int = 0) -> Path:
    """Write the spikes of one sample to ``out_dir/raster.npz``; return its path.

    ``spikes_by_population[name]``: bools ``(steps, n)`` or ``(steps, batch, n)``
    (then sample ``sample`` is taken); every population must have the same
    ``steps``.  The file (``numpy.savez_compressed``) holds:

    * ``format_version`` int (``RASTER_VERSION``), ``dt_ms`` float (ms per step),
      ``steps`` int (T), ``sample`` int (index of the sample in its batch);
    * ``populations`` (P,) str, ``sizes`` (P,) int64: names and neurons, in order;
    * ``step_<i>``, ``neuron_<i>`` (int32, same length): for population i, the
      step and the neuron index (0-based within the population) of each spike,
      in (step, neuron) order.

    Raises :class:`DataError` for a wrong shape, a sample out of range,
    differing step counts or a non-positive ``dt_ms``.
    """
    if not (isinstance(dt_ms, (int, float)) and math.isfinite(dt_ms) and dt_ms > 0):
        raise DataError(f"save_raster: dt_ms = {dt_ms!r}: expected a number > 0 (ms per step)")
    if not spikes_by_population:
        raise DataError("save_raster: no populations given: expected {name: (steps, n) or (steps, batch, n) bools}")
    arrays: dict[str, np.ndarray] = {}
    names, sizes, steps = [], [], None
    for i, (name, s) in enumerate(spikes_by_population.items()):
        s = np.asarray(s)
        if s.ndim == 3:
            if not 0 <= sample < s.shape[1]:
                raise DataError(f"save_raster: sample = {sample} but {name!r} has batch {s.shape[1]}")
            s = s[:, sample, :]
        if s.ndim != 2:
            raise DataError(f"save_raster: spikes of {name!r} have shape {s.shape}; expected (steps, n) "
                            "or (steps, batch, n)")
        if steps is not None and s.shape[0] != steps:
            raise DataError(f"save_raster: {name!r} has {s.shape[0]} steps, the others {steps}")
        steps = s.shape[0]
        t, n = np.nonzero(s)                       # row-major: (step, neuron) order
        arrays[f"step_{i}"], arrays[f"neuron_{i}"] = t.astype(np.int32), n.astype(np.int32)
        names.append(str(name))
        sizes.append(s.shape[1])
    path = Path(out_dir) / RASTER_FILE
    np.savez_compressed(path, format_version=np.int64(RASTER_VERSION), dt_ms=np.float64(dt_ms),
                        steps=np.int64(steps), sample=np.int64(sample), populations=np.array(names, dtype=str),
                        sizes=np.array(sizes, np.int64), **arrays)
    return path


@dataclass
class Raster:
    """A loaded ``raster.npz``: ``spikes[name] = (steps (k,), neurons (k,))``."""

    dt_ms: float
    steps: int
    sample: int
    sizes: dict[str, int]
    spikes: dict[str, tuple[np.ndarray, np.ndarray]]


def load_raster(path) -> Raster:
    """Read a ``raster.npz`` written by :func:`save_raster`; :class:`DataError` names the path and the fault."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["format_version"])
            if version != RASTER_VERSION:
                raise DataError(f"{path}: raster format_version {version}; this reader knows {RASTER_VERSION}")
            names = [str(x) for x in z["populations"]]
            sizes = [int(x) for x in z["sizes"]]
            r = Raster(float(z["dt_ms"]), int(z["steps"]), int(z["sample"]), dict(zip(names, sizes)), {})
            for i, name in enumerate(names):
                t, n = z[f"step_{i}"].astype(np.int64), z[f"neuron_{i}"].astype(np.int64)
                if t.shape != n.shape or (t.size and (t.min() < 0 or t.max() >= r.steps
                                                      or n.min() < 0 or n.max() >= sizes[i])):
                    raise DataError(f"{path}: spikes of {name!r} out of range (steps {r.steps}, neurons {sizes[i]})")
                r.spikes[name] = (t, n)
    except DataError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable raster.npz ({type(e).__name__}: {e})") from None
    return r


# --------------------------------------------------------------------------- loading a run
@dataclass
class RunData:
    """Everything a report reads from one run directory."""

    path: Path
    metrics: dict
    cores: list | None = None
    routers: list | None = None
    raster: Raster | None = None
    overrides: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return run_label(self.path)

    @property
    def scenario(self) -> str:
        return str(self.metrics.get("scenario", "?"))


def run_label(path: Path) -> str:
    """The run's directory name; a multirun job (``.../TIME/3``) is named ``TIME/3``."""
    path = Path(path).resolve()
    return f"{path.parent.name}/{path.name}" if path.name.isdigit() else path.name


def _read_json(path: Path, what: str):
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; expected the {what} a spinnray run writes") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                        f"expected the {what} a spinnray run writes") from None


def load_metrics(path) -> dict:
    """``metrics.json`` as a dict; :class:`DataError` naming ``path`` if it is
    missing, not JSON, not an object, or lacks ``schema_version``."""
    path = Path(path)
    m = _read_json(path, "metrics.json")
    if not isinstance(m, dict):
        raise DataError(f"{path}: holds a JSON {type(m).__name__}; expected an object with schema_version")
    if not isinstance(m.get("schema_version"), int):
        raise DataError(f"{path}: no integer schema_version; not a spinnray metrics.json")
    for key in ("traffic", "memory"):
        if not isinstance(m.get(key), dict):
            raise DataError(f"{path}: key {key!r} missing or not an object; expected the schema of "
                            f"spinnray.machine.counters (version {m['schema_version']})")
    return m


def read_overrides(run_dir) -> dict:
    """``{key: value}`` from ``RUN_DIR/.hydra/overrides.yaml`` (values parsed as
    YAML scalars; ``+``/``++``/``~`` prefixes dropped); ``{}`` if absent."""
    import yaml

    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    try:
        items = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a YAML list of key=value strings, got {type(items).__name__}")
    out = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise DataError(f"{path}: override {item!r} is not key=value")
        key, value = item.split("=", 1)
        key = key.lstrip("+~")
        try:
            out[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key] = value
    return out


def load_run(run_dir) -> RunData:
    """Read a run directory (see the module docstring for what raises)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a directory; expected a run directory holding metrics.json")
    data = RunData(run_dir, load_metrics(run_dir / "metrics.json"))
    for name in ("cores", "routers"):
        p = run_dir / f"{name}.json"
        if p.exists():
            value = _read_json(p, f"{name}.json")
            if not isinstance(value, list):
                raise DataError(f"{p}: holds a JSON {type(value).__name__}; expected a list of {name[:-1]} reports")
            setattr(data, name, value)
    if (run_dir / RASTER_FILE).exists():
        data.raster = load_raster(run_dir / RASTER_FILE)
    data.overrides = read_overrides(run_dir)
    return data


# --------------------------------------------------------------------------- formatting
def fmt(v) -> str:
    """A value as the report prints it: ints exactly, floats to 6 significant digits."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return str(v)
        return f"{float(v):.6g}"
    if v is None:
        return "null"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v)
    return str(v)


def lookup(metrics: dict, dotted: str):
    """``metrics[a][b]...`` for ``"a.b..."``; KeyError if absent."""
    node = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if key in _OWN_TABLE:
            continue
        if isinstance(v, dict):
            yield from flatten(v, key + ".")
        elif not isinstance(v, list):
            yield key, v


def unit_of(key: str) -> str:
    """The unit of a metrics.json key, from its name (README's table)."""
    last = key.rsplit(".", 1)[-1]
    if key.startswith("rates_hz."):
        return "Hz"
    table = {"ms_per_step": "ms per lockstep step", "realtime_factor": "emulated time / run time",
             "real_time_factor": "emulated time / training time", "hidden_cores": "cores", "inputs": "channels",
             "train_samples_per_s": "samples/s", "sparsity": "sent / dense", "max_utilisation": "fraction of budget",
             "test_accuracy": "fraction", "best_test_accuracy": "fraction", "test_loss": "mean per sample",
             "steps": "steps per sample", "samples": "samples", "epochs": "passes", "cores": "cores",
             "replicas": "replicas", "batch_size": "samples", "exchange_interval": "steps",
             "packets": "packets", "chips_used": "chips", "key_bits": "bits", "routing_entries": "entries",
             "guarded_spikes": "spikes", "max_events_per_step": "events per step per core",
             "dropped": "events", "rejected": "frames"}
    if last in table:
        return table[last]
    if last.endswith("_s"):
        return "s"
    if "bytes" in last:
        return "bytes"
    if "events" in last:
        return "events"
    if key.startswith("weight_bumps."):
        return "bumps"
    return ""
