"""The metrics/probe server: it binds the configured address only, answers GET and HEAD, and
no request of any method changes anything.

Exercised for real: the server class the consumer and the trainer both use, and the running
consumer service, on loopback addresses (127.0.0.1 and 127.0.0.2), over real sockets.
"""

import asyncio
import http.client
import socket

import pytest
from prometheus_client import CollectorRegistry, Counter

from consumer.health import HealthServer
from producer.settings import Settings
from tests.consumer.conftest import running

METHODS = ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"]
PATHS = ["/metrics", "/healthz", "/readyz", "/", "/metrics?name[]=x", "/../etc/passwd"]


def _request(host: str, port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request(method, path, body=body or None)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _reachable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def test_only_get_and_head_are_answered_and_nothing_changes() -> None:
    registry = CollectorRegistry()
    hits = Counter("clicktune_test_hits", "A counter the probes must not move.", registry=registry)
    hits.inc(3)
    calls = {"live": 0, "ready": 0}

    def live() -> tuple[bool, str]:
        calls["live"] += 1
        return True, "alive"

    def ready() -> tuple[bool, str]:
        calls["ready"] += 1
        return False, "starting"

    server = HealthServer(registry, "127.0.0.1", 0, live=live, ready=ready).start()
    try:
        before = _request("127.0.0.1", server.port, "GET", "/metrics")[1]
        for method in METHODS:
            for path in PATHS:
                status, body = _request("127.0.0.1", server.port, method, path, b"x=1")
                assert status == 405, (method, path, status)
                assert body in (b"read-only\n", b"")
        assert calls == {"live": 0, "ready": 0}  # refused before any handler ran
        after = _request("127.0.0.1", server.port, "GET", "/metrics")[1]
        assert before == after and hits._value.get() == 3
        assert _request("127.0.0.1", server.port, "HEAD", "/healthz")[0] == 200
        assert _request("127.0.0.1", server.port, "GET", "/readyz") == (503, b"not ok: starting\n")
        assert _request("127.0.0.1", server.port, "GET", "/../etc/passwd")[0] == 404
    finally:
        server.stop()


def test_it_binds_the_configured_address_only() -> None:
    """127.0.0.2 is loopback too on Linux: bound there, it is not on 127.0.0.1."""
    registry = CollectorRegistry()
    server = HealthServer(
        registry, "127.0.0.2", 0, live=lambda: (True, "alive"), ready=lambda: (True, "ready")
    ).start()
    try:
        assert _reachable("127.0.0.2", server.port)
        assert not _reachable("127.0.0.1", server.port)
        assert _request("127.0.0.2", server.port, "GET", "/healthz")[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"])
async def test_the_consumer_serves_on_metrics_host(consumer_settings: Settings, host: str) -> None:
    s = consumer_settings.model_copy(update={"metrics_host": host})
    async with running(s) as service:
        assert service.health is not None
        port = service.health.port
        assert await asyncio.to_thread(_reachable, host, port)
        other = "127.0.0.2" if host == "127.0.0.1" else "127.0.0.1"
        assert not await asyncio.to_thread(_reachable, other, port)
        status, _ = await asyncio.to_thread(_request, host, port, "DELETE", "/readyz")
        assert status == 405
        assert (await asyncio.to_thread(_request, host, port, "GET", "/readyz"))[0] == 200


def test_defaults_bind_loopback_only() -> None:
    s = Settings.load()
    assert s.metrics_host == "127.0.0.1"
