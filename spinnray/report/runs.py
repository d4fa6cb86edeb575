"""What a report reads from a run directory: ``metrics.json``, ``config.json``, the Hydra overrides,
``cores.json``, ``routers.json``, ``raster.npz`` and ``sample.npz`` (whose formats :func:`save_raster`
and :func:`save_sample` define), checked on the way in; and how numbers and their units are shown.

A run directory without ``metrics.json``, or with one that is not a JSON object carrying
``schema_version``, raises :class:`DataError` naming the path; so does a corrupt ``config.json``,
``cores.json``, ``routers.json``, ``raster.npz`` or ``sample.npz``."""

from __future__ import annotations

import json
import math
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spinnray.errors import DataError

RASTER_FILE = "raster.npz"
RASTER_VERSION = 1

# Sections of metrics.json that have their own table (not repeated in "Key figures").
_OWN_TABLE = {"history", "layers", "machine", "memory.per_core_bytes", "memory.by_category_bytes",
              "mapping.slices", "mapping.routing_entries_per_chip", "traffic.by_link_class", "mapping.populations"}


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


@contextmanager
def _npz(path: Path, what: str, version: int):
    """An ``.npz`` of this module's formats, open, its ``format_version`` checked; any fault in
    reading it (here or in the caller's body) becomes a :class:`DataError` naming the path."""
    try:
        with np.load(path, allow_pickle=False) as z:
            got = int(z["format_version"])
            if got != version:
                raise DataError(f"{path}: {what.split('.')[0]} format_version {got}; this reader knows {version}")
            yield z
    except DataError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable {what} ({type(e).__name__}: {e})") from None


def load_raster(path) -> Raster:
    """Read a ``raster.npz`` written by :func:`save_raster`; :class:`DataError` names the path and the fault."""
    path = Path(path)
    with _npz(path, RASTER_FILE, RASTER_VERSION) as z:
        names = [str(x) for x in z["populations"]]
        sizes = [int(x) for x in z["sizes"]]
        r = Raster(float(z["dt_ms"]), int(z["steps"]), int(z["sample"]), dict(zip(names, sizes)), {})
        for i, name in enumerate(names):
            t, n = z[f"step_{i}"].astype(np.int64), z[f"neuron_{i}"].astype(np.int64)
            if t.shape != n.shape or (t.size and (t.min() < 0 or t.max() >= r.steps
                                                  or n.min() < 0 or n.max() >= sizes[i])):
                raise DataError(f"{path}: spikes of {name!r} out of range (steps {r.steps}, neurons {sizes[i]})")
            r.spikes[name] = (t, n)
    return r


# --------------------------------------------------------------------------- sample.npz
SAMPLE_FILE = "sample.npz"
SAMPLE_VERSION = 1


def save_sample(out_dir, *, dt_ms: float, input_name: str, inputs, readouts: dict, classes, label: int,
                pred: int | None, loss_steps: int, sample: int = 0) -> Path:
    """Write what the raster of a training run does not show to ``out_dir/sample.npz``: the input
    of the raster's sample and the traces of its non-spiking readouts; return its path.

    ``inputs``: ``(steps, n)``, bools (spike input) or numbers (analog input); ``readouts[name]``:
    ``(steps, n)`` numbers (the readout's ``v``); ``label``/``pred``: the sample's class and the
    predicted one (None: not known); ``loss_steps``: the last steps of the sample the loss reads.
    The file (``numpy.savez_compressed``) holds ``format_version`` (``SAMPLE_VERSION``), ``dt_ms``,
    ``steps``, ``sample``, ``label``, ``pred`` (-1: not known), ``loss_steps``, ``classes`` (C,) str,
    ``input_name`` str, ``input_spikes`` bool (whether ``input`` is spikes), ``input`` ``(steps, n)``
    (bool or float32), ``readouts`` (R,) str and ``v_<i>`` float32 ``(steps, n)`` for readout i.

    Raises :class:`DataError` for a shape that does not match the steps or a non-positive ``dt_ms``.
    """
    if not (isinstance(dt_ms, (int, float)) and math.isfinite(dt_ms) and dt_ms > 0):
        raise DataError(f"save_sample: dt_ms = {dt_ms!r}: expected a number > 0 (ms per step)")
    x = np.asarray(inputs)
    if x.ndim != 2:
        raise DataError(f"save_sample: input of shape {x.shape}; expected (steps, n)")
    steps = x.shape[0]
    spikes = x.dtype == bool
    arrays = {}
    for i, (name, v) in enumerate(readouts.items()):
        v = np.asarray(v, np.float32)
        if v.ndim != 2 or v.shape[0] != steps:
            raise DataError(f"save_sample: readout {name!r} has shape {v.shape}; expected ({steps}, n)")
        arrays[f"v_{i}"] = v
    if not 0 < loss_steps <= steps:
        raise DataError(f"save_sample: loss_steps = {loss_steps}; expected 1 to {steps}")
    path = Path(out_dir) / SAMPLE_FILE
    np.savez_compressed(path, format_version=np.int64(SAMPLE_VERSION), dt_ms=np.float64(dt_ms),
                        steps=np.int64(steps), sample=np.int64(sample), label=np.int64(label),
                        pred=np.int64(-1 if pred is None else pred), loss_steps=np.int64(loss_steps),
                        classes=np.array([str(c) for c in classes], dtype=str), input_name=np.array(str(input_name)),
                        input_spikes=np.bool_(spikes), input=x if spikes else x.astype(np.float32),
                        readouts=np.array([str(k) for k in readouts], dtype=str), **arrays)
    return path


