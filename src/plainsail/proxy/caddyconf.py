"""Caddy's JSON configuration as data: the proxy's boot config and each service's part.

Pure functions, no I/O. One Caddy serves every plainsail service of a host, with two
servers: `plainsail-http` on proxy.http_port (services with `tls: off`, and a redirect to
HTTPS for every other service) and `plainsail-https` on proxy.https_port. Everything that
belongs to one service carries an `@id` that starts with `ps.<service>.`, so the admin API
can address it directly (`/id/ps.<service>.upstream`) and a service's part can be replaced
or removed without touching another's:

- `ps.<service>.route`        its route: host names, optional path prefix, then a subroute
- `ps.<service>.maintenance`  first in that subroute while maintenance is on (503)
- `ps.<service>.check`        first in that subroute: only for a request that carries the
                              route's secret check token (header CHECK_HEADER, a new random
                              value at every switch), the answer names the upstream that
                              served it (UPSTREAM_HEADER); `check-through` uses it to prove
                              the answer came from the new container through this route
- `ps.<service>.nested`       present when the service declared `proxy.nested: true` (its
                              path may lie under another service's shorter prefix)
- `ps.<service>.upstream`     the reverse_proxy handler that serves the service
- `ps.<service>.draining`     a second reverse_proxy handler right after it, which never
                              runs (reverse_proxy does not call the next handler), holding
                              the upstream switched away from: Caddy counts requests per
                              upstream address and forgets an address no handler names, so
                              without it the old container's requests in flight would
                              become invisible the moment the route switches
- `ps.<service>.redirect`     HTTP to HTTPS, on the HTTP server, when TLS is on
- `ps.<service>.tls`          the certificate policy for `tls: internal`
- `ps.<service>.cert`         the loaded certificate for `tls: {cert, key}`
- `ps.<service>.acme`         the certificate policy for `tls: auto` with `proxy.acme`: an
                              ACME issuer with that directory (and the CA root its HTTPS
                              chains to); without `proxy.acme`, Caddy's default issuers
                              (Let's Encrypt, then ZeroSSL) need no policy
"""

from __future__ import annotations

import copy
import html
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

# Where the host's proxy state folder is mounted inside the proxy container.
MOUNT = "/plainsail"
ADMIN_SOCKET = "admin.sock"
# The Host header sent to the admin API (Caddy checks it against `admin.origins`; a unix
# socket cannot be reached by a browser, so there is no DNS rebinding to defend against).
ADMIN_ORIGIN = "plainsail-proxy"
SERVER_HTTP = "plainsail-http"
SERVER_HTTPS = "plainsail-https"
RETRY_AFTER = 60  # seconds, in maintenance answers
# check-through's request header (the route's token) and the answer's proof of origin.
CHECK_HEADER = "X-Plainsail-Check"
UPSTREAM_HEADER = "X-Plainsail-Upstream"


def admin_listen() -> str:
    return f"unix/{MOUNT}/{ADMIN_SOCKET}"


def boot_config(http_port: int, https_port: int) -> dict[str, Any]:
    """The config a new proxy starts with: two servers with only the fallback route, the
    admin API on a unix socket in the state folder, and every change saved there
    (`caddy run --resume` reloads it)."""
    config = {
        "admin": {"listen": admin_listen(), "origins": [ADMIN_ORIGIN],
                  "config": {"persist": True}},
        "apps": {
            "http": {
                "http_port": http_port,
                "https_port": https_port,
                "servers": {
                    SERVER_HTTP: {"listen": [f":{http_port}"], "protocols": ["h1", "h2c"],
                                  "automatic_https": {"disable": True}, "routes": []},
                    SERVER_HTTPS: {"listen": [f":{https_port}"], "protocols": ["h1", "h2"],
                                   "automatic_https": {"disable_redirects": True},
                                   "routes": []},
                },
            },
            "tls": {"automation": {"policies": []}, "certificates": {"load_files": []}},
            # Caddy's local CA (tls: internal) must not try to change the trust store of a
            # container that cannot keep it.
            "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
        },
    }
    sort_routes(config)
    return config


def rid(service: str, part: str) -> str:
    """The @id of one part of a service's configuration."""
    return f"ps.{service}.{part}"


