"""The core-actor pool's bookkeeping (no Ray: actors are stand-ins), and the process memory a core
actor reports."""

import itertools
import os

import pytest

from spinnray.backends.base import parse_smaps_rollup, process_memory
from spinnray.backends.pool import ActorPool
from spinnray.backends.ray import StderrProgress
from spinnray.errors import SpinnrayError


def _pool():
    ids = itertools.count()
    started, killed = [], []

    def start(node_id):
        started.append((node_id, a := f"{node_id}#{next(ids)}"))
        return a

    return ActorPool(start, killed.append), started, killed


def test_take_reuses_idle_actors_of_the_same_node_before_starting_new_ones():
    pool, started, killed = _pool()
    first, reused = pool.take("A", 3)
    assert reused == 0 and len(set(first)) == 3 and pool.started == 3
    pool.give_back("A", first)
    again, reused = pool.take("A", 5)                    # 3 pooled + 2 new
    assert reused == 3 and again[:3] == first and len(set(again)) == 5
    assert pool.started == 5 and pool.reused == 3 and pool.idle_on("A") == 0
    other, reused = pool.take("B", 2)                    # another node never gets A's actors
    assert reused == 0 and all(a.startswith("B#") for a in other) and pool.started == 7
    assert killed == []


def test_failed_actors_are_killed_not_pooled_and_drain_kills_the_idle():
    pool, started, killed = _pool()
    actors, _ = pool.take("A", 2)
    pool.kill(actors)
    assert killed == actors and pool.idle_on("A") == 0
    assert pool.take("A", 1)[1] == 0                     # nothing to reuse: a new actor
    pool.prestart("A", 4)                                # 4 idle, started ahead
    assert pool.idle_on("A") == 4 and pool.started == 7
    pool.prestart("A", 2)                                # enough idle already: starts none
    assert pool.started == 7
    assert pool.drain() == 4 and pool.idle_on("A") == 0 and len(killed) == 6


def test_kill_skips_actors_that_are_gone_and_take_refuses_a_negative_count():
    def dead(actor):
        raise RuntimeError("actor died")
    pool = ActorPool(lambda node_id: object(), dead)
    pool.kill([object(), object()])                      # no error
    with pytest.raises(SpinnrayError, match="expected a number of actors >= 0"):
        pool.take("A", -1)


SMAPS = """55d4c6a00000-7ffd3a1f3000 ---p 00000000 00:00 0                          [rollup]
Rss:               91236 kB
Pss:               60210 kB
Shared_Clean:      36000 kB
Shared_Dirty:       4000 kB
Private_Clean:      1236 kB
Private_Dirty:     50000 kB
Swap:                  0 kB
"""


def test_smaps_rollup_gives_rss_and_the_private_pages_as_uss():
    assert parse_smaps_rollup(SMAPS) == {"rss_bytes": 91236 * 1024, "uss_bytes": (1236 + 50000) * 1024}
    assert parse_smaps_rollup("header\n") == {"rss_bytes": None, "uss_bytes": None}


def test_process_memory_falls_back_to_statm_then_to_nothing(tmp_path):
    (tmp_path / "statm").write_text("5000 1200 300 1 0 900 0\n")
    got = process_memory(tmp_path)
    assert got["rss_bytes"] == 1200 * os.sysconf("SC_PAGE_SIZE") and got["uss_bytes"] is None
    empty = tmp_path / "none"
    empty.mkdir()
    assert process_memory(empty)["rss_bytes"] is None
    me = process_memory()                              # this process (Linux: smaps_rollup)
    assert me["pid"] == os.getpid() and (me["rss_bytes"] is None or me["rss_bytes"] > 0)


def test_start_up_progress_is_quiet_for_quick_starts_and_counts_slow_ones(capsys):
    quick = StderrProgress()
    for done, t in ((0, 0.1), (4, 0.5), (8, 1.2)):
        quick(done, 8, t)
    assert capsys.readouterr().err == ""
    slow = StderrProgress()
    for done, t in ((0, 0.1), (10, 2.5), (20, 4.0), (37, 7.6), (152, 9.0)):
        slow(done, 152, t)
    assert capsys.readouterr().err.splitlines() == ["spinnray: cores up 10/152 (2 s)", "spinnray: cores up 37/152 (8 s)",
                                                     "spinnray: cores up 152/152 (9 s)"]
