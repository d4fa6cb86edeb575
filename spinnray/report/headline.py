"""The answer first: what ran and what came out, in a few lines with human units.

:func:`headline` gives the rows a report opens with (command, network, learning, accuracy,
spikes, error events, bytes, memory, time), each with the ``metrics.json`` / ``config.json`` keys
it reads; :func:`summary_line` is the same facts on one line, what ``run.py`` prints at the end.
Both read only a run's ``metrics.json`` (and ``config.json`` where given), so a report and the
terminal never disagree."""

from __future__ import annotations

from spinnray.config import MachineConfig
from spinnray.report.runs import count, fmt, human_bytes, human_seconds, pct, sig3

__all__ = ["headline", "summary_line", "spikes_text", "memory_text"]


#: a SpiNNaker2 PE's SRAM: a budget that differs from it is no longer the chip's
CHIP_SRAM = MachineConfig().sram_per_pe_bytes

#: how the headline names a neuron model (``mapping.populations.P.model``)
MODELS = {"lif": "LIF", "alif": "ALIF", "li": "LI (non-spiking readout)", "source": "spike sources",
          "analog": "analog channels"}


def _dense_run(m: dict) -> bool:
    """A run in one process (dense BPTT): no cores, nothing sent between them."""
    return m.get("backend") == "dense" or "spike_events_sent" not in m.get("traffic", {})


def command_text(config: dict | None) -> str:
    if not config or not config.get("command"):
        return "not recorded (the run was not started by `run.py`)"
    return f"`{config['command']}`"


def network_text(m: dict, config: dict | None) -> str:
    """Populations in order with neurons, model and cores; the cores, chips and replicas."""
    if _dense_run(m):
        net = (config or {}).get("network", {})
        layers, hidden = m.get("layers"), m.get("hidden")
        rec = "recurrent " if net.get("recurrent", True) else ""
        classes = m.get("classes") or []
        return (f"{m.get('inputs', '?')} inputs -> {layers} {rec}ALIF layer(s) of {hidden} -> {len(classes)} leaky "
                f"readouts ({', '.join(map(str, classes))}); dense, in one process (no emulated cores)")
    mp = m.get("mapping", {})
    pops = mp.get("populations")
    if isinstance(pops, dict):
        parts = []
        for name, p in pops.items():
            where = f"on {p['cores']} core{'s' if p['cores'] != 1 else ''}" if p["cores"] else "written by the host"
            rec = ", recurrent" if name in p.get("sends_to", []) else ""
            parts.append(f"{name}: {count(p['neurons'])} {MODELS.get(p['model'], p['model'])} {where}{rec}")
        text = "; ".join(parts)
    else:       # a run from before mapping.populations: the populations with cores
        text = "; ".join(f"{name}: {count(max(hi for _, hi in s))} neurons on {len(s)} cores"
                         for name, s in mp.get("slices", {}).items() if s)
    replicas = m.get("replicas", mp.get("replicas", 1)) or 1
    chips = mp.get("chips_used")
    return (f"{text}. {m['cores']} cores" + (f" on {chips} chip{'s' if chips != 1 else ''}" if chips else "")
            + (f", {replicas} data-parallel replicas (the cores above are those of one)" if replicas > 1 else ""))


def learning_text(m: dict, config: dict | None) -> str:
    learn = (config or {}).get("learning", {})
    rule = m.get("rule") or learn.get("rule") or "none"
    if m.get("kind") == "forward" or rule == "none":
        dt = (config or {}).get("network", {}).get("dt_ms")
        return (f"none: a forward run of {count(m['samples'])} samples x {count(m['steps'])} steps"
                + (f" of {fmt(dt)} ms" if dt else ""))
    text = f"{rule}: {m['epochs']} epoch{'s' if m['epochs'] != 1 else ''}, mini-batch {m['batch_size']}"
    if "lr" in learn:
        text += f", Adam lr {fmt(learn['lr'])}"
        if learn.get("lr_decay", 1.0) != 1.0:
            text += f" (x {fmt(learn['lr_decay'])} every {learn.get('lr_decay_every', 1)} epochs)"
    if config:
        text += "; every setting under [Configuration](#configuration)"
    return text


