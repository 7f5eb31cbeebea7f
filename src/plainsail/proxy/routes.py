"""A service's route on its host's proxy: point it at a container (the atomic switch),
count the requests in flight per upstream, maintenance on/off, remove it, and check the
service end to end through the proxy.

The switch is one `PATCH /id/ps.<service>.route` (the service's own route object, its new
upstream in front and the old one kept as `draining`): Caddy applies it as a graceful
config change (requests in flight finish on the old upstream, new ones go to the new one)
and it touches no other service. A route whose shape changes (host names, path,
TLS, maintenance) is rewritten as a whole config under the host's proxy lock, since two
services may change theirs at the same moment.
"""

from __future__ import annotations

import hashlib
import http.client
import secrets
import socket
import ssl
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509

from plainsail.config.model import Config
from plainsail.deploy.health import check
from plainsail.hosts import deadline
from plainsail.hosts.executor import Executor, write_file_argv
from plainsail.proxy import argv, caddyconf, overlap
from plainsail.proxy.admin import Admin, ProxyError
from plainsail.proxy.caddyconf import MOUNT, ServiceRoute
from plainsail.proxy.host import HostState, proxy_config, proxy_lock, read_state


def upstream_of(cfg: Config, container: str) -> str:
    """The address the proxy dials for a container: its name on the proxy's network."""
    return f"{container}:{cfg.app.port}"


def _running(ex: Executor, cfg: Config) -> HostState:
    st = read_state(ex, cfg)
    if st.status != "running":
        raise ProxyError(f"{ex.host.name}: the proxy {st.name} is {st.status}; start it with "
                         "plainsail proxy boot (a deploy boots it too)")
    if not st.socket:
        raise ProxyError(f"{ex.host.name}: the proxy {st.name} runs but its admin socket "
                         f"{st.socket_path} is gone; plainsail proxy boot restarts it")
    return st


@dataclass(frozen=True)
class Switched:
    host: str
    previous: str | None  # the upstream before, None when the route was new
    upstream: str
    in_flight: int  # requests in flight to the previous upstream at the switch
    reshaped: bool  # the route's shape changed (a whole-config load) rather than a PATCH
    seconds: float


def desired(cfg: Config, upstream: str, maintenance: str | None,
            cert_name: str | None, check_token: str = "") -> ServiceRoute:
    p = proxy_config(cfg)
    cert = key = None
    if p.tls.mode == "files" and cert_name:
        base = f"{MOUNT}/certs/{cfg.service}/{cert_name}"
        cert, key = f"{base}.crt", f"{base}.key"
    acme = p.acme if p.tls.mode == "auto" else None
    root = _acme_root(cfg)
    return ServiceRoute(service=cfg.service, hosts=list(p.hosts), path=p.path,
                        tls=p.tls.mode, upstream=upstream, maintenance=maintenance,
                        cert_file=cert, key_file=key, https_port=p.https_port,
                        check_token=check_token, nested=p.nested,
                        acme_ca=acme.directory if acme else None,
                        acme_root_file=f"{MOUNT}/{ACME_ROOTS}/{root[0]}.pem" if root else None,
                        acme_email=acme.email if acme else None)


ACME_ROOTS = "acme-roots"  # in the proxy's state folder: proxy.acme.ca_root files


