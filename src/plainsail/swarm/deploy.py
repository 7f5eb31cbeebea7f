"""A deploy (or rollback) to a Docker Swarm, through its manager, in the seed's order:

1. Preflight, nothing changes: app secrets present, the image's signature verified on this
   machine and its digest pinned, the schema gate, the manager reachable and a Swarm
   manager, the service's current spec read (the way back).
2. On the manager: take the lock and write the env file (mode 0600, for the migration
   container only); make sure the overlay network and the entry shim's config exist; pull
   `image@digest` (the registry reachable from the cluster, by digest: no tag fallback).
3. Migrations once, in a temporary container of the new image on the manager (on the
   service's overlay network). A failure aborts: the service was never touched.
4. One Docker secret per app secret (versioned name, value on stdin), then
   `docker service create` or `update` to the new spec by digest (`--no-resolve-image`,
   `--update-failure-action pause`).
5. Wait for the update: `swarm.replicas` tasks of the new digest running, no older task
   left, Swarm's UpdateStatus completed; paused or rolling back is a failure. Then the deep
   health gate on every task.
6. Failure: plainsail updates the service back to the spec it read in preflight (the last
   release; never `docker service rollback`), waits for it and gates it, and the attempt
   ends `failed-health-restored` (or `restore-failed`); a first deploy's service is
   removed. Success: Docker secrets no longer used are removed.
7. A record on the manager (the host records' format, plus the tasks and nodes) and
   locally; the lock released.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from plainsail.config import weak
from plainsail.config.model import Config
from plainsail.deploy import schemagate
from plainsail.deploy import settings as settingslib
from plainsail.deploy.history import append_local
from plainsail.deploy.outcomes import (
    ABORTED,
    FAILED_MIGRATION,
    INTERRUPTED,
    RECOVERED,
    RESTORE_FAILED,
    RESTORED,
    SUCCEEDED,
    UNCHANGED,
)
from plainsail.deploy.plan import (
    Request,
    Target,
    app_env,
    migrate_argv,
    missing_secrets,
    resolve_target,
    select_hosts,
    ssh_options,
)
from plainsail.deploy.preflight import stopped_in_preflight
from plainsail.deploy.records import new_deploy_id, now, origin, redact_free_text, who
from plainsail.environment import in_ci
from plainsail.errors import (
    LockError,
    PlainsailError,
    RemoteError,
    UsageError,
    one_line,
)
from plainsail.hosts import docker
from plainsail.hosts import state as hoststate
from plainsail.hosts.addresses import Host
from plainsail.hosts.executor import Executor, Result, error_line, executor_for
from plainsail.interrupts import handled_by
from plainsail.progress import NULL, Progress, Reporter, reporter
from plainsail.secret import Secret
from plainsail.swarm import cluster, healthcheck, objects
from plainsail.swarm import proxy as swproxy
from plainsail.swarm import service as svc


class Interrupted(BaseException):
    """SIGTERM or Ctrl-C during a swarm deploy: put the last release back, record, unlock."""


@dataclass
class Step:
    name: str
    seconds: float
    ok: bool


def options_label(cfg: Config) -> str:
    """What the swarm block and the app's container options make of the service (compared
    between releases, so a change of replicas or placement is not `unchanged`)."""
    assert cfg.swarm is not None
    data = [svc.settings_args(cfg), cfg.swarm.placement, cfg.app.port, cfg.app.publish,
            cfg.swarm_network, cfg.app.init]
    if cfg.swarm.healthcheck:  # the check is made of health.*
        data.append(cfg.health.__dict__)
    return json.dumps(data, separators=(",", ":"))


LABEL_OPTIONS = "plainsail.options"


class SwarmDeploy:
    """One deploy or rollback attempt on the Swarm behind `swarm.manager`."""

    def __init__(self, cfg: Config, req: Request, report: Reporter = NULL,
                 environ: dict[str, str] | None = None, executor: Executor | None = None,
                 resolve: Callable[[Config, Request], Target] = resolve_target,
                 progress: Progress = NULL, sleep: Callable[[float], None] = time.sleep
                 ) -> None:
        assert cfg.swarm is not None
        self.cfg, self.req = cfg, req
        # The one reporter (plainsail.progress): lines, warnings, long steps' progress.
        self.out = self.progress = reporter(report, progress)
        self.report = self.out.say
        self.environ = dict(os.environ if environ is None else environ)
        self._resolve, self._sleep = resolve, sleep
        self.id = new_deploy_id()
        self.started = now()
        self.t0 = time.monotonic()
        self.host: Host = select_hosts(cfg, [])[0]
        self._given = executor
        self.ex: Executor | None = None
        self.paths: hoststate.Paths | None = None
        self.target: Target | None = None
        self.previous: svc.Spec | None = None
        self.wanted: svc.Spec | None = None
        self.secret_values: list[Secret] = list(cfg.secrets())
        self.who, self.origin = who(cfg), origin()
        self.steps: list[Step] = []
        self.migration: dict[str, Any] | None = None
        self.gate: schemagate.Gate | None = None
        self.health: list[dict[str, Any]] = []
        self.restore_health: list[dict[str, Any]] = []
        self.tasks: list[dict[str, str]] = []
        self.created_secrets: list[str] = []
        self.known_nodes: dict[str, dict[str, str]] = {}
        # The proxy service's inspect data (behind a proxy block), None when it is absent.
        self.proxy_now: dict[str, Any] | None = None
        self.proxy_changed = False
        self.locked = False
        self.changed = False  # the service was created or updated by this attempt
        self.shielded = False  # restoring or recording: a signal waits
        self.held_signal: int | None = None
        self.unchanged = False
        # Swarm's health check of the new tasks: where it comes from ("plainsail" with the
        # image's HTTP client, "image", "none", "off") and the check itself.
        self.healthcheck: dict[str, Any] | None = None
        self.task_health: healthcheck.Health | None = None

    # ---------------------------------------------------------------- entry point
    def run(self) -> dict[str, Any]:
        with _signals(self):
            try:
                self._preflight()
            except (PlainsailError, Interrupted) as exc:
                stopped_in_preflight(self.cfg, exc, partial(self._summary, preflight=True),
                                     self._close, "the service changed")
            if self.req.dry_run:
                self._dry_run()
                self._close()
                return self._summary("dry-run", "nothing was changed")
            if self.unchanged:
                assert self.target
                summary = self._summary(UNCHANGED, f"{self.target.tag} already runs on the "
                                        "Swarm with the same settings and environment; use "
                                        "--force to redeploy")
                append_local(self.cfg, summary)
                self._close()
                return summary
            try:
                outcome, reason = self._execute()
            except Interrupted:
                outcome, reason = self._unwind("interrupted by a signal", INTERRUPTED)
            except Exception as exc:  # a bug: still restore, record and unlock
                from plainsail.crash import write_crash_log

                path = write_crash_log(exc)
                outcome, reason = self._unwind(
                    f"plainsail hit an unexpected {type(exc).__name__} (a bug; details for a "
                    f"bug report in {path})", ABORTED)
            except BaseException:
                self._unlock()
                self._close()
                raise
            try:
                return self._finish(outcome, reason)
            finally:
                self._unlock()
                self._close()

    # ---------------------------------------------------------------- preflight
    def _preflight(self) -> None:
        cfg = self.cfg
        assert cfg.swarm is not None
        if self.req.hosts:
            raise UsageError("--host: a swarm deploy updates the whole service through "
                             "swarm.manager, on the nodes Swarm chooses; remove --host "
                             "(swarm.placement says where tasks may run)")
        if not cfg.app.publish and cfg.proxy is None:
            raise PlainsailError(
                "app.publish: target swarm needs an entry point: a proxy block (a global "
                "Caddy service on every node, see docs/swarm.md) or a port each task "
                "publishes in host mode on its node (there is no routing mesh); add a proxy "
                "block, or set app.publish, e.g. 8080")
        missing = missing_secrets(cfg, self.environ)
        if missing:
            raise PlainsailError(
                f"app.secrets {', '.join(missing)} not set or empty (or only white space) in "
                "this environment; export them and retry")
        self.env = app_env(cfg, self.environ)
        self.secret_values += [Secret(self.env[n]) for n in cfg.app.secrets]
        weak.declare(cfg)
        for line in weak.warnings(cfg, {n: self.env[n] for n in cfg.app.secrets}):
            self.out.warn(line)
        self._say("preflight", "verifying the image")
        self.target = t = self._resolve(cfg, self.req)
        for line in t.warnings:
            self.out.warn(line)
        self._say("preflight", f"image {t.tag} pinned to {t.digest}"
                  + (" (signature verified)" if t.verified else ""))
        self.ex = ex = self._given or executor_for(self.host, ssh_options(cfg),
                                                   self.secret_values)
        self.paths, version = hoststate.probe(ex, cfg.host_dir, cfg.service,
                                              timeout=cfg.timeouts.query)
        info = ex.run(["docker", "info", "--format",
                       "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"],
                      timeout=cfg.timeouts.query, what="docker info").stdout.split()
        if info != ["active", "true"]:
            raise PlainsailError(
                f"{self.host.name}: swarm.manager is not a manager of an active Swarm (its "
                f"engine says: {' '.join(info) or 'nothing'}); name a manager node, or run "
                "docker swarm init there")
        self.known_nodes = cluster.nodes(ex, cfg)
        ready = cluster.ready(self.known_nodes)
        if (cfg.swarm.update.order == "start-first" and cfg.proxy is None
                and cfg.swarm.replicas >= len(ready)):
            raise PlainsailError(
                f"swarm.update.order: start-first needs a node without a task of "
                f"{cfg.service} for each new task (its host-mode port {cfg.app.publish} is "
                f"taken on a node that runs one), but {cfg.swarm.replicas} replica(s) fill "
                f"the {len(ready)} ready node(s); use order: stop-first, or fewer replicas "
                "than nodes")
        self.previous, _ = cluster.current_spec(ex, cfg)
        proxy_now = cluster.inspect(ex, cfg, swproxy.service_name(cfg.service))
        if cfg.proxy is not None:
            self.proxy_now = proxy_now
        elif proxy_now is not None:
            self._left_proxy(swproxy.parse_inspect(proxy_now))
        prev = self.previous
        self._say(self.host.name, f"Swarm manager, Docker {version}, {len(ready)} ready "
                  f"node(s); running: {(prev.tag or prev.image) if prev else 'nothing'}")
        self.settings_label = settingslib.label(self.env, cfg)
        if prev and prev.digest == t.digest and not self.req.force:
            names = settingslib.changed(prev.labels.get(svc.LABEL_SETTINGS, ""), self.env,
                                        cfg)
            options_same = prev.labels.get(LABEL_OPTIONS) == options_label(cfg)
            proxy_same = cfg.proxy is None or (
                self.proxy_now is not None
                and swproxy.parse_inspect(self.proxy_now).label == swproxy.settings(cfg))
            if names == [] and options_same and proxy_same:
                self.unchanged = True
        self._schema_gate()
        self.lock_info = hoststate.LockInfo(
            deploy_id=self.id, holder=f"{self.who}@{socket.gethostname()}",
            machine=socket.gethostname(), pid=os.getpid(), started=now(), tag=t.tag,
            origin=self.origin, kind=self.req.kind)

    def _left_proxy(self, left: swproxy.ProxySpec) -> None:
        """The proxy service of an earlier `proxy` block, which this config no longer has:
        plainsail leaves it running (the load balancer may still point at it; it still
        reaches the tasks on the overlay) but says so, and refuses an app.publish that
        would need the port it holds on every node."""
        name = swproxy.service_name(self.cfg.service)
        if self.cfg.app.publish in left.published:
            raise PlainsailError(
                f"app.publish: port {self.cfg.app.publish} is held on every node by the "
                f"proxy service {name}, left from an earlier proxy block, so no task could "
                f"publish it; once your load balancer no longer points at it, remove it "
                f"(docker service rm {name}), or publish another port")
        ports = ", ".join(str(p) for p in left.published) or "none"
        self.out.warn(
            f"the proxy service {name} (port {ports} on every node) is left from an earlier "
            "proxy block and plainsail no longer updates it; once your load balancer points "
            f"at app.publish {self.cfg.app.publish}, remove it: docker service rm {name}")

    def _schema_gate(self) -> None:
        assert self.target
        t = self.target
        running = ([schemagate.Version(self.previous.tag, self.previous.digest, "")]
                   if self.previous and self.previous.tag else [])
        self.gate = gate = schemagate.check(
            self.cfg, kind=self.req.kind, target=schemagate.Version(t.tag, t.digest, ""),
            running=running, allow=self.req.allow_breaking_migrations, environ=self.environ)
        if not gate.ran:
            if gate.shallow and in_ci(self.environ) and not self.req.allow_shallow_clone:
                raise schemagate.SchemaGateError(gate.shallow_refusal())
            self.out.warn(gate.summary())
            return
        for h in gate.findings:
            self._say("schema-gate", f"{h.file}:{h.line}: {h.rule}: {h.message}")
        if gate.refuses:
            raise schemagate.SchemaGateError(gate.refusal())
        self._say("schema-gate", gate.summary())

    # ---------------------------------------------------------------- the commands
    def _migrate_argv(self) -> list[str]:
        assert self.target and self.paths
        on_overlay = replace(self.cfg, app=replace(self.cfg.app,
                                                   network=self.cfg.swarm_network))
        return migrate_argv(on_overlay, self.target, self.paths.env, self.id)

    def _secret_names(self) -> dict[str, str]:
        return {name: svc.secret_name(self.cfg.service, name, self.id)
                for name in sorted(self.cfg.app.secrets)}

    def _wanted(self, args: list[str]) -> svc.Spec:
        assert self.target
        t = self.target
        spec = svc.wanted_spec(self.cfg, t.image, t.tag, t.digest, self.id,
                               self.settings_label, args, self._secret_names(),
                               self.task_health)
        spec.labels[LABEL_OPTIONS] = options_label(self.cfg)
        return spec

    def _service_argv(self, spec: svc.Spec) -> list[str]:
        if self.previous is None:
            return svc.create_argv(self.cfg, self.cfg.swarm_network, spec)
        return svc.update_argv(self.cfg, self.previous, spec,
                               force=self.previous.image == spec.image)

    def _dry_run(self) -> None:
        assert self.ex and self.target and self.paths
        ex, cfg = self.ex, self.cfg
        # (the schema gate's summary was said in preflight)
        steps: list[tuple[str, list[str], str]] = [
            ("lock+env", hoststate.lock_and_env_argv(self.paths, self.lock_info),
             "stdin: the env file, secrets included (not shown); for the migration only"),
            ("network", svc.network_create_argv(cfg.swarm_network), "unless it exists"),
            ("entry-shim", svc.entry_config_argv(), "unless it exists; stdin: the shim"),
        ]
        if cfg.proxy is not None:
            steps += self._proxy_steps()
        steps.append(("pull", docker.pull(self.target.pinned), "on the manager, by digest"))
        if cfg.swarm is not None and cfg.swarm.healthcheck:
            steps.append(("http-client", healthcheck.client_argv(self.target.pinned),
                          "unless the image has a HEALTHCHECK: which of "
                          + ", ".join(healthcheck.CLIENTS) + " Swarm's health check uses"))
            steps.append(("health-script", healthcheck.config_argv(),
                          "unless it exists; stdin: the check's script"))
            self.task_health = healthcheck.wanted(cfg, "CLIENT")
        if cfg.migrate and not self.req.skip_migrations:
            steps.append(("migrate", self._migrate_argv(),
                          "on failure: stop; the service is untouched"))
        for variable, name in self._secret_names().items():
            steps.append((f"secret {variable}",
                          svc.secret_create_argv(name, cfg.service, self.id),
                          "stdin: the value (not shown)"))
        spec = self._wanted(["IMAGE-COMMAND"])
        steps.append(("service", self._service_argv(spec),
                      "IMAGE-COMMAND: the image's entrypoint and command (or app.command), "
                      "read from the image on the manager"))
        steps.append(("converge", [], f"wait for {cfg.swarm.replicas if cfg.swarm else 0} "
                      "task(s) of the new digest and Swarm's update completed"))
        if cfg.proxy is not None:
            probe = swproxy.probe_name(cfg, self.id)
            steps.append(("probe", swproxy.probe_start_argv(cfg, probe),
                          "on the manager, on the overlay network, for the gate"))
            steps.append(("gate", [], f"GET {cfg.health.path} on every task, by its overlay "
                          f"address on port {cfg.app.port}, from the probe (docker exec)"))
            steps.append(("probe-rm", swproxy.probe_rm_argv(probe), "after the gate"))
        else:
            steps.append(("gate", [], f"GET {cfg.health.path} on every task, on its node's "
                          f"port {cfg.app.publish}"))
        steps.append(("restore", [], "on failure: update the service back to "
                      + (f"{self.previous.tag or self.previous.image}" if self.previous
                         else "nothing (remove the new service)")))
        self.report(f"[{self.host.name}] would run:")
        for name, argv, note in steps:
            shown = ex.display(argv) if argv else "#"
            self.report(f"  {name}: {shown}  # {note}")

    def _health_check(self, image_config: dict[str, Any]) -> None:
        """Swarm's health check of the new tasks (swarm/healthcheck.py): the image's own
        HEALTHCHECK, else one asking what health.* asks with the image's HTTP client (its
        script created as a Docker config unless it exists), else none, said loudly."""
        assert self.ex and self.target and self.cfg.swarm
        ex, cfg = self.ex, self.cfg
        if not self.cfg.swarm.healthcheck:
            self.healthcheck = {"source": "off"}
            return
        if healthcheck.own(image_config):
            self.healthcheck = {"source": "image"}
            return
        res = self._step("http-client", lambda: ex.run(
            healthcheck.client_argv(self.target.pinned),  # type: ignore[union-attr]
            check=False, timeout=cfg.timeouts.command,
            what="look for an HTTP client in the image"))
        client = res.stdout.strip() if res.ok else ""
        if client not in healthcheck.CLIENTS:
            self.healthcheck = {"source": "none"}
            self.out.warn(
                "the image has no HEALTHCHECK and none of " + ", ".join(healthcheck.CLIENTS)
                + " (or no /bin/sh): Swarm cannot check its tasks itself, so a task that "
                "fails the gate receives requests until plainsail replaces it; add one of "
                "them, or a HEALTHCHECK, to the image")
            return
        self._step("health-script", lambda: objects.ensure(
            ex, cfg, healthcheck.config_inspect_argv(), healthcheck.config_argv(),
            "the health check's config", stdin=healthcheck.HEALTH_SCRIPT))
        self.task_health = healthcheck.wanted(cfg, client)
        self.healthcheck = {"source": "plainsail", "client": client,
                            "every": f"{self.task_health.interval:g}s"}

    def _proxy_steps(self) -> list[tuple[str, list[str], str]]:
        """The proxy's commands: its Caddy config and the service, unless they are as this
        config wants them."""
        cfg = self.cfg
        steps = [("proxy-config", swproxy.config_create_argv(cfg),
                  "unless it exists; stdin: the Caddy config")]
        argv = self._proxy_argv()
        if argv:
            steps.append(("proxy", argv, "the entry point on every node" if self.proxy_now
                          is None else "its image, port or config changed"))
        steps.append(("proxy-wait", [], "until the proxy runs on every ready node"))
        return steps

    def _proxy_argv(self) -> list[str]:
        """Create the proxy service, update it, or nothing ([]) when it is as wanted."""
        if self.proxy_now is None:
            return swproxy.create_argv(self.cfg)
        now = swproxy.parse_inspect(self.proxy_now)
        return [] if now.label == swproxy.settings(self.cfg) else swproxy.update_argv(
            self.cfg, now)

    def _ensure_proxy(self) -> None:
        """The proxy service as this config wants it, running on every ready node."""
        assert self.ex
        ex, cfg = self.ex, self.cfg
        name = swproxy.service_name(cfg.service)
        self._step("proxy-config", lambda: objects.ensure(
            ex, cfg, swproxy.config_inspect_argv(cfg), swproxy.config_create_argv(cfg),
            "the proxy's Caddy config", stdin=swproxy.caddy_config(cfg)))
        argv = self._proxy_argv()
        if argv:
            port = cfg.proxy.http_port if cfg.proxy else 0
            self._say(self.host.name, ("create" if self.proxy_now is None else "update")
                      + f" the proxy service {name} (global, port {port} on every node)")
            self._step("proxy", lambda: self._on_network(partial(
                ex.run, argv, timeout=cfg.timeouts.command,
                what="docker service create/update (proxy)")))
            self.proxy_changed = True
        key = f"converge {name}"
        deadline = time.monotonic() + cfg.timeouts.command + cfg.timeouts.pull
        try:
            running = self._step("proxy-wait", lambda: cluster.proxy_converge(
                ex, cfg, self.known_nodes, deadline,
                on_wait=lambda text: self.progress.update(key, text), sleep=self._sleep))
        finally:
            self.progress.done(key)
        if self.proxy_changed:
            self._say(self.host.name, f"the proxy runs on {len(running)} node(s)")

    # ---------------------------------------------------------------- the changing part
    def _step(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.monotonic()
        try:
            out = fn()
        except BaseException:
            self.steps.append(Step(name, round(time.monotonic() - start, 3), False))
            raise
        self.steps.append(Step(name, round(time.monotonic() - start, 3), True))
        return out

    def _execute(self) -> tuple[str, str]:
        assert self.ex and self.paths and self.target and self.cfg.swarm
        ex, cfg, t = self.ex, self.cfg, self.target
        untouched = "the service was not changed"
        try:
            self._step("lock+env", lambda: hoststate.lock_and_write_env(
                ex, self.paths, self.lock_info, self.env))  # type: ignore[arg-type]
            self.locked = True
        except hoststate.EnvFileError as exc:
            self.locked = True
            return ABORTED, f"{one_line(exc)}; {untouched}"
        except (LockError, PlainsailError) as exc:
            return ABORTED, f"{one_line(exc)}; {untouched}"
        try:
            self._step("network", lambda: objects.ensure_network(ex, cfg, cfg.swarm_network))
            self._step("entry-shim", lambda: objects.ensure(
                ex, cfg, svc.entry_config_inspect_argv(), svc.entry_config_argv(),
                "the entry shim's config", stdin=svc.ENTRY_SCRIPT))
            if cfg.proxy is not None:
                self._ensure_proxy()
            self._say(self.host.name, f"pull {t.pinned}")
            self._step("pull", lambda: ex.run(docker.pull(t.pinned), timeout=cfg.timeouts.pull,
                                              what="docker pull"))
            conf = self._step("image-command", lambda: ex.run(
                docker.image_inspect(t.pinned, "{{json .Config}}"),
                timeout=cfg.timeouts.query, what="docker image inspect"))
            image_config = json.loads(conf.stdout) or {}
            args = svc.app_command(cfg, image_config)
            self._health_check(image_config)
        except PlainsailError as exc:
            return ABORTED, f"{one_line(exc)}; {untouched}"
        if cfg.migrate and not self.req.skip_migrations:
            ok, why = self._migrate()
            if not ok:
                return FAILED_MIGRATION, why
        self.wanted = spec = self._wanted(args)
        try:
            for variable, name in spec.secrets.items():
                self._step(f"secret {variable}", partial(
                    ex.run, svc.secret_create_argv(name, cfg.service, self.id),
                    input=self.env[variable], timeout=cfg.timeouts.command,
                    what="docker secret create"))
                self.created_secrets.append(name)
            argv = self._service_argv(spec)
            self._say(self.host.name, ("create" if self.previous is None else "update")
                      + f" the service {cfg.service} to {t.tag}")
            self.changed = True
            self._step("service", lambda: self._on_network(partial(
                ex.run, argv, timeout=cfg.timeouts.command,
                what="docker service " + ("create" if self.previous is None else "update"))))
        except PlainsailError as exc:
            return self._restore(one_line(exc), ABORTED)
        problem = self._wait_and_gate(spec, self.health)
        if problem and self.req.kind == "recover":
            # The spec read in preflight is the interrupted attempt's: no way back to it.
            return RESTORE_FAILED, (f"{problem}; the last known-good release {t.tag} did not "
                                    "come back healthy: look at the service now")
        if problem:
            return self._restore(problem, RESTORED)
        self._cleanup(spec)
        if self.req.kind == "recover":
            return RECOVERED, (f"{t.tag}, the last known-good release, runs again on "
                               f"{len(self.tasks)} task(s) and passed the gate")
        return SUCCEEDED, f"{len(self.tasks)} task(s) of {t.tag} run and passed the gate"

    def _migrate(self) -> tuple[bool, str]:
        assert self.ex and self.cfg.migrate
        ex, m = self.ex, self.cfg.migrate
        argv = self._migrate_argv()
        name = argv[argv.index("--name") + 1]
        self._say(self.host.name, f"migrate: {' '.join(m.command)}")
        start = time.monotonic()
        try:
            res = self._on_network(partial(ex.run, argv, timeout=m.timeout, check=False,
                                           what="migrations"))
            code: int | None = res.returncode
            tail = res.tail()
        except RemoteError as exc:  # timeout
            code, tail = None, exc.output_tail
            with suppress(PlainsailError):
                ex.run(docker.rm([name], force=True), check=False,
                       timeout=self.cfg.timeouts.command)
        seconds = round(time.monotonic() - start, 3)
        self.migration = {"host": self.host.name, "exit_code": code, "output_tail": tail,
                          "seconds": seconds}
        self.steps.append(Step("migrate", seconds, code == 0))
        if code == 0:
            self._say(self.host.name, f"migrate: ok ({seconds:.1f}s)")
            return True, ""
        why = f"timed out after {m.timeout:g}s" if code is None else f"exit code {code}"
        self._say(self.host.name, f"migrate: FAILED ({why})")
        return False, (f"migrations failed ({why}): {error_line(tail or '') or 'no output'}; "
                       "the deploy stopped before touching the service, which keeps serving "
                       "the old schema")

    def _on_network(self, run: Callable[[], Result]) -> Result:
        """run() a command that joins the overlay network (objects.attach)."""
        assert self.ex
        return objects.attach(self.ex, self.cfg, self.cfg.swarm_network, run,
                              on_retry=lambda text: self._say(self.host.name, text),
                              sleep=self._sleep)

    def _wait_and_gate(self, spec: svc.Spec, into: list[dict[str, Any]]) -> str:
        """Wait for the service to run `spec` everywhere, then gate every task; the
        problem, or "" when it is healthy."""
        assert self.ex and self.cfg.swarm
        cfg, ex = self.cfg, self.ex
        hc = cfg.health
        sw = self.cfg.swarm
        batches = -(-sw.replicas // max(sw.update.parallelism, 1)) if sw.update.parallelism \
            else 1
        deadline = time.monotonic() + cfg.timeouts.command + batches * (
            sw.update.delay + cfg.app.stop_timeout + 10)
        key = f"converge {cfg.service}"

        def shown(task: cluster.Task, a: Any) -> None:
            self.progress.update(f"gate {task.node}", f"attempt {a.n}/{hc.attempts}: "
                                 + (f"answered {a.status}" if a.status else str(a.error)))

        # The gate's probe container (behind the proxy) starts before the wait, while Swarm
        # replaces the tasks, not after it: its start no longer adds to the deploy's time.
        try:
            with self._prober() as prober:
                try:
                    running = self._step("converge", lambda: cluster.converge(
                        ex, cfg, spec.image, spec.labels.get(svc.LABEL_DEPLOY, ""), deadline,
                        self.known_nodes, created=self.previous is None,
                        on_wait=lambda text: self.progress.update(key, text),
                        sleep=self._sleep))
                except cluster.SwarmError as exc:
                    return one_line(exc)
                except RemoteError as exc:
                    return f"the Swarm could not be watched: {one_line(exc)}"
                finally:
                    self.progress.done(key)
                self.tasks = [t.to_json() for t in running]
                self._say(self.host.name, f"{len(running)} task(s) running on "
                          + ", ".join(sorted({t.node or t.node_id for t in running})))
                ok, why, verdicts = self._step("gate", lambda: cluster.gate(
                    prober, cfg, running, self.secret_values, shown))
        except PlainsailError as exc:
            return f"the health gate could not run: {one_line(exc)}"
        into.extend(verdicts)
        self._say(self.host.name, f"gate: {'ok' if ok else 'FAILED'} ({why})")
        return "" if ok else f"health gate failed: {why}"

    @contextmanager
    def _prober(self) -> Iterator[Executor]:
        """The gate's way to the tasks (swproxy.prober), its start timed as a step."""
        assert self.ex
        start = time.monotonic()
        with swproxy.prober(self.ex, self.cfg, swproxy.probe_name(self.cfg, self.id)) as p:
            if p is not self.ex:
                self.steps.append(Step("probe", round(time.monotonic() - start, 3), True))
            yield p

    def _restore(self, why: str, outcome: str) -> tuple[str, str]:
        """Put the service back on the release read in preflight (the records' last one);
        a service this attempt created is removed. Runs to its end whatever the signals."""
        assert self.ex
        ex, cfg = self.ex, self.cfg
        self.shielded = True
        try:
            if not self.changed:
                self._drop_secrets(keep=set())
                return outcome, f"{why}; the service was not changed"
            if self.previous is None:
                self._say(self.host.name, f"restore: remove the new service {cfg.service} "
                          "(nothing ran before)")
                res = ex.run(svc.rm_argv(cfg.service), check=False,
                             timeout=cfg.timeouts.command, what="docker service rm")
                self.steps.append(Step("restore", 0.0, res.ok))
                if not res.ok:
                    return RESTORE_FAILED, (f"{why}; the new service could not be removed "
                                            f"({error_line(res.tail()) or 'no output'})")
                self._drop_secrets(keep=set())
                final = INTERRUPTED if outcome == INTERRUPTED else RESTORED
                return final, f"{why}; nothing ran before: the new service was removed"
            prev = self.previous
            self._say(self.host.name, f"restore: update the service back to "
                      f"{prev.tag or prev.image}")
            try:
                now_spec, _ = cluster.current_spec(ex, cfg)
                argv = svc.update_argv(cfg, now_spec or prev, prev,
                                       force=now_spec is not None and now_spec.image == prev.image)
                self._step("restore", lambda: ex.run(argv, timeout=cfg.timeouts.command,
                                                     what="docker service update (restore)"))
                problem = self._wait_and_gate(prev, self.restore_health)
            except PlainsailError as exc:
                problem = one_line(exc)
            if problem:
                return RESTORE_FAILED, (f"{why}; and the previous release "
                                        f"{prev.tag or prev.image} could not be restored: "
                                        f"{problem}")
            self._drop_secrets(keep=set(prev.secrets.values()))
            final = INTERRUPTED if outcome == INTERRUPTED else RESTORED
            return final, f"{why}; the service runs {prev.tag or prev.image} again"
        finally:
            self.shielded = False

    def _unwind(self, why: str, outcome: str) -> tuple[str, str]:
        try:
            return self._restore(why, outcome)
        except PlainsailError as exc:
            return RESTORE_FAILED, f"{why}; the restore failed: {one_line(exc)}"

    def _cleanup(self, spec: svc.Spec) -> None:
        """After success: Docker secrets the service no longer uses are removed."""
        self._drop_secrets(keep=set(spec.secrets.values()))

    def _drop_secrets(self, keep: set[str]) -> None:
        """Remove this service's Docker secrets but `keep` (best effort: one in use by a
        task still shutting down is refused by Docker and removed by the next deploy)."""
        assert self.ex
        ex, cfg = self.ex, self.cfg
        res = ex.run(svc.secret_ls_argv(cfg.service), check=False,
                     timeout=cfg.timeouts.query, what="docker secret ls")
        doomed = [n for n in res.stdout.split() if n not in keep] if res.ok else []
        doomed += [n for n in self.created_secrets if n not in keep and n not in doomed]
        if doomed:
            ex.run(svc.secret_rm_argv(doomed), check=False, timeout=cfg.timeouts.command,
                   what="docker secret rm")

    # ---------------------------------------------------------------- records
    def _say(self, where: str, text: str) -> None:
        self.out.say(text, where)

    def _record(self, outcome: str, reason: str) -> dict[str, Any]:
        t = self.target
        prev = self.previous
        rec: dict[str, Any] = {
            "id": self.id, "kind": self.req.kind, "drill": self.req.drill,
            "service": self.cfg.service, "image": self.cfg.image, "target": "swarm",
            "tag": t.tag if t else None, "digest": t.digest if t else None,
            "verified": t.verified if t else False, "signed_by": t.signed_by if t else None,
            "who": self.who, "origin": self.origin, "started": self.started, "ended": now(),
            "seconds": round(time.monotonic() - self.t0, 3), "outcome": outcome,
            "reason": reason, "skip_migrations": self.req.skip_migrations,
            "requested": self.req.ref,
            "allow_breaking_migrations": self.req.allow_breaking_migrations,
            "allow_shallow_clone": self.req.allow_shallow_clone,
            "schema_gate": self.gate.record() if self.gate else None,
            "settings": settingslib.recorded(self.cfg),
            "host": self.host.name,
            "previous_tag": prev.tag if prev else None,
            "previous_digest": prev.digest if prev else None,
            "steps": [s.__dict__ for s in self.steps],
            "tasks": self.tasks, "health": self.health or None,
            "restore_health": self.restore_health or None,
            "healthcheck": self.healthcheck,
            "secrets": sorted((self.wanted.secrets if self.wanted else {}).values()),
            "nodes": [{"id": k, **v} for k, v in sorted(self.known_nodes.items())],
        }
        if self.cfg.proxy is not None:
            rec["proxy"] = {"service": swproxy.service_name(self.cfg.service),
                            "config": swproxy.config_name(self.cfg),
                            "port": self.cfg.proxy.http_port, "changed": self.proxy_changed}
        if self.req.kind == "rollback":
            rec["rollback_from"] = self.req.rollback_from
            rec["rollback_to"] = t.tag if t else None
        if self.req.kind == "recover":
            rec["recovered_from"] = self.req.rollback_from
        if self.migration:
            rec["migration"] = self.migration
        return redact_free_text(rec, self.secret_values)

    def _summary(self, outcome: str, reason: str, preflight: bool = False) -> dict[str, Any]:
        rec = self._record(outcome, reason)
        prev = self.previous
        rec["hosts"] = [self.host.name]
        rec["preflight"] = preflight
        rec["per_host"] = [{"host": self.host.name, "outcome": outcome, "reason": reason,
                            "previous_tag": prev.tag if prev else None, "batch": None,
                            "steps": [s.__dict__ for s in self.steps]}]
        return redact_free_text(rec, self.secret_values)

    def _finish(self, outcome: str, reason: str) -> dict[str, Any]:
        self.shielded = True
        rec = self._record(outcome, reason)
        unrecorded = False
        if self.ex and self.paths:
            try:
                hoststate.append_history(self.ex, self.paths, rec)
            except Exception as exc:  # noqa: BLE001 - the outcome must still be kept
                unrecorded = True
                self.out.error(
                    f"{self.host.name}: the record of this attempt could not be stored on "
                    f"the manager ({type(exc).__name__}: {one_line(exc)}); it is kept "
                    "locally in .plainsail/history.jsonl")
            with suppress(PlainsailError):  # the env file served the migration only
                self.ex.run(["rm", "-f", "--", self.paths.env], check=False,
                            timeout=self.cfg.timeouts.query, what="remove the env file")
        self._unlock()
        summary = self._summary(outcome, reason)
        if unrecorded:
            summary["unrecorded_hosts"] = [self.host.name]
        append_local(self.cfg, summary)
        return summary

    def _unlock(self) -> None:
        if self.locked and self.ex and self.paths:
            try:
                hoststate.release(self.ex, self.paths, self.id)
                self.locked = False
            except Exception as exc:  # noqa: BLE001 - the outcome must still be recorded
                self.out.error(f"{self.host.name}: could not release the deploy lock "
                               f"{self.paths.lock} ({type(exc).__name__}: {one_line(exc)}); "
                               "check the manager, then run: plainsail lock release")

    def _close(self) -> None:
        if self.ex is not None:
            self.ex.close()


@contextmanager
def _signals(attempt: SwarmDeploy) -> Iterator[None]:
    """SIGTERM and Ctrl-C put the last release back (restore, record, unlock) instead of
    killing the deployer; during the restore and the recording a signal waits."""
    def handler(signum: int, frame: object) -> None:
        if attempt.shielded:
            attempt.held_signal = signum
            return
        raise Interrupted()

    with handled_by(handler):
        yield


def deploy(cfg: Config, req: Request, report: Reporter = NULL,
           progress: Progress = NULL) -> dict[str, Any]:
    return SwarmDeploy(cfg, req, report, progress=progress).run()
