"""The demo's HTTP side: a standard-library server routing the JSON API and the static page to a `DemoApp`
(the video tab's routes to its `DemoApp.video`)."""

from __future__ import annotations

import json
import logging
import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs
from typing import Any, Sequence

from .app import DemoApp
from .images import MAX_UPLOAD_BYTES, ApiError, png_bytes

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"index.html", "app.js", "style.css"}


class DemoHandler(BaseHTTPRequestHandler):
    """Routes requests to the `DemoApp` in `self.server.app`."""

    server_version = "pedvit-demo"
    protocol_version = "HTTP/1.1"
    #: socket timeout (s): a client that stalls mid-request (an upload that announces a size, then stops)
    #: loses its connection instead of holding a thread forever
    timeout = 30.0

    @property
    def app(self) -> DemoApp:
        return self.server.app  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data: blob:; style-src 'self'")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
        if length > MAX_UPLOAD_BYTES:
            self.close_connection = True  # do not read (or keep) the oversized body
            raise ApiError(413, f"request too large ({length} bytes); the limit is {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
        return self.rfile.read(length) if length > 0 else b""

    def _json_body(self) -> dict[str, Any]:
        try:
            data = json.loads(self._body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "request body must be a JSON object")
        return data

    def _handle(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        if not self.server.host_allowed(self.headers.get("Host")):  # type: ignore[attr-defined]
            # DNS rebinding: a page of another site, resolved to this address, must not reach the demo
            self.close_connection = True
            return self._json(421, {"error": f"host {self.headers.get('Host')!r} is not served here "
                                             "(pedvit demo --allowed-host NAME)"})
        try:
            if method == "GET":
                if path in ("/", "/index.html"):
                    return self._static("index.html")
                if path.startswith("/static/"):
                    return self._static(path[len("/static/"):])
                if path == "/api/config":
                    return self._json(200, self.app.config())
                if path.startswith("/api/images/") and path.endswith(".png"):
                    image_id = path[len("/api/images/"):-len(".png")]
                    return self._send(200, png_bytes(self.app.image(image_id)), "image/png")
                if path.startswith("/api/clips/") and path.endswith(".jpg") and path.count("/") == 4:
                    clip_id, index = path[len("/api/clips/"):-len(".jpg")].split("/")
                    return self._send(200, self.app.video.frame_jpeg(clip_id, index), "image/jpeg")
                if path.startswith("/api/video/"):
                    since = parse_qs(query).get("since", [None])[0]
                    return self._json(200, self.app.video.job(path[len("/api/video/"):], since))
            elif method == "POST":
                if path == "/api/images":
                    return self._json(200, self.app.add_upload(self._body()))
                if path == "/api/images/sample":
                    return self._json(200, self.app.add_sample(self._json_body().get("name")))
                if path == "/api/segment":
                    return self._json(200, self.app.segment(self._json_body()))
                if path == "/api/clips":
                    return self._json(200, self.app.video.add_upload(self._body()))
                if path == "/api/clips/sample":
                    return self._json(200, self.app.video.add_sample(self._json_body().get("name")))
                if path == "/api/video":
                    return self._json(200, self.app.video.start(self._json_body()))
                if path.startswith("/api/video/") and path.endswith("/cancel"):
                    return self._json(200, self.app.video.cancel(path[len("/api/video/"):-len("/cancel")]))
            raise ApiError(404 if method == "GET" or path.startswith("/api/") else 405, f"no such endpoint: {method} {path}")
        except ApiError as error:
            self._json(error.status, {"error": error.message})
        except TimeoutError:
            self.close_connection = True  # the client stalled mid-request: drop it (`timeout`)
            log.info("%s stalled mid-request: connection closed", self.address_string())
        except Exception as error:  # noqa: BLE001 - the page must get JSON, never a blank 500
            log.exception("request failed")
            self._json(500, {"error": f"internal error: {type(error).__name__}: {error}"})

    def _static(self, name: str) -> None:
        if name not in STATIC_FILES:  # whitelist: no path traversal
            raise ApiError(404, f"no such file: {name}")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        self._send(200, (STATIC_DIR / name).read_bytes(), content_type)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")


class DemoServer(ThreadingHTTPServer):
    """HTTP server bound to a `DemoApp`. `serve_in_thread()` for tests; `serve_forever()` for the CLI.

    At most `max_connections` connections are served at once (more get 503 at once), each thread's socket
    times out (`DemoHandler.timeout`), and only requests whose Host header names this server are answered
    (`allowed_hosts`, besides localhost and the bound address)."""

    daemon_threads = True

    def __init__(self, app: DemoApp, host: str = "127.0.0.1", port: int = 8000, *, max_connections: int = 16,
                 allowed_hosts: Sequence[str] = ()) -> None:
        super().__init__((host, port), DemoHandler)
        self.app = app
        self._slots = threading.BoundedSemaphore(max_connections)
        self.allowed_hosts = {h.lower() for h in (*allowed_hosts, "localhost", "127.0.0.1", "[::1]", "::1", host)}

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request's Host header (with or without the port) names this server."""
        if not header:
            return False
        name = header.strip().lower()
        if name.startswith("["):  # [::1]:8000
            name = name[: name.find("]") + 1]
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        return name in self.allowed_hosts or name.strip("[]") in self.allowed_hosts

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:  # every thread busy: answer at once rather than queue without bound
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="pedvit-demo", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.app.close()
