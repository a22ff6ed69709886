"""The demo server holds against stalled clients, floods of connections and foreign Host headers."""

from __future__ import annotations

import socket
import time
from typing import Any, Iterator

import pytest

from pedvit.web.server import DemoHandler, DemoServer


class TinyApp:
    """TEST ONLY: the two things the server needs from a DemoApp here."""

    def config(self) -> dict[str, Any]:
        return {"ok": True}

    def add_upload(self, data: bytes) -> dict[str, Any]:
        return {"bytes": len(data)}

    def close(self) -> None:
        pass


@pytest.fixture()
def server(monkeypatch) -> Iterator[DemoServer]:
    monkeypatch.setattr(DemoHandler, "timeout", 1.0)
    srv = DemoServer(TinyApp(), "127.0.0.1", 0, max_connections=2, allowed_hosts=["demo.example"])  # type: ignore[arg-type]
    srv.serve_in_thread()
    yield srv
    srv.close()


def _request(server: DemoServer, host: str) -> bytes:
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET /api/config HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return b"".join(iter(lambda: s.recv(65536), b""))


@pytest.mark.parametrize("host,status", [("localhost:1", b"200"), ("127.0.0.1", b"200"), ("demo.example", b"200"),
                                         ("evil.example", b"421"), ("", b"421")])
def test_host_header_is_checked(server: DemoServer, host: str, status: bytes) -> None:
    assert _request(server, host).split()[1] == status


def _stalled_upload(server: DemoServer) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
    s.sendall(b"POST /api/images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
    return s


def test_stalled_upload_is_dropped(server: DemoServer) -> None:
    s = _stalled_upload(server)
    started = time.monotonic()
    try:
        assert s.recv(65536) == b""  # the server closed the connection ...
        assert time.monotonic() - started < 8  # ... after its socket timeout, not never
    finally:
        s.close()


def test_connections_beyond_the_limit_get_503(server: DemoServer) -> None:
    held = [_stalled_upload(server) for _ in range(2)]
    try:
        time.sleep(0.2)
        assert _request(server, "127.0.0.1").split()[1] == b"503"
    finally:
        for s in held:
            s.close()
    time.sleep(1.5)  # the held threads time out and free their slots
    assert _request(server, "127.0.0.1").split()[1] == b"200"
