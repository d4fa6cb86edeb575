"""Training checkpoints: written atomically, read back strictly.

A checkpoint is one file holding everything a trainer needs to continue as if
it had never stopped: the learning state of every core (weights, optimizer
moments and step counts, counters), the position in the data (epoch, offset,
the epoch's sample order), the random-generator state, the learning rate and
the history so far.  It is written to ``NAME.tmp`` and renamed over ``NAME``
(``os.replace`` is atomic on POSIX), so a crash while writing leaves the
previous checkpoint intact.

File layout: the 8-byte magic ``b"SPNRCKPT"``, a little-endian uint32 format
version, then a pickle (protocol 5) of a plain dict of numpy arrays, numbers,
strings, lists and dicts.  Only load checkpoints you wrote: pickle runs code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import struct
from dataclasses import asdict
from pathlib import Path

import numpy as np

from spinnray.errors import ConfigError, DataError

log = logging.getLogger("spinnray")

__all__ = ["MAGIC", "VERSION", "Checkpointer", "save_checkpoint", "load_checkpoint", "config_fingerprint",
           "trajectory", "training_data", "latest", "warm_start"]

MAGIC = b"SPNRCKPT"
VERSION = 1


def config_fingerprint(*parts) -> str:
    """A short hash of the configuration that must match between a run and its resume."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def trajectory(learn) -> dict:
    """The learning options that shape the training up to any point: all but ``epochs``.

    A run resumed with a larger ``learning.epochs`` continues exactly as an
    uninterrupted run of that many epochs would (the epoch orders come from
    the checkpointed RNG), so training can be extended from a checkpoint.
    """
    out = {k: v for k, v in asdict(learn).items() if k != "epochs"}
    if out.get("rate_reg") == 0.0:
        # checkpoints from before the firing-rate regulariser match runs without it
        out.pop("rate_reg")
        out.pop("rate_target_hz", None)
    return out


def training_data(data) -> dict:
    """The data options that shape the training: all but the test and validation sets' sizes and seeds.

    A finished run resumed with another test set trains nothing more and tests its final weights
    on that set (``resume=RUN/checkpoints data.test_size=2000 data.test_seed=2``).
    """
    out = {k: v for k, v in asdict(data).items() if k not in ("test_size", "test_seed", "val_size", "val_seed")}
    if out.get("resample") is False:
        del out["resample"]          # checkpoints from before the option match runs without it
    if "p_group" in out and out["p_group"] is None:
        del out["p_group"]           # likewise the unbiased cue generator, as before data.p_group
    return out


