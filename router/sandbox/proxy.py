"""A TCP fault proxy for any protocol (HTTP, SMTP, TLS inside either), in the caller's
event loop: what toxiproxy would do, for the failures that matter to a router.

Modes, switchable at any time by assigning ``proxy.mode``:

- ``pass``: forward bytes both ways.
- ``latency``: forward, holding each chunk ``latency`` seconds in each direction.
- ``blackhole``: accept and read, never forward or answer.
- ``reset``: accept, then abort with a TCP RST.
- ``down``: not listening, so connections are refused; back on the same port later.
- ``connect_timeout``: connects hang until the client's connect timeout. The port has
  a listening socket with a backlog of 0 that is never accepted from, its queue filled
  by the proxy itself, so the kernel drops further SYNs.

Switching to ``reset``, ``down`` or ``connect_timeout`` also resets open connections;
switching to ``blackhole`` swallows what they send from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from typing import Literal, get_args

from router.sandbox._net import arm_reset, close_with_reset, listen_socket
from router.sandbox._service import Service

ProxyMode = Literal["pass", "latency", "blackhole", "reset", "down", "connect_timeout"]
PROXY_MODES: frozenset[str] = frozenset(get_args(ProxyMode))
_ACCEPTING = frozenset({"pass", "latency", "blackhole", "reset"})
_RESETTING = frozenset({"reset", "down", "connect_timeout"})
_CHUNK = 64 * 1024
log = logging.getLogger("router.sandbox")


class TcpProxy(Service):
    """``async with TcpProxy("127.0.0.1", peer.port) as proxy:`` then point the client
    at ``proxy.port``. ``connections`` counts accepted connections by mode."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        mode: ProxyMode = "pass",
        latency: float = 0.1,
    ) -> None:
        if mode not in PROXY_MODES:
            raise ValueError(f"unknown proxy mode {mode!r}")
        self.target = (target_host, target_port)
        self.host = host
        self.latency = latency
        """Seconds each chunk waits per direction in ``latency`` mode."""
        self.connections: Counter[str] = Counter()
        self._mode: ProxyMode = mode
        self._port = port
        self._started = False
        self._listener: socket.socket | None = None
        self._fillers: list[socket.socket] = []
        self._accepting: asyncio.Task[None] | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.WriteTransport] = set()

    @property
    def port(self) -> int:
        if not self._started:
            raise RuntimeError("the proxy has not been started")
        return self._port

    @property
    def mode(self) -> ProxyMode:
        return self._mode

    @mode.setter
    def mode(self, mode: ProxyMode) -> None:
        if mode not in PROXY_MODES:
            raise ValueError(f"unknown proxy mode {mode!r}")
        previous, self._mode = self._mode, mode
        if not self._started or previous == mode:
            return
        if mode in _RESETTING:
            self._reset_links()
        if mode not in _ACCEPTING or previous not in _ACCEPTING:
            self._unlisten()
            self._listen()

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("the proxy is already started")
        self._listen(initial=True)
        self._started = True

    async def close(self) -> None:
        self._started = False
        self._unlisten()
        self._reset_links()
        tasks = [t for t in (self._accepting, *self._links) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # Listening --------------------------------------------------------------------

    def _listen(self, *, initial: bool = False) -> None:
        if self._mode == "down":
            if initial:  # reserve a port number to come back on
                probe = listen_socket(self.host, self._port)
                self._port = probe.getsockname()[1]
                probe.close()
            return
        backlog = 0 if self._mode == "connect_timeout" else 128
        sock = listen_socket(self.host, self._port, backlog)
        self._port = sock.getsockname()[1]
        self._listener = sock
        if self._mode == "connect_timeout":
            self._fill_backlog(sock)
        else:
            loop = asyncio.get_running_loop()
            self._accepting = loop.create_task(self._accept_loop(sock))

    def _fill_backlog(self, sock: socket.socket) -> None:
        # Linux queues backlog + 1 completed handshakes; two of our own connects fill
        # it, and SYNs arriving on a full queue are dropped (the client retries them
        # until its connect timeout) rather than refused.
        for _ in range(2):
            filler = socket.socket(sock.family, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(sock.getsockname())
            self._fillers.append(filler)

    def _unlisten(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            self._accepting = None
        for filler in self._fillers:
            filler.close()
        self._fillers.clear()
        if self._listener is not None:
            # The cancelled sock_accept unregisters its reader only on a later loop
            # iteration; closing first would let a new socket reuse the fd under it.
            with contextlib.suppress(RuntimeError):  # no running loop: nothing registered
                asyncio.get_running_loop().remove_reader(self._listener)
            self._listener.close()
            self._listener = None

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:  # out of file descriptors, say: keep serving
                log.warning("sandbox proxy accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            mode = self._mode
            self.connections[mode] += 1
            if mode == "reset":
                close_with_reset(conn)
                continue
            task = loop.create_task(self._link(conn))
            self._links.add(task)
            task.add_done_callback(self._links.discard)

    # Relaying ---------------------------------------------------------------------

    def _reset_links(self) -> None:
        for transport in list(self._transports):
            arm_reset(transport.get_extra_info("socket"))
            transport.abort()
        self._transports.clear()

    async def _link(self, conn: socket.socket) -> None:
        try:
            client_reader, client_writer = await asyncio.open_connection(sock=conn)
        except OSError:
            conn.close()
            return
        self._transports.add(client_writer.transport)
        writers = [client_writer]
        try:
            if self._mode in _RESETTING:  # switched while this link was being set up
                raise ConnectionResetError
            if self._mode == "blackhole":
                while await client_reader.read(_CHUNK):
                    pass
                return
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            except OSError:
                # The target is down: the client sees its connection reset.
                arm_reset(client_writer.get_extra_info("socket"))
                client_writer.transport.abort()
                return
            writers.append(upstream_writer)
            self._transports.add(upstream_writer.transport)
            if self._mode in _RESETTING:
                raise ConnectionResetError
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(client_reader, upstream_writer))
                group.create_task(self._pump(upstream_reader, client_writer))
        except* OSError:  # one side reset or went away: end both
            for writer in writers:
                arm_reset(writer.get_extra_info("socket"))
                writer.transport.abort()
        finally:
            for writer in writers:
                self._transports.discard(writer.transport)
                writer.close()
            for writer in writers:
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(_CHUNK):
            if self._mode == "latency":
                await asyncio.sleep(self.latency)
            if self._mode == "blackhole":
                continue
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
