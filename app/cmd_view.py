"""Command line: the explorer page — `cnnc viz FILE --style html -o page.html` and the live `cnnc view FILE`.

`build` compiles the network and, with `--checkpoint` or `--image`, runs it
on the image through the runtime (runtime/apply.py, as `cnnc apply` and the
activations style do): every tensor and the convolution kernels go to viz
(viz/explorer.py) as arrays, with the network bound to the image's size.
`view` serves the page on 127.0.0.1 (a free port unless `--port`): `/` the
page, `/data.json` its data, `/version` a counter the page polls. A watcher
re-builds the data when the `.cnn` file, a file it imports, the checkpoint,
the image or the metrics file changes; a compile error is shown in the page
as the compiler prints it, over the last graph that compiled. Nothing else
is served, requests naming another host are refused, Ctrl-C stops it (exit 0).
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import threading
import time
from pathlib import Path

from .compiler.driver import Compiled, compile_file, parse_assignment, parse_shape
from .dsl.source import CnncError
from .image_flag import resize_of
from .viz.explorer import Inside, page_data, page_html, script_json

POLL_SECONDS = 0.3


def check_flags(args: argparse.Namespace) -> None:
    if args.depth is not None and args.depth < 0:
        raise CnncError(f"--depth {args.depth}: the depth must be 0 or more",
                        hint="--depth 1 opens the top-level blocks")
    if args.resize is not None and not (args.image or args.checkpoint):
        raise CnncError(f"--resize {args.resize}: resizes the image, which needs --image or --checkpoint")
    if args.input and (args.image or args.checkpoint):
        raise CnncError(f"--input {args.input[0]}: with --image or --checkpoint the sizes come from the image",
                        hint="for a network of symbolic size the image's own size is used")


def build(args: argparse.Namespace, compiled: Compiled | None = None) -> tuple[Compiled, dict]:
    """The compiled network the page shows and the page's data (`compiled`: the file as the flags
    compile it, when the caller has it already; an image binds its own size)."""
    params = dict(parse_assignment(s) for s in args.params)
    inputs = dict(parse_shape(s) for s in args.input)

    def compile_(bound):
        return compile_file(args.file, args.network, bound or inputs or None, params, set(args.allow))

    inside = None
    if args.checkpoint or args.image:
        compiled, inside = _inside(args, compile_)
    elif compiled is None:
        compiled = compile_(None)
    return compiled, page_data(compiled, inside, args.metrics, args.depth)


def _inside(args: argparse.Namespace, compile_) -> tuple[Compiled, Inside]:
    from .runtime.apply import Applier, default_image, kernel_weights
    applier = Applier(compile_, args.checkpoint, resize_of(args))
    image = args.image or str(default_image(applier.channels))
    result = applier.run(image, applier.tensor_names(), shipped=args.image is None)   # the image policy
    compiled = applier.compiled_for(tuple(result.input.shape), image)
    kernels = kernel_weights(compiled, args.checkpoint)
    return compiled, Inside(image, result.input, result.tensors, tuple(kernels.weights), kernels.first)


def html_bytes(args: argparse.Namespace, compiled: Compiled | None = None) -> bytes:
    """`cnnc viz --style html`: the page as bytes."""
    _, data = build(args, compiled)
    return page_html(data=data).encode("utf-8")


# ------------------------------------------------------------------ live
class Live:
    """The current page data, re-built when a watched file changes; the last good graph stays on an error."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.lock = threading.Lock()
        self.version = 0
        compiled, self.data = build(args)          # a first error is the command's error
        self.error: str | None = None
        self.files = self._files(compiled)
        self.stamps = self._stamps()

    def _files(self, compiled: Compiled | None, err: CnncError | None = None) -> set[str]:
        """The .cnn file, every file a layer or block call was written in, and the other inputs."""
        files = {self.args.file} | {p for p in (self.args.checkpoint, self.args.image, self.args.metrics) if p}
        if compiled is not None:
            for node in compiled.net.order():
                files.update(loc.file for loc in [node.loc] + [loc for _, loc in node.call_chain] if loc)
        else:
            files |= getattr(self, "files", set())
        if err is not None and err.loc is not None:
            files.add(err.loc.file)
        return files

    def _stamps(self) -> dict[str, tuple | None]:
        stamps = {}
        for f in self.files:
            try:
                st = os.stat(f)
                stamps[f] = (st.st_mtime_ns, st.st_size)
            except OSError:
                stamps[f] = None
        return stamps

    def refresh(self) -> bool:
        """Re-build when a watched file changed; True when the page has something new."""
        stamps = self._stamps()
        if stamps == self.stamps:
            return False
        try:
            compiled, data = build(self.args)
            error, files = None, self._files(compiled)
        except CnncError as err:
            compiled, data, error, files = None, None, err.render(), self._files(None, err)
        with self.lock:
            if data is not None:
                self.data = data
            self.error, self.files = error, files
            self.stamps = self._stamps()
            self.version += 1
        return True

    def payload(self) -> dict:
        """The page's data with the version it is (the page polls for a newer one) and the error, if any."""
        with self.lock:
            return {**self.data, "version": self.version, "error": self.error}


def _handler(live: Live, port_holder: list):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "cnnc-view"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802 (the http.server name)
            host = (self.headers.get("Host") or "").lower()
            if host not in {f"127.0.0.1:{port_holder[0]}", f"localhost:{port_holder[0]}"}:
                return self._send(403, "text/plain", b"cnnc view answers only to 127.0.0.1\n")
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                body = page_html(data=live.payload(), live=True).encode("utf-8")
                return self._send(200, "text/html; charset=utf-8", body)
            if path == "/data.json":
                return self._send(200, "application/json", script_json(live.payload()).encode("utf-8"))
            if path == "/version":
                return self._send(200, "application/json", json.dumps({"version": live.version}).encode())
            return self._send(404, "text/plain", b"not found\n")

        def _send(self, status: int, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:   # the terminal is the user's: no access log
            pass

    return Handler


def view(args: argparse.Namespace) -> int:
    """Serve the page until Ctrl-C."""
    check_flags(args)
    live = Live(args)
    port_holder = [args.port or 0]
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port_holder[0]), _handler(live, port_holder))
    except OSError as err:
        raise CnncError(f"--port {args.port}: cannot listen on 127.0.0.1:{args.port}: {err.strerror or err}",
                        hint="choose another port, or leave --port out for a free one") from None
    server.daemon_threads = True
    port_holder[0] = server.server_address[1]
    url = f"http://127.0.0.1:{port_holder[0]}/"
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(POLL_SECONDS):
            try:
                if live.refresh():
                    print(f"{time.strftime('%H:%M:%S')} {Path(args.file).name}: "
                          + ("error (shown in the page)" if live.error else "updated"), flush=True)
            except Exception as err:  # noqa: BLE001 -- a watcher must outlive one bad build
                live.error = f"cnnc: internal error while rebuilding: {type(err).__name__}: {err}"
                live.version += 1

    threading.Thread(target=watch, daemon=True).start()
    print(f"serving {live.data['network']} at {url} (Ctrl-C stops)", flush=True)
    if args.open:
        import webbrowser
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        stop.set()
        server.server_close()
    return 0
