"""A front door for the embedded broker: TLS termination and SASL authentication that tansu
0.6.0 cannot do itself (its `--cert` listener does not speak TLS to aiokafka, and its SCRAM
users cannot be created on a memory-storage broker that requires authentication).

Clients connect here; the broker advertises this address, so every connection (bootstrap,
partition leaders, the group coordinator) comes through. Per connection:

1. TLS, when configured (optionally requiring a client certificate signed by the test CA);
2. Kafka frames are read one by one: ``ApiVersions`` is forwarded, ``SaslHandshake`` and
   ``SaslAuthenticate`` are answered here with a real PLAIN or SCRAM-SHA-256/512 server
   exchange (RFC 5802: salted password, client proof checked, server signature sent back);
   when authentication is required, any other request before it succeeded closes the
   connection, as a broker would;
3. after that, bytes are piped both ways unchanged.

So a client's SSL context and SASL settings are exercised for real, end to end, against the
embedded broker behind.
"""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import ssl
import struct
from dataclasses import dataclass, field
from io import BytesIO

from aiokafka.protocol.admin import (
    SaslAuthenticateRequest_v0,
    SaslAuthenticateResponse_v0,
    SaslAuthenticateResponse_v1,
    SaslHandShakeRequest_v0,
    SaslHandShakeResponse_v0,
    SaslHandShakeResponse_v1,
)

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE = 58, 33, 34
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


class _AuthFailed(Exception):
    pass