def accuracy_text(m: dict) -> str | None:
    if "test_accuracy" not in m:
        return None
    text = f"test {pct(m['test_accuracy'])} after the last epoch"
    classes = m.get("classes") or []
    if classes:
        text += f" (chance {pct(1 / len(classes))})"
    tested = [h for h in m.get("history", []) if "test_accuracy" in h]
    if len(tested) > 1 and m.get("best_test_accuracy", m["test_accuracy"]) != m["test_accuracy"]:
        best = max(tested, key=lambda h: h["test_accuracy"])
        text += f"; best {pct(m['best_test_accuracy'])} (epoch {best.get('epoch', '?')})"
    if "val_selected_epoch" in m:
        text += (f"; selected on validation ({pct(m['val_accuracy'])}): epoch {m['val_selected_epoch']}, "
                 f"test {pct(m['val_selected_test_accuracy'])}")
    return text


def spikes_text(m: dict, brief: bool = False) -> str:
    """Spikes sent and their deliveries apart, each with what it is measured against (``brief``:
    without saying what dense counts)."""
    t = m["traffic"]
    dense = t.get("dense_equivalent_events") or 0
    if _dense_run(m):
        spikes = t.get("spike_events", 0)
        return (f"{count(spikes)} hidden-layer spikes in the test passes"
                + (f" = {pct(spikes / dense)} of dense {count(dense)}" + ("" if brief else
                   " (steps x samples x hidden neurons); one process: nothing is sent between cores") if dense else ""))
    sent, delivered = t["spike_events_sent"], t["spike_events"]
    text = f"{count(sent)} sent"
    if dense:
        text += f" = {pct(sent / dense)} of dense {count(dense)}"
        if not brief:
            text += " (steps x samples x neurons of the sending populations)"
    text += f"; {count(delivered)} deliveries to cores"
    if sent:
        text += f" ({sig3(delivered / sent)} per spike sent)"
    return text


def errors_text(m: dict) -> str | None:
    t = m["traffic"]
    if _dense_run(m) or not t.get("error_events_sent"):
        return None
    sent, spikes = t["error_events_sent"], t.get("spike_events_sent", 0)
    return (f"{count(sent)} sent" + (f" = {pct(sent / spikes)} of the spikes sent" if spikes else "")
            + f"; {count(t.get('error_events', 0))} deliveries to cores")


def bytes_text(m: dict) -> str | None:
    t = m["traffic"]
    if _dense_run(m):
        return None
    events = t.get("spike_events", 0) + t.get("error_events", 0)
    text = f"{human_bytes(t['bytes'])} ({count(t['bytes'])} bytes) in {count(t.get('packets', 0))} packets"
    if events:
        text += f", {sig3(t['bytes'] / events)} bytes per event delivered"
    chips = t.get("inter_chip", {}).get("bytes")
    if chips:
        text += f"; {human_bytes(chips)} between the chips' routers of a node"
    inter = t.get("inter_node", {}).get("bytes")
    if inter:
        text += f"; {human_bytes(inter)} between nodes"
    return text


def memory_text(m: dict, brief: bool = False) -> str:
    mem = m["memory"]
    if _dense_run(m) and "training_memory_bytes" in m:
        return f"training memory {human_bytes(m['training_memory_bytes'])}" + ("" if brief else
            f" ({count(m['training_memory_bytes'])} bytes: weights, gradients, optimizer, stored activations, "
            "inputs; one process, no per-core budget)")
    big, budget = mem["per_core_max_bytes"], mem.get("budget_bytes_per_core")
    text = f"largest core {human_bytes(big)}"
    if budget:
        text += f" of its {human_bytes(budget)} budget ({pct(big / budget)})"
        if budget != CHIP_SRAM:
            over = big / CHIP_SRAM
            text += (f", machine.sram_per_pe_bytes changed from the chip's {human_bytes(CHIP_SRAM)}"
                     + ("" if brief else f" ({sig3(over)} x that)" if over > 1 else f" ({pct(over)} of that)"))
    if brief:
        return text
    if "total_bytes" in mem:
        text += f"; all {m['cores']} cores {human_bytes(mem['total_bytes'])}"
    if "training_state_bytes" in m:
        text += f"; training state {human_bytes(m['training_state_bytes'])} over the cores"
    return text


