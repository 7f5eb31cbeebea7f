"""The proxy for real: Debian's Caddy in a container on the real Docker Engine, reached over
the real sshd fixture (an unprivileged user in the docker group), apps on its network, and
Debian's `hey` for load. Every test has its own host_dir (so its own proxy container),
network, ports and services, and removes them."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from plainsail import proxy
from plainsail.config import model as configlib
from plainsail.hosts.addresses import parse_host
from plainsail.hosts.executor import SSHExecutor, SSHOptions
from plainsail.proxy import argv as pargv
from tests.support.cli import plainsail
from tests.support.notes_app import BASE_IMAGE, TEST_LABEL
from tests.support.proxy_env import assert_served, get_through
from tests.support.services import free_port
from tests.support.sshd import SSHHost

CADDY_IMAGE = os.environ.get("PLAINSAIL_CADDY_IMAGE", "plainsail-caddy:bookworm")
APP_PORT = 8000
# A tiny app: its name on every answer, /slow takes 2 seconds.
APP_CODE = r"""
import http.server, os, time
NAME = os.environ["NAME"]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(2)
        body = ("%s %s %s\n" % (NAME, self.headers.get("Host"), self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8000), H).serve_forever()
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def caddy_ref(caddy_image: str) -> str:
    """The local Caddy image in the test registry (proxy.image needs a digest)."""
    return caddy_image


@dataclass
class ProxyHost:
    """One test's proxy set-up on the SSH host."""

    ssh: SSHHost
    ex: SSHExecutor
    image: str
    host_dir: str
    network: str
    http_port: int
    https_port: int
    tmp: Path
    apps: list[str] = field(default_factory=list)

    def config(self, service: str, *, host: str = "api.test", tls: str = "off",
               path: str = "", extra: str = "") -> configlib.Config:
        text = (f"service: {service}\nimage: registry.example.com/{service}\n"
                f"hosts: ['{self.ssh.host}']\nhost_dir: {self.host_dir}\n"
                f"ssh:\n  identity_file: {self.ssh.identity_file}\n"
                f"  known_hosts: {self.ssh.known_hosts}\n"
                f"app:\n  port: {APP_PORT}\nhealth:\n  path: /health\n"
                f"proxy:\n  host: {host}\n  image: {self.image}\n  tls: {tls}\n"
                f"  http_port: {self.http_port}\n  https_port: {self.https_port}\n"
                f"  network: {self.network}\n  drain: 10s\n{path}{extra}")
        f = self.tmp / f"{service}.yml"
        f.write_text(text)
        return configlib.load(f)

    def start_app(self, name: str) -> str:
        res = self.ssh.run(["docker", "run", "--detach", "--init", "--name", name,
                            "--label", TEST_LABEL, "--network", self.network,
                            "--env", f"NAME={name}", BASE_IMAGE, "python3", "-c", APP_CODE])
        assert res.returncode == 0, res.stderr
        self.apps.append(name)
        return name

    def get(self, host: str, path: str = "/", timeout: float = 10) -> tuple[int, str]:
        return get_through("127.0.0.1", self.http_port, host, path, timeout)

    def get_until(self, host: str, want: str, path: str = "/") -> tuple[int, str]:
        """GET until the answer contains `want` (a new app needs a moment to listen)."""
        deadline = time.monotonic() + 15
        while True:
            try:
                status, body = self.get(host, path)
            except OSError as exc:
                status, body = 0, str(exc)
            if want in body or time.monotonic() > deadline:
                return status, body
            time.sleep(0.1)


@pytest.fixture
def ph(ssh_host: SSHHost, caddy_ref: str, tmp_path: Path) -> Iterator[ProxyHost]:
    tag = uuid.uuid4().hex[:8]
    ex = SSHExecutor(parse_host(ssh_host.host),
                     SSHOptions(identity_file=str(ssh_host.identity_file),
                                known_hosts=str(ssh_host.known_hosts)))
    p = ProxyHost(ssh_host, ex, caddy_ref, f"~/.pst-{tag}", f"pst-{tag}", free_port(),
                  free_port(), tmp_path)
    try:
        yield p
    finally:
        name = pargv.container_name(p.host_dir)
        ssh_host.run(["docker", "rm", "-f", name, *p.apps])
        ssh_host.run(["docker", "network", "rm", p.network])
        ssh_host.run(["rm", "-rf", f"{ssh_host.home}/.pst-{tag}"])
        ex.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- boot