class _Scram:
    """The server side of one SCRAM exchange."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.hash = _HASHES[mechanism]
        self.users = users
        self.salt = os.urandom(16)
        self.iterations = 4096

    def _hmac(self, key: bytes, msg: bytes) -> bytes:
        return hmac.new(key, msg, self.hash).digest()

    def first(self, message: bytes) -> bytes:
        gs2, _, rest = message.decode().partition(",")
        authzid, _, self.bare = rest.partition(",")
        if gs2 != "n" or authzid:
            raise _AuthFailed("channel binding and authzid are not supported")
        attrs = dict(kv.split("=", 1) for kv in self.bare.split(","))
        self.user = attrs["n"].replace("=2C", ",").replace("=3D", "=")
        self.nonce = attrs["r"] + base64.b64encode(os.urandom(18)).decode()
        salt = base64.b64encode(self.salt).decode()
        self.server_first = f"r={self.nonce},s={salt},i={self.iterations}"
        return self.server_first.encode()

    def final(self, message: bytes) -> bytes:
        text = message.decode()
        without_proof, _, proof = text.rpartition(",p=")
        attrs = dict(kv.split("=", 1) for kv in without_proof.split(","))
        if attrs.get("r") != self.nonce or attrs.get("c") != "biws":
            raise _AuthFailed("bad nonce or channel binding")
        password = self.users.get(self.user)
        if password is None:
            raise _AuthFailed(f"unknown user {self.user}")
        salted = hashlib.pbkdf2_hmac(self.hash, password.encode(), self.salt, self.iterations)
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self.hash, client_key).digest()
        auth_message = f"{self.bare},{self.server_first},{without_proof}".encode()
        signature = self._hmac(stored_key, auth_message)
        recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
        if not hmac.compare_digest(hashlib.new(self.hash, recovered).digest(), stored_key):
            raise _AuthFailed("wrong password")
        server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return b"v=" + base64.b64encode(server_signature)


@dataclass
class FrontDoor:
    """Start with :meth:`start`; reconfigure between tests; :meth:`stop` at the end."""

    upstream: tuple[str, int]
    tls: ssl.SSLContext | None = None
    users: dict[str, str] = field(default_factory=dict)
    mechanisms: tuple[str, ...] = MECHANISMS
    require_sasl: bool = False
    #: (user, mechanism) of every successful authentication; every refusal's reason.
    authenticated: list[tuple[str, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    tls_handshakes: int = 0

    @property
    def port(self) -> int:
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, port: int) -> "FrontDoor":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self._tasks: set[asyncio.Task[None]] = set()
        return self

    async def stop(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def configure(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        users: dict[str, str] | None = None,
        mechanisms: tuple[str, ...] = MECHANISMS,
        require_sasl: bool = False,
    ) -> None:
        self.tls, self.users, self.mechanisms = tls, users or {}, mechanisms
        self.require_sasl = require_sasl
        self.authenticated.clear()
        self.refused.clear()
        self.tls_handshakes = 0

    # --- one connection --------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            if self.tls is not None:
                try:
                    await writer.start_tls(self.tls)
                except (ssl.SSLError, OSError) as exc:
                    self.refused.append(f"tls: {exc}")
                    return
                self.tls_handshakes += 1
            up_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
            if not await self._authenticate(reader, writer, up_reader, upstream_writer):
                return
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.close()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        """Handle frames until the client is authenticated (or needs not be); False when the
        connection must close. The first frame that is not part of the exchange is forwarded
        and piping takes over."""
        mechanism: str | None = None
        scram: _Scram | None = None
        while True:
            frame = await _read_frame(reader)
            api_key, api_version, correlation = struct.unpack(">hhi", frame[:8])
            if api_key == API_VERSIONS:
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                await up_writer.drain()
                writer.write(await _read_sized(up_reader))
                await writer.drain()
                continue
            body = BytesIO(frame[8:])
            (client_id_len,) = struct.unpack(">h", body.read(2))
            if client_id_len > 0:
                body.read(client_id_len)
            if api_key == SASL_HANDSHAKE:
                requested = SaslHandShakeRequest_v0.SCHEMA.decode(body)[0]
                response = (SaslHandShakeResponse_v0, SaslHandShakeResponse_v1)[api_version]
                ok = requested in self.mechanisms and bool(self.users)
                await _respond(
                    writer,
                    correlation,
                    response(
                        error_code=0 if ok else UNSUPPORTED_SASL_MECHANISM,
                        enabled_mechanisms=list(self.mechanisms),
                    ),
                )
                if not ok:
                    self.refused.append(f"mechanism {requested}")
                    return False
                mechanism = requested
                scram = _Scram(requested, self.users) if requested.startswith("SCRAM") else None
                continue
            if api_key == SASL_AUTHENTICATE:
                token = SaslAuthenticateRequest_v0.SCHEMA.decode(body)[0]
                response = (SaslAuthenticateResponse_v0, SaslAuthenticateResponse_v1)[api_version]
                extra = {"session_lifetime_ms": 0} if api_version == 1 else {}
                try:
                    if mechanism is None:
                        raise _AuthFailed("SaslAuthenticate before SaslHandshake")
                    if scram is None:  # PLAIN: authzid NUL user NUL password
                        _, user, password = token.decode().split("\0")
                        if self.users.get(user) != password:
                            raise _AuthFailed(f"wrong password for {user}")
                        reply, done = b"", True
                    elif not hasattr(scram, "server_first"):
                        reply, done = scram.first(token), False
                    else:
                        reply, done, user = scram.final(token), True, scram.user
                except (_AuthFailed, ValueError, KeyError, UnicodeDecodeError) as exc:
                    self.refused.append(f"{mechanism}: {exc}")
                    await _respond(
                        writer,
                        correlation,
                        response(
                            error_code=SASL_AUTHENTICATION_FAILED,
                            error_message=f"authentication failed: {exc}",
                            sasl_auth_bytes=b"",
                            **extra,
                        ),
                    )
                    return False
                await _respond(
                    writer,
                    correlation,
                    response(error_code=0, error_message=None, sasl_auth_bytes=reply, **extra),
                )
                if done:
                    self.authenticated.append((user, mechanism))
                    return True
                continue
            if self.require_sasl:
                self.refused.append(f"api {api_key} before authentication")
                return False
            up_writer.write(struct.pack(">i", len(frame)) + frame)
            await up_writer.drain()
            return True


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


async def _read_sized(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    return head + await reader.readexactly(struct.unpack(">i", head)[0])


async def _respond(writer: asyncio.StreamWriter, correlation: int, response: object) -> None:
    payload = struct.pack(">i", correlation) + response.encode()  # type: ignore[attr-defined]
    writer.write(struct.pack(">i", len(payload)) + payload)
    await writer.drain()
