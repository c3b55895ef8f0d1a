"""Free loopback TCP ports for the embedded stack.

A port is free when we can bind it on 127.0.0.1 right now. Nothing reserves it afterwards, so
there is a small window in which another process may take it; for a throwaway dev stack that
is acceptable, and the callers fail loudly (with the process log) when a bind loses the race.
"""

from __future__ import annotations

import socket
from collections.abc import Collection

LOOPBACK = "127.0.0.1"

# Enough for a busy CI host; the kernel hands out a fresh ephemeral port on every attempt.
_MAX_ATTEMPTS = 200


def is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether ``port`` can be bound on ``host`` at this moment."""
    if not 0 < port < 65536:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port(*, exclude: Collection[int] = (), host: str = LOOPBACK) -> int:
    """A free loopback port not in ``exclude``.

    ``exclude`` lets a caller pick several ports before any of them is bound: the kernel may
    hand the same ephemeral port out twice once its probe socket is closed.
    """
    for _ in range(_MAX_ATTEMPTS):
        port = _ephemeral(host)
        if port not in exclude:
            return port
    raise OSError(f"no free port on {host} after {_MAX_ATTEMPTS} attempts")


def free_port_pair(*, exclude: Collection[int] = (), host: str = LOOPBACK) -> int:
    """A port P such that P and P+1 are both free (and neither is in ``exclude``).

    ``bao server -dev`` listens on P for the API and on P+1 for its cluster listener.
    """
    for _ in range(_MAX_ATTEMPTS):
        port = _ephemeral(host)
        if port in exclude or port + 1 in exclude:
            continue
        if is_free(port + 1, host):
            return port
    raise OSError(f"no free pair of adjacent ports on {host} after {_MAX_ATTEMPTS} attempts")
