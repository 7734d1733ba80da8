"""Issue 22, item 5: `cnnc search --scheduler ADDRESS` where ADDRESS is not a Dask scheduler.

A server that accepts and says nothing, or speaks HTTP, is a one-line error
within the handshake's deadline (search.SCHEDULER_DEADLINE, 10 s); an empty
address and schemes cnnc does not reach (ucx://, inproc://, ws://) are
refused with the flags, before anything runs; tls:// works with Dask's TLS
configuration and is a clear error without it. Never a hang, a traceback or
an internal TypeError, and nothing is written.
"""
from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import threading
import time

import pytest

from cnnc.dsl.source import CnncError
from hostile_harness import TINY, refused, run_cli, start_cli, succeeded

search = pytest.importorskip("cnnc.runtime.select.search")
distributed = pytest.importorskip("distributed")


class Silent:
    """A port that accepts connections and never says a word."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.address = f"tcp://127.0.0.1:{self.socket.getsockname()[1]}"

    def close(self):
        self.socket.close()


class Web:
    """An HTTP server (what a scheduler's dashboard port, or any web server, is)."""

    def __init__(self):
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"tcp://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("server", [Silent, Web], ids=["silent", "http"])
def test_a_server_that_is_no_scheduler_fails_within_the_deadline(server):
    s = server()
    try:
        start = time.monotonic()
        with pytest.raises(CnncError) as info:
            search.connect_scheduler(s.address, deadline=1.0)
        took = time.monotonic() - start
    finally:
        s.close()
    message = info.value.message
    assert message.startswith(f"--scheduler {s.address}: ") and "\n" not in message, message
    assert "no Dask scheduler answered within 1 s" in message or "cannot reach the Dask scheduler" in message
    assert took < 3.0, f"{took:.1f} s for a 1 s deadline"


ADDRESSES = {   # address -> the start of its one-line error
    "": "--scheduler '': expected the address of a Dask scheduler",
    "   ": "--scheduler '   ': expected the address of a Dask scheduler",
    "ucx://127.0.0.1:8786": "--scheduler ucx://127.0.0.1:8786: expected the address of a Dask scheduler",
    "inproc://x": "--scheduler inproc://x: expected the address of a Dask scheduler",
    "ws://127.0.0.1:8786": "--scheduler ws://127.0.0.1:8786: expected the address of a Dask scheduler",
    "tcp://": "--scheduler tcp://: expected the address of a Dask scheduler",
    "tls://127.0.0.1:8786": "--scheduler tls://127.0.0.1:8786: tls:// needs Dask's TLS configuration",
}


@pytest.mark.parametrize("address", ADDRESSES)
def test_addresses_cnnc_cannot_use_are_refused_without_contacting_anything(address):
    with pytest.raises(CnncError) as info:
        search.check_scheduler(address)
    assert info.value.message.startswith(ADDRESSES[address]) and "\n" not in info.value.message


@pytest.mark.parametrize("address", ["", "ucx://127.0.0.1:8786", "tls://127.0.0.1:8786"])
def test_the_command_refuses_them_with_the_flags_before_anything_runs(scratch, address):
    scratch.tiny()
    result = scratch.run("search", "tiny.cnn", "--grid", "lr=0.1", "--out", "s", "--scheduler", address)
    refused(result, scratch)
    assert result.err.startswith(f"cnnc: error: {ADDRESSES[address]}"), str(result)
    assert result.out == ""   # refused with the flags: not even the plan was printed


@pytest.mark.slow
def test_the_command_gives_up_on_a_silent_and_an_http_server_within_the_deadline(scratch):
    scratch.tiny()
    scratch.freeze()
    servers = [Silent(), Web()]
    try:
        start = time.monotonic()
        runs = [start_cli(["search", "tiny.cnn", "--grid", "lr=0.1", "--out", f"s{i}", "--scheduler", s.address],
                          scratch.root) for i, s in enumerate(servers)]
        outcomes = [r.communicate(timeout=60) for r in runs]
        took = time.monotonic() - start
    finally:
        for s in servers:
            s.close()
    for run, (out, err) in zip(runs, outcomes):
        assert run.returncode == 1 and err.decode().startswith("cnnc: error: --scheduler tcp://127.0.0.1:"), err
        assert b"Traceback" not in err and b"internal error" not in err
    assert took < search.SCHEDULER_DEADLINE + 20, f"{took:.0f} s"
    assert not scratch.touched(), scratch.touched()   # the search directories were never made


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("openssl") is None, reason="makes its certificate with openssl")
def test_a_tls_scheduler_runs_the_trials_with_dasks_tls_configuration(scratch):
    from distributed.security import Security
    cert, key = scratch.path("cert.pem"), scratch.path("key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    scratch.tiny()
    pair = {"tls_ca_file": str(cert)} | {f"tls_{who}_{part}": str(path) for who in ("client", "scheduler", "worker")
                                         for part, path in (("cert", cert), ("key", key))}
    security = Security(**pair, require_encryption=True)
    config = {"DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(cert), "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(cert),
              "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(key)}
    with distributed.LocalCluster(n_workers=1, processes=True, threads_per_worker=1, host="127.0.0.1",
                                  protocol="tls://", security=security, dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        # The cluster's workers read the .cnn file and write the trials at their paths: they do not run in
        # the scratch folder.
        result = run_cli(["search", scratch.path("tiny.cnn"), "--grid", "lr=0.1,0.05", "--out", scratch.path("s"),
                          "--scheduler", cluster.scheduler_address], scratch.root, env=config, timeout=180)
    succeeded(result)
    assert "best (" in result.out
