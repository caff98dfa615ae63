"""The SIP kit tells a phone is listening from the kernel's table of UDP sockets, without
binding the port itself (a probe that bound it could take it from the starting SIPp)."""

from __future__ import annotations

import socket

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
