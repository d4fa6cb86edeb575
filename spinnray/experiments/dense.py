"""A dense single-process training run (kind ``bptt``, ``learning.rule = bptt | tlbptt``): full
BPTT or truncated local BPTT of deep recurrent ALIF networks (:mod:`spinnray.rules.bptt.dense`),
the memory and accuracy baselines of e-prop, on any data set."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace

import numpy as np

from spinnray.data.base import Timing, load_dataset
from spinnray.errors import ConfigError
from spinnray.experiments.setup import Run, check_steps
from spinnray.experiments.summary import peak_rss_bytes, progress
from spinnray.machine.counters import SCHEMA_VERSION
from spinnray.rules.bptt.dense import ALIFNetConfig, DeepALIF, DenseTrainer, check_clip_norm, init_deep_weights

__all__ = ["run_dense"]

log = logging.getLogger(__name__)


def run_dense(run: Run, out_dir, scenario: str) -> dict:
    """``kind: bptt``: dense single-process training (``learning.rule = bptt | tlbptt``) on any
    analog data set; returns the metrics.

    Besides accuracy and memory, every ``history`` row has ``grad_norm_median`` and
    ``grad_norm_max`` (the L2 norms of the blocks' gradients over the epoch's updates, before
    clipping) and ``clipped_fraction`` (the share of those rescaled by ``learning.clip_norm``);
    the metrics have ``clip_norm`` and ``clipped_updates`` ((update, block) pairs rescaled).
    Raises ConfigError naming ``learning.clip_norm`` unless it is null or a finite number > 0."""
    cfg, net_cfg, learn = run.config, run.network, run.learning
    check_clip_norm(learn.clip_norm, "learning.clip_norm")
    if learn.rule == "bptt" and (learn.window is not None or learn.block_size is not None):
        raise ConfigError(f"learning.rule = bptt with learning.window = {learn.window} and learning.block_size = "
                          f"{learn.block_size}: full BPTT has neither; expected null, or learning.rule = tlbptt")
    t_start = time.perf_counter()
    data = load_dataset(run.data, Timing(net_cfg.dt_ms, net_cfg.steps), cfg.progress)
    check_steps(net_cfg, data)
    if learn.window_steps is None and data.loss_window is not None:
        learn = replace(learn, window_steps=data.loss_window)
    steps, n_in, names = data.steps, data.n_inputs, data.class_names
    ytr, yte = data.train.labels, data.test.labels
    acfg = ALIFNetConfig(n_in=n_in, n_h=net_cfg.hidden, n_out=len(names), tau_m_ms=net_cfg.tau_mem_ms,
                         tau_a_ms=net_cfg.tau_adapt_ms, beta=net_cfg.beta, v_th=net_cfg.v_th,
                         tau_out_ms=net_cfg.tau_out_ms, dt_ms=net_cfg.dt_ms, surrogate=learn.surrogate,
                         gamma=learn.gamma, loss_window=learn.window_steps, dtype=cfg.machine.dtype)
    if learn.window is not None and learn.window > steps:
        log.warning("learning.window = %d exceeds T = %d: no truncation", learn.window, steps)
    net = DeepALIF(acfg, net_cfg.layers, block_size=learn.block_size, window=learn.window,
                   recurrent=net_cfg.recurrent)
    w0 = init_deep_weights(acfg, net_cfg.layers, learn.block_size, np.random.default_rng([cfg.seed, 5]),
                           in_scale=net_cfg.w_in_scale, rec_scale=net_cfg.w_rec_scale, out_scale=net_cfg.w_out_scale,
                           ff_scale=net_cfg.w_ff_scale, recurrent=net_cfg.recurrent)
    tr = DenseTrainer(net, w0, lr=learn.lr, betas=(learn.beta1, learn.beta2), eps=learn.eps,
                      weight_decay=learn.weight_decay, clip_norm=learn.clip_norm)
    B = learn.batch_size
    mem = tr.memory(steps, B)
    log.info("dense %s: %d x %d ALIF layers, %d block(s), window %s; %d train / %d test samples of %d steps; "
             "training memory %d bytes", learn.rule, net_cfg.layers, net_cfg.hidden, len(net.blocks),
             learn.window or steps, len(ytr), len(yte), steps, mem["total"])
    rng = np.random.default_rng([cfg.seed, 13])
    history, train_s, samples, tested = [], 0.0, 0, 0
    lr = learn.lr
    for epoch in range(learn.epochs):
        data.begin_epoch(epoch)                            # data.resample: fresh cue trials every epoch
        order = rng.permutation(len(ytr))
        tr.lr = lr
        losses, correct = [], 0
        first_update, clipped_before = len(tr.grad_norms), tr.clipped
        t0 = time.perf_counter()
        with progress(len(ytr), f"epoch {epoch + 1}/{learn.epochs}", cfg.progress) as bar:
            for first in range(0, len(ytr), B):
                idx = order[first:first + B]
                xb = data.train.batch(idx).astype(np.float32, copy=False)
                loss, logits = tr.train_batch(xb, ytr[idx])
                losses.append(loss)
                correct += int((logits.argmax(axis=1) == ytr[idx]).sum())
                bar.update(len(idx))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", acc=f"{correct / (first + len(idx)):.3f}")
        train_s += time.perf_counter() - t0
        samples += len(ytr)
        norms = np.asarray(tr.grad_norms[first_update:], dtype=np.float64)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "train_accuracy": correct / len(ytr),
               "lr": lr, "grad_norm_median": float(np.median(norms)), "grad_norm_max": float(norms.max()),
               "clipped_fraction": (tr.clipped - clipped_before) / norms.size}
        if (epoch + 1) % learn.eval_every == 0 or epoch + 1 == learn.epochs:
            with progress(len(data.test), "testing", cfg.progress) as bar:
                row["test_accuracy"], row["test_loss"] = tr.evaluate(data.test, learn.eval_batch, bar.update)
            tested += len(yte)
        history.append(row)
        log.info("epoch %d: train loss %.4f acc %.4f | test acc %s", epoch + 1, row["train_loss"],
                 row["train_accuracy"], f"{row['test_accuracy']:.4f}" if "test_accuracy" in row else "-")
        if (epoch + 1) % learn.lr_decay_every == 0:
            lr *= learn.lr_decay
    tested_rows = [h for h in history if "test_accuracy" in h]
    spikes = int(np.sum(tr.spikes)) if tr.spikes else 0
    dense_events = tested * steps * net_cfg.hidden * net_cfg.layers
    return {
        "schema_version": SCHEMA_VERSION,
        "scenario": scenario, "kind": run.kind, "rule": learn.rule, "backend": "dense", "seed": cfg.seed,
        "data": data.name, "classes": names, "cores": 1, "steps": steps, "inputs": n_in,
        "layers": net_cfg.layers, "hidden": net_cfg.hidden, "blocks": len(net.blocks),
        "block_size": net.block_size, "window": min(learn.window or steps, steps),
        "loss_window_steps": acfg.window(steps),
        "epochs": learn.epochs, "batch_size": B, "clip_norm": learn.clip_norm, "clipped_updates": tr.clipped,
        "wall_s": round(time.perf_counter() - t_start, 3), "train_s": round(train_s, 3),
        "train_samples_per_s": samples / train_s if train_s else 0.0,
        "test_accuracy": tested_rows[-1]["test_accuracy"], "test_loss": tested_rows[-1]["test_loss"],
        "best_test_accuracy": max(h["test_accuracy"] for h in tested_rows),
        "history": history,
        "training_memory_bytes": mem["total"],
        "training_memory": mem,
        "peak_rss_bytes": peak_rss_bytes(),
        "samples": samples + tested,
        # one process, no packets: the test-set spikes of the hidden layers against dense
        "traffic": {"spike_events": spikes, "error_events": 0, "packets": 0, "bytes": 0,
                    "dense_equivalent_events": dense_events, "dropped": 0, "rejected": 0,
                    "sparsity": spikes / dense_events if dense_events else 0.0},
        "memory": {"per_core_max_bytes": mem["total"], "total_bytes": mem["total"],
                   "budget_bytes_per_core": None, "by_category_bytes": {k: v for k, v in mem.items() if k != "total"}},
        "machine": asdict(cfg.machine),
    }