@dataclass
class Sample:
    """A loaded ``sample.npz`` (see :func:`save_sample`)."""

    dt_ms: float
    steps: int
    sample: int
    label: int
    pred: int | None
    loss_steps: int
    classes: list[str]
    input_name: str
    input_spikes: bool
    input: np.ndarray
    readouts: dict[str, np.ndarray]


def load_sample(path) -> Sample:
    """Read a ``sample.npz`` written by :func:`save_sample`; :class:`DataError` names the path and the fault."""
    path = Path(path)
    with _npz(path, SAMPLE_FILE, SAMPLE_VERSION) as z:
        steps, pred = int(z["steps"]), int(z["pred"])
        s = Sample(float(z["dt_ms"]), steps, int(z["sample"]), int(z["label"]), None if pred < 0 else pred,
                   int(z["loss_steps"]), [str(c) for c in z["classes"]], str(z["input_name"]),
                   bool(z["input_spikes"]), z["input"], {})
        for i, name in enumerate(str(r) for r in z["readouts"]):
            s.readouts[name] = z[f"v_{i}"]
    if s.input.ndim != 2 or s.input.shape[0] != steps or any(v.ndim != 2 or v.shape[0] != steps
                                                             for v in s.readouts.values()):
        raise DataError(f"{path}: input or readout traces do not have {steps} steps")
    return s


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
    config: dict | None = None           # config.json: the command and the typed configuration
    sample: "Sample | None" = None

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


def load_plan(path) -> dict:
    """``plan.json`` of a ``plan=true`` run as a dict; :class:`DataError` naming ``path`` if it is
    missing, not JSON or not a plan (an object with ``plan`` true and a ``memory`` object)."""
    path = Path(path)
    m = _read_json(path, "plan.json")
    if not isinstance(m, dict) or m.get("plan") is not True or not isinstance(m.get("memory"), dict):
        raise DataError(f"{path}: not a spinnray plan.json (expected an object with plan: true and memory)")
    return m


def read_overrides(run_dir) -> dict:
    """``{key: value}`` from ``RUN_DIR/.hydra/overrides.yaml`` (values parsed as Hydra parses
    them on the command line; ``+``/``++``/``~`` prefixes dropped); ``{}`` if absent."""
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
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise DataError(f"{path}: override {item!r} is not key=value")
        key, value = item.split("=", 1)
        key = key.lstrip("+~")
        try:                                # Hydra's own grammar: {input:4,hidden:32} is the dict the run got
            out[key] = parser.parse_override(item).value() if value else ""
        except Exception:                   # noqa: BLE001 - any parser failure: keep the text as written
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
    if (run_dir / "config.json").exists():
        data.config = _read_json(run_dir / "config.json", "config.json")
        if not isinstance(data.config, dict):
            raise DataError(f"{run_dir / 'config.json'}: holds a JSON {type(data.config).__name__}; expected an "
                            "object (the command and the typed configuration)")
    if (run_dir / RASTER_FILE).exists():
        data.raster = load_raster(run_dir / RASTER_FILE)
    if (run_dir / SAMPLE_FILE).exists():
        data.sample = load_sample(run_dir / SAMPLE_FILE)
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


def sig3(v) -> str:
    """A number to three significant digits, never in exponent form above 1: ``0.474``, ``54.7``, ``1234``."""
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def count(n) -> str:
    """An integer with thousands separators: ``1,200,000``."""
    return f"{int(n):,}"


def human_bytes(n) -> str:
    """Bytes in binary units, three significant digits: ``512 B``, ``70.1 KiB``, ``2.12 MiB``."""
    v, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            break
        v /= 1024
    return f"{int(n)} B" if unit == "B" else f"{v:.0f} {unit}" if abs(v) >= 100 else f"{v:.1f} {unit}" \
        if abs(v) >= 10 else f"{v:.2f} {unit}"


def human_seconds(s) -> str:
    """A duration: ``473 ms`` below a second, ``1.92 s``, ``3 min 12 s``, ``2 h 05 min``."""
    s = float(s)
    if s < 1:
        return f"{sig3(1000 * s)} ms"
    if s < 60:
        return f"{sig3(s)} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    return f"{int(s // 3600)} h {int(round(s % 3600 / 60)):02d} min"


def pct(fraction) -> str:
    """A fraction as a percentage to three significant digits: ``1.77 %``; ``0 %`` for zero."""
    return "0 %" if fraction == 0 else f"{sig3(100 * float(fraction))} %"


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


def flatten_all(d: dict, prefix: str = ""):
    """Every leaf of ``d`` as ``(dotted key, value)``, lists included (a configuration's table)."""
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from flatten_all(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def readable(key: str, value) -> str:
    """``value`` of ``key`` in human units (KiB, ms, %, thousands separators); "" where the value
    already reads well."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return ""
    unit = unit_of(key)
    if unit == "bytes":
        return human_bytes(value) if abs(value) >= 1024 else ""
    if unit == "s":
        return human_seconds(value)
    if unit in ("fraction", "fraction of budget", "sent / dense"):
        return pct(value)
    if isinstance(value, int) and abs(value) >= 10_000:
        return count(value)
    return ""


def unit_of(key: str) -> str:
    """The unit of a metrics.json key, from its name (docs/metrics.md)."""
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
