"""A TCP proxy between a gRPC client and the server that can lose the next response on purpose.

It forwards bytes both ways and reads the server's HTTP/2 frame headers (9 bytes: length, type, flags,
stream id). When armed, the first HEADERS frame the server sends on a stream (a unary response starts
with it, and the server sends it only once the handler has returned, i.e. after the commit) is not
forwarded; instead:

- "reset": the connection is cut at once; the client sees UNAVAILABLE.
- "stall": nothing more reaches the client on that connection; its deadline expires (DEADLINE_EXCEEDED),
  and when it cancels the stream (RST_STREAM) the proxy cuts the connection so the retry reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEADERS, _RST_STREAM = 0x1, 0x3

Mode = Literal["reset", "stall"]


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes] | None:
    """(type, stream id, the whole frame's bytes), or None at the end of the stream."""
    try:
        header = await reader.readexactly(9)
        payload = await reader.readexactly(int.from_bytes(header[:3], "big"))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    stream_id = int.from_bytes(header[5:9], "big") & 0x7FFF_FFFF
    return header[3], stream_id, header + payload


class LossyProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._armed: Mode | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.responses_lost = 0
        self.connections = 0
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def lose_next_response(self, mode: Mode) -> None:
        self._armed = mode

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._upstream)
        except OSError:  # the server is down (being restarted): the client sees the connection cut
            client_writer.transport.abort()
            self._tasks.discard(task)
            return
        stalled = asyncio.Event()
        cut = asyncio.Event()

        async def upstream() -> None:
            # Client -> server: forward everything; once stalled, a RST_STREAM means the client gave up.
            try:
                server_writer.write(await client_reader.readexactly(len(_PREFACE)))
                while (frame := await _read_frame(client_reader)) is not None:
                    kind, stream_id, raw = frame
                    if stalled.is_set() and kind == _RST_STREAM and stream_id != 0:
                        return
                    server_writer.write(raw)
                    await server_writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                cut.set()

        async def downstream() -> None:
            try:
                while (frame := await _read_frame(server_reader)) is not None:
                    kind, stream_id, raw = frame
                    if self._armed is not None and kind == _HEADERS and stream_id != 0:
                        mode, self._armed = self._armed, None
                        self.responses_lost += 1
                        if mode == "reset":
                            return
                        stalled.set()
                    if stalled.is_set():
                        continue  # swallowed: the client never hears back on this connection
                    client_writer.write(raw)
                    await client_writer.drain()
            except ConnectionError:
                pass
            finally:
                cut.set()

        pumps = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await cut.wait()
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in (client_writer, server_writer):
                writer.transport.abort()  # a hard close (RST), as a dying load balancer would
            self._tasks.discard(task)
