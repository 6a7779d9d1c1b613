"""HTTP framing through gpuvisor's proxy, with httpx (strict: h11) and raw sockets, against
four kinds of upstream servers that gpuvisor starts as services:

  chat   tests/clients/upstream.mjs (Node: chunked streams, trailers, uploads)
  files  python -m http.server (HTTP/1.0, Content-Length, then close)
  closer close_delimited_server.py (HTTP/1.0, no Content-Length: the body ends at the close)
  web    nginx (HEAD, 204, 304)

    GPUVISOR_BUILD=build /usr/bin/python3 -B -m pytest -q -p no:cacheprovider \
        tests/clients/test_httpx.py

Debian's /usr/bin/python3 has python3-httpx and python3-pytest; a pyenv python3 may not.
"""
import hashlib
import json
import os
import pathlib
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import httpx
import pytest

from close_delimited_server import body as big  # beside this file: pytest puts it on sys.path

HERE = pathlib.Path(__file__).resolve().parent
NODE = shutil.which("node") or "/usr/bin/node"
PYTHON = "/usr/bin/python3"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_config(root, port):
    """nginx in the foreground, one process (no user switch), every path under root."""
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {root}/tmp/body;
  proxy_temp_path {root}/tmp/proxy;
  fastcgi_temp_path {root}/tmp/fastcgi;
  uwsgi_temp_path {root}/tmp/uwsgi;
  scgi_temp_path {root}/tmp/scgi;
  types {{ text/html html; text/plain txt; }}
  server {{
    listen 127.0.0.1:{port};
    root {root}/www;
    location = /health {{ return 200 "ok\\n"; }}
    location = /empty {{ return 204; }}
  }}
}}
"""


class Daemon:
    def __init__(self, url, proc, tmp):
        self.url, self.proc, self.tmp = url, proc, tmp
        self.port = int(url.rsplit(":", 1)[1])
        self.died_in = "the start"
        self.service_pids = set()  # what it started, for a cleanup if it crashes

    def note_services(self):
        try:
            services = httpx.get(f"{self.url}/api/v1/services", timeout=5).json()["services"]
            self.service_pids |= {s["pid"] for s in services if s.get("pid")}
        except httpx.HTTPError:
            pass

    def kill_orphans(self):
        """After the daemon: kill what it started and could not stop (it crashed, or hung)."""
        for pid in self.service_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def daemon():
    build = os.environ.get("GPUVISOR_BUILD")
    if not build:
        pytest.fail("set GPUVISOR_BUILD to the build directory (ctest does)")
    build = pathlib.Path(build).resolve()
    root = pathlib.Path(os.environ.get("TEST_TMPDIR", "/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="clients-httpx-", dir=root))
    for d in ["gpu", "files", "www", "tmp"]:
        (tmp / d).mkdir()
    (tmp / "files" / "hello.txt").write_text("hello from http.server\n")
    (tmp / "www" / "page.html").write_text("<!doctype html><p>from nginx</p>\n" * 50)
    ports = {name: free_port() for name in ["chat", "files", "closer", "web"]}
    (tmp / "nginx.conf").write_text(nginx_config(tmp, ports["web"]))
    commands = {
        "chat": [NODE, str(HERE / "upstream.mjs"), "--port", str(ports["chat"]), "--name", "chat"],
        "files": [PYTHON, "-m", "http.server", str(ports["files"]), "--bind", "127.0.0.1",
                  "--directory", str(tmp / "files")],
        "closer": [PYTHON, str(HERE / "close_delimited_server.py"), str(ports["closer"])],
        "web": ["/usr/sbin/nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp),
                "-e", str(tmp / "nginx-error.log")],
    }
    health = {"chat": "/health", "files": "/hello.txt", "closer": "/health", "web": "/health"}
    services = {}
    for name, port in ports.items():
        url = f"http://127.0.0.1:{port}"
        services[name] = {"command": commands[name], "health": {"http": url + health[name]},
                          "proxy": {"url": url}}
    services["chat"]["proxy"]["models"] = ["llama3"]
    (tmp / "gpuvisor.yaml").write_text(json.dumps({"services": services}, indent=2))

    env = dict(os.environ, GPUVISOR_NVML_LIBRARY=str(build / "libgpuvisor-fake-nvml.so"),
               FAKE_NVML_DIR=str(tmp / "gpu"))
    with open(tmp / "daemon.log", "ab") as log:
        proc = subprocess.Popen(
            [str(build / "gpuvisor"), "serve", "--config", str(tmp / "gpuvisor.yaml"),
             "--listen", "127.0.0.1:0", "--state-dir", str(tmp / "state"), "--log-level", "info"],
            env=env, stdout=subprocess.PIPE, stderr=log)
    d = None
    try:
        d = Daemon(read_listen_url(proc, tmp / "daemon.log"), proc, tmp)
        d.rss_at_start = rss_bytes(proc.pid)
        yield d
    finally:
        # The daemon stops its services (node, python, nginx) on SIGTERM.
        crashed = proc.poll() is not None
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            crashed = True
            proc.kill()
            proc.wait()
        if d and crashed:
            d.kill_orphans()


@pytest.fixture(autouse=True)
def daemon_survives(daemon, request):
    """Names the test that brought the daemon down; the tests after it fail at once."""
    if daemon.proc.poll() is not None:
        pytest.fail(f"the daemon is down: it exited during {daemon.died_in}")
    yield
    daemon.note_services()
    code = daemon.proc.poll()
    if code is not None:
        daemon.died_in = request.node.name
        log = (daemon.tmp / "daemon.log").read_text()[-1500:]
        pytest.fail(f"the daemon exited ({code}) during this test; its log ends:\n{log}")


def read_listen_url(proc, log, timeout=15):
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    text = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sel.select(timeout=0.2):
            continue
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        text += chunk
        for line in text.decode().splitlines():
            if "listening on " in line:
                return line.split("listening on ", 1)[1].strip()
    raise RuntimeError(f"the daemon did not listen: {text!r}; {log.read_text()[-2000:]}")


def local_port(response):
    """The client side port of the connection a response came on: same port, same connection."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