def store_text(m: dict, brief: bool = False) -> str:
    """Low-precision weights at the grid's limit, per projection ('' without a digital grid)."""
    parts = []
    for name, st in (m.get("weight_store") or {}).items():
        if "at_limit_fraction" not in st:
            continue
        text = f"{name} {pct(st['at_limit_fraction'])}"
        if st.get("growth_reached", 1) > 1:     # a grid that widens: how far its neurons' grids had to
            text += f" (grids widened up to {sig3(st['growth_reached'])}x)"
        if not brief and st.get("dropped_abs"):
            text += f" (updates refused there: {sig3(st['dropped_abs'])} in weight units)"
        parts.append(text)
    return ("weights at the grid's limit: " + ", ".join(parts)) if parts else ""


def time_text(m: dict) -> str:
    text = f"wall {human_seconds(m['wall_s'])}"
    if m.get("setup_s"):
        text += f" (setup {human_seconds(m['setup_s'])})"
    if "train_s" in m:
        text += f"; training {human_seconds(m['train_s'])}, {sig3(m.get('train_samples_per_s', 0))} samples/s"
    elif "run_s" in m:
        text += f"; emulation {human_seconds(m['run_s'])}"
        if "ms_per_step" in m:
            text += f", {sig3(m['ms_per_step'])} ms per step"
    if m.get("realtime_factor"):
        text += f"; {sig3(m['realtime_factor'])} x real time (emulated time / time taken)"
    return text


def headline(m: dict, config: dict | None = None) -> list[tuple[str, str, str]]:
    """``(what, the answer, where it is read)`` rows, those that apply to this run."""
    rows = [("command", command_text(config), "`config.json` `command`"),
            ("network", network_text(m, config), "`mapping.populations`, `cores`, `mapping.chips_used`, `replicas`"
             if not _dense_run(m) else "`inputs`, `layers`, `hidden`, `classes`"),
            ("learning", learning_text(m, config), "`rule`, `epochs`, `batch_size`, `config.json` `learning`")]
    acc = accuracy_text(m)
    if acc:
        rows.append(("accuracy", acc, "`test_accuracy`, `best_test_accuracy`, `history`, `val_*`"))
    rows.append(("spikes", spikes_text(m), "`traffic.spike_events`, `traffic.dense_equivalent_events`" if _dense_run(m)
                 else "`traffic.spike_events_sent`, `traffic.dense_equivalent_events`, `traffic.spike_events`"))
    err = errors_text(m)
    if err:
        rows.append(("error events", err, "`traffic.error_events_sent`, `traffic.error_events`"))
    b = bytes_text(m)
    if b:
        rows.append(("bytes", b, "`traffic.bytes`, `traffic.packets`, `traffic.inter_chip.bytes`, "
                                       "`traffic.inter_node.bytes`"))
    rows.append(("memory", memory_text(m), "`memory.per_core_max_bytes`, `memory.budget_bytes_per_core`, "
                                           "`memory.total_bytes`, `training_state_bytes` / `training_memory_bytes`"))
    st = store_text(m)
    if st:
        rows.append(("weight store", st, "`weight_store` (per projection: `at_limit`, `at_limit_fraction`, "
                                         "`levels_moved`, `dropped_abs`, `widened`, `growth_reached`), "
                                         "`cores.json` `weight_store`"))
    rows.append(("time", time_text(m), "`wall_s`, `setup_s`, `train_s` / `run_s`, `train_samples_per_s`, "
                                       "`ms_per_step`, `realtime_factor`"))
    return rows


def summary_line(scenario: str, m: dict) -> str:
    """The run's result on one line (``run.py`` logs it): spikes sent and deliveries apart, error
    events against the spikes, accuracy, the largest core against its budget, the time."""
    where = "in one process (dense)" if _dense_run(m) else f"on {m['backend']}, {m['cores']} cores"
    parts = [f"{scenario} {where}: wall {human_seconds(m['wall_s'])}", "spikes: " + spikes_text(m, brief=True)]
    err = errors_text(m)
    if err:
        parts.append("error events: " + err)
    if "test_accuracy" in m:
        parts.append(f"test accuracy {pct(m['test_accuracy'])}")
    parts.append(memory_text(m, brief=True))
    if store_text(m, brief=True):
        parts.append(store_text(m, brief=True))
    if m.get("train_samples_per_s"):
        parts.append(f"{sig3(m['train_samples_per_s'])} training samples/s")
    return "; ".join(parts)
