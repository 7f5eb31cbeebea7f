"""The proxy's pure parts: argv lists, Caddy's JSON, state parsing, config validation, and
the admin client against a local unix-socket server. No Docker, no SSH."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from plainsail.config import model as configlib
from plainsail.errors import ConfigError
from plainsail.hosts.addresses import Host
from plainsail.hosts.executor import LocalExecutor
from plainsail.proxy import argv, caddyconf, overlap
from plainsail.proxy import host as proxyhost
from plainsail.proxy.admin import Admin, ProxyError
from plainsail.proxy.caddyconf import ServiceRoute
from plainsail.proxy.host import (
    check_settings,
    lacks_migrate_warning,
    parse_state,
    proxy_lock,
    settings_of,
)
from plainsail.proxy.routes import _shape_of, check_host, check_path, desired

ROOT = Path(__file__).resolve().parents[1]
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"caddy:2.10@{DIGEST}"


def cfg_of(proxy: str, app: str = "", service: str = "api") -> configlib.Config:
    text = (f"service: {service}\nimage: registry.example.com/{service}\n"
            f"proxy:\n{proxy}" + (f"app:\n{app}" if app else ""))
    return configlib.parse(text, Path("plainsail.yml"), env={})


def problems(proxy: str, app: str = "") -> str:
    with pytest.raises(ConfigError) as err:
        cfg_of(proxy, app)
    return str(err.value)


# ---------------------------------------------------------------- config


def test_proxy_block_defaults_and_forms() -> None:
    p = cfg_of(f"  host: API.Example.com\n  image: {IMAGE}\n").proxy
    assert p == configlib.ProxyConfig(hosts=["api.example.com"], image=IMAGE)
    assert p.tls.mode == "auto" and p.drain == 30 and p.network == "plainsail"
    p = cfg_of(f"  hosts: [a.test, '*.b.test']\n  path: /api/\n  image: {IMAGE}\n"
               "  tls: {cert: c.pem, key: k.pem}\n  drain: 0\n").proxy
    assert p is not None and p.hosts == ["a.test", "*.b.test"] and p.path == "/api"
    assert p.tls == configlib.ProxyTLS("files", "c.pem", "k.pem") and p.drain == 0
    for spelling in ("off", "false", "'off'", "Off"):
        assert cfg_of(f"  host: a.test\n  image: {IMAGE}\n  tls: {spelling}\n"
                      ).proxy.tls.mode == "off"  # type: ignore[union-attr]
    assert cfg_of(f"  host: a.test\n  image: {IMAGE}\n  tls: internal\n"
                  ).proxy.tls.enabled  # type: ignore[union-attr]


@pytest.mark.parametrize(("block", "app", "expected"), [
    (f"  image: {IMAGE}\n", "", "exactly one of host"),
    (f"  host: a.test\n  hosts: [b.test]\n  image: {IMAGE}\n", "", "exactly one of host"),
    ("  host: a.test\n", "", "proxy.image: is required"),
    ("  host: a.test\n  image: caddy:2.10\n", "", "pinned by digest"),
    ("  host: a.test\n  image: Caddy@sha256:12\n", "", "pinned by digest"),
    (f"  host: a.test\n  image: {IMAGE}\n  tls: maybe\n", "", "'maybe' is not one of"),
    (f"  host: a.test\n  image: {IMAGE}\n  tls: {{cert: c.pem}}\n", "", "proxy.tls.key"),
    (f"  host: a.test\n  image: {IMAGE}\n  tls: {{cert: c, key: k, ca: x}}\n", "",
     "unknown key"),
    (f"  host: a_b.test\n  image: {IMAGE}\n", "", "is not a host name"),
    (f"  hosts: []\n  image: {IMAGE}\n", "", "at least 1"),
    (f"  hosts: [a.test, a.test]\n  image: {IMAGE}\n", "", "listed twice"),
    (f"  host: a.test\n  image: {IMAGE}\n  path: api\n", "", "not a path prefix"),
    (f"  host: a.test\n  image: {IMAGE}\n  path: /a*\n", "", "not a path prefix"),
    (f"  host: a.test\n  image: {IMAGE}\n  network: bridge\n", "", "Docker's own networks"),
    (f"  host: a.test\n  image: {IMAGE}\n  http_port: 8080\n  https_port: 8080\n", "",
     "must differ"),
    (f"  host: a.test\n  image: {IMAGE}\n  drain: 2h\n", "", "proxy.drain"),
    (f"  host: a.test\n  image: {IMAGE}\n  color: blue\n", "", "unknown key"),
    (f"  host: a.test\n  image: {IMAGE}\n", "  publish: 8080\n", "remove app.publish"),
    (f"  host: a.test\n  image: {IMAGE}\n", "  network: host\n", "remove network: host"),
])
def test_proxy_block_is_validated_strictly(block: str, app: str, expected: str) -> None:
    assert expected in problems(block, app)


def test_add_hosts() -> None:
    app = ("  add_hosts: ['host.docker.internal:host-gateway', 'db.internal:10.0.0.5', "
           "'v6.internal:fd00::1']\n")
    cfg = configlib.parse("service: s\nimage: r.example.com/s\napp:\n" + app,
                          Path("plainsail.yml"), env={})
    assert cfg.app.add_hosts == ["host.docker.internal:host-gateway", "db.internal:10.0.0.5",
                                 "v6.internal:fd00::1"]
    for bad in ("nohost", "a b:1.2.3.4", "db:not-an-ip", "*.x:1.2.3.4"):
        with pytest.raises(ConfigError, match="is not NAME:ADDRESS"):
            configlib.parse(f"service: s\nimage: r.example.com/s\napp:\n  add_hosts: ['{bad}']\n",
                            Path("plainsail.yml"), env={})


def test_every_proxy_key_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for key in ("proxy", "proxy.host", "proxy.hosts", "proxy.path", "proxy.tls",
                "proxy.http_port", "proxy.https_port", "proxy.drain", "proxy.network",
                "proxy.image", "app.add_hosts"):
        assert f"`{key}`" in doc, key


# ---------------------------------------------------------------- argv


def test_run_argv_is_plain_data() -> None:
    s = argv.Settings(IMAGE, 80, 443, "plainsail")
    assert argv.run(name="plainsail-proxy", settings=s, state_dir="/home/d/.plainsail/_proxy",
                    user="1000:1000") == [
        "docker", "run", "--detach", "--name", "plainsail-proxy",
        "--restart", "unless-stopped", "--user", "1000:1000",
        "--sysctl", "net.ipv4.ip_unprivileged_port_start=0",
        "--sysctl", "net.ipv4.tcp_migrate_req=1",
        "--network", "plainsail", "--publish", "80:80", "--publish", "443:443",
        "--volume", "/home/d/.plainsail/_proxy:/plainsail",
        "--env", "HOME=/plainsail", "--env", "XDG_CONFIG_HOME=/plainsail/config",
        "--env", "XDG_DATA_HOME=/plainsail/data",
        "--label", "dev.plainsail.role=proxy",
        "--label", "dev.plainsail.proxy-settings=" + json.dumps(
            {"http_port": 80, "https_port": 443, "image": IMAGE, "network": "plainsail"},
            separators=(",", ":")),
        "--entrypoint", "caddy", IMAGE, "run", "--config", "/plainsail/boot.json", "--resume",
    ]
    old_kernel = argv.run(name="p", settings=s, state_dir="/d", user="1:1", migrate=False)
    assert "net.ipv4.tcp_migrate_req=1" not in old_kernel
    assert "net.ipv4.ip_unprivileged_port_start=0" in old_kernel
    assert argv.ensure_network("n; rm -rf /") == [
        "sh", "-c", argv.ENSURE_NETWORK, "sh", "n; rm -rf /", "dev.plainsail.role=proxy"]
    assert argv.state("plainsail-proxy", "~/.plainsail/_proxy")[-2:] == [
        "plainsail-proxy", "~/.plainsail/_proxy"]
    assert argv.logs("p", 5) == ["docker", "logs", "--tail", "5", "--timestamps", "p"]


def test_container_name_is_one_per_state_folder() -> None:
    assert argv.container_name("~/.plainsail") == "plainsail-proxy"
    assert argv.container_name("~/.plainsail/") == "plainsail-proxy"
    other = argv.container_name("/srv/plainsail")
    assert other.startswith("plainsail-proxy-") and other != argv.container_name("/srv/x")


def test_state_script_runs_in_a_real_shell(tmp_path: Path) -> None:
    """The script itself, against a home with a settings file (Docker is not asked: a
    missing `docker` reads as no container)."""
    import subprocess

    home = tmp_path / "home"
    (home / ".ps" / "_proxy").mkdir(parents=True)
    (home / ".ps" / "_proxy" / "settings.json").write_text('{"set_by": "billing"}\n')
    out = subprocess.run(argv.state("plainsail-proxy-x", "~/.ps/_proxy"), capture_output=True,
                         text=True, env={"HOME": str(home), "PATH": "/usr/bin:/bin"}).stdout
    st = parse_state("plainsail-proxy-x", "~/.ps/_proxy", out)
    assert st.home == str(home) and st.state_dir == f"{home}/.ps/_proxy"
    assert st.status == "missing" and st.socket is False and st.set_by == "billing"
    assert st.ids == f"{os.getuid()}:{os.getgid()}"
    assert st.migrate is Path("/proc/sys/net/ipv4/tcp_migrate_req").exists()


def test_parse_state_and_the_settings_check() -> None:
    s = argv.Settings(IMAGE, 80, 443, "plainsail")
    out = (f"home /home/d\nids 1000:1000\ncontainer running|{s.to_label()}\nsocket yes\n"
           '{"set_by": "billing", "set_at": "2026-01-01T00:00:00Z"}\n')
    st = parse_state("plainsail-proxy", "~/.plainsail/_proxy", out)
    assert (st.status, st.settings, st.socket, st.set_by) == ("running", s, True, "billing")
    assert st.migrate is False  # a host that did not say: the proxy starts without it
    assert st.migrating is None and not st.lacks_migrate
    told = out.replace("socket yes\n", "migrating <no value>\nsocket yes\nmigrate yes\n")
    old = parse_state("plainsail-proxy", "~/.plainsail/_proxy", told)
    assert old.settings == s and old.recorded["set_by"] == "billing"
    assert old.lacks_migrate and "docker rm -f plainsail-proxy" in str(
        lacks_migrate_warning(old))
    new = parse_state("p", "~/.plainsail/_proxy", told.replace("<no value>", "1"))
    assert not new.lacks_migrate and lacks_migrate_warning(new) is None
    no_kernel = parse_state("p", "~/.plainsail/_proxy", told.replace("migrate yes", "migrate no"))
    assert not no_kernel.lacks_migrate  # nothing to gain: no warning
    assert parse_state("p", "~/.plainsail/_proxy", out.replace(
        "socket yes\n", "socket yes\nmigrate yes\n")).migrate is True
    assert st.socket_path == "/home/d/.plainsail/_proxy/admin.sock"
    ex = LocalExecutor(Host("local"))
    same = cfg_of(f"  host: a.test\n  image: {IMAGE}\n")
    assert settings_of(same) == s
    check_settings(ex, same, st)  # no error
    other = cfg_of(f"  host: a.test\n  image: {IMAGE}\n  http_port: 8080\n")
    with pytest.raises(ProxyError, match="set by service billing.*ports 8080/443"):
        check_settings(ex, other, st)
    missing = parse_state("p", "~/.plainsail/_proxy",
                          "home /h\nids 1:1\ncontainer missing|\nsocket no\n")
    assert missing.status == "missing" and missing.settings is None and missing.recorded == {}
    check_settings(ex, other, missing)


# ---------------------------------------------------------------- Caddy's JSON


def route(service: str, upstream: str, **kw: Any) -> ServiceRoute:
    base: dict[str, Any] = {"hosts": [f"{service}.test"], "path": "/", "tls": "off"}
    base.update(kw)
    return ServiceRoute(service=service, upstream=upstream, **base)


def test_boot_config_has_the_admin_api_on_a_unix_socket_only() -> None:
    c = caddyconf.boot_config(80, 443)
    assert c["admin"]["listen"] == "unix//plainsail/admin.sock"
    assert c["admin"]["config"] == {"persist": True}
    servers = c["apps"]["http"]["servers"]
    assert servers["plainsail-http"]["listen"] == [":80"]
    assert servers["plainsail-https"]["listen"] == [":443"]
    assert [r["@id"] for s in servers.values() for r in s["routes"]] == [
        caddyconf.fallback_id("plainsail-http"), caddyconf.fallback_id("plainsail-https")]


def test_services_are_independent_in_the_config() -> None:
    c = caddyconf.boot_config(80, 443)
    c = caddyconf.with_service(c, route("a", "a1:8000"))
    c = caddyconf.with_service(c, route("b", "b1:8000", path="/api", tls="internal"))
    assert caddyconf.services(c) == ["a", "b"]
    before_b = caddyconf.find(c, "ps.b.route")
    c2 = caddyconf.with_service(c, caddyconf.switched(route("a", "a1:8000"), "a2:8000"))
    assert caddyconf.find(c2, "ps.b.route") == before_b
    assert caddyconf.current_upstream(c2, "a") == "a2:8000"
    assert caddyconf.current_draining(c2, "a") == ["a1:8000"]
    # b's TLS policy and redirect, and only b's, go when b is removed.
    assert caddyconf.find(c2, "ps.b.tls")["subjects"] == ["b.test"]  # type: ignore[index]
    gone = caddyconf.without_service(c2, "b")
    assert not [i for i in caddyconf.walk_ids(gone) if i.startswith("ps.b.")]
    assert caddyconf.without_service(gone, "a") == caddyconf.without_service(
        caddyconf.boot_config(80, 443), "x")


def test_route_shape() -> None:
    r = route("api", "api-v2:8000", hosts=["api.test"], path="/api", tls="files",
              cert_file="/plainsail/certs/api/h.crt", key_file="/plainsail/certs/api/h.key",
              https_port=8443, maintenance="later")
    c = caddyconf.with_service(caddyconf.boot_config(8080, 8443), r)
    servers = c["apps"]["http"]["servers"]
    https_ids = [x["@id"] for x in servers["plainsail-https"]["routes"]]
    assert https_ids == ["ps.api.route", caddyconf.fallback_id("plainsail-https")]
    main = servers["plainsail-https"]["routes"][0]
    assert main["match"] == [{"host": ["api.test"], "path": ["/api", "/api/*"]}]
    inner = main["handle"][0]["routes"]
    assert inner[0]["@id"] == "ps.api.maintenance"
    assert inner[0]["handle"][0]["status_code"] == 503
    assert inner[1]["handle"][0]["upstreams"] == [{"dial": "api-v2:8000"}]
    redirect = servers["plainsail-http"]["routes"][0]
    assert redirect["handle"][0]["headers"]["Location"] == [
        "https://{http.request.host}:8443{http.request.uri}"]
    assert c["apps"]["tls"]["certificates"]["load_files"] == [{
        "@id": "ps.api.cert", "certificate": "/plainsail/certs/api/h.crt",
        "key": "/plainsail/certs/api/h.key"}]
    # What the proxy has can be read back into the same shape (maintenance on/off uses it).
    assert _shape_of(c, "api", "api-v2:8000", "later") == r
    assert caddyconf.route_info(c, "api")["tls"] == "files"


def test_longer_prefixes_come_first_and_the_fallback_last() -> None:
    c = caddyconf.boot_config(80, 443)
    c = caddyconf.with_service(c, route("root", "r:1", hosts=["x.test"]))
    c = caddyconf.with_service(c, route("api", "a:1", hosts=["x.test"], path="/api"))
    c = caddyconf.with_service(c, route("v2", "v:1", hosts=["x.test"], path="/api/v2"))
    ids = [r["@id"] for r in c["apps"]["http"]["servers"]["plainsail-http"]["routes"]]
    assert ids == ["ps.v2.route", "ps.api.route", "ps.root.route",
                   caddyconf.fallback_id("plainsail-http")]


def test_no_two_objects_share_an_id_as_caddy_2_8_requires() -> None:
    c = caddyconf.boot_config(80, 443)
    c = caddyconf.with_service(c, route("api", "a:1", hosts=["x.test"]))
    ids = list(caddyconf.walk_ids(c))
    assert len(ids) == len(set(ids)), ids
    # a config saved when both servers' fallbacks shared one id gets one each again
    for server in c["apps"]["http"]["servers"].values():
        server["routes"][-1]["@id"] = caddyconf.FALLBACK
    caddyconf.sort_routes(c)
    ids = list(caddyconf.walk_ids(c))
    assert len(ids) == len(set(ids)) and caddyconf.FALLBACK not in ids, ids


def test_maintenance_page_escapes_html_and_placeholders() -> None:
    page = caddyconf.maintenance_page("<b>{http.request.host}</b> & co")
    assert "&lt;b&gt;&#123;http.request.host&#125;&lt;/b&gt; &amp; co" in page
    assert "{" not in page and "}" not in page
    c = caddyconf.with_service(caddyconf.boot_config(80, 443),
                               route("a", "a:1", maintenance="<b>{x}</b>"))
    assert caddyconf.current_maintenance(c, "a") == "<b>{x}</b>"


def test_desired_route_from_config_and_check_target() -> None:
    cfg = cfg_of(f"  hosts: ['*.x.test', y.test]\n  path: /api\n  image: {IMAGE}\n"
                 "  tls: {cert: c.pem, key: k.pem}\n  https_port: 8443\n")
    r = desired(cfg, "api-1:8080", None, "abc")
    assert r.cert_file == "/plainsail/certs/api/abc.crt" and r.tls == "files"
    assert r.hosts == ["*.x.test", "y.test"] and r.https_port == 8443
    assert check_host(cfg) == "plainsail-check.x.test"
    assert check_path(cfg) == "/api/health"


# ---------------------------------------------------------------- the admin client


@pytest.fixture
def unix_server() -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    seen: list[tuple[str, str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(("GET", self.path, self.headers["Host"]))
            body = b'[{"address": "a:1", "num_requests": 2, "fails": 0}]' \
                if self.path == "/reverse_proxy/upstreams" else b'{"error": "nope"}'
            self.send_response(200 if self.path.startswith("/reverse") else 400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class UnixServer(HTTPServer):
        address_family = socket.AF_UNIX

        def server_bind(self) -> None:
            self.socket.bind(self.server_address)

        def get_request(self) -> tuple[socket.socket, Any]:
            conn, _ = self.socket.accept()
            return conn, ("local", 0)

    folder = tempfile.mkdtemp(prefix="pst-")
    path = os.path.join(folder, "admin.sock")
    server = UnixServer(path, Handler)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path, seen
    server.shutdown()
    server.server_close()
    os.unlink(path)
    os.rmdir(folder)


def test_admin_client_speaks_http_on_the_socket(
        unix_server: tuple[str, list[tuple[str, str, str]]]) -> None:
    path, seen = unix_server
    ex = LocalExecutor(Host("local"))
    with Admin(ex, path) as api:
        assert api.upstream_counts() == {"a:1": 2}
        with pytest.raises(ProxyError, match="refused to read its configuration: 400 nope"):
            api.config()
    assert seen[0] == ("GET", "/reverse_proxy/upstreams", caddyconf.ADMIN_ORIGIN)


def test_admin_client_says_how_to_fix_a_missing_socket(tmp_path: Path) -> None:
    ex = LocalExecutor(Host("local"))
    with Admin(ex, str(tmp_path / "admin.sock")) as api, pytest.raises(
            ProxyError, match="does not answer .* plainsail proxy boot"):
        api.config()


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("api.test", "API.test", True), ("*.test", "api.test", True),
    ("*.test", "a.b.test", False), ("*.x.test", "*.x.test", True),
    ("*.x.test", "x.test", False), ("a.test", "b.test", False),
])
def test_host_patterns_overlap_as_caddy_matches_them(a: str, b: str, expected: bool) -> None:
    assert overlap.hosts_overlap(a, b) is expected
    assert overlap.hosts_overlap(b, a) is expected


def test_path_prefixes_nest_by_segment() -> None:
    assert overlap.under("/api", "/") and overlap.under("/api/v2", "/API")
    assert not overlap.under("/apiv2", "/api") and not overlap.under("/api", "/api")
    assert not overlap.under("/", "/api")


def test_overlapping_routes_are_refused_unless_nested() -> None:
    c = caddyconf.with_service(caddyconf.boot_config(80, 443),
                               route("web", "w:1", hosts=["*.x.test"]))
    same = overlap.conflicts(c, route("other", "o:1", hosts=["a.x.test"]))
    assert len(same) == 1 and "service web already has path /" in same[0]
    assert overlap.conflicts(c, route("web", "w:2", hosts=["a.x.test"])) == []  # itself
    assert overlap.conflicts(c, route("o", "o:1", hosts=["a.b.x.test"])) == []
    api = route("api", "a:1", hosts=["a.x.test"], path="/api")
    assert "proxy.nested: true" in overlap.conflicts(c, api)[0]
    nested = replace(api, nested=True)
    assert overlap.conflicts(c, nested) == []
    # The other way round: a shorter path over a longer one is fine only when the longer
    # one declared nested (recorded in the proxy's config).
    c2 = caddyconf.with_service(caddyconf.boot_config(80, 443), nested)
    assert caddyconf.route_info(c2, "api")["nested"] is True
    assert overlap.conflicts(c2, route("web", "w:1", hosts=["*.x.test"])) == []
    c3 = caddyconf.with_service(caddyconf.boot_config(80, 443), api)
    assert "did not declare proxy.nested" in overlap.conflicts(
        c3, route("web", "w:1", hosts=["*.x.test"]))[0]


def test_check_route_answers_only_the_token_and_reads_back() -> None:
    r = replace(route("api", "a:1"), check_token="t0ken")
    c = caddyconf.with_service(caddyconf.boot_config(80, 443), r)
    inner = caddyconf.find(c, "ps.api.route")["handle"][0]["routes"]  # type: ignore[index]
    check = inner[0]
    assert check["@id"] == "ps.api.check" and "terminal" not in check
    assert check["match"] == [{"header": {caddyconf.CHECK_HEADER: ["t0ken"]}}]
    ops = check["handle"][0]
    assert ops["request"] == {"delete": [caddyconf.CHECK_HEADER]}
    assert ops["response"]["deferred"] is True
    assert caddyconf.current_check_token(c, "api") == "t0ken"
    assert _shape_of(c, "api", "a:1", None) == r


def _held_by(lock: Path, pid: int, machine: str) -> None:
    lock.mkdir(parents=True)
    (lock / "info.json").write_text(json.dumps({
        "deploy_id": "d" * 12, "holder": f"ops@{machine}", "machine": machine, "pid": pid,
        "started": "2026-01-01T00:00:00Z", "tag": "maintenance", "origin": "notes",
        "kind": "proxy"}))


def _dead_pid() -> int:
    import subprocess
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_proxy_lock_left_by_a_dead_process_of_this_machine_is_taken_over(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A deployer killed while it changed a route leaves the lock folder behind; the next
    change takes it over at once (and says so) instead of refusing every command."""
    ex = LocalExecutor(Host("local"))
    state_dir = tmp_path / "_proxy"
    _held_by(state_dir / "lock", _dead_pid(), socket.gethostname())
    with caplog.at_level("INFO", logger="plainsail"), \
            proxy_lock(ex, str(state_dir), "api", "route"):
        mine = json.loads((state_dir / "lock" / "info.json").read_text())
        assert mine["origin"] == "api" and mine["pid"] == os.getpid()
    assert not (state_dir / "lock").exists()  # released as usual afterwards
    assert "held by ops@" in caplog.text and "no longer running" in caplog.text
    assert "taken over" in caplog.text


def test_a_proxy_lock_held_by_a_live_or_foreign_process_is_waited_for_then_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A holder that may still work (alive here, or on another machine, where plainsail
    cannot tell) is never taken over: waited for, then named with the way out."""
    monkeypatch.setattr(proxyhost, "LOCK_WAIT", 0.5)
    ex = LocalExecutor(Host("local"))
    for pid, machine in ((os.getpid(), socket.gethostname()), (_dead_pid(), "laptop-7")):
        state_dir = tmp_path / machine / "_proxy"
        _held_by(state_dir / "lock", pid, machine)
        with pytest.raises(ProxyError, match=r"lock .*_proxy/lock is held by ops@.*"
                           r"\(maintenance for service notes, since 2026-01-01T00:00:00Z\).*"
                           r"rm -r .*_proxy/lock"), \
                proxy_lock(ex, str(state_dir), "api", "route"):
            pass
        assert json.loads((state_dir / "lock" / "info.json").read_text())["pid"] == pid