def test_boot_is_idempotent_and_admin_is_a_socket_only(ph: ProxyHost) -> None:
    cfg = ph.config(unique("svc"))
    first = proxy.ensure_booted(ph.ex, cfg)
    assert first.action == "created"
    again = proxy.ensure_booted(ph.ex, cfg)
    assert again.action == "none"
    home = str(ph.ssh.home)
    state = f"{home}/{ph.host_dir[2:]}/_proxy"
    listing = ph.ssh.run(["stat", "-c", "%F %a %U", state, f"{state}/admin.sock"]).stdout
    folder, sock = listing.splitlines()
    assert folder == f"directory 700 {ph.ssh.user}"
    assert sock.startswith("socket ") and sock.endswith(f" {ph.ssh.user}")
    # Nothing in the proxy listens on TCP but the two published ports (Docker's embedded
    # DNS resolver on 127.0.0.11 aside): the admin API is not on TCP.
    name = pargv.container_name(ph.host_dir)
    ports = ph.ssh.run(["docker", "port", name]).stdout
    assert sorted({line.split("/")[0] for line in ports.splitlines()}) == sorted(
        [str(ph.http_port), str(ph.https_port)])
    netstat = ph.ssh.run(["docker", "exec", name, "cat", "/proc/net/tcp", "/proc/net/tcp6"])
    listening = {int(f[1].rsplit(":", 1)[1], 16) for f in
                 (line.split() for line in netstat.stdout.splitlines()[1:])
                 if len(f) > 3 and f[3] == "0A" and not f[1].startswith("0B00007F:")}
    assert listening == {ph.http_port, ph.https_port}
    # A closing listener's queued connections move to the next configuration's socket
    # (docs/proxy.md, "What a switch costs a client"): set inside the proxy's namespace.
    migrate = ph.ssh.run(["docker", "exec", name, "cat", "/proc/sys/net/ipv4/tcp_migrate_req"])
    assert migrate.stdout.strip() == "1"
    recorded = json.loads(ph.ssh.run(["cat", f"{state}/settings.json"]).stdout)
    assert recorded["set_by"] == cfg.service

    # Stopped: boot starts it again; its socket gone: boot restarts it.
    ph.ssh.run(["docker", "stop", "-t", "1", name])
    assert proxy.ensure_booted(ph.ex, cfg).action == "started"
    ph.ssh.run(["rm", "-f", f"{state}/admin.sock"])
    with pytest.raises(proxy.ProxyError, match="admin socket .* is gone"):
        proxy.in_flight(ph.ex, cfg, "nothing")
    assert proxy.ensure_booted(ph.ex, cfg).action == "restarted"


