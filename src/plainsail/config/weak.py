"""Weak secrets: values short enough to guess, or that occur in a public name (the service,
image, hosts, users...), which output keeps readable (see plainsail.secret). `config
check` and the deploy's preflight warn about each, naming the secret, never its value."""

from __future__ import annotations

from collections.abc import Mapping

from plainsail.config.model import Config
from plainsail.secret import Secret, declare_public, fragments, url_public_parts, weakness


def public_names(cfg: Config) -> list[str]:
    """The names anyone reading plainsail's output may see: they are printed as they are
    (status, history, container and image names), so redaction never cuts into them."""
    from plainsail.hosts.addresses import parse_host

    names = [cfg.service, cfg.image, cfg.registry_host, *cfg.image.split("/"),
             cfg.app.network]
    for text in cfg.hosts:
        try:
            host = parse_host(text)
        except ValueError:
            continue
        names += [host.name, host.hostname, host.user or ""]
    if cfg.registry is not None:
        names.append(cfg.registry.username)
    if cfg.proxy is not None:
        names += [*cfg.proxy.hosts, cfg.proxy.network]
    return [n for n in names if n]


def declare(cfg: Config) -> None:
    """Make the config's public names known to redaction."""
    declare_public(public_names(cfg))


def _part(value: str) -> str:
    """The secret part of a value: a URL's password, else the value itself."""
    found = fragments(value)
    if len(found) > 1:
        return found[1]
    return "" if url_public_parts(value) else value


def warnings(cfg: Config, app_values: Mapping[str, str]) -> list[str]:
    """One line per weak secret: the registry password, and the app secrets whose values
    are given (name -> value)."""
    named: list[tuple[str, str]] = []
    if cfg.registry is not None and isinstance(cfg.registry.password, Secret):
        named.append(("registry.password", cfg.registry.password.peek()))
    named += [(f"app.secrets {name}", value) for name, value in app_values.items()]
    out = []
    for label, value in named:
        why = weakness(_part(value))
        if why:
            out.append(f"{label} is a weak secret: {why}; choose a long random value")
    return out
