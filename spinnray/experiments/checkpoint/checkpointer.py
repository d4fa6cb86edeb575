"""The trainer's side: a :class:`Checkpointer` writes every N mini-batches into a locked directory,
keeps the newest few, restores, and rebuilds the cores after a machine failure."""

from __future__ import annotations

import logging
import os
import socket
import weakref
from pathlib import Path

import numpy as np

from spinnray.backends import surviving_cluster
from spinnray.errors import ConfigError, DataError, MappingError
from spinnray.experiments.checkpoint.codec import load_checkpoint, save_checkpoint
from spinnray.experiments.checkpoint.state import (
    check_position,
    config_fingerprint,
    describe,
    validate_state,
)

log = logging.getLogger("spinnray")


#: the lock file a Checkpointer holds in its directory
LOCK_NAME = ".spinnray-checkpoints.lock"


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


# ------------------------------------------------------------------------------------------------ the lock
def _holder() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


class _DirectoryLock:
    """An exclusive ``flock`` on ``directory/LOCK_NAME``, held until :meth:`release` (or the process ends)."""

    def __init__(self, directory: Path):
        self.fd = None
        try:
            import fcntl
        except ImportError:                       # no flock (Windows): run unlocked, and say so
            log.warning("checkpoint.dir = %s: no file locks on this system; do not let two runs share it", directory)
            return
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            if holder == _holder():
                holder += (": an earlier run in this process whose Checkpointer is still alive, e.g. kept by the "
                           "traceback of its failure; close() it")
            raise ConfigError(f"checkpoint.dir = {str(directory)!r}: another run holds this checkpoint directory "
                              f"({holder}); two runs rotating the same directory would delete each other's "
                              "checkpoints. Give this run its own checkpoint.dir (or none: RUN_DIR/checkpoints), or "
                              "wait for the other run to end") from None
        except OSError as e:                      # a file system without locks: run unlocked, and say so
            os.close(fd)
            log.warning("checkpoint.dir = %s: cannot lock %s (%s); do not let two runs share it", directory, path,
                        e.strerror or e)
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{_holder()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)                     # closing the descriptor drops the flock
            self.fd = None


class Checkpointer:
    """Writes a trainer's state every ``cfg.checkpoint.every`` mini-batches and reads it back.

    A checkpoint holds ``trainer.state()`` (every core's learning state), the
    bit generator state of ``rng`` (data order) and the loop position ``pos``
    (epoch, sample, history, ...), under ``kind`` and a fingerprint of the
    configuration: :meth:`restore` refuses another kind or configuration, and
    a state that does not fit the live cores (:func:`validate_state`).

    With checkpoints on, the Checkpointer locks its directory for as long as it
    lives (until :meth:`close`, the end of a ``with`` block, its collection or
    the end of the process): a second Checkpointer on the same directory gets a
    ConfigError.  Starting, it removes the ``*.ckpt.tmp`` files a crashed
    writer left; rotating (``keep``), it deletes only files it wrote.
    """

    def __init__(self, cfg, out_dir, kind: str, values: dict):
        c = cfg.checkpoint
        self.every, self.keep, self.max_restarts = c.every, c.keep, c.max_restarts
        self.enabled = c.every > 0
        self.dir = Path(c.dir) if c.dir else Path(out_dir) / "checkpoints"
        self.kind, self.values, self.fingerprint = kind, values, config_fingerprint(values)
        self.backend, self.cluster = cfg.backend, cfg.cluster
        self.last: str | None = None
        self.restarts = 0
        self.written: list[Path] = []             # the files this run wrote and has not deleted, oldest first
        self._lock = None
        if self.enabled:
            try:
                self._lock = _DirectoryLock(self.dir)
                weakref.finalize(self, self._lock.release)
                for stale in self.dir.glob("*.ckpt.tmp"):
                    log.info("removing %s, left by a writer that stopped", stale)
                    stale.unlink(missing_ok=True)
            except OSError as e:
                raise ConfigError(f"checkpoint.dir = {str(self.dir)!r}: cannot use it for checkpoints "
                                  f"({type(e).__name__}: {e.strerror or e})") from None

    def close(self) -> None:
        """Release the directory's lock (the files stay)."""
        if self._lock is not None:
            self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def due(self, batches: int) -> bool:
        return self.enabled and batches % self.every == 0

    def save(self, pos: dict, trainer, rng) -> None:
        state = {"kind": self.kind, "fingerprint": self.fingerprint, "settings": self.values,
                 "rng": rng.bit_generator.state,
                 "cores": trainer.state(), **{k: v for k, v in pos.items() if k != "path"}}
        path = save_checkpoint(self.dir / f"{self.kind}-{pos['batches']:09d}.ckpt", state)
        self.last = str(path)
        if path in self.written:
            self.written.remove(path)
        self.written.append(path)
        while len(self.written) > self.keep:
            self.written.pop(0).unlink(missing_ok=True)
        log.info("checkpoint %s (epoch %d, sample %d)", path, pos["epoch"] + 1, pos["first"])

    def restore(self, path, trainer, rng) -> dict:
        """Load ``path`` (a file, or a directory: its newest) into the trainer and ``rng``.

        Everything is checked before anything is loaded: the file (:func:`load_checkpoint`), the
        core states against the trainer's own (:func:`validate_state`), the random generator state
        and the loop position; DataError naming the file, the core and the entry otherwise."""
        if path is None:
            raise DataError("no checkpoint to continue from")
        st = load_checkpoint(path, self.kind, self.fingerprint, self.values)
        where = st["path"]
        validate_state(trainer.state(), st.get("cores"), where, core_labels(trainer))
        gen = st.get("rng")
        want = type(rng.bit_generator).__name__
        if not isinstance(gen, dict) or gen.get("bit_generator") != want:
            raise DataError(f"{where}: rng is {describe(gen)}; expected the state of a {want} bit generator")
        probe = type(rng.bit_generator)()
        try:
            probe.state = gen
        except (TypeError, ValueError, KeyError, OverflowError) as e:
            raise DataError(f"{where}: rng is not a valid {want} state ({e})") from None
        check_position(st, where)
        trainer.load_state(st["cores"])
        rng.bit_generator.state = gen
        self.last = where
        return {k: v for k, v in st.items() if k not in ("kind", "fingerprint", "settings", "rng", "cores", "version")}

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
            smaller = surviving_cluster(self.cluster)
            log.warning("cannot place the machine as before (%s); continuing on %d node(s) %s",
                        e, smaller.nodes, list(smaller.node_ids) if smaller.node_ids else "(the alive ones)")
            self.cluster = smaller
            trainer = make_trainer(self.cluster)
        return trainer, self.restore(self.last, trainer, rng)


def core_labels(trainer) -> dict:
    """``{core id: "3 (hidden[0:5])"}`` of the trainer's mapping, to name cores in messages."""
    try:
        return {pl.core_id: f"{pl.core_id} ({pl.slice.population}[{pl.slice.lo}:{pl.slice.hi}]"
                            f"{f', replica {pl.replica}' if pl.replica else ''})"
                for pl in trainer.sim.mapping.placements}
    except AttributeError:
        return {}