def test_a_proxy_started_without_the_migrate_setting_is_named(
        ph: ProxyHost, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy container an earlier plainsail started (no tcp_migrate_req) keeps running;
    boot and status say so, with the way out, and a new container gets the setting."""
    cfg = ph.config(unique("svc"))
    name = pargv.container_name(ph.host_dir)
    plain_run = pargv.run

    def earlier_run(**kw: Any) -> list[str]:
        return plain_run(**{**kw, "migrate": False})

    monkeypatch.setattr(pargv, "run", earlier_run)
    assert proxy.ensure_booted(ph.ex, cfg).warning is None  # created just now: no news
    monkeypatch.setattr(pargv, "run", plain_run)
    inside = ph.ssh.run(["docker", "exec", name, "cat", "/proc/sys/net/ipv4/tcp_migrate_req"])
    assert inside.stdout.strip() == "0"
    again = proxy.ensure_booted(ph.ex, cfg)
    assert again.action == "none" and again.warning is not None
    assert f"docker rm -f {name}" in again.warning and "tcp_migrate_req=1" in again.warning
    assert proxy.status(ph.ex, cfg)["warning"] == again.warning
    ph.ssh.run(["docker", "rm", "-f", name])
    fresh = proxy.ensure_booted(ph.ex, cfg)
    assert fresh.action == "created" and fresh.warning is None
    assert proxy.ensure_booted(ph.ex, cfg).warning is None
    assert proxy.status(ph.ex, cfg)["warning"] is None


def test_other_host_level_settings_are_refused_naming_the_service(ph: ProxyHost) -> None:
    first = ph.config(unique("first"))
    proxy.ensure_booted(ph.ex, first)
    ph.https_port = free_port()
    other = ph.config(unique("other"))
    with pytest.raises(proxy.ProxyError) as err:
        proxy.ensure_booted(ph.ex, other)
    assert f"set by service {first.service}" in str(err.value)
    assert str(ph.https_port) in str(err.value)


# ---------------------------------------------------------------- routes and the switch


def hey(ph: ProxyHost, host: str, seconds: float, workers: int = 8) -> subprocess.Popen[str]:
    if not shutil.which("hey"):
        pytest.fail("hey is not installed; run scripts/setup.sh")
    return subprocess.Popen(
        ["hey", "-z", f"{seconds}s", "-c", str(workers), "-t", "10", "-host", host,
         f"http://127.0.0.1:{ph.http_port}/"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_switch_under_load_drops_nothing_and_a_slow_request_completes(ph: ProxyHost) -> None:
    cfg = ph.config(unique("svc"))
    proxy.ensure_booted(ph.ex, cfg)
    old = ph.start_app(unique("old"))
    new = ph.start_app(unique("new"))
    first = proxy.route_to(ph.ex, cfg, old)
    assert first.previous is None and first.reshaped
    assert ph.get_until("api.test", old)[0] == 200
    proxy.check_through(ph.ex, cfg)

    load = hey(ph, "api.test", 6)
    time.sleep(1.5)
    slow: dict[str, object] = {}

    def slow_request() -> None:
        slow["answer"] = ph.get("api.test", "/slow")

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.3)
    switched = proxy.route_to(ph.ex, cfg, new)
    assert switched.previous == proxy.upstream_of(cfg, old) and not switched.reshaped
    assert switched.in_flight >= 1  # the slow request at least
    drained, waited = proxy.drain(ph.ex, cfg, old)
    assert drained and waited > 0.5, (drained, waited)  # the slow request was counted
    ph.ssh.run(["docker", "stop", "-t", "1", old])
    t.join(10)
    out, _ = load.communicate(timeout=30)
    assert slow["answer"] == (200, f"{old} api.test /slow\n")
    assert_served(out, minimum=500, what="api.test")
    assert ph.get("api.test")[1].startswith(new)
    assert proxy.in_flight(ph.ex, cfg, new) == 0


def test_two_services_are_independent_and_maintenance_is_per_service(ph: ProxyHost) -> None:
    a = ph.config(unique("a"), host="a.test")
    b = ph.config(unique("b"), host="b.test", path="  path: /api\n")
    proxy.ensure_booted(ph.ex, a)
    proxy.ensure_booted(ph.ex, b)
    a1, b1, b2 = (ph.start_app(unique(n)) for n in ("a1", "b1", "b2"))
    proxy.route_to(ph.ex, a, a1)
    proxy.route_to(ph.ex, b, b1)
    assert ph.get_until("a.test", a1)[0] == 200
    assert ph.get_until("b.test", b1, "/api/x")[1] == f"{b1} b.test /api/x\n"
    assert ph.get("b.test", "/other") == (404, "No service is routed here.\n")

    load = hey(ph, "a.test", 3, workers=4)
    proxy.route_to(ph.ex, b, b2)  # switching b does not disturb a
    assert ph.get_until("b.test", b2, "/api/")[0] == 200
    assert proxy.maintenance(ph.ex, b, True, "Back at {noon} <soon>")
    status, body = ph.get("b.test", "/api/")
    assert status == 503 and "Back at &#123;noon&#125; &lt;soon&gt;" in body
    conn = http.client.HTTPConnection("127.0.0.1", ph.http_port, timeout=5)
    conn.request("GET", "/api/", headers={"Host": "b.test"})
    assert conn.getresponse().getheader("Retry-After") == "60"
    conn.close()
    # A switch behind the page keeps the page; off shows the switched app.
    proxy.route_to(ph.ex, b, b1)
    assert ph.get("b.test", "/api/")[0] == 503
    info = {r["service"]: r for r in proxy.status(ph.ex, b)["routes"]}
    assert info[b.service]["maintenance"] == "Back at {noon} <soon>"
    assert info[a.service]["maintenance"] is None and info[a.service]["upstream"] == \
        proxy.upstream_of(a, a1)
    assert proxy.maintenance(ph.ex, b, False)
    assert ph.get_until("b.test", b1, "/api/")[0] == 200
    out, _ = load.communicate(timeout=30)
    assert_served(out, what="a.test")
    assert ph.get("a.test")[1].startswith(a1)
    assert proxy.remove_route(ph.ex, b)
    assert ph.get("b.test", "/api/")[0] == 404 and ph.get("a.test")[0] == 200


def test_overlapping_routes_are_refused_and_check_through_proves_the_container(
        ph: ProxyHost) -> None:
    """Two services on one host name and path: the second is refused before anything
    changes, and a longer path under another's only with proxy.nested. check-through
    passes only for an answer that came through the service's own route from the
    container it names."""
    a = ph.config(unique("a"), host="shared.test")
    proxy.ensure_booted(ph.ex, a)
    a1 = ph.start_app(unique("a1"))
    proxy.route_to(ph.ex, a, a1)
    proxy.check_through(ph.ex, a, a1)
    with pytest.raises(proxy.ProxyError, match="served by|came from"):
        proxy.check_through(ph.ex, a, ph.start_app(unique("other")))
    before = proxy.status(ph.ex, a)["routes"]

    same = ph.config(unique("same"), host="shared.test")
    with pytest.raises(proxy.ProxyError, match=f"{a.service} already has path /"):
        proxy.preflight(ph.ex, same)
    wild = ph.config(unique("wild"), host="'*.test'")
    with pytest.raises(proxy.ProxyError, match="host name"):
        proxy.preflight(ph.ex, wild)
    api = ph.config(unique("api"), host="shared.test", path="  path: /api\n")
    with pytest.raises(proxy.ProxyError, match="proxy.nested: true"):
        proxy.preflight(ph.ex, api)
    s1 = ph.start_app(unique("s1"))
    with pytest.raises(proxy.ProxyError, match="already has path"):
        proxy.route_to(ph.ex, same, s1)  # checked again under the lock
    assert proxy.status(ph.ex, a)["routes"] == before  # nothing changed
    assert ph.get_until("shared.test", a1)[1].startswith(a1)

    nested = ph.config(unique("api"), host="shared.test",
                       path="  path: /api\n  nested: true\n")
    proxy.preflight(ph.ex, nested)
    n1 = ph.start_app(unique("n1"))
    proxy.route_to(ph.ex, nested, n1)
    proxy.check_through(ph.ex, nested, n1)
    assert ph.get_until("shared.test", n1, "/api/x")[1].startswith(n1)
    assert ph.get("shared.test", "/other")[1].startswith(a1)
    # A route that declared nested may be under a shorter one deployed later, too.
    b = ph.config(unique("b"), host="b.test")
    proxy.route_to(ph.ex, b, ph.start_app(unique("b1")))
    proxy.remove_route(ph.ex, a)
    proxy.route_to(ph.ex, a, a1)
    # A third service with the same host and "/": its check never passes on a's answer.
    same_route = caddy_route(ph, same, a1)
    with pytest.raises(proxy.ProxyError, match="did not come through"):
        proxy.check_through(ph.ex, same_route)
    # The public never sees the check's headers.
    conn = http.client.HTTPConnection("127.0.0.1", ph.http_port, timeout=5)
    conn.request("GET", "/", headers={"Host": "shared.test", "X-Plainsail-Check": "guess"})
    resp = conn.getresponse()
    assert resp.getheader("X-Plainsail-Upstream") is None
    conn.close()


def caddy_route(ph: ProxyHost, cfg: configlib.Config, container: str) -> configlib.Config:
    """Give `cfg` a check route on the proxy with no route of its own for its host name,
    as an old version of plainsail could leave it (the overlap got past no check)."""
    from plainsail.proxy import caddyconf
    from plainsail.proxy.admin import Admin
    from plainsail.proxy.routes import desired, new_token

    st = proxy.read_state(ph.ex, cfg)
    with Admin(ph.ex, st.socket_path) as api:
        config = api.config()
        route = desired(cfg, proxy.upstream_of(cfg, container), None, None, new_token())
        route = replace(route, hosts=["nobody.invalid"])
        api.load(caddyconf.with_service(config, route))
    return replace(cfg, proxy=replace(cfg.proxy, hosts=["shared.test"])) \
        if cfg.proxy else cfg


# ---------------------------------------------------------------- TLS


def tls_get(ph: ProxyHost, host: str, ctx: ssl.SSLContext, path: str = "/") -> tuple[int, str]:
    raw = socket.create_connection(("127.0.0.1", ph.https_port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname=host)
    try:
        conn = http.client.HTTPConnection(host, ph.https_port, timeout=10)
        conn.sock = sock
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        sock.close()


def test_tls_internal_chain_verifies_and_http_redirects(ph: ProxyHost) -> None:
    cfg = ph.config(unique("tls"), host="secure.test", tls="internal")
    proxy.ensure_booted(ph.ex, cfg)
    app = ph.start_app(unique("app"))
    proxy.route_to(ph.ex, cfg, app)
    root = proxy.root_certificate(ph.ex, cfg)
    ctx = ssl.create_default_context(cadata=root)
    deadline = time.monotonic() + 20
    while True:  # the certificate is issued in the background right after the route
        try:
            answer = tls_get(ph, "secure.test", ctx)
            break
        except (ssl.SSLError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert answer == (200, f"{app} secure.test /\n")
    # A client that trusts only the system roots refuses the chain.
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_get(ph, "secure.test", ssl.create_default_context())
    conn = http.client.HTTPConnection("127.0.0.1", ph.http_port, timeout=5)
    conn.request("GET", "/a?b=1", headers={"Host": "secure.test"})
    r = conn.getresponse()
    assert r.status == 308
    assert r.getheader("Location") == f"https://secure.test:{ph.https_port}/a?b=1"
    proxy.check_through(ph.ex, cfg)


def test_tls_files_are_written_0600_and_served(ph: ProxyHost) -> None:
    cert, key = ph.tmp / "cert.pem", ph.tmp / "key.pem"
    made = sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
              "-subj", "/CN=files.test", "-addext", "subjectAltName=DNS:files.test",
              "-keyout", str(key), "-out", str(cert), check=False)
    assert made.returncode == 0, made.stderr
    cfg = ph.config(unique("files"), host="files.test", tls=f"{{cert: {cert}, key: {key}}}")
    proxy.ensure_booted(ph.ex, cfg)
    app = ph.start_app(unique("app"))
    with caplog_all() as logged:
        proxy.route_to(ph.ex, cfg, app)
    key_text = key.read_text()
    assert key_text.splitlines()[1] not in logged.getvalue()
    state = f"{ph.ssh.home}/{ph.host_dir[2:]}/_proxy/certs/{cfg.service}"
    modes = ph.ssh.run(["sh", "-c", 'stat -c "%a %n" "$1"/*', "sh", state]).stdout.split("\n")
    assert [m.split()[0] for m in modes if m] == ["600", "600"]
    ctx = ssl.create_default_context(cafile=str(cert))
    assert tls_get(ph, "files.test", ctx) == (200, f"{app} files.test /\n")


class caplog_all:  # noqa: N801 - a tiny context manager
    """Capture everything plainsail logs (at debug level) while the block runs."""

    def __enter__(self) -> object:
        import io
        import logging

        self.buf = io.StringIO()
        self.handler = logging.StreamHandler(self.buf)
        self.logger = logging.getLogger("plainsail")
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        return self.buf

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)


# ---------------------------------------------------------------- the commands


def test_proxy_commands_boot_status_logs(ph: ProxyHost) -> None:
    cfg = ph.config(unique("cli"))
    path = str(cfg.path)
    r = plainsail("proxy", "boot", "-c", path)
    assert r.code == 0 and "created and started" in r.out, r.text
    r = plainsail("proxy", "boot", "-c", path)
    assert r.code == 0 and "already running" in r.out, r.text
    app = ph.start_app(unique("app"))
    proxy.route_to(ph.ex, cfg, app)
    r = plainsail("proxy", "status", "-c", path)
    assert r.code == 0 and f"{cfg.service}: api.test (tls off) -> {app}:{APP_PORT}" in r.out, \
        r.text
    r = plainsail("proxy", "status", "--json", "-c", path)
    (host,) = json.loads(r.out)["hosts"]
    assert host["status"] == "running" and host["set_by"] == cfg.service
    assert host["routes"][0]["upstream"] == f"{app}:{APP_PORT}"
    r = plainsail("proxy", "logs", "--tail", "5", "-c", path)
    assert r.code == 0 and len(r.out.splitlines()) == 6, r.text  # a heading and 5 lines
    ph.http_port = free_port()
    other = ph.config(unique("other"))
    r = plainsail("proxy", "boot", "-c", str(other.path))
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1, r.text
    assert f"set by service {cfg.service}" in r.err
