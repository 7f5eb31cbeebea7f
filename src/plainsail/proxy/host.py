"""The proxy container on one host: its state, booting it (idempotent, locked), its logs.

State folder on the host (`<host_dir>/_proxy/`, mode 0700, owned by the SSH user and
mounted into the proxy at /plainsail):

- `admin.sock`     the admin API (a unix socket; nothing listens on TCP)
- `boot.json`      the configuration a new proxy starts from
- `config/`        Caddy's saved configuration (`caddy run --resume` reloads it)
- `data/`          certificates, and the root of Caddy's local CA (`tls: internal`)
- `certs/`         per-service certificate and key files (`tls: {cert, key}`), mode 0600
- `settings.json`  the host-level settings and which service set them
- `lock/`          taken while the proxy boots or a route changes shape; a lock whose
                   holder was a process of this machine that no longer runs is taken over
                   (each change is one configuration load, whole or not at all, so a
                   holder killed midway leaves nothing half-done behind it)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from plainsail.config.model import Config, ProxyConfig
from plainsail.hosts import state as hoststate
from plainsail.hosts.executor import Executor, error_line, expand_home, write_file_argv
from plainsail.proxy import argv
from plainsail.proxy.admin import Admin, ProxyError
from plainsail.proxy.caddyconf import ADMIN_SOCKET, boot_config

BOOT_WAIT = 15.0  # seconds for a started proxy's admin API to answer
LOCK_WAIT = 30.0  # seconds to wait for another deployer's proxy change

log = logging.getLogger(__name__)


def proxy_config(cfg: Config) -> ProxyConfig:
    if cfg.proxy is None:
        raise ProxyError(f"{cfg.path.name}: there is no proxy: block; add one to deploy "
                         "behind a proxy (see docs/proxy.md)")
    return cfg.proxy


def settings_of(cfg: Config) -> argv.Settings:
    p = proxy_config(cfg)
    return argv.Settings(p.image, p.http_port, p.https_port, p.network)


@dataclass(frozen=True)
class HostState:
    """What one round trip tells about the proxy on a host."""

    name: str  # the container's name
    home: str
    ids: str  # uid:gid of the SSH user
    state_dir: str  # absolute
    status: str  # running, exited, created, ..., or missing
    settings: argv.Settings | None  # those the container was started with
    socket: bool
    recorded: dict[str, Any]  # settings.json: the settings and who set them
    migrate: bool = False  # the kernel has argv.MIGRATE_SYSCTL
    migrating: bool | None = None  # the container has it set to 1; None: not told

    @property
    def lacks_migrate(self) -> bool:
        """The container runs without the setting the kernel offers (started before
        plainsail set it): a switch may reset new connections."""
        return self.migrate and self.status != "missing" and self.migrating is False

    @property
    def socket_path(self) -> str:
        return f"{self.state_dir}/{ADMIN_SOCKET}"

    @property
    def set_by(self) -> str:
        return str(self.recorded.get("set_by") or "unknown")


def read_state(ex: Executor, cfg: Config) -> HostState:
    name = argv.container_name(cfg.host_dir)
    folder = cfg.host_dir.rstrip("/") + "/" + argv.STATE_FOLDER
    res = ex.run(argv.state(name, folder), timeout=30, check=False, what="inspect the proxy")
    if res.returncode != 0:
        raise ex.failure(res, "inspect the proxy")
    return parse_state(name, folder, res.stdout)


def parse_state(name: str, folder: str, out: str) -> HostState:
    """Parse STATE_SCRIPT's output (see argv.STATE_SCRIPT)."""
    lines = out.splitlines()
    fields: dict[str, str] = {}
    rest: list[str] = []
    for i, line in enumerate(lines):
        key, _, value = line.partition(" ")
        if key in ("home", "ids", "container", "migrating", "socket", "migrate") \
                and key not in fields:
            fields[key] = value
        else:
            rest = lines[i:]
            break
    home = fields.get("home", "")
    if not home and folder.startswith("~"):
        raise ProxyError("$HOME is not set on the host; set host_dir to an absolute path")
    status, _, label = fields.get("container", "missing|").partition("|")
    settings = None
    if label and label != "<no value>":
        try:
            settings = argv.Settings(**json.loads(label))
        except (ValueError, TypeError):
            settings = None
    try:
        recorded = json.loads("\n".join(rest)) if "".join(rest).strip() else {}
    except ValueError:
        recorded = {}
    return HostState(name=name, home=home, ids=fields.get("ids", ""),
                     state_dir=expand_home(folder, home).rstrip("/"),
                     status=status or "missing", settings=settings,
                     socket=fields.get("socket") == "yes",
                     migrate=fields.get("migrate") == "yes",
                     migrating=None if "migrating" not in fields
                     else fields["migrating"].strip() == "1",
                     recorded=recorded if isinstance(recorded, dict) else {})


