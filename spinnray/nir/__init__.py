"""NIR in and out: a spinnray network, or the network a training run trained, as a NIR graph
file (HDF5), and a NIR graph -- from snnTorch, Norse or spinnray -- as a spinnray network.

::

    import spinnray.nir
    spinnray.nir.export(net, "model.nir")                        # a Network: its own time constants
    spinnray.nir.export("outputs/DATE/TIME", "model.nir")        # a run: its newest checkpoint's weights
    spinnray.nir.export(net, "for_snntorch.nir", convention="snntorch")   # read by snnTorch at dt 1e-4 s
    net = spinnray.nir.load("model.nir")                          # a spinnray-written graph: exactly back
    net = spinnray.nir.load("snn.nir", convention="snntorch")     # snnTorch's reading, dt 1e-4 s

``python -m spinnray.nir export RUN_DIR out.nir`` and ``python -m spinnray.nir show FILE`` do the same
from the shell.  The conventions (how a graph's continuous-time parameters become steps), the time
offsets and what is refused are in :mod:`spinnray.model.nirgraph` and ``docs/nir.md``.  A run takes
its network from a file with ``network=nir network.path=FILE``.

This package sits above :mod:`spinnray.experiments` (a run directory's network is rebuilt there);
the conversion itself is in the model layer, where the ``nir`` network builder uses it.
"""

from __future__ import annotations

from pathlib import Path

from spinnray.experiments.trained import trained_network
from spinnray.model.network import Network
from spinnray.model.nirgraph import CONVENTIONS, Imported, from_nir, read_nir, to_nir, write_nir

__all__ = ["export", "load", "read", "CONVENTIONS", "Imported", "to_nir", "from_nir"]


def export(network_or_run_dir, path, *, dt: float | None = None, convention: str = "spinnray",
           time_unit: str | None = None, checkpoint=None):
    """Write ``network_or_run_dir`` (a :class:`Network`, or a training run's output directory:
    its network with the weights of ``checkpoint``, default its newest) to the NIR file ``path``.

    ``convention`` says who will read the file and ``dt`` at which step, in ``time_unit`` (None:
    the convention's: ms for spinnray and nir, s for snntorch and norse); see
    :func:`spinnray.model.nirgraph.to_nir`.  Returns the graph written."""
    net = network_or_run_dir if isinstance(network_or_run_dir, Network) else \
        trained_network(Path(network_or_run_dir), checkpoint)
    graph = to_nir(net, convention=convention, dt=dt, time_unit=time_unit)
    write_nir(graph, path)
    return graph


def read(path, **options) -> Imported:
    """The network of the NIR file ``path`` with its offsets and node names (options: those of
    :func:`spinnray.model.nirgraph.from_nir`)."""
    return from_nir(read_nir(path), **options)


def load(path, *, dt: float | None = None, convention: str = "spinnray", time_unit: str | None = None,
         reset: str | None = None, input_kind: str | None = None, unit_threshold: bool = False) -> Network:
    """The spinnray :class:`Network` of the NIR file ``path`` read under ``convention`` at step
    ``dt`` (in ``time_unit``); :func:`read` also gives each population's time offset."""
    return read(path, dt=dt, convention=convention, time_unit=time_unit, reset=reset, input_kind=input_kind,
                unit_threshold=unit_threshold).network
