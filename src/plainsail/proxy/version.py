"""Which Caddy the host's proxy runs, detected (never assumed from the image's name), and
what that release can do: weighted load balancing, which `traffic_gate.canary` needs, came
in Caddy 2.8; Debian 12's caddy is 2.6.
"""

from __future__ import annotations

import re

from plainsail.config.model import Config
from plainsail.hosts.executor import Executor
from plainsail.proxy.admin import ProxyError

WEIGHTS_SINCE = (2, 8)
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse(text: str) -> tuple[int, int, int] | None:
    """`caddy version` prints `v2.11.7 h1:...` (an official build) or `2.6.2` (Debian's);
    None when the first line names no release (e.g. `(devel)`)."""
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    m = _VERSION.match(first)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def show(version: tuple[int, int, int] | None) -> str:
    return "an unknown release" if version is None else ".".join(map(str, version))


def version_argv(container: str) -> list[str]:
    return ["docker", "exec", container, "caddy", "version"]


def detect(ex: Executor, container: str) -> tuple[int, int, int] | None:
    """The release of the Caddy running in `container` on the host (ProxyError when it
    cannot be asked; None when it answers with no release number)."""
    res = ex.run(version_argv(container), timeout=30, check=False, what="caddy version")
    if not res.ok:
        raise ProxyError(f"{ex.host.name}: cannot ask the proxy {container} for its Caddy "
                         f"version: {res.tail(1) or f'exit {res.returncode}'}")
    return parse(res.stdout)


def canary_problem(version: tuple[int, int, int] | None, host: str, image: str) -> str | None:
    """Why `traffic_gate.canary` cannot run on this proxy, or None."""
    if version is not None and version[:2] >= WEIGHTS_SINCE:
        return None
    return (f"{host}: traffic_gate.canary needs Caddy {WEIGHTS_SINCE[0]}.{WEIGHTS_SINCE[1]} "
            f"or newer (weighted load balancing); the proxy there runs {show(version)} "
            f"(image {image}): set proxy.image to a current Caddy, or remove canary")


def check_canary(ex: Executor, cfg: Config) -> tuple[int, int, int] | None:
    """The running proxy's release, when it can run a canary; ProxyError (one line) when
    it is older than 2.8 or names no release."""
    from plainsail.proxy.host import read_state

    assert cfg.proxy is not None
    st = read_state(ex, cfg)
    found = detect(ex, st.name)
    problem = canary_problem(found, ex.host.name, cfg.proxy.image)
    if problem:
        raise ProxyError(problem)
    return found