def check_settings(ex: Executor, cfg: Config, st: HostState) -> None:
    """Refuse a config whose host-level proxy settings differ from the proxy's there."""
    want = settings_of(cfg)
    if st.status == "missing" or st.settings is None or st.settings == want:
        return
    raise ProxyError(
        f"{ex.host.name}: the proxy there runs with {st.settings.describe()}, set by service "
        f"{st.set_by}; this config asks for {want.describe()}. The proxy is shared by every "
        "service on the host: make the proxy's image, http_port, https_port and network the "
        f"same in both plainsail.yml files (or remove the container {st.name} to start it "
        "anew)")


def preflight(ex: Executor, cfg: Config) -> HostState:
    """Before a deploy changes anything: refuse (ProxyError) when the host's proxy runs with
    other host-level settings, or when this service's route would overlap a route another
    service has there (see plainsail.proxy.overlap). Read only; a missing or stopped proxy
    is booted later by the deploy's proxy-boot step (and the route checked again then,
    under the proxy's lock)."""
    from plainsail.proxy.routes import desired, refuse_overlaps

    st = read_state(ex, cfg)
    check_settings(ex, cfg, st)
    config = _answers(ex, st) if st.status == "running" else None
    if config:
        refuse_overlaps(ex.host.name, config, desired(cfg, "", None, None))
    return st


def _answers(ex: Executor, st: HostState) -> dict[str, Any] | None:
    """The proxy's config when its admin API answers, else None."""
    if not st.socket:
        return None
    try:
        with Admin(ex, st.socket_path, timeout=5) as api:
            status, body = api.request("GET", "/config/")
    except ProxyError:
        return None
    if status != 200:
        return None
    return body if isinstance(body, dict) else {}  # an empty config is `null`


@dataclass(frozen=True)
class Booted:
    host: str
    container: str
    action: str  # none, created, started, restarted
    seconds: float
    state_dir: str
    maintenance: str | None = None  # the service's maintenance message then; None: off
    warning: str | None = None  # something about the proxy the operator should know


def lacks_migrate_warning(st: HostState) -> str | None:
    if not st.lacks_migrate:
        return None
    return (f"the proxy {st.name} runs without {argv.MIGRATE_SYSCTL}=1 (started by an earlier "
            "plainsail): each switch may reset connections that arrive at that instant; "
            f"`docker rm -f {st.name}` and deploy again to start it with it (the services "
            "behind it are unreachable in between; see docs/proxy.md)")


def ensure_booted(ex: Executor, cfg: Config) -> Booted:
    """Make sure the host's proxy runs with this config's settings and answers (idempotent).

    Refuses (ProxyError) when a proxy with other host-level settings exists. Otherwise
    creates it (and its network and state folder) when missing, starts it when stopped,
    restarts it when its admin socket is gone; all under the proxy's lock.
    """
    from plainsail.proxy.caddyconf import current_maintenance

    start = time.monotonic()
    st = read_state(ex, cfg)
    check_settings(ex, cfg, st)
    config = _answers(ex, st) if st.status == "running" else None
    if config is not None:
        return Booted(ex.host.name, st.name, "none", time.monotonic() - start, st.state_dir,
                      current_maintenance(config, cfg.service), lacks_migrate_warning(st))
    with proxy_lock(ex, st.state_dir, cfg.service, "boot"):
        st = read_state(ex, cfg)  # another deployer may have booted it meanwhile
        check_settings(ex, cfg, st)
        config = _answers(ex, st) if st.status == "running" else None
        if config is not None:
            action = "none"
        elif st.status == "missing":
            _create(ex, cfg, st)
            action = "created"
        elif st.status == "running":
            ex.run(argv.restart(st.name), timeout=60, what="restart the proxy")
            action = "restarted"
        else:
            ex.run(argv.start(st.name), timeout=60, what="start the proxy")
            action = "started"
        if config is None:
            config = _wait_for_admin(ex, cfg)
    return Booted(ex.host.name, st.name, action, time.monotonic() - start, st.state_dir,
                  current_maintenance(config, cfg.service),
                  lacks_migrate_warning(st) if action != "created" else None)


def _create(ex: Executor, cfg: Config, st: HostState) -> None:
    p = proxy_config(cfg)
    want = settings_of(cfg)
    recorded = st.recorded.get("settings")
    discard = isinstance(recorded, dict) and recorded != json.loads(want.to_label())
    ex.run(argv.prepare_dir(st.state_dir, discard), timeout=30,
           what="prepare the proxy's state folder")
    boot = json.dumps(boot_config(p.http_port, p.https_port), indent=1)
    ex.run(write_file_argv(f"{st.state_dir}/{argv.BOOT_FILE}", "600"), input=boot,
           timeout=30, what="write the proxy's boot config")
    res = ex.run(argv.ensure_network(p.network), timeout=30, check=False,
                 what="create the proxy's network")
    if not res.ok:  # a parallel create may have won; fine if the network exists now
        ex.run(["docker", "network", "inspect", p.network], timeout=30,
               what="create the proxy's network")
    ex.run(argv.run(name=st.name, settings=want, state_dir=st.state_dir, user=st.ids,
                    migrate=st.migrate),
           timeout=120, what="start the proxy")
    record = {"settings": json.loads(want.to_label()), "set_by": cfg.service,
              "set_at": _now()}
    ex.run(write_file_argv(f"{st.state_dir}/{argv.SETTINGS_FILE}", "600"),
           input=json.dumps(record) + "\n", timeout=30, what="record the proxy's settings")


