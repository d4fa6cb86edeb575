"""A training run on the emulated cores (kinds ``eventprop`` and ``eprop``): any on-chip rule on
any data set its network can take, by configuration.

The data set (``data.*``, :mod:`spinnray.data`), the network (``network.*``,
:mod:`spinnray.model.builders`) and the rule (``learning.*``, :mod:`spinnray.rules`) come from
their registries; the :class:`~spinnray.experiments.trainer.Trainer` runs them on the cores; the
epoch loop (:mod:`~spinnray.experiments.loop`) checkpoints and recovers; at the end
``metrics.json``, ``cores.json`` and ``routers.json`` are written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from spinnray.data.base import Timing, load_dataset
from spinnray.experiments.checkpoint import Checkpointer, settings, training_data, trajectory, warm_start
from spinnray.experiments.loop import Position, run_epochs
from spinnray.experiments.setup import Run, check_steps
from spinnray.experiments.summary import layer_traffic, peak_rss_bytes, write_json
from spinnray.experiments.trainer import Trainer
from spinnray.machine.counters import SCHEMA_VERSION
from spinnray.model.builders import DataShape
from spinnray.report import save_raster, save_sample
from spinnray.rules.learning import store_summary

__all__ = ["run_training", "val_selection", "prepare"]

log = logging.getLogger("spinnray")


def val_selection(history: list[dict]) -> dict:
    """Model selection on the validation set: the epoch with the best validation accuracy (the
    earliest of ties) and its test accuracy and loss; {} without one."""
    rows = [h for h in history if "val_accuracy" in h]
    if not rows:
        return {}
    best = max(rows, key=lambda h: (h["val_accuracy"], -h["epoch"]))
    return {"val_selected_epoch": best["epoch"], "val_accuracy": best["val_accuracy"],
            "val_selected_test_accuracy": best["test_accuracy"], "val_selected_test_loss": best["test_loss"]}


def _save_first_sample(out_dir: Path, tr: Trainer, net, data, learn) -> None:
    """The report's picture of the first test sample: the spikes of every spiking population
    (``raster.npz``), and its input, the readouts' traces, label and prediction (``sample.npz``)."""
    res = tr.first
    save_raster(out_dir, res.spikes, net.dt_ms)
    pred = res.outputs.get("pred")
    x = data.test.batch(np.arange(1))[:, 0]
    save_sample(out_dir, dt_ms=net.dt_ms, input_name=tr.input.name,
                inputs=x if data.input_kind == "analog" else x.astype(bool),
                readouts={name: v[:, 0] for name, v in res.v.items() if not net[name].model.spiking},
                classes=data.class_names, label=int(data.test.labels[0]),
                pred=None if pred is None else int(pred[0]),
                loss_steps=getattr(learn, "window_steps", None) or data.loss_window or data.steps)


def prepare(run: Run):
    """The data set, the learning config as the data adapts it (e.g. the cue task's loss window),
    checked against the parallel layout, and the network built for the data's shape:
    ``(data, learn, net)``."""
    cfg, rule, net_cfg = run.config, run.rule, run.network
    data = load_dataset(run.data, Timing(net_cfg.dt_ms, getattr(net_cfg, "steps", None)), cfg.progress)
    check_steps(net_cfg, data)
    learn = rule.adapt(run.learning, data) if rule.adapt is not None else run.learning
    if rule.check is not None:
        rule.check(learn, cfg.parallel, net_cfg, data)
    net = run.builder.build(net_cfg, DataShape(data.n_inputs, data.n_classes, data.input_kind), cfg.seed)
    return data, learn, net


def run_training(run: Run, out_dir: Path, scenario: str) -> dict:
    cfg, rule, net_cfg = run.config, run.rule, run.network
    data, learn, net = prepare(run)
    t_start = time.perf_counter()

    def make_trainer(cluster=cfg.cluster):
        return Trainer(net, rule, learn, machine=cfg.machine, parallel=cfg.parallel, backend=cfg.backend,
                       cluster=cluster)

    init = ()
    if cfg.init_from:
        trainer = make_trainer()
        try:
            init = (warm_start(cfg.init_from, run.kind, net, trainer.sim.mapping),)
        finally:
            trainer.close()
    trainer = make_trainer()                # (built from the loaded weights: a weight store's range follows them)
    ck = None
    try:
        ck = Checkpointer(cfg, out_dir, run.kind, settings(
            network=asdict(net_cfg), data=training_data(run.data), learning=trajectory(learn), seed=cfg.seed,
            parallel={"cores_per_population": cfg.parallel.cores_per_population, "replicas": cfg.parallel.replicas},
            machine=cfg.machine.identity(), init_from=init[0] if init else None))
        return _train(run, data, learn, net, trainer, make_trainer, ck, out_dir, scenario, t_start)
    finally:
        if ck is not None:
            ck.close()                      # the checkpoint directory's lock


def _train(run: Run, data, learn, net, trainer: Trainer, make_trainer, ck: Checkpointer, out_dir: Path,
           scenario: str, t_start: float) -> dict:
    """The epochs, the test passes and the metrics of :func:`run_training`; closes the trainer."""
    box = {"trainer": trainer}
    try:
        return _epochs(run, data, learn, net, box, make_trainer, ck, out_dir, scenario, t_start)
    finally:
        box["trainer"].close()