# --- A minimal HTTP/1.1 response reader for raw sockets ---------------------------------------

class Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exactly(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def fields(self):
        fields = {}
        while line := self.line():
            name, value = line.decode().split(":", 1)
            fields[name.strip().lower()] = value.strip()
        return fields

    def response(self, method="GET"):
        """One response: (status, headers, body, trailers). Framing errors raise."""
        status = int(self.line().split()[1])
        headers = self.fields()
        body, trailers = b"", {}
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            pass
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int(self.line().split(b";")[0], 16):
                body += self.exactly(size)
                assert self.exactly(2) == b"\r\n", "chunk not followed by CRLF"
            trailers = self.fields()
        elif "content-length" in headers:
            body = self.exactly(int(headers["content-length"]))
        else:
            try:
                while True:
                    self._fill()
            except EOFError:
                body, self.buf = self.buf, b""
        return status, headers, body, trailers

    def nothing_more(self, wait=0.3):
        """After a response: no stray bytes follow on the connection (a second terminator...)."""
        self.sock.settimeout(wait)
        try:
            self.buf += self.sock.recv(65536)
        except socket.timeout:
            pass
        finally:
            self.sock.settimeout(10)
        return self.buf


def raw(daemon):
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    return sock, Reader(sock)


def get(path):
    return f"GET {path} HTTP/1.1\r\nHost: gpuvisor\r\n\r\n".encode()


def chat_body(n_tokens=6, delay_ms=5):
    return {"model": "llama3", "stream": True, "n_tokens": n_tokens, "delay_ms": delay_ms,
            "messages": [{"role": "user", "content": "hi"}]}


def sse_content(text):
    lines = [l[6:] for l in text.splitlines() if l.startswith("data: ")]
    assert lines and lines[-1] == "[DONE]", text[-200:]
    return "".join(json.loads(l)["choices"][0]["delta"].get("content", "") for l in lines[:-1])


def tokens(n):
    return "".join(f"t{i} " for i in range(n))


# --- The tests ---------------------------------------------------------------------------------

def test_streams_in_a_row_on_one_kept_alive_connection(daemon):
    # The doubled-terminator regression: a chunked stream that ends in "0\r\n\r\n" twice leaves
    # five bytes that h11 reads as the start of the next response.
    with httpx.Client(base_url=daemon.url, timeout=10) as client:
        ports = set()
        for i in range(5):
            with client.stream("POST", "/v1/chat/completions", json=chat_body()) as r:
                assert r.status_code == 200
                assert r.headers["transfer-encoding"] == "chunked"
                assert sse_content(r.read().decode()) == tokens(6), f"stream {i}"
                ports.add(local_port(r))
        assert len(ports) == 1, "all five on one connection"


def test_chunked_stream_ends_exactly_once(daemon):
    sock, reader = raw(daemon)
    with sock:
        sock.sendall(get("/upstream/chat/stream?n=4"))
        status, headers, body, _ = reader.response()
        assert (status, body) == (200, b"line 0\nline 1\nline 2\nline 3\n")
        assert reader.nothing_more() == b"", "bytes after the end of the chunked body"


def test_chunked_with_trailers(daemon):
    expected = "".join(f"part {i}\n" for i in range(4))
    sock, reader = raw(daemon)
    with sock:
        sock.sendall(get("/upstream/chat/trailers"))
        status, headers, body, trailers = reader.response()
        assert (status, body.decode()) == (200, expected)
        print("trailers through the proxy:", trailers)
        assert reader.nothing_more() == b"", "bytes after the trailers"
        sock.sendall(get("/upstream/chat/stream?n=1"))
        assert reader.response()[2] == b"line 0\n"
    with httpx.Client(base_url=daemon.url, timeout=10) as client:
        first = client.get("/upstream/chat/trailers")
        second = client.get("/upstream/chat/trailers")
        assert first.text == second.text == expected
        assert local_port(first) == local_port(second)


def test_close_delimited_body_arrives_whole(daemon):
    with httpx.Client(base_url=daemon.url, timeout=10) as client:
        first = client.get("/upstream/closer/big")
        assert first.status_code == 200
        assert len(first.content) == len(big())
        assert hashlib.sha256(first.content).digest() == hashlib.sha256(big()).digest()
        # The proxy framed it for the client (chunked, or a close of its own): either way the
        # next request works, and if it kept the connection the framing was right.
        second = client.get("/upstream/closer/next")
        assert second.text == "/next"
        print("close-delimited: client connection",
              "kept" if local_port(first) == local_port(second) else "closed",
              "| framed as", first.headers.get("transfer-encoding") or
              f"content-length {first.headers.get('content-length')}")


def test_http10_server(daemon):
    with httpx.Client(base_url=daemon.url, timeout=10) as client:
        responses = [client.get("/upstream/files/hello.txt") for _ in range(3)]
        assert [r.text for r in responses] == ["hello from http.server\n"] * 3
        head = client.head("/upstream/files/hello.txt")
        assert (head.status_code, head.content) == (200, b"")
        modified = client.get("/upstream/files/hello.txt",
                              headers={"if-modified-since": responses[0].headers["last-modified"]})
        assert (modified.status_code, modified.content) == (304, b"")
        assert client.get("/upstream/files/hello.txt").text == "hello from http.server\n"


def test_head_204_304_have_no_body_and_the_connection_goes_on(daemon):
    page = (daemon.tmp / "www" / "page.html").read_bytes()
    with httpx.Client(base_url=daemon.url, timeout=10) as client:
        full = client.get("/upstream/web/page.html")
        assert full.content == page
        exchanges = [
            (client.head("/upstream/web/page.html"), 200),
            (client.get("/upstream/web/empty"), 204),
            (client.get("/upstream/web/page.html",
                        headers={"if-none-match": full.headers["etag"]}), 304),
            (client.get("/upstream/web/page.html",
                        headers={"if-modified-since": full.headers["last-modified"]}), 304),
        ]
        for r, status in exchanges:
            assert (r.status_code, r.content) == (status, b""), r.request
        last = client.get("/upstream/web/page.html")
        assert last.content == page
        # Stray body bytes would have made httpx drop the connection (or fail): one for all.
        ports = {local_port(r) for r, _ in exchanges} | {local_port(full), local_port(last)}
        assert len(ports) == 1, "every exchange on one connection"
    # The same with exact bytes: HEAD's Content-Length is not followed by a body.
    sock, reader = raw(daemon)
    with sock:
        sock.sendall(b"HEAD /upstream/web/page.html HTTP/1.1\r\nHost: gpuvisor\r\n\r\n")
        status, headers, body, _ = reader.response("HEAD")
        assert status == 200 and headers.get("content-length") == str(len(page))
        assert reader.nothing_more() == b"", "a HEAD response with a body"
        sock.sendall(get("/upstream/web/empty"))
        assert reader.response()[:1] == (204,)
        assert reader.nothing_more() == b"", "a 204 with a body"


UPLOAD_BYTES = 200 * 1024 * 1024


def upload_chunks(hasher=None):
    block = hashlib.sha256(b"seed").digest() * (1024 * 1024 // 32)  # 1 MiB
    for i in range(UPLOAD_BYTES // len(block)):
        piece = block[:-1] + bytes([i % 256])
        if hasher:
            hasher.update(piece)
        yield piece


def rss_bytes(pid):
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:  # it exited: daemon_survives says so
        pass
    return 0


def test_upload_streams_through_without_buffering(daemon):
    # A body streamed on holds a buffer or two; one buffered whole costs its size.
    # Against the RSS at the daemon's start: memory an earlier upload left mapped would hide it.
    pid = daemon.proc.pid
    baseline, peak, done = daemon.rss_at_start, [0], threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_bytes(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with httpx.Client(base_url=daemon.url, timeout=120) as client:
            r = client.post("/upstream/chat/upload", content=upload_chunks())
        assert r.status_code == 200, r.text
    finally:
        done.set()
        sampler.join()
    growth = peak[0] - baseline
    print(f"daemon RSS grew {growth / 2**20:.0f} MiB during a {UPLOAD_BYTES >> 20} MiB upload")
    assert growth < 64 * 2**20, f"the daemon held {growth >> 20} MiB: the body was buffered"


def test_200mb_chunked_upload_arrives_intact(daemon):
    sent = hashlib.sha256()
    with httpx.Client(base_url=daemon.url, timeout=120) as client:
        r = client.post("/upstream/chat/upload", content=upload_chunks(sent))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["bytes"] == UPLOAD_BYTES
    assert answer["sha256"] == sent.hexdigest()


def test_pipelined_requests_answered_in_order(daemon):
    sock, reader = raw(daemon)
    with sock:
        sock.sendall(get("/upstream/chat/stream?n=3&delay_ms=20") +
                     get("/upstream/closer/second") + get("/upstream/files/hello.txt"))
        assert reader.response()[2] == b"line 0\nline 1\nline 2\n"
        assert reader.response()[2] == b"/second"
        assert reader.response()[2] == b"hello from http.server\n"


def test_half_closed_client_gets_the_whole_response(daemon):
    # A client may shut down its sending side once its request is out. The proxy keeps that to
    # itself: Node's http server (the upstream here) ends a connection whose client half-closed.
    body = json.dumps(chat_body(n_tokens=8, delay_ms=30)).encode()
    sock, reader = raw(daemon)
    with sock:
        # Corked until the shutdown: the FIN goes in the request's own segment, as it does from
        # nc -N on a quiet machine (a FIN that comes much later is a client that gave up).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gpuvisor\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        sock.shutdown(socket.SHUT_WR)  # done sending; still reading
        status, _, text, _ = reader.response()
        assert status == 200
        assert sse_content(text.decode()) == tokens(8)


# Last: a proxy that mishandles Expect may leave the service's answer on a pooled upstream
# connection, where it would be served to whichever test came next.
@pytest.mark.parametrize("how", ["--data-binary", "-T"])
def test_expect_100_continue(daemon, how):
    data = os.urandom(64 * 1024)
    path = daemon.tmp / "expect-body"
    path.write_bytes(data)
    if how == "--data-binary":
        body_args = ["--data-binary", f"@{path}"]
    else:
        body_args = ["-X", "POST", "-T", str(path)]
    started = time.monotonic()
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-H", "Expect: 100-continue", "-w", "\n%{http_code}",
         *body_args, f"{daemon.url}/upstream/chat/upload"],
        capture_output=True, text=True, check=True)
    elapsed = time.monotonic() - started
    text, status = out.stdout.rsplit("\n", 1)
    assert status == "200", out
    answer = json.loads(text)
    assert answer["bytes"] == len(data)
    assert answer["sha256"] == hashlib.sha256(data).hexdigest()
    # Diagnostic only: curl waits 1 s for "100 Continue" before it sends anyway.
    print(f"curl {how} with Expect: {elapsed:.2f} s"
          f"{' (stalled waiting for 100 Continue?)' if elapsed > 0.9 else ''}")


# After all the traffic above: the proxy's counters, per service and status code, as Prometheus's
# own checker reads the exposition (parse errors and lint: names, types, help, units).
def test_metrics_pass_promtool(daemon):
    with httpx.Client(base_url=daemon.url) as client:
        text = client.get("/metrics").text
    assert 'gpuvisor_proxy_requests_total{service="chat"}' in text
    assert 'gpuvisor_proxy_responses_total{service="web",code="304"}' in text
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
