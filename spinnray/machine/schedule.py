"""The schedule of a run: which phase every core does in which exchange round, written once.

A core's part of a run is a *program*: a generator that yields ``(frames, step)`` -- what the
core sends in a round, and the step that round starts at (for error messages) -- and is sent
back the frames the routers delivered to it in that round.  Backends only carry the frames:
``local`` steps every core's program round by round in one process, ``ray`` runs each
program inside its core actor over a TCP stream (:mod:`spinnray.backends`).  Between
handing a round's frames over and taking the reply, a backend may call ``core.flush()``
(work of the round that nobody waits for).

Schedules:

* **lockstep**: ``ceil(T / K)`` rounds of K steps; every core steps together, as the chip
  does in real time.  Reverse pass (learning cores): the same rounds, last round first, each
  core's reverse steps of a round in one go (``backward_block(t0, K)``, last step first): a
  delay of at least K steps means nothing a core needs in a round comes from that round.
* **layered** (feed-forward networks only, ``layer = (level, levels)``): one round per level
  of the network; in round r the cores of level r step through the whole run, and every core
  takes what it was sent.  Reverse: the highest level first, each core's whole reverse pass
  in its round.  Same results in far fewer rounds (:mod:`spinnray.machine.core`).

A :class:`TrainStep` continues a forward run with the reverse pass and each core's own
optimizer step in the same program, so a whole training step is one call per core.  Cores
that do not learn (``core.learns`` false) take part in reverse rounds with no frames, and an
error frame sent to one is counted as rejected.
"""

from __future__ import annotations

from typing import Generator, NamedTuple

from spinnray.machine import packet

__all__ = ["TrainStep", "rounds", "run_program", "backward_program", "take_errors", "drive_lockstep", "Program"]

#: a core's program: yields (frames, step), is sent the frames delivered, returns its result
Program = Generator[tuple[list[bytes], int], list[bytes], tuple]


class TrainStep(NamedTuple):
    """What follows a forward run in the same call to every core: the reverse pass with loss
    scale ``scale`` over ``rounds`` rounds (None: one per step of the run; e-prop's learning
    signals need 1), then, with ``lr``, every learning core's optimizer step on its own
    gradient (when nothing needs reducing: one replica)."""

    scale: float
    rounds: int | None = None
    lr: float | None = None


def rounds(steps: int, k: int):
    """``(t0, length)`` of each exchange round of a run of ``steps`` steps."""
    for t0 in range(0, steps, k):
        yield t0, min(k, steps - t0)


def run_program(core, steps: int, k: int, batch: int, inputs, record: tuple[str, ...],
                layer: tuple[int, int] | None = None, train: TrainStep | None = None) -> Program:
    """A forward run of ``core`` (and, with ``train``, its reverse pass and optimizer step).
    Returns ``(recorded, problems, events sent)``."""
    core.reset(steps, batch, inputs, record, layered=layer is not None)
    if layer is not None:
        level, levels = layer
        for r in range(levels):
            incoming = yield (core.run_block(0, steps) if r == level else []), 0
            core.deliver(incoming, 0, steps)
    else:
        for t0, kk in rounds(steps, k):
            incoming = yield core.run_block(t0, kk), t0
            core.deliver(incoming, t0, kk)
    core.finish()
    if train is not None:
        yield from backward_program(core, steps if train.rounds is None else train.rounds, train.scale, layer, k)
        if train.lr is not None and core.learns:
            core.apply(None, train.lr)
    return core.recorded, core.problems(), core.events_sent()


def backward_program(core, steps: int, scale: float, layer: tuple[int, int] | None = None, k: int = 1) -> Program:
    """The reverse pass of the last run over ``steps`` steps in rounds of ``k`` (lockstep);
    returns ``(problems, events sent)``."""
    learns = core.learns
    if learns:
        core.begin_backward(steps, scale)
    if layer is not None:
        level, levels = layer
        for r in range(levels):
            mine = learns and levels - 1 - r == level
            incoming = yield (core.backward_layer(steps) if mine else []), 0
            take_errors(core, incoming, 0, steps)
    else:
        for t0, kk in reversed(list(rounds(steps, k))):
            incoming = yield (core.backward_block(t0, kk) if learns else []), t0
            take_errors(core, incoming, t0, kk)
    return core.problems(), core.events_sent()


def take_errors(core, frames: list[bytes], i: int, span: int) -> None:
    """Error frames of the reverse round from step ``i`` (``span`` steps) to ``core``; a core
    that does not learn counts them as rejected and notes why."""
    if core.learns:
        core.deliver_errors(frames, i, span)
        return
    by_port = [frames] if len(core.ports) == 1 else [frames.get(p.copy.core_id, []) for p in core.ports]
    for r, (port, fs) in enumerate(zip(core.ports, by_port)):
        for frame in fs:
            c = port.counters
            c.packets_received += 1
            c.bytes_received += packet.frame_nbytes(frame)
            c.rejected += 1
            core._note(f"core {port.copy.core_id}: error frame at reverse step {i} for a core that does not learn", r)


def drive_lockstep(programs: dict[int, Program], route, flush=None,
                   ports: dict[int, list[int]] | None = None) -> dict[int, tuple]:
    """Run every program round by round in this process: collect each core's frames, route the
    round (``route({core: frames}) -> {core: frames}``), hand each core its frames.  ``flush(ids)``
    is called between collecting and routing.  Returns each program's result by core id.
    ``ports``: program -> the core ids of the copies it steps (:class:`~spinnray.machine.core.CopySpec`);
    such a program yields and is sent ``{copy's core id: frames}``."""
    ports = ports or {}
    out: dict[int, list[bytes]] = {cid: next(p)[0] for cid, p in programs.items()}
    results: dict[int, tuple] = {}
    while out:
        if flush is not None:
            flush(list(out))
        inbox: dict[int, list[bytes]] = {}
        for cid, frames in out.items():
            if cid in ports:                    # [] from a copies core that sends nothing this round
                for c in ports[cid]:
                    inbox[c] = frames.get(c, []) if frames else []
            else:
                inbox[cid] = frames
        routed = route(inbox)
        nxt = {}
        for cid in out:
            if cid in ports:
                frames = {c: routed.get(c, []) for c in ports[cid]}
            elif cid in routed:
                frames = routed[cid]
            else:
                continue
            try:
                nxt[cid] = programs[cid].send(frames)[0]
            except StopIteration as stop:
                results[cid] = stop.value
        if nxt and len(nxt) != len(out):
            ended = sorted(set(out) - set(nxt))
            raise RuntimeError(f"cores {ended} ended their program while others go on: the schedule must give "
                               "every core the same rounds")
        out = nxt
    return results
