"""A sandboxed command's one way to its database: a unix socket the gateway relays to TCP.

A command in a network namespace of its own (``network: none``) cannot reach the database's
TCP address, and binding PostgreSQL's own unix socket into the sandbox would hand it whatever
the server grants local connections (the embedded stack trusts them). Instead the gateway
listens on a socket of its own, in a directory only the command's user may enter, and forwards
each connection to the database connection's ``host:port``, where the server checks the step's
dynamic user and password as for any TCP client. The sandbox reaches that one address and
nothing else; ``libpq`` never uses TLS on a unix socket, so the leg from the gateway to a
remote database is plain TCP (docs/shell.md: use ``network: host`` where that matters).

One relay per step and connection, started with the step's first command and closed with the
step's context; at most ``MAX_CONNECTIONS`` relayed connections at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile

MAX_CONNECTIONS = 16
_CHUNK = 65536


class DatabaseRelay:
    """A unix socket owned by ``uid``; each connection to it is piped to ``host:port``."""

    def __init__(self, host: str, port: int, uid: int, gid: int) -> None:
        self.host, self.port = host, port
        self._uid, self._gid = uid, gid
        self._dir: str | None = None
        self._server: asyncio.base_events.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def socket(self) -> str:
        """The socket's path on the host (started at the first call)."""
        if self._server is None or self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="hoop-db-")
            os.chown(self._dir, self._uid, self._gid)  # 0700: the command's user only
            path = os.path.join(self._dir, f".s.PGSQL.{self.port}")
            self._server = await asyncio.start_unix_server(self._accept, path)
            os.chmod(path, 0o600)
            os.chown(path, self._uid, self._gid)
        return os.path.join(self._dir, f".s.PGSQL.{self.port}")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._pipes) >= MAX_CONNECTIONS:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                return  # the client sees its connection closed, as with a refused TCP connect
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                _close(up_writer)
        finally:
            _close(writer)
            self._pipes.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(_CHUNK):
            sink.write(chunk)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if sink.can_write_eof():
                sink.write_eof()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()