def _wait_for_admin(ex: Executor, cfg: Config) -> dict[str, Any]:
    """Wait until the proxy's admin API answers; its config."""
    deadline = time.monotonic() + BOOT_WAIT
    while True:
        st = read_state(ex, cfg)
        config = _answers(ex, st) if st.status == "running" else None
        if config is not None:
            return config
        if st.status not in ("running", "created", "restarting") or \
                time.monotonic() > deadline:
            tail = ex.run(argv.logs(st.name, 5), timeout=30, check=False).tail(5)
            raise ProxyError(
                f"{ex.host.name}: the proxy {st.name} did not answer on its admin socket "
                f"within {BOOT_WAIT:g}s (container {st.status}); its last log lines: "
                f"{tail.replace(chr(10), ' | ') or 'none'}")
        time.sleep(0.2)


@contextmanager
def proxy_lock(ex: Executor, state_dir: str, service: str, what: str) -> Iterator[None]:
    """The host's proxy lock (mkdir, atomic), waited for up to LOCK_WAIT seconds."""
    paths = hoststate.Paths(state_dir)
    info = hoststate.LockInfo(
        deploy_id=uuid.uuid4().hex[:12], holder=f"{_user()}@{socket.gethostname()}",
        machine=socket.gethostname(), pid=os.getpid(), started=_now(), tag=what,
        origin=service, kind="proxy")
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        res = ex.run(["sh", "-c", hoststate.ACQUIRE_ARGV, "sh", paths.lock],
                     input=json.dumps(info.__dict__), check=False, what="take the proxy lock")
        if res.ok:
            break
        if res.returncode != hoststate.LOCK_HELD:
            raise ex.failure(res, "take the proxy lock")
        holder = hoststate.parse_lock(res.stdout)
        if holder is not None and holder.holder_dead():
            # Removed only while that holder still has it: of two deployers taking over at
            # once, one removes it and the mkdir of only one of them succeeds.
            if hoststate.release(ex, paths, holder.deploy_id):
                log.info("[%s] the proxy's lock %s was held by %s (pid %d on this "
                         "machine, no longer running; %s for service %s, since %s): "
                         "taken over", ex.host.name, paths.lock, holder.holder,
                         holder.pid, holder.tag, holder.origin, holder.started)
            continue
        if time.monotonic() > deadline:
            who = (f"{holder.holder} ({holder.tag} for service {holder.origin}, since "
                   f"{holder.started})") if holder else "an unknown holder"
            raise ProxyError(
                f"{ex.host.name}: the proxy's lock {paths.lock} is held by {who}; wait for it, "
                f"or if that deployer is gone remove the folder: rm -r {paths.lock}")
        time.sleep(0.3)
    try:
        yield
    finally:
        hoststate.release(ex, paths, info.deploy_id)


def status(ex: Executor, cfg: Config) -> dict[str, Any]:
    """The proxy on one host: container, settings and who set them, and every route."""
    from plainsail.proxy import caddyconf

    st = read_state(ex, cfg)
    out: dict[str, Any] = {
        "host": ex.host.name, "container": st.name, "status": st.status,
        "settings": json.loads(st.settings.to_label()) if st.settings else None,
        "set_by": st.recorded.get("set_by"), "set_at": st.recorded.get("set_at"),
        "admin": "not running", "routes": [], "warning": lacks_migrate_warning(st),
    }
    if st.status == "running" and st.socket:
        try:
            with Admin(ex, st.socket_path, timeout=10) as api:
                config = api.config()
                counts = api.upstream_counts()
            out["admin"] = "ok"
        except ProxyError as exc:
            out["admin"] = f"not answering ({exc})"
        else:
            for svc in caddyconf.services(config):
                info = caddyconf.route_info(config, svc)
                info["in_flight"] = counts.get(info["upstream"] or "", 0)
                out["routes"].append(info)
    elif st.status == "running":
        out["admin"] = "socket missing"
    return out


def logs(ex: Executor, cfg: Config, tail: int) -> str:
    name = argv.container_name(cfg.host_dir)
    res = ex.run(argv.logs(name, tail), timeout=60, check=False, what="read the proxy's logs")
    if not res.ok:
        raise ProxyError(f"{ex.host.name}: no logs of the proxy {name}: "
                         f"{error_line(res.tail()) or 'docker logs failed'}; is it booted? "
                         "(plainsail proxy boot)")
    return res.stdout + ("\n" if res.stdout and res.stderr else "") + res.stderr


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _user() -> str:
    try:
        return os.getlogin()
    except OSError:
        return os.environ.get("USER", "unknown")
