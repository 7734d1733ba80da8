"""A mirror on 127.0.0.1 for the download tests: published files, and hostile answers.

tests/runtime/data/test_standard.py (the loader, in-process) and
tests/hostile/test_downloads.py (the real command) serve files with it. Every
hostile answer stops by itself (SERVER_SECONDS, ENDLESS_BYTES), and the server
listens on the loopback address only.
"""
from __future__ import annotations

import http.server
import threading
import time

SERVER_SECONDS = 30.0   # a hostile answer stops by itself after this long
ENDLESS_BYTES = 64 << 20


class Server:
    """Serves published files, and hostile answers for chosen paths (`hostile[path]`: a function of the
    request handler and the body that writes the whole answer itself)."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.hostile: dict[str, object] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                body = outer.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                if self.path in outer.hostile:
                    try:
                        outer.hostile[self.path](self, body)
                    except OSError:
                        pass  # the client cut the connection: what a fixed cnnc does
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in outer.truncate:
                    self.wfile.write(body[:len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def trickle(every: float, headers_too: bool = False):
    """An answer that sends one byte every `every` seconds (of its headers too, if asked)."""
    def answer(handler, body: bytes) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        if not headers_too:
            handler.wfile.write(head)
            head = b""
        end = time.monotonic() + SERVER_SECONDS
        for byte in head + body:
            if time.monotonic() > end:
                return
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(every)
    return answer


def endless(declare: int | None = None):
    """An answer whose body never ends (zeros, bounded here by ENDLESS_BYTES and SERVER_SECONDS)."""
    def answer(handler, body: bytes) -> None:
        handler.send_response(200)
        if declare is not None:
            handler.send_header("Content-Length", str(declare))
        handler.end_headers()
        end, sent, block = time.monotonic() + SERVER_SECONDS, 0, bytes(1 << 16)
        while sent < ENDLESS_BYTES and time.monotonic() < end:
            handler.wfile.write(block)
            sent += len(block)
    return answer


def unsized(handler, body: bytes) -> None:
    """The body without a Content-Length, ended by closing the connection."""
    handler.send_response(200)
    handler.end_headers()
    handler.wfile.write(body)
