"""DNS over TCP (RFC 7766): an inside resolver's answers, taken out of the reassembled stream
for passive DNS.

UDP answers are read packet by packet (agent.pipeline); an answer too large for UDP (many
records, DNSSEC, a resolver that prefers TCP) arrives on TCP port 53 as length-framed
messages that can span segments, so it needs the reassembled server direction.
`DnsTcpAnswers` is the consumer of a TCP/53 flow to an inside resolver while a register reads
host names. Answers of outside servers are never read: whoever runs one could name any
address after a partner (agent.pipeline `_session_for`).

Bounds: one incomplete message is held per flow (a frame is at most 65,535 bytes), and the
bytes held count against the reassembly memcap shared by all streams; when a flow holds bytes
while the memcap is exceeded, they are dropped (`limit.dns_tcp_memcap`) and the flow stops
feeding passive DNS. After a gap the framing is lost, so the flow stops too
(`dns.tcp_framing_lost`). A stopped flow is `done` and is no longer reassembled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from agent.reassembly import TOCLIENT, ReassemblyBudget
from geo.passive_dns import PassiveDns


class DnsTcpAnswers:
    """StreamConsumer: the server direction's DNS messages -> `wanted()`'s PassiveDns, at the
    time `clock()` gives (the flow table's clock: the time of the packet delivering them)."""

    __slots__ = ("wanted", "clock", "budget", "anomalies", "_held", "_lost")

    def __init__(self, wanted: Callable[[], PassiveDns | None], clock: Callable[[], int],
                 budget: ReassemblyBudget, anomalies: Counter[str]) -> None:
        self.wanted = wanted         # None while no register reads host names: then bytes are dropped
        self.clock = clock
        self.budget = budget
        self.anomalies = anomalies
        self._held = bytearray()     # the start of a message still incomplete
        self._lost = False           # framing unknown from here on: ignore the rest of the flow

    def data(self, direction: int, data: memoryview | bytes) -> None:
        if direction != TOCLIENT or self._lost:
            return
        passive_dns = self.wanted()
        if passive_dns is None:
            # Nothing reads the answers; skipping bytes loses the framing, which only matters
            # if a reload starts to need names while this connection is open.
            self._stop(None)
            return
        held = self._held
        before = len(held)
        held += data
        budget = self.budget
        budget.used += len(held) - before
        if budget.used > budget.peak:
            budget.peak = budget.used
        consumed = passive_dns.observe(held, self.clock(), tcp=True)
        if consumed:
            del held[:consumed]
            budget.used -= consumed
        if held and budget.used > budget.memcap:
            self._stop("limit.dns_tcp_memcap")

    @property
    def done(self) -> bool:
        return self._lost

    def gap(self, direction: int, nbytes: int) -> None:
        if direction == TOCLIENT and not self._lost:
            self._stop("dns.tcp_framing_lost")

    def end(self, direction: int) -> None:
        if direction == TOCLIENT:
            self._stop(None)

    def _stop(self, anomaly: str | None) -> None:
        if anomaly is not None:
            self.anomalies[anomaly] += 1
        self._lost = True
        self.budget.used -= len(self._held)
        self._held = bytearray()