@dataclass(frozen=True)
class ServiceRoute:
    """What the proxy does for one service."""

    service: str
    hosts: list[str]
    path: str  # "/" or a prefix without a trailing slash
    tls: str  # auto, internal, off or files
    upstream: str  # container:port
    maintenance: str | None = None  # the page's message while maintenance is on
    cert_file: str | None = None  # paths inside the proxy container (tls: files)
    key_file: str | None = None
    https_port: int = 443
    draining: list[str] = field(default_factory=list)  # upstreams switched away from
    check_token: str = ""  # the secret of the route's check (see CHECK_HEADER)
    nested: bool = False  # proxy.nested: may lie under another service's shorter prefix
    acme_ca: str | None = None  # proxy.acme.directory (tls: auto)
    acme_root_file: str | None = None  # proxy.acme.ca_root, inside the proxy container
    acme_email: str | None = None

    @property
    def tls_on(self) -> bool:
        return self.tls != "off"


def matcher(r: ServiceRoute) -> list[dict[str, Any]]:
    m: dict[str, Any] = {"host": list(r.hosts)}
    if r.path != "/":
        m["path"] = [r.path, f"{r.path}/*"]
    return [m]


def upstreams(upstream: str) -> list[dict[str, str]]:
    return [{"dial": upstream}]


def proxy_handler(r: ServiceRoute) -> dict[str, Any]:
    return {
        "@id": rid(r.service, "upstream"),
        "handler": "reverse_proxy",
        "upstreams": upstreams(r.upstream),
        # A connection refused while a container restarts is retried for a moment (only
        # failed dials are retried: no request reached the app).
        "load_balancing": {"try_duration": "2s", "try_interval": "100ms"},
    }


def maintenance_page(message: str) -> str:
    # Braces are written as entities: Caddy would read {...} in a body as a placeholder.
    text = html.escape(message).replace("{", "&#123;").replace("}", "&#125;")
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>Maintenance</title>"
            "</head><body><h1>Down for maintenance</h1><p>" + text + "</p></body></html>\n")


def maintenance_route(service: str, message: str) -> dict[str, Any]:
    return {
        "@id": rid(service, "maintenance"),
        "handle": [{
            "handler": "static_response",
            "status_code": 503,
            "headers": {"Retry-After": [str(RETRY_AFTER)],
                        "Content-Type": ["text/html; charset=utf-8"],
                        "Cache-Control": ["no-store"]},
            "body": maintenance_page(message),
        }],
    }


def check_route(service: str, token: str) -> dict[str, Any]:
    """For a request carrying the token only: drop the token before the app sees it, and
    name the upstream that served the answer (evaluated when the answer is written)."""
    return {
        "@id": rid(service, "check"),
        "match": [{"header": {CHECK_HEADER: [token]}}],
        "handle": [{"handler": "headers",
                    "request": {"delete": [CHECK_HEADER]},
                    "response": {"deferred": True, "set": {
                        CHECK_HEADER: [token],
                        UPSTREAM_HEADER: ["{http.reverse_proxy.upstream.hostport}"]}}}],
    }


def service_route(r: ServiceRoute) -> dict[str, Any]:
    inner: list[dict[str, Any]] = []
    if r.nested:
        inner.append({"@id": rid(r.service, "nested"), "handle": [{"handler": "vars"}]})
    if r.check_token:
        inner.append(check_route(r.service, r.check_token))
    if r.maintenance is not None:
        inner.append(maintenance_route(r.service, r.maintenance))
    handlers = [proxy_handler(r)]
    if r.draining:
        handlers.append({"@id": rid(r.service, "draining"), "handler": "reverse_proxy",
                         "upstreams": [u for d in r.draining for u in upstreams(d)]})
    inner.append({"handle": handlers})
    return {"@id": rid(r.service, "route"), "match": matcher(r), "terminal": True,
            "handle": [{"handler": "subroute", "routes": inner}]}


def redirect_route(r: ServiceRoute) -> dict[str, Any]:
    port = "" if r.https_port == 443 else f":{r.https_port}"
    return {
        "@id": rid(r.service, "redirect"), "match": matcher(r), "terminal": True,
        "handle": [{"handler": "static_response", "status_code": 308,
                    "headers": {"Location": [
                        f"https://{{http.request.host}}{port}{{http.request.uri}}"]}}],
    }


