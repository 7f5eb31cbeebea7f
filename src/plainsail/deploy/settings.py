"""What a container of the service runs with besides its image: the app's resolved settings
(environment, command, ports, network, volumes, ...).

- `recorded(cfg)` is the data a release's record keeps: `app.env` values, the *names* of
  the secrets (never a value), and the container options. Rollback runs a release with the
  settings it ran with (`apply`), secrets with today's values.
- `label(env, cfg)` goes onto each app container: a salted digest of every variable and
  every option, so the next deploy can say which ones changed since the running container
  started (`changed`, names only). A digest is 16 hex digits of SHA-256 over a random
  per-container salt, the name and the value: enough to notice a change, and a secret's
  value is never stored in clear.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets as pysecrets
from collections.abc import Mapping
from typing import Any

from plainsail.config.model import Config

# The container options of app.* a release is run with (besides env and secrets).
OPTIONS = ("command", "port", "publish", "network", "volumes", "init", "stop_timeout",
           "add_hosts")


def recorded(cfg: Config) -> dict[str, Any]:
    """The app's settings as a release's record keeps them: no secret values."""
    app = cfg.app
    return {
        "env": dict(app.env),
        "secrets": sorted(app.secrets),
        **{key: _plain(getattr(app, key)) for key in OPTIONS},
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _digest(salt: str, name: str, value: object) -> str:
    data = json.dumps([salt, name, value], sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def _named(env: Mapping[str, str], cfg: Config) -> dict[str, object]:
    """Every setting by the name a person knows it by: the variable's name, `app.<key>`."""
    values: dict[str, object] = {name: value for name, value in env.items()}
    values.update({f"app.{key}": _plain(getattr(cfg.app, key)) for key in OPTIONS})
    if cfg.proxy is not None:  # behind the proxy the app runs on the proxy's network
        values["app.network"] = cfg.proxy.network
    return values


def label(env: Mapping[str, str], cfg: Config, salt: str | None = None) -> str:
    """The settings label of a new container (JSON: salt and one digest per setting)."""
    salt = salt or pysecrets.token_hex(8)
    digests = {name: _digest(salt, name, value) for name, value in _named(env, cfg).items()}
    return json.dumps({"salt": salt, "digests": digests}, sort_keys=True,
                      separators=(",", ":"))


def changed(old_label: str, env: Mapping[str, str], cfg: Config) -> list[str] | None:
    """The names of the settings that differ between a container's label and today's
    (added, removed or changed), sorted; None when the container carries no usable label
    (it predates the label)."""
    try:
        old = json.loads(old_label)
        salt, digests = str(old["salt"]), dict(old["digests"])
    except (ValueError, KeyError, TypeError):
        return None
    now = json.loads(label(env, cfg, salt))["digests"]
    return sorted(n for n in set(now) | set(digests) if now.get(n) != digests.get(n))


def describe(names: list[str], cfg: Config) -> str:
    """`DATABASE_URL (secret), app.command`: names only, secrets marked."""
    return ", ".join(f"{n} (secret)" if n in cfg.app.secrets else n for n in names)


def apply(cfg: Config, settings: Mapping[str, Any]) -> tuple[Config, list[str]]:
    """`cfg` with the app settings a release was recorded with; secrets keep today's
    sources and values. Behind the proxy, its network and the absence of published ports
    are today's (they are the proxy's). Also returns the names that differ from today's."""
    app = cfg.app
    changes: dict[str, Any] = {}
    env = settings.get("env")
    if isinstance(env, dict):
        changes["env"] = {str(k): str(v) for k, v in env.items()}
    for key in OPTIONS:
        if key in settings and not (cfg.proxy is not None and key in ("network", "publish")):
            value = settings[key]
            changes[key] = list(value) if isinstance(value, list) else value
    then = dataclasses.replace(app, **changes)
    differ = [f"app.{k}" for k in OPTIONS if getattr(then, k) != getattr(app, k)]
    differ += [n for n in sorted(set(then.env) | set(app.env))
               if then.env.get(n) != app.env.get(n)]
    return dataclasses.replace(cfg, app=then), differ
