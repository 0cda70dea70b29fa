"""The edge of the world for HTTP checks: a real HTTP server on loopback whose latency the test chooses.

``GET /ok`` answers 200, ``GET /status/<code>`` answers that code, and ``GET /delay/<ms>`` answers
200 after that many milliseconds (the server's own latency, as a slow dependency would have).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        parts = self.path.strip("/").split("/")
        status = 200
        if parts[0] == "status":
            status = int(parts[1])
        elif parts[0] == "delay":
            time.sleep(int(parts[1]) / 1000)
        body = b'{"status": "ok"}' if status == 200 else b'{"status": "failing"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass


class Endpoint:
    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "ok") -> str:
        return f"http://127.0.0.1:{self.server.server_port}/{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
