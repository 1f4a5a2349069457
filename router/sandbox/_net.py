"""Socket helpers shared by the peers and the proxy."""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any


def listen_socket(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A non-blocking listening TCP socket; SO_REUSEADDR lets a peer listen again on
    the same port right after it stopped (connections in TIME_WAIT would block it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def arm_reset(sock: Any) -> None:
    """Make closing ``sock`` send a TCP RST instead of an orderly FIN.

    ``sock`` is a socket or the ``TransportSocket`` an asyncio transport exposes.
    """
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed: nothing left to reset
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def close_with_reset(sock: socket.socket) -> None:
    arm_reset(sock)
    sock.close()
