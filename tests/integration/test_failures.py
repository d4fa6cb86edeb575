"""Nothing silent on Ray: a core that raises stops the run with its own error."""

import numpy as np
import pytest

from spinnray.backends import RayBackend
from spinnray.errors import SpinnrayError
from spinnray.simulator import Simulator

from unit.test_simulator import small_net, spikes


@pytest.mark.ray
def test_ray_core_failure_stops_the_run_with_its_own_error(ray_session):
    """A core that raises makes the run fail with that error, not a round timeout."""
    sim = Simulator(small_net(), backend="ray", timeout_s=300.0)
    try:
        source_core = sim.mapping.cores_of("inp")[0].core_id
        bad = {source_core: np.zeros((30, 1, 3), bool)}       # wrong width for the slice
        with pytest.raises(SpinnrayError, match=r"input spikes of shape \(30, 1, 3\)"):
            sim.backend.run(30, 1, {c: 1 for c in sim.backend.core_ids}, bad, ("spikes",))
        report = ray_session.get(sim.backend.router.report.remote())
        assert "aborted" in report["error"]
        with pytest.raises(SpinnrayError, match="failed earlier"):
            sim.run(30, spikes())
    finally:
        sim.close()
    assert isinstance(sim.backend, RayBackend)
