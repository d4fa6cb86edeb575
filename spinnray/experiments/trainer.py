"""Training on the emulated cores with any on-chip rule: forward, reverse pass, gradient reduction
across data-parallel replicas, and every core's optimizer step.

With one replica (or a model-parallel rule) a whole training step is one call per core: the
forward run, the reverse pass and each core's Adam step on its own gradient
(:class:`~spinnray.machine.schedule.TrainStep`).  With R replicas each takes a contiguous shard
of the mini-batch; the driver sums every slice's :meth:`~spinnray.rules.learning.LearningCore.reduction_terms`
(its gradients, and what a rule forms them from: e-prop's firing-rate regulariser needs the
whole batch's spike counts) over the replicas in replica order (deterministic) and every replica
applies the same step to the same sums, so the replicas never diverge
(:meth:`Trainer.check_replicas` compares their weight checksums).
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np

from spinnray.config import ClusterConfig, MachineConfig, ParallelConfig
from spinnray.errors import SpinnrayError
from spinnray.machine.core import Core
from spinnray.experiments.summary import progress
from spinnray.machine.schedule import TrainStep
from spinnray.mapping import Learning
from spinnray.model.network import Network
from spinnray.rules.learning import LearningCore
from spinnray.rules.registry import Rule
from spinnray.simulator import RunResult, Simulator

__all__ = ["Trainer", "layout"]


def layout(network: Network, rule: Rule, learn, machine: MachineConfig,
           parallel: ParallelConfig) -> tuple[Learning, ParallelConfig]:
    """How ``rule`` trains ``network`` on the cores: its cores' specs (:class:`Learning`) and the
    parallel layout the simulator maps: the rule's cores per population, and each replica's shard
    of the mini-batch (``learn.batch_size`` over ``parallel.replicas``, rounded up)."""
    per_replica = -(-learn.batch_size // parallel.replicas)
    return rule.learning(network, learn, machine), replace(
        parallel, cores_per_population=rule.cores(network, parallel.cores_per_population), batch_size=per_replica)


class Trainer:
    """A network on the cores, trained with ``rule`` (typed ``learn`` config)."""

    def __init__(self, network: Network, rule: Rule, learn, *, machine: MachineConfig, parallel: ParallelConfig,
                 backend: str, cluster: ClusterConfig):
        self.rule, self.learn = rule, learn
        self.learning, mapped = layout(network, rule, learn, machine, parallel)
        self.replicas = parallel.replicas
        self.per_replica = mapped.batch_size
        self.sim = Simulator(network, machine, parallel=mapped, backend=backend, cluster=cluster,
                             learning=self.learning, timeout_s=cluster.round_timeout_s)
        self.learners = [pl for pl in self.sim.mapping.placements if pl.slice.population in self.learning.specs]
        sources = [p for p in network.populations.values() if not network.incoming(p)]
        if len(sources) != 1:
            raise SpinnrayError(f"training feeds one input population; the network has {[p.name for p in sources]}")
        self.input = sources[0]
        self.outputs = [name for name in self.learning.specs if not network.outgoing(network[name])]
        self.lr = learn.lr
        self.counters: dict = {}
        self.first: RunResult | None = None        # the first test batch of the last evaluate(keep_first=True)

    def close(self) -> None:
        self.sim.close()

    def _inputs(self, x: np.ndarray) -> dict:
        if not self.input.model.spiking and x.dtype == bool:     # spike data into an analog input: 0/1 values
            x = x.astype(np.float32)
        return {self.input.name: x}

    def forward(self, x: np.ndarray, labels: np.ndarray | None, record=(), train: TrainStep | None = None):
        """A forward run of ``x`` (steps, batch, inputs); ``labels`` go to the output cores."""
        targets = None if labels is None else {name: labels for name in self.outputs}
        return self.sim.run(x.shape[0], self._inputs(x), targets=targets, record=record, train=train)

    def train_batch(self, x: np.ndarray, labels: np.ndarray):
        """Forward, reverse, reduce and update; returns the forward result."""
        scale = 1.0 / len(labels)
        if self.replicas == 1:
            res = self.forward(x, labels, train=TrainStep(scale, self.rule.reverse_rounds, self.lr))
        else:
            res = self.forward(x, labels, train=TrainStep(scale, self.rule.reverse_rounds))
            self._reduce_and_apply()
        if self.rule.after_batch is not None:
            self.rule.after_batch(self, res, labels)
        return res

    def _reduce_and_apply(self) -> None:
        ids = [pl.core_id for pl in self.learners]
        grads = self.sim.call(LearningCore.reduction_terms, cores=ids)
        total: dict[tuple, list[np.ndarray]] = {}
        for pl in sorted(self.learners, key=lambda p: p.replica):        # replica order: deterministic sums
            key = (pl.slice.population, pl.slice.lo, pl.slice.hi)
            if key not in total:
                total[key] = [g.copy() for g in grads[pl.core_id]]
            else:
                for acc, g in zip(total[key], grads[pl.core_id]):
                    acc += g
        args = {pl.core_id: (total[(pl.slice.population, pl.slice.lo, pl.slice.hi)], self.lr)
                for pl in self.learners}
        self.sim.call(LearningCore.apply, args, cores=ids)

    def evaluate(self, split, batch: int, keep_first: bool = False, show_progress: bool = False,
                 desc: str = "testing") -> tuple[float, float]:
        """(accuracy, mean loss) over a data split, ``batch`` samples per run.  ``keep_first``:
        keep the first batch's result, its spikes and ``v`` recorded, in ``first`` (the report's
        raster and readout traces)."""
        correct, loss = 0, 0.0
        y = split.labels
        with progress(len(y), desc, show_progress) as bar:
            for first in range(0, len(y), batch):
                idx = np.arange(first, min(first + batch, len(y)))
                rec = ("spikes", "v") if keep_first and first == 0 else ()
                res = self.forward(split.batch(idx), y[idx], record=rec)
                if rec:
                    self.first = res
                correct += int((res.outputs["pred"] == y[idx]).sum())
                loss += float(res.outputs["loss"].sum())
                bar.update(len(idx))
                bar.set_postfix(acc=f"{correct / (first + len(idx)):.3f}")
        return correct / len(y), loss / len(y)

    # ---------------------------------------------------------------- state
    def checksums(self) -> dict[tuple, list[int]]:
        """CRC32 of every slice's weights on each replica."""
        sums = self.sim.call(Core.checksum, cores=[pl.core_id for pl in self.learners])
        out: dict[tuple, list[int]] = {}
        for pl in sorted(self.learners, key=lambda p: p.replica):
            out.setdefault((pl.slice.population, pl.slice.lo, pl.slice.hi), []).append(sums[pl.core_id])
        return out

    def checksum(self) -> int:
        """CRC32 over the learning cores' weight checksums, in core order."""
        crc = 0
        got = self.sim.call(Core.checksum, cores=[pl.core_id for pl in self.learners])
        for _cid, c in sorted(got.items()):
            crc = zlib.crc32(int(c).to_bytes(4, "little"), crc)
        return crc

    def check_replicas(self) -> None:
        for key, crcs in self.checksums().items():
            if len(set(crcs)) != 1:
                raise SpinnrayError(f"replicas diverged: slice {key} has weight checksums {crcs}")

    def state(self) -> dict:
        """Every core's state (learning cores: weights, Adam; all: counters), by core id: for checkpoints."""
        return self.sim.call(Core.learning_state)

    def load_state(self, states: dict) -> None:
        self.sim.call(Core.load_learning_state, {cid: (st,) for cid, st in states.items()}, cores=list(states))

    def weights(self, replica: int = 0) -> dict[str, np.ndarray]:
        """The full weight matrices, assembled from replica ``replica``'s cores."""
        net = self.sim.network
        cores = [pl for pl in self.learners if pl.replica == replica]
        got = self.sim.call(Core.get_weights, cores=[pl.core_id for pl in cores])
        out = {p.name: np.zeros(p.weights.shape) for p in net.projections}
        for pl in cores:
            for proj, w in zip(net.incoming(net[pl.slice.population]), got[pl.core_id]):
                out[proj.name][:, pl.slice.lo:pl.slice.hi] = w
        return out
