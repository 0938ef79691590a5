"""The local-stack helpers: ports handed to services that bind them later."""

from __future__ import annotations

import socket

from tools.processes import _ephemeral_low, free_port


def test_free_ports_are_distinct_bindable_and_out_of_reach_of_bind_zero() -> None:
    """A port reserved for the api-server must not be taken meanwhile by another service's `bind(0)`."""
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(port < _ephemeral_low() for port in ports)
    taken_by_bind_zero = []
    for _ in range(50):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        taken_by_bind_zero.append(sock)
    try:
        assert not {s.getsockname()[1] for s in taken_by_bind_zero} & set(ports)
    finally:
        for sock in taken_by_bind_zero:
            sock.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[0]))
