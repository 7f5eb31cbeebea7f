"""Which services' routes on one proxy would take each other's requests. Pure functions.

Two routes overlap when a host name of one can be a host name of the other (equal, or a
`*.example.com` that matches the other's `api.example.com`) and their path prefixes meet:
equal prefixes are always refused (one would silently take the other's traffic); a longer
prefix under another service's shorter one (`/api` under `/`) only when the service with
the longer prefix says so with `proxy.nested: true` (the proxy tries longer prefixes first,
so `/api/...` goes to it and the rest to the other).
"""

from __future__ import annotations

from typing import Any

from plainsail.proxy import caddyconf


def host_matches(pattern: str, name: str) -> bool:
    """Whether Caddy's host matcher `pattern` matches the concrete name `name`."""
    pattern, name = pattern.lower(), name.lower()
    if not pattern.startswith("*."):
        return pattern == name
    first, _, rest = name.partition(".")
    return bool(first) and first != "*" and rest == pattern[2:]


def hosts_overlap(a: str, b: str) -> bool:
    """Whether some request's Host could match both patterns."""
    a, b = a.lower(), b.lower()
    return a == b or host_matches(a, b) or host_matches(b, a)


def under(longer: str, shorter: str) -> bool:
    """Whether every path the prefix `longer` matches is also matched by `shorter`
    (`/api/v2` under `/api`, anything under `/`; `/apiv2` is not under `/api`)."""
    longer, shorter = longer.lower(), shorter.lower()  # Caddy matches paths without case
    return longer != shorter and (shorter == "/" or longer.startswith(shorter + "/"))


def conflicts(config: dict[str, Any], mine: caddyconf.ServiceRoute) -> list[str]:
    """Why `mine` cannot sit next to the other services' routes in `config` (empty: it
    can)."""
    problems = []
    for other in caddyconf.services(config):
        if other == mine.service:
            continue
        info = caddyconf.route_info(config, other)
        shared = sorted({h for h in mine.hosts for o in info["hosts"] if hosts_overlap(h, o)})
        if not shared:
            continue
        theirs = str(info["path"])
        where = f"host name {', '.join(shared)}"
        if theirs.lower() == mine.path.lower():
            problems.append(
                f"service {other} already has path {theirs} on {where}: two services "
                "cannot share a host name and path prefix (the later would silently take "
                "the other's requests); give this service another proxy.host or proxy.path")
        elif under(mine.path, theirs) and not mine.nested:
            problems.append(
                f"this service's path {mine.path} lies under service {other}'s path {theirs} "
                f"on {where}, so it would take part of {other}'s requests; if that is "
                "intended say so with proxy.nested: true, else choose another proxy.host "
                "or proxy.path")
        elif under(theirs, mine.path) and not info.get("nested"):
            problems.append(
                f"service {other}'s path {theirs} on {where} lies under this service's path "
                f"{mine.path} and {other} did not declare proxy.nested: true, so one of the "
                "two would take the other's requests; choose another proxy.host or "
                f"proxy.path, or deploy {other} with proxy.nested: true first")
    return problems
