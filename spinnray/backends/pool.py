"""Core actors kept for reuse: one pool per process, a list of idle actors per Ray node.

Starting a core actor means a new worker process (``import ray`` alone is ~830 modules), and the
raylet starts at most as many at once as the node has CPUs: 152 cores took about 60 s to come up
on 2 CPUs, against 6 s when they were reused (bench/RESULTS.md, issue 25).  So actors start *blank* (no core, no stream) and all at once,
are loaded with a :class:`~spinnray.machine.core.CoreSpec` by the backend, and when a backend
closes cleanly each one drops its core and stream and goes back here, for the next backend of
this process on the same node: the next run, epoch, restart or Hydra job (a sweep runs its jobs
in one process) starts no process.  A backend that failed kills its actors instead: a core that
raised or hung is never handed to another run.

The bookkeeping only; it imports no Ray.  The ray backend hands in how to start an actor on a
node and how to kill one (:func:`spinnray.backends.ray.core_pool`), so this is tested without Ray.
"""

from __future__ import annotations

from typing import Any, Callable

from spinnray.errors import SpinnrayError

__all__ = ["ActorPool"]


class ActorPool:
    """Idle core actors by node id.

    ``start(node_id)`` returns the handle of a new blank actor on that node at once (the actor
    comes up in the background); ``kill(handle)`` ends one.  Counters ``started`` (actors this
    pool ever started) and ``reused`` (actors handed out again) say what reuse saved.
    """

    def __init__(self, start: Callable[[str], Any], kill: Callable[[Any], None]):
        self._start = start
        self._kill = kill
        self.idle: dict[str, list] = {}
        self.started = 0
        self.reused = 0

    def idle_on(self, node_id: str) -> int:
        return len(self.idle.get(node_id, []))

    def prestart(self, node_id: str, n: int) -> None:
        """Start blank actors on ``node_id`` until ``n`` are idle there, without waiting for them:
        they come up while the caller does something else (loads data)."""
        have = self.idle.setdefault(node_id, [])
        for _ in range(n - len(have)):
            have.append(self._start(node_id))
            self.started += 1

    def take(self, node_id: str, n: int) -> tuple[list, int]:
        """``n`` actors for ``node_id``: idle ones first, new blank ones for the rest.  Returns
        (actors, how many of them were reused); the reused ones come first."""
        if n < 0:
            raise SpinnrayError(f"take({node_id!r}, {n}): expected a number of actors >= 0")
        idle = self.idle.get(node_id, [])
        got = idle[:n]
        del idle[:n]
        reused = len(got)
        self.reused += reused
        for _ in range(n - reused):
            got.append(self._start(node_id))
            self.started += 1
        return got, reused

    def start_new(self, node_id: str):
        """One new blank actor on ``node_id`` (to replace one that died)."""
        self.started += 1
        return self._start(node_id)

    def give_back(self, node_id: str, actors: list) -> None:
        """Actors whose state was dropped (the backend closed cleanly), idle again."""
        self.idle.setdefault(node_id, []).extend(actors)

    def kill(self, actors) -> None:
        """End ``actors`` (a failed backend's); one already dead is skipped."""
        for a in actors:
            try:
                self._kill(a)
            except Exception:       # dead already, or its Ray session is gone: nothing to end
                pass

    def drain(self) -> int:
        """Kill every idle actor (frees their memory); returns how many."""
        n = 0
        for node_id in list(self.idle):
            actors = self.idle.pop(node_id)
            self.kill(actors)
            n += len(actors)
        return n