def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<I", VERSION))
        pickle.dump(state, f, protocol=5)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path, kind: str | None = None, fingerprint: str | None = None) -> dict:
    """Read a checkpoint; ``kind`` and ``fingerprint``, when given, must match.

    Raises :class:`DataError` naming the path for a missing, foreign, corrupt
    or mismatching file.
    """
    path = Path(path)
    if path.is_dir():
        found = latest(path)
        if found is None:
            raise DataError(f"resume = {str(path)!r}: no checkpoint (*.ckpt) in that directory")
        path = found
    if not path.is_file():
        raise DataError(f"resume = {str(path)!r}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) != 12 or head[:8] != MAGIC:
            raise DataError(f"{path}: not a spinnray checkpoint (bad magic)")
        (version,) = struct.unpack("<I", head[8:])
        if version != VERSION:
            raise DataError(f"{path}: checkpoint format {version}; this spinnray reads {VERSION}")
        try:
            state = pickle.load(f)
        except Exception as e:  # truncated or corrupt: say so, with the path
            raise DataError(f"{path}: corrupt checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise DataError(f"{path}: corrupt checkpoint (expected a dict, got {type(state).__name__})")
    if kind is not None and state.get("kind") != kind:
        raise DataError(f"{path}: a checkpoint of a {state.get('kind')!r} run; this run is {kind!r}")
    if fingerprint is not None and state.get("fingerprint") != fingerprint:
        raise DataError(f"{path}: written by a run with a different network/data/learning configuration "
                        f"(fingerprint {state.get('fingerprint')} != {fingerprint}); resume needs the same one")
    state["path"] = str(path)
    return state


def warm_start(path, kind: str, network, mapping) -> str:
    """Give ``network`` the weights the cores of a ``kind`` checkpoint held (``init_from=PATH``).

    For fine-tuning (say, at a lower learning rate) and for moving a trained
    model to another weight precision: only the weights are taken; the
    optimizer moments, the data order, the learning-rate schedule and the
    epoch count start fresh.  The weights are written into the projections of
    ``network`` in place (before the trainer is built from it, so a weight
    store's range is set from them).  ``mapping`` places ``network`` as the
    checkpointed run did: every core's slice and weight shapes must match, or
    a :class:`ConfigError` names the core and the shapes.  Replicas hold equal
    weights, so replica 0's cores are read.  Returns the source's identity
    (fingerprint and mini-batch count) for the new run's fingerprint.
    """
    st = load_checkpoint(path, kind)
    cores = st.get("cores")
    if not isinstance(cores, dict):
        raise DataError(f"init_from = {str(path)!r}: the checkpoint holds no core states")
    for pl in mapping.placements:
        if pl.replica != 0:
            continue
        sl = pl.slice
        incoming = network.incoming(network[sl.population])
        if not incoming:
            continue
        got = cores.get(pl.core_id, {}).get("weights") if isinstance(cores.get(pl.core_id), dict) else None
        where = f"init_from = {st['path']!r}: core {pl.core_id} ({sl.population}[{sl.lo}:{sl.hi}])"
        if got is None or len(got) != len(incoming):
            raise ConfigError(f"{where} holds {'no' if got is None else len(got)} weight matrices; this network "
                              f"expects {len(incoming)} ({', '.join(p.name for p in incoming)}): the checkpoint's "
                              "network and cores per population must match this run's")
        for proj, w in zip(incoming, got):
            w = np.asarray(w)
            want = (proj.pre.size, sl.hi - sl.lo)
            if w.shape != want:
                raise ConfigError(f"{where} holds {proj.name} weights of shape {w.shape}; this network expects "
                                  f"{want}: the checkpoint's network and cores per population must match this run's")
            if not np.all(np.isfinite(w)):
                raise DataError(f"{where}: {proj.name} weights are not finite")
            m = None if proj.mask is None else proj.mask[:, sl.lo:sl.hi]
            proj.weights[:, sl.lo:sl.hi] = w if m is None else np.where(m, w, 0.0)
    log.info("weights from %s (%s, %d mini-batches trained); optimizer, data order and schedule start fresh",
             st["path"], kind, int(st.get("batches", 0)))
    return f"{st.get('fingerprint')}@{int(st.get('batches', 0))}"


def latest(directory) -> Path | None:
    """The newest ``*.ckpt`` in ``directory`` (by the step number in its name), or None."""
    files = sorted(Path(directory).glob("*.ckpt"))
    return files[-1] if files else None


class Checkpointer:
    """Writes a trainer's state every ``cfg.checkpoint.every`` mini-batches and reads it back.

    A checkpoint holds ``trainer.state()`` (every core's learning state), the
    bit generator state of ``rng`` (data order) and the loop position ``pos``
    (epoch, sample, history, ...), under ``kind`` and a fingerprint of the
    configuration: :meth:`restore` refuses another kind or configuration.
    """

    def __init__(self, cfg, out_dir, kind: str, fingerprint: str):
        c = cfg.checkpoint
        self.every, self.keep, self.max_restarts = c.every, c.keep, c.max_restarts
        self.enabled = c.every > 0
        self.dir = Path(c.dir) if c.dir else Path(out_dir) / "checkpoints"
        self.kind, self.fingerprint = kind, fingerprint
        self.backend, self.cluster = cfg.backend, cfg.cluster
        self.last: str | None = None
        self.restarts = 0

    def due(self, batches: int) -> bool:
        return self.enabled and batches % self.every == 0

    def save(self, pos: dict, trainer, rng) -> None:
        state = {"kind": self.kind, "fingerprint": self.fingerprint, "rng": rng.bit_generator.state,
                 "cores": trainer.state(), **{k: v for k, v in pos.items() if k != "path"}}
        path = save_checkpoint(self.dir / f"{self.kind}-{pos['batches']:09d}.ckpt", state)
        self.last = str(path)
        for old in sorted(self.dir.glob(f"{self.kind}-*.ckpt"))[:-self.keep]:
            old.unlink()
        log.info("checkpoint %s (epoch %d, sample %d)", path, pos["epoch"] + 1, pos["first"])

    def restore(self, path, trainer, rng) -> dict:
        """Load ``path`` (a file, or a directory: its newest) into the trainer and ``rng``."""
        if path is None:
            raise DataError("no checkpoint to continue from")
        st = load_checkpoint(path, self.kind, self.fingerprint)
        trainer.load_state(st["cores"])
        rng.bit_generator.state = st["rng"]
        self.last = st["path"]
        return {k: v for k, v in st.items() if k not in ("kind", "fingerprint", "rng", "cores", "version")}

    def recover(self, error: Exception, trainer, make_trainer, rng):
        """After a failure during training: rebuild the cores with
        ``make_trainer(cluster)`` and load the last checkpoint; returns
        ``(new trainer, loop position)``.

        Re-raises ``error`` when it is not a machine failure (a ConfigError or
        DataError), when checkpoints are off, or after ``max_restarts`` restarts.
        On ``ray``, when the placement cannot be made again because nodes were
        lost and ``cluster.replace_lost_nodes`` is on, the chips are spread over
        the nodes still alive (:func:`spinnray.backends.surviving_cluster`).
        """
        from spinnray.errors import ConfigError, MappingError

        if isinstance(error, (ConfigError, DataError)) or not self.enabled or self.restarts >= self.max_restarts:
            raise error
        self.restarts += 1
        log.warning("training failed (%s); rebuilding the cores and continuing from the last checkpoint "
                    "(restart %d of %d)", error, self.restarts, self.max_restarts)
        trainer.close()
        try:
            trainer = make_trainer(self.cluster)
        except MappingError as e:
            if self.backend != "ray" or not getattr(self.cluster, "replace_lost_nodes", False):
                raise
            from spinnray.backends import surviving_cluster

            smaller = surviving_cluster(self.cluster)
            log.warning("cannot place the machine as before (%s); continuing on %d node(s) %s",
                        e, smaller.nodes, list(smaller.node_ids) if smaller.node_ids else "(the alive ones)")
            self.cluster = smaller
            trainer = make_trainer(self.cluster)
        return trainer, self.restore(self.last, trainer, rng)