def _epochs(run: Run, data, learn, net, box: dict, make_trainer, ck: Checkpointer, out_dir: Path, scenario: str,
            t_start: float) -> dict:
    cfg, rule, net_cfg = run.config, run.rule, run.network
    trainer = box["trainer"]
    setup_s = time.perf_counter() - t_start
    log.info("%s on %d cores (%d replica(s)), backend %s; %d train / %d test samples of %d steps x %d inputs",
             rule.name, trainer.sim.mapping.n_cores, cfg.parallel.replicas, cfg.backend, len(data.train),
             len(data.test), data.steps, data.n_inputs)
    pos = Position(lr=learn.lr)
    rng = np.random.default_rng([cfg.seed, rule.order_stream])
    if cfg.resume:
        state = ck.restore(cfg.resume, trainer, rng)
        pos = Position.from_dict(state)
        log.info("resumed from %s at epoch %d, sample %d", state["path"], pos.epoch + 1, pos.first)
    elif ck.enabled:
        ck.save(pos.as_dict(), trainer, rng)      # the initial state: a failure before the first interval restarts here
    B = learn.batch_size

    def step(tr: Trainer, idx, pos: Position):
        tr.counters = pos.counters
        return tr.train_batch(data.train.batch(idx), data.train.labels[idx])

    def end_epoch(tr: Trainer, epoch: int, pos: Position) -> None:
        tr.check_replicas()
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(pos.losses)),
               "train_accuracy": pos.correct / len(data.train), "lr": tr.lr, "train_s": round(pos.epoch_s, 3),
               "train_events": pos.epoch_events}
        last = epoch + 1 == learn.epochs
        if (epoch + 1) % learn.eval_every == 0 or last:
            log.info("epoch %d: testing on %d samples", epoch + 1, len(data.test))
            row["test_accuracy"], row["test_loss"] = tr.evaluate(data.test, B, keep_first=last,
                                                                 show_progress=cfg.progress)
            pos.tested_samples += len(data.test)
            if last:
                _save_first_sample(out_dir, tr, net, data, learn)
            if data.val is not None:
                row["val_accuracy"], row["val_loss"] = tr.evaluate(data.val, B, show_progress=cfg.progress,
                                                                   desc="validation")
                pos.tested_samples += len(data.val)        # forward passes too: per-sample figures divide by them
        pos.history.append(row)
        log.info("epoch %d: train loss %.4f acc %.4f | test %s%s | %.1f s, %.3g events/s", epoch + 1,
                 row["train_loss"], row["train_accuracy"],
                 f"loss {row['test_loss']:.4f} acc {row['test_accuracy']:.4f}" if "test_accuracy" in row else "-",
                 f" | val acc {row['val_accuracy']:.4f}" if "val_accuracy" in row else "", pos.epoch_s,
                 pos.epoch_events / pos.epoch_s if pos.epoch_s else 0.0)
        if (epoch + 1) % learn.lr_decay_every == 0:
            pos.lr = tr.lr * learn.lr_decay

    box["pos"] = pos
    pos = run_epochs(box, epochs=learn.epochs, labels=lambda: data.train.labels, batch_size=B, ck=ck, rng=rng,
                     make_trainer=make_trainer, step=step, end_epoch=end_epoch, show_progress=cfg.progress,
                     begin_epoch=data.begin_epoch)
    trainer = box["trainer"]
    m = trainer.sim.metrics()
    cores, routers = trainer.sim.reports()
    crc = trainer.checksum()
    history, train_s, samples = pos.history, pos.train_s, pos.samples
    tested = [h for h in history if "test_accuracy" in h]
    emulated_ms = samples * data.steps * net_cfg.dt_ms
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "scenario": scenario, "kind": run.kind, "rule": rule.name, "backend": cfg.backend, "seed": cfg.seed,
        "data": data.name, "classes": data.class_names, "cores": m["cores"], "replicas": cfg.parallel.replicas,
        "steps": data.steps, "inputs": data.n_inputs, "schedule": cfg.parallel.schedule, "epochs": learn.epochs,
        "batch_size": B, "wall_s": round(time.perf_counter() - t_start, 3), "setup_s": round(setup_s, 3),
        "train_s": round(train_s, 3), "train_samples_per_s": samples / train_s if train_s else 0.0,
        "realtime_factor": emulated_ms / (train_s * 1000) if train_s else 0.0,
        "test_accuracy": tested[-1]["test_accuracy"], "test_loss": tested[-1]["test_loss"],
        "best_test_accuracy": max(h["test_accuracy"] for h in tested),
        **val_selection(history),
        "history": history,
        "max_core_bytes": max(sum(c["memory"].values()) for c in cores),
        "peak_rss_bytes": peak_rss_bytes(),
        "samples": samples + pos.tested_samples,
        "weights_crc32": crc, "restarts": ck.restarts,
        **(rule.metrics(trainer, cores) if rule.metrics is not None else {}),
        **({"weight_store": stores} if (stores := store_summary(cores)) else {}),
        "layers": layer_traffic(cores, net, data.steps, samples + pos.tested_samples, samples, rule.errors_to_owner),
        "traffic": m["traffic"], "memory": m["memory"], "mapping": m["mapping"],
        "machine": asdict(cfg.machine),
    }
    write_json(out_dir / "cores.json", cores)
    write_json(out_dir / "routers.json", routers)
    return metrics
