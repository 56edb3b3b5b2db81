"""DNS over TCP for passive DNS: framing across segments, the packet time, and the bounds (memcap,
holes, a register that does not read names)."""

from __future__ import annotations

from collections import Counter

from agent.apps.dns import DnsTcpAnswers
from agent.reassembly import TOCLIENT, TOSERVER, ReassemblyBudget
from geo.passive_dns import PassiveDns
from tests.geo.test_passive_dns import S, T0, a, response, rr, wire_name


def framed(*messages: bytes) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


def answer(name: str, address: str, ttl: int = 600) -> bytes:
    return response(name, [rr(wire_name(name), 1, ttl, a(address))])


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def consumer(memcap: int = 1 << 20, wanted: bool = True):
    pdns, anomalies, budget, clock = PassiveDns(), Counter(), ReassemblyBudget(memcap), Clock()
    answers = DnsTcpAnswers(lambda: pdns if wanted else None, clock, budget, anomalies)
    return answers, pdns, anomalies, budget, clock


def test_messages_split_anywhere_are_read_at_the_time_they_complete():
    stream = framed(answer("a.example", "192.0.2.1"), answer("b.example", "192.0.2.2", ttl=400))
    for cut in range(1, len(stream)):
        answers, pdns, anomalies, budget, clock = consumer()
        answers.data(TOSERVER, framed(answer("c.example", "192.0.2.3")))    # the client's bytes: not answers
        answers.data(TOCLIENT, stream[:cut])
        clock.now = T0 + 30 * S
        answers.data(TOCLIENT, stream[cut:])
        # Its TTL runs from when its last byte arrived, not from the first segment's time.
        assert pdns.names(a("192.0.2.2"), T0 + 429 * S) == ("b.example",)
        assert pdns.names(a("192.0.2.2"), T0 + 431 * S) == ()
        assert pdns.names(a("192.0.2.1"), T0 + 31 * S) == ("a.example",)
        assert pdns.names(a("192.0.2.3"), T0) == ()
        assert budget.used == 0 and not anomalies


def test_held_bytes_count_against_the_memcap_and_are_released():
    answers, pdns, anomalies, budget, _ = consumer(memcap=1000)
    answers.data(TOCLIENT, b"\xff\xff" + bytes(600))          # a 65,535-byte frame begins
    assert budget.used == 602 and budget.peak == 602
    answers.end(TOCLIENT)
    assert budget.used == 0

    answers, pdns, anomalies, budget, _ = consumer(memcap=1000)
    answers.data(TOCLIENT, b"\xff\xff" + bytes(600))
    answers.data(TOCLIENT, bytes(600))                         # over the memcap: dropped, and the flow stops
    assert anomalies == Counter({"limit.dns_tcp_memcap": 1}) and budget.used == 0
    answers.data(TOCLIENT, framed(answer("a.example", "192.0.2.1")))
    assert budget.used == 0 and pdns.names(a("192.0.2.1"), T0) == ()


def test_after_a_hole_or_while_unread_nothing_more_is_taken():
    message = framed(answer("a.example", "192.0.2.1"))
    answers, pdns, anomalies, budget, _ = consumer()
    answers.data(TOCLIENT, message[:5])
    answers.gap(TOCLIENT, 100)
    answers.data(TOCLIENT, message)
    assert anomalies == Counter({"dns.tcp_framing_lost": 1}) and budget.used == 0
    assert pdns.names(a("192.0.2.1"), T0) == ()

    answers, pdns, anomalies, budget, _ = consumer(wanted=False)
    answers.data(TOCLIENT, message)
    assert budget.used == 0 and len(pdns) == 0 and not anomalies


def test_hostile_streams_never_raise_and_give_every_held_byte_back():
    """Random framing (lengths that lie, garbage messages, real answers between them) cut at
    random places, with holes and ends at random points: no exception, and the shared budget is
    back to zero once every flow has ended."""
    import random

    rng = random.Random(3)
    budget, anomalies, pdns = ReassemblyBudget(200_000), Counter(), PassiveDns()
    for _ in range(300):
        answers = DnsTcpAnswers(lambda: pdns, Clock(), budget, anomalies)
        parts = []
        for _ in range(rng.randrange(1, 6)):
            kind = rng.random()
            if kind < 0.4:
                parts.append(framed(answer(f"h{rng.randrange(99)}.example", f"192.0.2.{rng.randrange(1, 255)}")))
            elif kind < 0.7:
                parts.append(rng.randrange(65536).to_bytes(2, "big") + rng.randbytes(rng.randrange(300)))
            else:
                parts.append(framed(rng.randbytes(rng.randrange(1, 200))))
        stream = b"".join(parts)
        at = 0
        while at < len(stream):
            step = rng.randrange(1, 400)
            if rng.random() < 0.05:
                answers.gap(TOCLIENT, step)
            else:
                answers.data(TOCLIENT, memoryview(stream)[at:at + step])
            at += step
        answers.end(TOCLIENT)
    assert budget.used == 0 and budget.peak <= 200_000 + 400
    assert len(pdns) > 0 and anomalies["dns.tcp_framing_lost"] > 0