def _acme_root(cfg: Config) -> tuple[str, str] | None:
    """(name, PEM) of proxy.acme.ca_root; the name hashes the content (a new root is a new
    path, which Caddy reads)."""
    p = proxy_config(cfg)
    if p.tls.mode != "auto" or p.acme is None or not p.acme.ca_root:
        return None
    try:
        pem = cfg.resolve(p.acme.ca_root).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProxyError(f"proxy.acme.ca_root: cannot read {p.acme.ca_root}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ProxyError(f"proxy.acme.ca_root: {p.acme.ca_root} holds no PEM certificate")
    return hashlib.sha256(pem.encode()).hexdigest()[:16], pem


def new_token() -> str:
    """A fresh secret for the route's check (see caddyconf.check_route)."""
    return secrets.token_hex(16)


def refuse_overlaps(host: str, config: dict[str, Any], route: ServiceRoute) -> None:
    """ProxyError when `route` would take (or lose) requests of another service's route."""
    problems = overlap.conflicts(config, route)
    if problems:
        raise ProxyError(f"{host}: proxy route of {route.service} ({', '.join(route.hosts)}"
                         f"{'' if route.path == '/' else route.path}) is refused: "
                         + "; ".join(problems))


def _cert_files(cfg: Config) -> tuple[str, str, str] | None:
    """(name, certificate PEM, key PEM) for tls: {cert, key}; the name hashes the content
    so a new certificate is a new path, which Caddy loads."""
    p = proxy_config(cfg)
    if p.tls.mode != "files" or not p.tls.cert or not p.tls.key:
        return None
    texts = []
    for what, rel in (("certificate", p.tls.cert), ("key", p.tls.key)):
        path = cfg.resolve(rel)
        try:
            texts.append(path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise ProxyError(f"proxy.tls: cannot read the {what} file {rel}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    name = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    return name, texts[0], texts[1]


def _write_certs(ex: Executor, cfg: Config, st: HostState) -> str | None:
    root = _acme_root(cfg)
    if root is not None:  # a CA certificate: public, but written like the others
        ex.run(write_file_argv(f"{st.state_dir}/{ACME_ROOTS}/{root[0]}.pem", "644"),
               input=root[1], timeout=30, what="write the ACME CA root")
    files = _cert_files(cfg)
    if files is None:
        return None
    name, cert, key = files
    folder = f"{st.state_dir}/certs/{cfg.service}"
    # Both files 0600, through stdin: the key is never on a command line or in a log.
    ex.run(write_file_argv(f"{folder}/{name}.crt", "600"), input=cert, timeout=30,
           what="write the TLS certificate")
    ex.run(write_file_argv(f"{folder}/{name}.key", "600"), input=key, timeout=30,
           what="write the TLS key")
    return name


def route_to(ex: Executor, cfg: Config, container: str) -> Switched:
    """Point the service's route at `container` (on proxy.network, port app.port).

    Creates or reshapes the route when needed; otherwise it is a single atomic PATCH of
    the upstream. Maintenance, if on, stays on.
    """
    start = time.monotonic()
    st = _running(ex, cfg)
    new = upstream_of(cfg, container)
    files = _cert_files(cfg)
    with Admin(ex, st.socket_path) as api:
        config = api.config()
        previous = caddyconf.current_upstream(config, cfg.service)
        maintenance = caddyconf.current_maintenance(config, cfg.service)
        token = caddyconf.current_check_token(config, cfg.service) or new_token()
        now = replace(desired(cfg, previous or new, maintenance, files[0] if files else None,
                              token),
                      draining=caddyconf.current_draining(config, cfg.service))
        if previous is not None and caddyconf.with_service(config, now) == config:
            # The route has the right shape: one PATCH of this service's route object,
            # with a new check token (each switch is checked with its own).
            counts = api.upstream_counts()
            if previous != new:
                api.call("PATCH", f"/id/{caddyconf.rid(cfg.service, 'route')}",
                         caddyconf.service_route(replace(caddyconf.switched(now, new),
                                                         check_token=new_token())),
                         what=f"switch {cfg.service} to {new}")
            return Switched(ex.host.name, previous, new, counts.get(previous, 0), False,
                            time.monotonic() - start)
    with proxy_lock(ex, st.state_dir, cfg.service, "route"):
        cert_name = _write_certs(ex, cfg, st)
        with Admin(ex, st.socket_path) as api:
            config = api.config()  # again, under the lock
            previous = caddyconf.current_upstream(config, cfg.service)
            counts = api.upstream_counts()
            maintenance = caddyconf.current_maintenance(config, cfg.service)
            want = desired(cfg, previous or new, maintenance, cert_name, new_token())
            # Another service may have taken an overlapping route since the preflight.
            refuse_overlaps(ex.host.name, config, want)
            now = caddyconf.switched(want, new)
            # After a canary every upstream left (the old one, or the canary routed back
            # from) stays visible while its requests in flight finish.
            leaving = [u for u in caddyconf.current_upstreams(config, cfg.service) if u != new]
            if leaving:
                now = replace(now, draining=leaving)
            api.load(caddyconf.with_service(config, now))
        if cert_name:
            ex.run(argv.prune_certs(f"{st.state_dir}/certs/{cfg.service}", cert_name),
                   timeout=30, check=False, what="remove old certificates")
    return Switched(ex.host.name, previous, new, counts.get(previous or "", 0), True,
                    time.monotonic() - start)


def split(ex: Executor, cfg: Config, container: str, share: float) -> Switched:
    """Send `share` percent of the service's requests to `container` and the rest to the
    upstream the route has now (a canary: Caddy 2.8+). `route_to` ends it either way."""
    start = time.monotonic()
    st = _running(ex, cfg)
    new = upstream_of(cfg, container)
    with proxy_lock(ex, st.state_dir, cfg.service, "canary"), \
            Admin(ex, st.socket_path) as api:
        config = api.config()
        previous = caddyconf.current_upstream(config, cfg.service)
        if previous is None:
            raise ProxyError(f"{ex.host.name}: {cfg.service} has no route on the proxy to "
                             "send a canary share of")
        counts = api.upstream_counts()
        api.load(caddyconf.with_canary(config, cfg.service, new, share))
    return Switched(ex.host.name, previous, new, counts.get(previous, 0), True,
                    time.monotonic() - start)


def in_flight(ex: Executor, cfg: Config, container: str) -> int:
    """Requests the proxy has in flight to `container` now (0 when it is no upstream)."""
    st = _running(ex, cfg)
    with Admin(ex, st.socket_path) as api:
        return api.upstream_counts().get(upstream_of(cfg, container), 0)


def drain(ex: Executor, cfg: Config, container: str, timeout: float | None = None,
          interval: float = 0.1) -> tuple[bool, float]:
    """Wait until the proxy has no request in flight to `container`, at most `timeout`
    seconds (default proxy.drain). (drained, seconds waited)."""
    limit = proxy_config(cfg).drain if timeout is None else timeout
    st = _running(ex, cfg)
    address = upstream_of(cfg, container)
    start = time.monotonic()
    with Admin(ex, st.socket_path) as api:
        while True:
            if api.upstream_counts().get(address, 0) == 0:
                return True, time.monotonic() - start
            if time.monotonic() - start >= limit:
                return False, time.monotonic() - start
            time.sleep(interval)


def _reshape(ex: Executor, cfg: Config, change: str,
             update: Any) -> dict[str, Any]:
    st = _running(ex, cfg)
    with proxy_lock(ex, st.state_dir, cfg.service, change), \
            Admin(ex, st.socket_path) as api:
        config = api.config()
        new: dict[str, Any] = update(config)
        if new != config:
            api.load(new)
        return new


def maintenance(ex: Executor, cfg: Config, on: bool, message: str | None = None) -> bool:
    """Turn maintenance on (503, Retry-After and a small page, for this service only) or
    off. The upstream stays as it is, so a deploy can switch it behind the page. Returns
    whether anything changed."""
    text = message or "This service is down for maintenance. Please try again shortly."
    changed = False

    def update(config: dict[str, Any]) -> dict[str, Any]:
        nonlocal changed
        route = caddyconf.find(config, caddyconf.rid(cfg.service, "route"))
        if route is None:
            raise ProxyError(f"{ex.host.name}: {cfg.service} has no route on the proxy yet; "
                             "deploy it first")
        was = caddyconf.current_maintenance(config, cfg.service)
        now = text if on else None
        changed = was != now
        upstream = caddyconf.current_upstream(config, cfg.service) or ""
        want = replace(_shape_of(config, cfg.service, upstream, now),
                       draining=caddyconf.current_draining(config, cfg.service))
        return caddyconf.with_service(config, want)

    _reshape(ex, cfg, "maintenance", update)
    return changed


def _shape_of(config: dict[str, Any], service: str, upstream: str,
              maintenance: str | None) -> ServiceRoute:
    """The service's route as the proxy has it (not as the config says)."""
    info = caddyconf.route_info(config, service)
    cert = caddyconf.find(config, caddyconf.rid(service, "cert")) or {}
    redirect = caddyconf.find(config, caddyconf.rid(service, "redirect")) or {}
    location = str((redirect.get("handle") or [{}])[0].get("headers", {})
                   .get("Location", [""])[0])
    port_text = location.split("}", 1)[1].split("{", 1)[0] if "}" in location else ""
    https_port = int(port_text[1:]) if port_text.startswith(":") else 443
    return ServiceRoute(service=service, hosts=list(info["hosts"]), path=info["path"],
                        tls=info["tls"], upstream=upstream, maintenance=maintenance,
                        cert_file=cert.get("certificate"), key_file=cert.get("key"),
                        https_port=https_port,
                        check_token=caddyconf.current_check_token(config, service),
                        nested=bool(info.get("nested")))


def remove_route(ex: Executor, cfg: Config) -> bool:
    """Remove everything the proxy has for this service; whether there was anything."""
    found = False

    def update(config: dict[str, Any]) -> dict[str, Any]:
        nonlocal found
        new = caddyconf.without_service(config, cfg.service)
        found = new != config
        return new

    _reshape(ex, cfg, "remove", update)
    st = read_state(ex, cfg)
    ex.run(argv.remove_folder(f"{st.state_dir}/certs/{cfg.service}"), timeout=30,
           check=False, what="remove the service's certificates")
    return found


def root_certificate(ex: Executor, cfg: Config) -> str:
    """The PEM of the proxy's local CA root (`tls: internal`), for clients to trust."""
    st = read_state(ex, cfg)
    path = f"{st.state_dir}/data/caddy/pki/authorities/local/root.crt"
    res = ex.run(argv.read_file(path), timeout=30, check=False, what="read the proxy's root")
    if not res.ok or "BEGIN CERTIFICATE" not in res.stdout:
        raise ProxyError(f"{ex.host.name}: the proxy has no local CA root yet ({path}); it "
                         "is made when a service with tls: internal gets its route")
    return res.stdout


def check_host(cfg: Config) -> str:
    """A host name to send through the proxy: the first, with a wildcard filled in."""
    first = proxy_config(cfg).hosts[0]
    return "plainsail-check." + first[2:] if first.startswith("*.") else first


def check_path(cfg: Config) -> str:
    """health.path under the route's prefix (the proxy passes the path on unchanged)."""
    prefix = proxy_config(cfg).path
    return cfg.health.path if prefix == "/" else prefix + cfg.health.path


MAINTENANCE_MARK = "<h1>Down for maintenance</h1>"  # from caddyconf.maintenance_page


@dataclass(frozen=True)
class Probe:
    status: int
    body: str  # its start
    headers: http.client.HTTPMessage
    cert_expires: datetime | None = None  # the served certificate's end (TLS on)


def probe_through(ex: Executor, cfg: Config, timeout: float | None = None,
                  cafile_pem: str | None = None,
                  headers: dict[str, str] | None = None) -> Probe:
    """One GET of health.path through the proxy on the host, with the service's host name
    (and SNI when TLS is on); `timeout` bounds the whole exchange, body included.

    Without `cafile_pem` the certificate is not verified: this checks the route, not trust.
    """
    p = proxy_config(cfg)
    wait = cfg.health.timeout if timeout is None else timeout
    start = time.monotonic()
    port = p.https_port if p.tls.enabled else p.http_port
    address, local_port = ex.reach("127.0.0.1", port)
    name = check_host(cfg)
    raw = socket.create_connection((address, local_port), timeout=wait)
    sock = raw
    expires = None
    try:
        with deadline.watchdog(raw, wait - (time.monotonic() - start)) as fired:
            try:
                if p.tls.enabled:
                    ctx = ssl.create_default_context(cadata=cafile_pem) if cafile_pem else \
                        ssl._create_unverified_context()  # noqa: S323 - a routing check
                    sock = ctx.wrap_socket(raw, server_hostname=name)
                    expires = _expiry(sock)
            except OSError:
                if fired.is_set():
                    raise TimeoutError(f"no TLS handshake within {wait:g}s") from None
                raise
        conn = http.client.HTTPConnection(name, port, timeout=wait)
        conn.sock = sock
        resp, body = deadline.get(conn, check_path(cfg), {
            "User-Agent": "plainsail-health", "Connection": "close", **(headers or {})},
            wait - (time.monotonic() - start))
        return Probe(resp.status, body.decode("utf-8", errors="replace"), resp.msg,
                     expires)
    finally:
        sock.close()
        raw.close()


CERT_POLL = 0.5  # seconds between TLS handshakes while Caddy obtains a certificate


def _probe_when_certified(ex: Executor, cfg: Config, timeout: float | None,
                          headers: dict[str, str]) -> Probe:
    """probe_through; with `tls: auto`, a TLS handshake that fails (Caddy has no
    certificate for the name yet: the ACME order is under way) is tried again for
    cert_wait(cfg) seconds, then its ssl.SSLError is raised."""
    until = time.monotonic() + cert_wait(cfg)
    while True:
        try:
            return probe_through(ex, cfg, timeout, headers=headers)
        except ssl.SSLError:
            if proxy_config(cfg).tls.mode != "auto" or time.monotonic() + CERT_POLL >= until:
                raise
            time.sleep(CERT_POLL)


RENEWAL_OVERDUE = timedelta(days=14)  # Caddy renews with a third of the lifetime left


def _expiry(sock: ssl.SSLSocket) -> datetime | None:
    """When the certificate the peer served ends (read right after the handshake)."""
    der = sock.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    if hasattr(cert, "not_valid_after_utc"):
        return cert.not_valid_after_utc
    return cert.not_valid_after.replace(tzinfo=UTC)  # pragma: no cover - cryptography < 42


def renewal_warning(name: str, expires: datetime, now: datetime) -> str | None:
    """A warning when the certificate `tls: auto` serves should have been renewed by now
    (less than RENEWAL_OVERDUE left: Caddy renews 90-day certificates with about 30 days
    left), which means the ACME CA has been refusing or unreachable; None otherwise."""
    left = expires - now
    if left >= RENEWAL_OVERDUE:
        return None
    when = f"expired on {expires:%Y-%m-%d}" if left.total_seconds() <= 0 else \
        f"expires on {expires:%Y-%m-%d} ({left.days} days left)"
    return (f"the TLS certificate for {name} {when} and was not renewed: the ACME CA is "
            "unreachable or refuses the renewal; see plainsail proxy logs")


def cert_wait(cfg: Config) -> float:
    """How long a deploy with `tls: auto` waits for the proxy's first certificate: the
    health gate's budget (health.attempts x health.interval), at least 10 s."""
    return max(cfg.health.attempts * cfg.health.interval, 10.0)


def _no_certificate(ex: Executor, cfg: Config) -> str:
    """Why the proxy serves no certificate: the ACME CA and the proxy's last ACME error."""
    p = proxy_config(cfg)
    ca = p.acme.directory if p.acme else "Let's Encrypt"
    wait = cert_wait(cfg)
    try:
        from plainsail.proxy.host import logs

        lines = [ln for ln in logs(ex, cfg, 200).splitlines()
                 if '"error"' in ln and ("obtain" in ln or "acme" in ln.lower())]
    except ProxyError:
        lines = []
    said = f"; the proxy's last ACME error: {lines[-1][-400:]}" if lines else ""
    return (f"{ex.host.name}: no TLS certificate for {check_host(cfg)} within {wait:g}s "
            f"(tls: auto, ACME CA {ca}): the CA is unreachable or refused the order; "
            "check that the host names resolve to this host and ports 80 and 443 are "
            f"reachable from the CA{said}")


def check_through(ex: Executor, cfg: Config, container: str | None = None,
                  timeout: float | None = None) -> list[str]:
    """The service answers health.path through the proxy as the health gate expects, and
    the answer came through this service's route from `container` (default: any upstream
    of the route, two while a canary runs); otherwise ProxyError (the engine switches back).
    Returns the warnings for the person (a certificate `tls: auto` should have renewed by
    now); the caller tells them.

    The request carries the route's secret check token: only this service's route knows
    it, and only for such a request the proxy names the upstream that answered. A 200
    from another service's route, or from another container, does not pass.
    """
    st = _running(ex, cfg)
    with Admin(ex, st.socket_path) as api:
        config = api.config()
    token = caddyconf.current_check_token(config, cfg.service)
    wants = [upstream_of(cfg, container)] if container else \
        caddyconf.current_upstreams(config, cfg.service)
    want = " or ".join(wants)
    where = f"{check_host(cfg)}{check_path(cfg)}"
    if not token or not want:
        raise ProxyError(f"{ex.host.name}: {cfg.service} has no route with a check on the "
                         "proxy; deploy again to create it")
    try:
        probe = _probe_when_certified(ex, cfg, timeout, {caddyconf.CHECK_HEADER: token})
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, ssl.SSLError) and proxy_config(cfg).tls.mode == "auto":
            raise ProxyError(_no_certificate(ex, cfg)) from exc
        raise ProxyError(f"{ex.host.name}: {cfg.service} does not answer through the proxy "
                         f"({type(exc).__name__}: {exc})") from exc
    if probe.headers.get(caddyconf.CHECK_HEADER) != token:
        raise ProxyError(f"{ex.host.name}: the answer to {where} through the proxy did not "
                         f"come through {cfg.service}'s route (HTTP {probe.status}): another "
                         "route takes these requests; see plainsail proxy status")
    if probe.status == 503 and MAINTENANCE_MARK in probe.body:
        # Maintenance is on: the route is in place behind the page, which is all this
        # check can see; the health gate checked the new container itself.
        return []
    served = probe.headers.get(caddyconf.UPSTREAM_HEADER) or "no upstream"
    if served not in wants:
        raise ProxyError(f"{ex.host.name}: {cfg.service}'s answer through the proxy "
                         f"({where}) came from {served}, not from {want}")
    problem = check(probe.status, probe.body, cfg.health)
    if problem:
        raise ProxyError(f"{ex.host.name}: {cfg.service} through the proxy "
                         f"({where}) {problem}")
    if proxy_config(cfg).tls.mode == "auto" and probe.cert_expires is not None:
        late = renewal_warning(check_host(cfg), probe.cert_expires, datetime.now(UTC))
        if late:
            return [f"{ex.host.name}: {late}"]
    return []
