"""The SIP kit tells a phone is listening from the kernel's table of UDP sockets, without
binding the port itself (a probe that bound it could take it from the starting SIPp)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from sipkit import kit
from sipkit.kit import free_port, udp_bound


def test_a_bound_udp_port_is_seen_and_an_unbound_one_is_not() -> None:
    ip = "127.0.0.14"  # not 127.0.0.1: the table's address must be read, not assumed
    port = free_port(ip)
    assert not udp_bound(ip, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind((ip, port))
        assert udp_bound(ip, port)
        assert not udp_bound("127.0.0.15", port)  # the same port on another address
        assert not udp_bound(ip, port + 1)
    assert not udp_bound(ip, port)


@pytest.fixture
def taken_control_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The first control port the kit picks is one another process holds (the race a
    probe-then-release pick cannot avoid); the ports after it are free."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        taken = other.getsockname()[1]
        picks: list[int] = []

        def pick(ip: str, kind: int = socket.SOCK_DGRAM, even: bool = False) -> int:
            port = taken if ip == "127.0.0.1" and not picks else free_port(ip, kind, even)
            if ip == "127.0.0.1":
                picks.append(port)
            return port

        monkeypatch.setattr(kit, "free_port", pick)
        yield taken
        assert picks[0] == taken and len(picks) >= 2  # the taken one was tried first


def test_an_agent_phone_whose_control_port_was_taken_starts_on_another(
        taken_control_port: int) -> None:
    phone = kit.AgentPhone("7001", "127.0.0.16", port=free_port("127.0.0.16"))
    with phone:
        assert phone.proc is not None and phone.proc.poll() is None
        assert phone.control_port != taken_control_port
    # stopped through its control port, not killed: SIPp exits 0 on "Q" with no calls
    assert phone.proc is not None and phone.proc.returncode == 0


def test_a_registration_whose_control_port_was_taken_is_sent_all_the_same(
        taken_control_port: int) -> None:
    nobody = free_port("127.0.0.1")  # no registrar listens: the REGISTER goes unanswered
    assert kit.register("127.0.0.1", nobody, "7002", "secret", "127.0.0.17") == [None]
