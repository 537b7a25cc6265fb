"""Ports handed to child processes: outside the ephemeral range, never the same number twice."""

from __future__ import annotations

from agentmesh.kit.net import ephemeral_range, free_port, free_port_with_partner


def test_picked_ports_stay_outside_the_ephemeral_range() -> None:
    # Inside it, any outgoing connection (or port-0 listener) on the machine may take the port
    # between the pick and the child's bind: the chaos harness's port race.
    low, high = ephemeral_range()
    picked = [free_port() for _ in range(50)] + [free_port_with_partner(1000) for _ in range(50)]
    assert not [p for p in picked if low <= p <= high], (low, high)
    assert not [p + 1000 for p in picked[50:] if low <= p + 1000 <= high]


def test_no_port_or_partner_is_handed_out_twice() -> None:
    # A mesh plans a dozen services before any binds: p + 1000 of one must never be another's p.
    seen: list[int] = []
    for _ in range(300):
        port = free_port_with_partner(1000)
        seen += [port, port + 1000]
    seen += [free_port() for _ in range(100)]
    assert len(seen) == len(set(seen))
