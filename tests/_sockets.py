"""Ports for servers a test starts itself, safe when tests run in parallel."""

from __future__ import annotations

import socket


def bound_socket() -> socket.socket:
    """A socket on a port the kernel picked, held from now on, for an app that must
    know its own URL before it starts: a port merely picked (bind, close, start
    later) could be taken meanwhile by a test running in parallel. Hand it to
    ``web.SockSite`` or ``uvicorn.Server.serve(sockets=...)``; close it after."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock
