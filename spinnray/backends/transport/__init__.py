"""Out-of-band data path for the Ray backend: TCP streams through the routers.

Ray is used to place and start the actors; the per-round traffic does not
pay a Ray call (~0.7 ms here).  Each core actor keeps one TCP connection to
its router actor (one router per chip by default, as SpiNNaker2 has, or one
per node; see :mod:`spinnray.machine.router`), where a thread runs the rounds:

    core c:  send envelope(round r, frames of c)  ->  c's router
    router:  once every local core's envelope of round r is in, route them
    router:  (several routers) send envelope(round r, frames for router m) to
             every other router m, even if empty, and read theirs
    router:  send envelope(round r, frames for c)  ->  core c

so every round is in lockstep over the whole machine: a router delivers
round r only when all its cores and all other routers have sent round r.
The routers of the chips of one node (several router actors pinned to one
Ray node) talk over the same authenticated router-to-router streams as
routers on different nodes: one code path, whatever the distance.
Between two routers there are two streams, one per direction, used without
blocking: a router sends and reads its peers' envelopes at the same time, so
two routers sending big envelopes to each other never wait on each other.

Every stream is authenticated before anything else is read from it.  Each run
(each ``RayBackend``) draws a random secret that reaches its actors only as
Ray call arguments; a core or router proves it knows the secret with an HMAC
challenge-response, and the router proves it back (mutual), so a stranger on
the network can neither take a core's slot, nor stall or bloat a router, nor
pose as a router::

    router -> client  challenge '<4s32s'      b"SPNC", router nonce Nr (32 random bytes)
    client -> router  hello     '<4sII32s32s' b"SPNH", role, id, client nonce Nc,
                                              HMAC-SHA256(secret, b"spinnray/1 client" Nr role id router)
    router -> client  answer    '<4s32s'      b"SPNA",
                                              HMAC-SHA256(secret, b"spinnray/1 router" Nr Nc role id router)

``role`` is ``ROLE_CORE`` (``id`` the core id) or ``ROLE_ROUTER`` (``id`` the
router index), ``router`` the index of the router connected to, and
``role id router`` packed ``'<III'``.  The router reads exactly the 76 bytes
of a hello, without blocking on any one connection (a selector over all of
them), each within ``min(AUTH_TIMEOUT_S, timeout_s)`` of its accept; a
connection that fails (silent, slow, closed, malformed, wrong MAC) is dropped
and counted (``rejected_connections``, with a short reason), and never fails
or changes the run.  The answer is sent only to an authenticated client: a
core that gets none was refused.  Once every local core and every other
router is in, the listener closes, so no later connection is possible; a
router that fails closes it at once.  A core the router dropped during the
handshake (too slow, say) connects again, up to ``_CORE_ATTEMPTS`` times.

What this protects: who may open a stream (authentication of both ends, bound
to this run, this router and this role and id; no replay, the nonces are
fresh).  What it does not: the frames that follow are neither encrypted nor
MACed, so an attacker on the path who can read or hijack an established TCP
connection is not stopped (Ray's own token guards the control plane that
carries the secret; the cluster network is assumed private otherwise).

An *envelope* frames the packets of one round on the stream::

    header  '<4sIII'  magic b"SPNR", round, sender id, frame count
    frames  '<I' length, then that many bytes (a packet of spinnray.machine.packet)

Every declared size is checked before anything is allocated: a frame is at
most ``MAX_FRAME_BYTES`` (the packet layer's bound), an envelope at most
``MAX_FRAMES`` frames and ``MAX_ENVELOPE_BYTES``.
Rounds are numbered per connection from 0 and never reordered, so results
do not depend on timing.  A peer (core or router) that is late by more than
``timeout_s`` within a round, closes its stream, or sends a malformed
envelope turns into a :class:`TransportError` naming the core or router, the
round (and step, see :meth:`RouterServer.begin_run`) and the phase; the
router that sees it closes all its streams, so the cores and routers waiting
on it fail at once instead of after their own timeouts.  No Ray import here:
this package is tested with plain threads.  Modules: ``auth`` (the handshake), ``envelope``
(framing), ``link`` (the core's end), ``server`` (the router's end).
"""

from spinnray.backends.transport.auth import AUTH_TIMEOUT_S, ROLE_CORE, ROLE_ROUTER
from spinnray.backends.transport.envelope import (
    MAX_ENVELOPE_BYTES,
    MAX_FRAMES,
    encode_envelope,
    read_envelope,
)
from spinnray.backends.transport.link import CoreLink, core_wait_s
from spinnray.backends.transport.server import RouterServer
from spinnray.machine.packet import MAX_FRAME_BYTES

__all__ = ['core_wait_s', 'CoreLink', 'RouterServer', 'encode_envelope', 'read_envelope', 'ROLE_CORE', 'ROLE_ROUTER', 'AUTH_TIMEOUT_S', 'MAX_FRAME_BYTES', 'MAX_ENVELOPE_BYTES', 'MAX_FRAMES']
