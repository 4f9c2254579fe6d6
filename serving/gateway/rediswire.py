"""One pipelined Redis connection for the request path's two scripts (admission and settlement).

redis-py's asyncio client checks a connection out of its pool, packs every argument in Python and
waits for the reply on that connection alone: about 45 µs of client CPU a call under load, the
largest single cost of a gateway request. Redis answers the commands of one connection in the
order it received them, so this writes each command the moment it is issued and matches replies
to callers first in, first out: concurrent requests share one socket and one read per batch of
replies (hiredis parses them), at ~10 µs a call. Arguments arrive as pre-encoded bytes; the
admission plan keeps the constant part of its command packed (see `pack_head`).

Only what the hot path needs: EVALSHA with a fallback to EVAL when the server lost its script
cache, AUTH and SELECT from the URL, TCP, TLS or a unix socket. Everything else (usage queue,
pub/sub, tests) keeps using redis-py. A lost or stalled connection fails every caller waiting on
it with `RedisWireError` and the next call reconnects; callers bound each call with a timeout.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

CONNECT_TIMEOUT_S = 1.0


class RedisWireError(ConnectionError):
    """Redis could not be reached, dropped the connection, or answered with an error."""


def pack_head(*parts: bytes | str | int, total: int) -> bytes:
    """The RESP array header for `total` arguments followed by the first `parts` of them."""
    return b"*%d\r\n" % total + pack_args(parts)


def pack_args(parts: tuple[bytes | str | int, ...] | list[bytes | str | int]) -> bytes:
    out = []
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                waiter = self.waiters.popleft()
                if not waiter.done():  # a caller that timed out no longer waits; its reply is skipped
                    waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:
            self.fail(RedisWireError(f"unreadable reply from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisWireError(f"Redis closed the connection: {exc or 'EOF'}"))

    def fail(self, error: RedisWireError) -> None:
        self.closed = True
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise RedisWireError("the Redis connection is closed")
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self.waiters.append(waiter)
        # Commands issued in one turn of the event loop go out in one write (a write is a system
        # call, ~30 µs under load): the flush runs right after the callbacks of this turn.
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(packed)
        return waiter

    def _flush(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        if self.transport is not None and not self.closed:
            self.transport.write(data)


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """An EVALSHA with its keys packed once; each call adds only its own arguments."""

    sha: bytes
    nargs: int
    keys_blob: bytes  # numkeys and the keys, packed
    head: bytes  # "*<total> EVALSHA <sha>" + keys_blob


class RedisWire:
    """A lazily (re)connected pipelined connection; one per process and event loop."""

    def __init__(self, url: str) -> None:
        self.options = parse_url(url)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._scripts: dict[bytes, bytes] = {}  # sha → source, for EVAL when the cache was flushed

    def script(self, source: str) -> bytes:
        """Registers a Lua script; returns its sha1 (hex, as bytes) for `prepare`."""
        sha = hashlib.sha1(source.encode()).hexdigest().encode()  # noqa: S324 (Redis names scripts by sha1)
        self._scripts[sha] = source.encode()
        return sha

    @staticmethod
    def prepare(sha: bytes, keys: list[str] | tuple[str, ...], nargs: int) -> ScriptCall:
        keys_blob = pack_args([len(keys), *keys])
        head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (3 + len(keys) + nargs, sha) + keys_blob
        return ScriptCall(sha=sha, nargs=nargs, keys_blob=keys_blob, head=head)

    async def evalsha(self, call: ScriptCall, *args: bytes | str | int) -> Any:
        """Runs the script with `args` (exactly `call.nargs` of them); a Redis error reply raises."""
        tail = pack_args(args)
        reply = await self.call(call.head + tail)
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            # A restarted or flushed Redis forgot the script: EVAL sends the source and caches it.
            source = self._scripts[call.sha]
            head = b"*%d\r\n$4\r\nEVAL\r\n" % _array_length(call.head) + pack_args([source])
            reply = await self.call(head + call.keys_blob + tail)
        if isinstance(reply, hiredis.ReplyError):
            raise RedisWireError(f"Redis refused the script: {reply}")
        return reply

    async def call(self, packed: bytes) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return await protocol.send(packed)

    def reset(self) -> None:
        """Drops the connection (after a timeout: a stalled server is not waited on again)."""
        if self._protocol is not None:
            self._protocol.fail(RedisWireError("the Redis connection was reset after a timeout"))
            self._protocol = None

    async def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None

    async def _connect(self) -> _Protocol:
        if self._connecting is None:  # concurrent callers share one connection attempt
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, future: asyncio.Future[_Protocol]) -> None:
        self._connecting = None
        if not future.cancelled() and future.exception() is None:
            self._protocol = future.result()

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        options = self.options
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                if options.get("connection_class") is UnixDomainSocketConnection:
                    _, protocol = await loop.create_unix_connection(_Protocol, options["path"])
                else:
                    tls = (
                        ssl.create_default_context()
                        if options.get("connection_class") is SSLConnection
                        else None
                    )
                    _, protocol = await loop.create_connection(
                        _Protocol, options.get("host", "localhost"), options.get("port", 6379), ssl=tls
                    )
                await self._handshake(protocol)
        except (OSError, TimeoutError) as exc:
            raise RedisWireError(f"cannot connect to Redis: {type(exc).__name__}: {exc}") from exc
        return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        options = self.options
        commands: list[tuple[str, list[bytes | str | int]]] = []
        if options.get("password"):
            user = options.get("username")
            credentials = [user, options["password"]] if user else [options["password"]]
            commands.append(("AUTH", credentials))
        if options.get("db"):
            commands.append(("SELECT", [options["db"]]))
        for name, args in commands:
            reply = await protocol.send(pack_head(name, *args, total=1 + len(args)))
            if isinstance(reply, hiredis.ReplyError):
                error = RedisWireError(f"Redis refused {name}: {reply}")
                protocol.fail(error)
                raise error


def _array_length(head: bytes) -> int:
    return int(head[1 : head.index(b"\r\n")])
