"""The transport cases that take a second or more (tests/unit/backends/test_transport.py has the rest):
a core that never sends makes the others fail within the timeout and the router name it; a flood of
200 silent strangers does not keep the cores out."""

import time

from spinnray.backends.transport import CoreLink, RouterServer
from spinnray.errors import TransportError

from unit.backends import test_transport as transport_tests
from unit.backends.test_transport import (
    HOST,
    SECRET,
    TIMEOUT,
    cross,
    expected_rounds,
    frames_of,
    run_cores,
    run_rounds,
    silent,
    wait_for,
)

server_factory = transport_tests.server_factory          # the fixture of the tests below


def test_late_core_makes_waiting_cores_fail_and_router_names_it(server_factory):
    cores = [0, 1, 2]
    server, links = server_factory(cross, cores)
    late_round = 3

    def body(link, rnd):
        if link.core_id == 2 and rnd == late_round:
            time.sleep(2 * TIMEOUT)          # never sends this round (until everyone gave up)
            raise RuntimeError("late core stops")
        link.exchange(frames_of(link.core_id, rnd), step=rnd)

    t0 = time.monotonic()
    errors = run_cores(links, body, 10)
    assert time.monotonic() - t0 < 2 * TIMEOUT + 1.5
    by_core = dict(errors)
    assert isinstance(by_core.pop(2), RuntimeError)
    assert sorted(by_core) == [0, 1]
    for c, e in by_core.items():
        assert isinstance(e, TransportError)
        msg = str(e)
        assert f"core {c}" in msg and f"round {late_round}" in msg and "phase receive" in msg, msg
    assert server.error is not None
    assert "core 2" in server.error and f"round {late_round}" in server.error and "collect" in server.error
    assert server.rounds == late_round


def test_a_flood_of_silent_strangers_does_not_keep_the_cores_out():
    cores = [0, 1]
    server = RouterServer(cross, cores, HOST, 10.0, secret=SECRET)
    flood = [silent(server.address) for _ in range(200)]
    try:
        time.sleep(0.2)
        links = [CoreLink(c, server.address, 10.0, secret=SECRET) for c in cores]
        assert run_rounds(links, 5) == expected_rounds(cores, 5)
        wait_for(lambda: server.rejected_connections == 200)
        assert server.rejected_connections == 200
        assert any("too many connections waiting" in r for r in server.rejections)
        for link in links:
            link.close()
    finally:
        for s in flood:
            s.close()
        server.close()
