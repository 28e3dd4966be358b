"""A stand-in predictor for tests/compose/test_load_balancer.py: answers /ready, /health, and any POST with its own
name after an optional delay (header x-delay, seconds), and appends every request it receives to its log.

    python lb_backend.py NAME PORT READY(1|0) LOG
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, PORT, READY, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/ready" and not READY:
            self.answer(503, {"status": "unavailable", "backend": NAME})
        else:
            self.answer(200, {"status": "ok", "backend": NAME})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with open(LOG, "a") as log:
            log.write(f"{self.command} {self.path} {body.decode()}\n")
        time.sleep(float(self.headers.get("x-delay") or 0))
        self.answer(200, {"backend": NAME, "path": self.path})

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy's health checks close their connections early, and a killed peer resets them


Server(("127.0.0.1", PORT), Handler).serve_forever()
