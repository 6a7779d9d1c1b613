"""A real gpuvisor daemon per test module, on port 0, with the fake NVML (one 24 GiB GPU).

    GPUVISOR_BUILD=build PYTHONPATH=clients/python /usr/bin/python3 -B -m pytest -q \
        -p no:cacheprovider clients/python/tests

Everything is written under a temporary directory; nothing into the source tree."""
import json
import os
import pathlib
import selectors
import shutil
import signal
import subprocess
import tempfile
import time

import pytest


def build_dir():
    build = os.environ.get("GPUVISOR_BUILD")
    if not build:
        pytest.fail("set GPUVISOR_BUILD to the build directory (ctest does)")
    return pathlib.Path(build).resolve()


class Daemon:
    def __init__(self, url, proc, tmp, build):
        self.url, self.proc, self.tmp, self.build = url, proc, tmp, build
        self.gpu_dir = tmp / "gpu"
        self.children = []

    def env(self):
        return dict(os.environ, FAKE_NVML_DIR=str(self.gpu_dir))

    def hold_vram(self, mb):
        """A process that is not gpuvisor's, holding `mb` MiB of simulated VRAM."""
        p = subprocess.Popen([str(self.build / "gpuvisor-testsvc"), "--port", "0",
                              "--vram-mb", str(mb)], env=self.env(), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        self.children.append(p)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            if b"holding" in line:
                return p
        p.kill()
        raise RuntimeError("testsvc did not hold its VRAM")

    def stop_children(self):
        for p in self.children:
            if p.poll() is None:
                p.kill()
            p.wait()


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


def start_daemon(prefix, config_for, token=None):
    build = build_dir()
    root = pathlib.Path(os.environ.get("TEST_TMPDIR", tempfile.gettempdir()))
    root.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    (tmp / "gpu" / "holds").mkdir(parents=True)
    (tmp / "gpu" / "devices.json").write_text(json.dumps({"devices": [{"total_mb": 24576}]}))
    (tmp / "gpuvisor.yaml").write_text(json.dumps(config_for(build, tmp), indent=2))
    env = dict(os.environ, GPUVISOR_NVML_LIBRARY=str(build / "libgpuvisor-fake-nvml.so"),
               FAKE_NVML_DIR=str(tmp / "gpu"))
    env.pop("GPUVISOR_TOKEN", None)
    if token:
        env["GPUVISOR_TOKEN"] = token
    log = open(tmp / "daemon.log", "ab")
    proc = subprocess.Popen(
        [str(build / "gpuvisor"), "serve", "--config", str(tmp / "gpuvisor.yaml"),
         "--listen", "127.0.0.1:0", "--state-dir", str(tmp / "state"), "--log-level", "info"],
        env=env, stdout=subprocess.PIPE, stderr=log)
    log.close()
    try:
        url = read_listen_url(proc, tmp / "daemon.log")
    except Exception:
        proc.kill()
        proc.wait()
        raise
    return Daemon(url, proc, tmp, build)


def stop_daemon(d):
    d.stop_children()
    d.proc.send_signal(signal.SIGTERM)
    try:
        d.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait()
    if os.environ.get("GPUVISOR_KEEP_TMP") is None:
        shutil.rmtree(d.tmp, ignore_errors=True)


def default_config(build, tmp):
    svc = str(build / "gpuvisor-testsvc")
    return {
        "services": {
            "small": {"command": [svc, "--port", "0", "--vram-mb", "2000"],
                      "vram_mb": 2000, "priority": 10, "phases": [1],
                      "stop_grace": "2s"},
            "big": {"command": [svc, "--port", "0", "--vram-mb", "16000"],
                    "vram_mb": 16000, "priority": 20, "phases": [2], "stop_grace": "2s"},
        },
        "plugins": {
            "categories": {"test": "Tests"},
            "manifests": [{
                "name": "echo", "category": "test", "mode": "worker",
                "worker": {"command": [str(build / "gpuvisor-testworker")]},
                "config_schema": {"type": "object",
                                  "properties": {"speed": {"type": "number", "minimum": 0.5,
                                                           "maximum": 2, "default": 1.0}}},
            }],
        },
    }


@pytest.fixture(scope="module")
def daemon(request):
    d = start_daemon(f"clients-python-{request.module.__name__}-", default_config)
    os.environ["GPUVISOR_URL"] = d.url
    try:
        yield d
    finally:
        os.environ.pop("GPUVISOR_URL", None)
        stop_daemon(d)


@pytest.fixture(autouse=True)
def daemon_alive(request):
    if "daemon" not in request.fixturenames:
        yield
        return
    d = request.getfixturevalue("daemon")
    assert d.proc.poll() is None, "the daemon is down"
    yield
    if d.proc.poll() is not None:
        log = (d.tmp / "daemon.log").read_text()[-1500:]
        pytest.fail(f"the daemon exited during this test; its log ends:\n{log}")