def walk_ids(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("@id"), str):
            yield node["@id"]
        for v in node.values():
            yield from walk_ids(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk_ids(v)


def find(node: Any, wanted: str) -> dict[str, Any] | None:
    """The object whose @id is `wanted`, anywhere in a config."""
    if isinstance(node, dict):
        if node.get("@id") == wanted:
            return node
        values: Any = node.values()
    elif isinstance(node, list):
        values = node
    else:
        return None
    for v in values:
        found = find(v, wanted)
        if found is not None:
            return found
    return None


def _servers(config: dict[str, Any]) -> dict[str, Any]:
    servers: dict[str, Any] = config["apps"]["http"]["servers"]
    return servers


FALLBACK = "plainsail-fallback"


def fallback_id(server: str) -> str:
    """Each server's fallback has its own @id: Caddy 2.8 and newer refuse to load a config
    in which two objects share one (2.6 took it)."""
    return f"{FALLBACK}.{server}"


def _is_fallback(route: dict[str, Any]) -> bool:
    """A fallback route, including one saved by an older plainsail under the shared id."""
    return str(route.get("@id", "")).startswith(FALLBACK)


def fallback_route(server: str) -> dict[str, Any]:
    """Last in each server: a request no service's route matches gets a 404 (Caddy's own
    answer would be an empty 200)."""
    return {"@id": fallback_id(server), "handle": [{
        "handler": "static_response", "status_code": 404,
        "headers": {"Content-Type": ["text/plain; charset=utf-8"]},
        "body": "No service is routed here.\n"}]}


def _order(route: dict[str, Any]) -> tuple[int, int]:
    """Longer path prefixes first, so /api wins over / on the same host; the fallback
    last."""
    paths = [p for m in route.get("match", []) for p in m.get("path", [])]
    return (_is_fallback(route), -max((len(p) for p in paths), default=0))


def sort_routes(config: dict[str, Any]) -> None:
    """Order every server's routes (in place), each ending with its own fallback (one saved
    under the id all servers once shared is replaced)."""
    for name, server in _servers(config).items():
        routes = [r for r in server.get("routes", []) if not _is_fallback(r)]
        routes.append(fallback_route(name))
        routes.sort(key=_order)  # stable: earlier routes keep their order
        server["routes"] = routes


def without_service(config: dict[str, Any], service: str) -> dict[str, Any]:
    """A copy of `config` with every part of `service` removed."""
    prefix = rid(service, "")
    out = copy.deepcopy(config)
    for server in _servers(out).values():
        server["routes"] = [r for r in server.get("routes") or []
                            if not str(r.get("@id", "")).startswith(prefix)]
    tls = out["apps"].setdefault("tls", {})
    automation = tls.setdefault("automation", {})
    automation["policies"] = [p for p in automation.get("policies") or []
                              if not str(p.get("@id", "")).startswith(prefix)]
    certs = tls.setdefault("certificates", {})
    certs["load_files"] = [c for c in certs.get("load_files") or []
                           if not str(c.get("@id", "")).startswith(prefix)]
    return out


def with_service(config: dict[str, Any], r: ServiceRoute) -> dict[str, Any]:
    """A copy of `config` with the service's part set to `r` (replacing what was there)."""
    out = without_service(config, r.service)
    servers = _servers(out)
    if r.tls_on:
        servers[SERVER_HTTPS]["routes"].append(service_route(r))
        servers[SERVER_HTTP]["routes"].append(redirect_route(r))
    else:
        servers[SERVER_HTTP]["routes"].append(service_route(r))
    sort_routes(out)
    tls = out["apps"]["tls"]
    if r.tls == "internal":
        tls["automation"]["policies"].append({"@id": rid(r.service, "tls"),
                                              "subjects": list(r.hosts),
                                              "issuers": [{"module": "internal"}]})
    elif r.tls == "files":
        tls["certificates"]["load_files"].append({"@id": rid(r.service, "cert"),
                                                  "certificate": r.cert_file,
                                                  "key": r.key_file})
    elif r.tls == "auto" and r.acme_ca:
        tls["automation"]["policies"].append({"@id": rid(r.service, "acme"),
                                              "subjects": list(r.hosts),
                                              "issuers": [acme_issuer(r)]})
    return out


def acme_issuer(r: ServiceRoute) -> dict[str, Any]:
    """Caddy's ACME issuer for `proxy.acme` (Caddyfile: acme_ca, acme_ca_root, email)."""
    issuer: dict[str, Any] = {"module": "acme", "ca": r.acme_ca}
    if r.acme_email:
        issuer["email"] = r.acme_email
    if r.acme_root_file:
        issuer["trusted_roots_pem_files"] = [r.acme_root_file]
    return issuer


def current_upstream(config: dict[str, Any], service: str) -> str | None:
    handler = find(config, rid(service, "upstream"))
    if handler is None:
        return None
    ups = handler.get("upstreams") or []
    return str(ups[0].get("dial")) if ups else None


def current_upstreams(config: dict[str, Any], service: str) -> list[str]:
    """Every upstream the service's route sends requests to (two while a canary runs)."""
    handler = find(config, rid(service, "upstream"))
    return [str(u.get("dial")) for u in (handler or {}).get("upstreams") or []]


def canary_weights(share: float) -> list[int]:
    """Caddy's integer weights for (the old upstream, the new one) at `share` percent of
    requests to the new one (0 < share < 100), in tenths of a percent at most."""
    new = max(1, round(share * 10))
    old = max(1, 1000 - new)
    g = math.gcd(old, new)
    return [old // g, new // g]


def with_canary(config: dict[str, Any], service: str, new: str,
                share: float) -> dict[str, Any]:
    """The config with the service's route sending `share` percent of its requests to
    `new` and the rest to its current upstream (Caddy 2.8+: weighted_round_robin)."""
    out = copy.deepcopy(config)
    handler = find(out, rid(service, "upstream"))
    if handler is None or not handler.get("upstreams"):
        raise ValueError(f"no route for {service} to split")
    handler["upstreams"] = [handler["upstreams"][0], *upstreams(new)]
    handler.setdefault("load_balancing", {})["selection_policy"] = {
        "policy": "weighted_round_robin", "weights": canary_weights(share)}
    return out


def current_draining(config: dict[str, Any], service: str) -> list[str]:
    handler = find(config, rid(service, "draining"))
    return [str(u.get("dial")) for u in (handler or {}).get("upstreams") or []]


def switched(r: ServiceRoute, new: str) -> ServiceRoute:
    """`r` pointed at `new`, keeping the upstream it leaves visible while it drains."""
    if new == r.upstream:
        return r
    return replace(r, upstream=new, draining=[r.upstream])


def current_check_token(config: dict[str, Any], service: str) -> str:
    route = find(config, rid(service, "check")) or {}
    values = ((route.get("match") or [{}])[0].get("header") or {}).get(CHECK_HEADER) or [""]
    return str(values[0])


def current_maintenance(config: dict[str, Any], service: str) -> str | None:
    """The maintenance message of a service, None when maintenance is off."""
    route = find(config, rid(service, "maintenance"))
    if route is None:
        return None
    body = str(route["handle"][0].get("body", ""))
    start, end = body.find("<p>"), body.rfind("</p>")
    text = body[start + 3:end] if 0 <= start < end else ""
    return html.unescape(text)


def services(config: dict[str, Any]) -> list[str]:
    """The services that have a route in `config`, sorted."""
    return sorted({i.split(".")[1] for i in walk_ids(config)
                   if i.startswith("ps.") and i.endswith(".route")})


def route_info(config: dict[str, Any], service: str) -> dict[str, Any]:
    """What the config says about one service's route, as plain data for `status`."""
    route = find(config, rid(service, "route")) or {}
    match = (route.get("match") or [{}])[0]
    paths = match.get("path") or ["/"]
    tls = ("internal" if find(config, rid(service, "tls")) else
           "files" if find(config, rid(service, "cert")) else
           "auto" if find(config, rid(service, "redirect")) else "off")
    return {"service": service, "hosts": match.get("host", []), "path": paths[0],
            "tls": tls, "upstream": current_upstream(config, service),
            "maintenance": current_maintenance(config, service),
            "draining": current_draining(config, service),
            "nested": find(config, rid(service, "nested")) is not None,
            "acme": ((find(config, rid(service, "acme")) or {}).get("issuers") or [{}])[0]
            .get("ca")}
