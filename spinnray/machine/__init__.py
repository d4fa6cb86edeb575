"""How a SpiNNaker2 chip behaves, without Ray: the wire format (:mod:`~spinnray.machine.packet`),
a PE's forward phases and memory (:mod:`~spinnray.machine.core`), the key/mask multicast router
(:mod:`~spinnray.machine.router`), the schedule of a run's exchange rounds that every backend
carries (:mod:`~spinnray.machine.schedule`), the canonical synaptic summation
(:mod:`~spinnray.machine.synapses`), low-precision and PCM weight storage
(:mod:`~spinnray.machine.quant`) and the counters (:mod:`~spinnray.machine.counters`).
May import: ``errors``, ``checks``, ``config``, ``model``."""
