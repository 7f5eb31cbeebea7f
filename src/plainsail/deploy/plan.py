"""What a deploy will do, decided before anything changes: the verified image, the hosts,
and the docker commands for the app and migration containers (plain data and argv lists).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from plainsail.config import secretsources
from plainsail.config.model import Config, MigrateConfig, volumes_in_state
from plainsail.deploy.hostregistry import pull_repository, start_argv
from plainsail.errors import PlainsailError, SignatureError, UsageError
from plainsail.hosts import docker
from plainsail.hosts import state as hoststate
from plainsail.hosts.addresses import Host, parse_host
from plainsail.hosts.containers import Container
from plainsail.hosts.executor import SSHOptions
from plainsail.hosts.state import LockInfo, Paths
from plainsail.supply import buildrecords
from plainsail.supply.images import ImageRef, mutable_tag_problem, split_ref


@dataclass
class Request:
    ref: str | None = None  # TAG, TAG@DIGEST or None (the newest build record)
    hosts: list[str] = field(default_factory=list)  # empty: all hosts
    skip_migrations: bool = False
    dry_run: bool = False
    force: bool = False
    kind: str = "deploy"  # or "rollback"
    rollback_from: str | None = None  # the tag running before a rollback
    pinned_digest: str | None = None  # rollback: the digest the records name
    drill: str | None = None  # the id of the rollback drill this attempt belongs to
    allow_breaking_migrations: bool = False  # the schema gate reports but does not refuse
    allow_shallow_clone: bool = False  # in CI, a gate skipped in a shallow clone is no error
    settings_from: str | None = None  # rollback: whose app settings the target runs with


@dataclass
class Target:
    image: str
    tag: str
    digest: str
    verified: bool
    signed_by: dict[str, str] | None = None  # the signature that matched: identity, signer
    warnings: tuple[str, ...] = ()  # what the person should know about how it was checked

    @property
    def pinned(self) -> str:
        return f"{self.image}@{self.digest}"


def container_name(service: str, tag: str) -> str:
    return f"{service}-{tag}"


def app_env(cfg: Config, environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """app.env plus every app secret, read from its source (each source once per run;
    a failure or an empty value raises SecretSourceError naming the secret)."""
    env = dict(cfg.app.env)
    env.update(secretsources.resolve(cfg, environ))
    return env


def missing_secrets(cfg: Config, environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """Environment variables that app secrets are read from but that are unset, empty or
    only white space (a value that cannot be a secret):
    CI gives an empty value for a missing secret, and an empty value would overwrite the
    host's env file with nothing. (Other sources are checked as `app_env` reads them.)"""
    return [s.env for s in cfg.app.secrets.values()
            if isinstance(s, secretsources.EnvSource) and not (environ.get(s.env) or "").strip()]


def health_target(cfg: Config) -> tuple[str, int] | None:
    """Where the host reaches the app: its published port, or None (use the container IP;
    always so behind the proxy, where nothing of the app is published)."""
    if cfg.proxy:
        return None
    if cfg.app.network == "host":
        return "127.0.0.1", cfg.app.port
    if cfg.app.publish:
        return "127.0.0.1", cfg.app.publish
    return None


def app_network(cfg: Config) -> str:
    """The Docker network of the app and migration containers: the proxy's, with a proxy."""
    return cfg.proxy.network if cfg.proxy else cfg.app.network


def published_port(cfg: Config) -> int | None:
    """The host port the app's container takes, if any: the one it publishes, or with the
    host's network its own (the port its health is asked on)."""
    target = health_target(cfg)
    return target[1] if target else None


def _publish(cfg: Config) -> tuple[int, int] | None:
    if cfg.proxy or cfg.app.network == "host" or not cfg.app.publish:
        return None
    return cfg.app.publish, cfg.app.port


def run_options(cfg: Config) -> list[str]:
    """The parts of `docker run` that decide what a container is (for the fingerprint)."""
    return docker.run_args(
        name="-", image="-", env_file=None, labels={}, network=app_network(cfg),
        publish=_publish(cfg), volumes=cfg.app.volumes, init=cfg.app.init,
        stop_timeout=cfg.app.stop_timeout, restart="unless-stopped",
        add_hosts=cfg.app.add_hosts, command=cfg.app.command or (),
    )


def app_run_argv(cfg: Config, target: Target, name: str, env_file: str, deploy_id: str,
                 fp: str, settings: str = "") -> list[str]:
    labels = {
        docker.LABEL_SERVICE: cfg.service,
        docker.LABEL_ROLE: "app",
        docker.LABEL_TAG: target.tag,
        docker.LABEL_DIGEST: target.digest,
        docker.LABEL_DEPLOY: deploy_id,
        docker.LABEL_ENV: fp,
    }
    if settings:
        labels[docker.LABEL_SETTINGS] = settings
    return docker.run_args(
        name=name, image=target.pinned, env_file=env_file, labels=labels,
        network=app_network(cfg), publish=_publish(cfg), volumes=cfg.app.volumes,
        init=cfg.app.init, stop_timeout=cfg.app.stop_timeout, restart="unless-stopped",
        add_hosts=cfg.app.add_hosts, command=cfg.app.command or (),
    )


def migrate_argv(cfg: Config, target: Target, env_file: str, deploy_id: str) -> list[str]:
    assert cfg.migrate is not None
    return docker.run_args(
        name=f"{cfg.service}-migrate-{deploy_id[-6:]}", image=target.pinned, env_file=env_file,
        labels={docker.LABEL_SERVICE: cfg.service, docker.LABEL_ROLE: "migrate",
                docker.LABEL_DEPLOY: deploy_id, docker.LABEL_TAG: target.tag},
        network=app_network(cfg), volumes=cfg.app.volumes, init=True, detach=False,
        remove=True, add_hosts=cfg.app.add_hosts, command=cfg.migrate.command,
        # The runner reads no plainsail.yml inside the image: the layout and the ledger's
        # schema travel as variables.
        env=_migrate_env(cfg.migrate) or None,
    )


def _migrate_env(m: MigrateConfig) -> dict[str, str]:
    env: dict[str, str] = {}
    if m.layout != "auto":
        env["PLAINSAIL_MIGRATIONS_LAYOUT"] = m.layout
    if m.schema != "public":
        env["PLAINSAIL_MIGRATIONS_SCHEMA"] = m.schema
    return env


# ---------------------------------------------------------------- preflight: what and where


def resolve_target(cfg: Config, req: Request) -> Target:
    """Which tag and digest to deploy, verified (signature, pinned digest, no tag drift)."""
    if req.ref:
        try:
            tag, digest = split_ref(req.ref)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    else:
        rec = buildrecords.latest_or_fail(cfg)
        tag, digest = rec.tag, rec.digest
    if tag is None:
        raise UsageError("give a tag (TAG or TAG@DIGEST): records and containers are named "
                         "for tags")
    problem = mutable_tag_problem(tag)
    if problem:
        raise UsageError(problem)
    if digest is None and req.pinned_digest:
        digest = req.pinned_digest
    if digest is None:
        found = buildrecords.find(cfg, tag)
        digest = found.digest if found else None
    if cfg.signing.verify:
        if not cfg.signing.public_key and not cfg.signing.keyless:
            raise SignatureError(
                "neither signing.public_key nor signing.keyless is set, so the image cannot "
                "be verified; set public_key to your cosign.pub (or configure keyless), or "
                "write signing: {verify: false} to deploy unverified images (not recommended)"
            )
        from plainsail.supply.verification import verify_image

        verified = verify_image(cfg, tag, digest)
        signed_by = {"identity": verified.identity, "signer": verified.signer,
                     "issuer": verified.issuer, "format": verified.format}
        if verified.unchecked:
            signed_by["unchecked"] = "; ".join(verified.unchecked)
        return Target(pull_repository(cfg), tag, verified.digest, True,
                      signed_by=signed_by, warnings=_insecure(cfg) + tuple(
                          f"signature of {cfg.image}:{tag}: not checked: {unchecked}"
                          for unchecked in verified.unchecked))
    unverified = "signing.verify is false: deploying an image whose origin is not verified"
    from plainsail.supply.registry import RegistryClient

    with RegistryClient.for_config(cfg) as client:
        now_digest = client.resolve(ImageRef(cfg.image, tag))
    if now_digest is None and digest is None:
        raise SignatureError(f"{cfg.image}:{tag} is not in the registry; build and push it first")
    if digest and now_digest and now_digest != digest:
        raise SignatureError(
            f"tag drift: {cfg.image}:{tag} now points to {now_digest}, but the build produced "
            f"{digest}; someone re-pushed the tag. Investigate before deploying"
        )
    return Target(pull_repository(cfg), tag, digest or now_digest or "", False,
                  warnings=(*_insecure(cfg), unverified))


def _insecure(cfg: Config) -> tuple[str, ...]:
    from plainsail.supply.registry import insecure_warning

    said = insecure_warning(cfg)
    return (said,) if said else ()


def select_hosts(cfg: Config, wanted: list[str]) -> list[Host]:
    hosts = [parse_host(h) for h in cfg.hosts]
    if not wanted:
        return hosts
    by_name = {h.name: h for h in hosts}
    also = {h.hostname: h for h in hosts}
    picked = []
    for w in wanted:
        h = by_name.get(w) or also.get(w)
        if h is None:
            raise UsageError(f"--host {w}: not in hosts ({', '.join(cfg.hosts)})")
        picked.append(h)
    return picked


def ssh_options(cfg: Config) -> SSHOptions:
    return SSHOptions(cfg.ssh.identity_file, cfg.ssh.known_hosts, dict(cfg.ssh.options))


# ---------------------------------------------------------------- the steps on each host

# The phases of a host's plan, in order. The steps of one phase run on the hosts at once
# (the switch in batches); a phase starts on any host only when the one before it ended on
# every host (migrations run once, on one host, between prepare and switch).
PHASES = ("lock", "prepare", "migrate", "switch", "prune", "finish")
PHASE_OF = {
    "lock": "lock", "lock+env": "lock",
    "host-registry": "prepare", "send": "prepare", "verify-host": "prepare",
    "pull": "prepare", "proxy-boot": "prepare",
    "backup": "migrate", "migrate": "migrate",
    "stop-old": "switch", "rename-old": "switch", "start-retained": "switch",
    "start-new": "switch", "gate": "switch", "canary": "switch", "route": "switch",
    "check-through": "switch", "traffic-gate": "switch", "drain": "switch",
    "stop-others": "prune", "prune": "prune", "prune-images": "prune",
    "record": "finish", "unlock": "finish",
}


@dataclass(frozen=True)
class PlannedStep:
    """One step of a host's plan: the command it runs (None for a step that is a named
    action, such as the health gate, a loop of HTTP requests), its timeout, what travels
    on stdin (described, never shown), and how the deploy undoes it when this or a later
    step fails. Its phase follows from its name (`PHASE_OF`)."""

    name: str
    argv: list[str] | None
    timeout: float
    what: str
    stdin: str = ""
    undo: str = ""

    @property
    def phase(self) -> str:
        return PHASE_OF.get(self.name, "")


@dataclass
class HostPlan:
    """Everything a deploy will do on one host, decided in preflight. `--dry-run` renders
    it; the deploy runs it, step by step, in this order."""

    host: str
    steps: list[PlannedStep]
    new_name: str = ""  # the container that will run the new version
    rename: tuple[str, str] | None = None  # a same-named older container steps aside
    doomed: list[str] = field(default_factory=list)  # containers pruned after success

    def step(self, name: str) -> PlannedStep | None:
        return next((s for s in self.steps if s.name == name), None)

    def lines(self, display: Callable[[list[str]], str]) -> list[str]:
        """The plan as `--dry-run` shows it: one line per step, its command as `display`
        shows it on the host (or what the named action does), stdin and undo noted."""
        out = []
        for step in self.steps:
            shown = display(step.argv) if step.argv is not None else f"# {step.what}"
            notes = [f"stdin: {step.stdin}"] if step.stdin else []
            notes += [f"on failure: {step.undo}"] if step.undo else []
            out.append(f"  {step.name}: {shown}" + (f"  # {'; '.join(notes)}"
                                                     if notes else ""))
        return out


def prune_plan(containers: Sequence[Container], new_name: str, digest: str, retain: int,
               image: str) -> tuple[list[str], list[str]]:
    """(containers, images) to remove after a successful switch: keep the newest `retain`
    other versions; copies of the running digest (left by --force) and older copies of one
    digest would only fill the rollback slots."""
    seen = {digest}
    targets: list[Container] = []
    doomed: list[Container] = []
    for c in containers:
        if c.name == new_name:
            continue
        (doomed if c.digest in seen else targets).append(c)
        seen.add(c.digest)
    doomed += targets[retain:]
    in_use = {digest} | {c.digest for c in containers if c not in doomed}
    images = sorted({f"{image}@{c.digest}" for c in doomed if c.digest and c.digest not in in_use})
    return [c.name for c in doomed], images


def _same(c: Container, other: Container | None) -> bool:
    """The same container, even when the plan renames it."""
    return other is not None and (c.created, c.digest) == (other.created, other.digest)


def host_registry_steps(cfg: Config, target: Target, paths: Paths) -> list[PlannedStep]:
    """registry.mode host: the host's loopback registry, the image sent to it over SSH and
    its signature checked there, before the host pulls from it."""
    assert cfg.registry is not None
    port = cfg.registry.port
    keep = ("nothing to undo: the registry keeps running, holding the versions sent so far "
            "(rollbacks pull from it)")
    steps = [
        PlannedStep("host-registry", start_argv(cfg, paths.root),
                    cfg.timeouts.command,
                    f"start the host's registry on 127.0.0.1:{port} (docker-registry, else "
                    "a container of registry.image), or reuse the running one; prove that "
                    "what listens there is it, and log Docker in to it",
                    stdin="a new random password, kept only when the registry has none",
                    undo=keep),
        PlannedStep("send", None, cfg.timeouts.pull,
                    f"copy {target.tag}@{target.digest} and its signature from this "
                    f"machine's registry to 127.0.0.1:{port} on the host, through a port "
                    "forwarded over SSH (only the blobs it lacks)", undo=keep),
    ]
    if cfg.signing.verify:
        steps.append(PlannedStep(
            "verify-host", None, cfg.timeouts.command,
            f"verify the signature of {cfg.image}@{target.digest} as the host's registry "
            "holds it, and that its tag names that digest"))
    return steps


def host_plan(cfg: Config, target: Target, deploy_id: str, fp: str, paths: Paths,
              containers: Sequence[Container], previous: Container | None,
              reuse: Container | None, lock: LockInfo, *, unchanged: bool,
              migrate_here: bool, settings: str = "", backup: str | None = None,
              backup_id: str = "", judge_traffic: bool = True) -> HostPlan:
    """The steps of one host, in order, with their argv lists. `judge_traffic` False (a
    rollback, a recovery): no traffic_gate steps, the whole route at once."""
    state = os.path.dirname(paths.root)  # host_dir, as the host expands it
    inside = volumes_in_state(cfg.app.volumes, state)
    if inside:
        raise PlainsailError(f"app.volumes {', '.join(inside)} mounts plainsail's own state "
                             f"({state} on this host, or a folder holding it) into the "
                             "app; mount another folder")
    plan = HostPlan(host="", steps=[])
    steps = plan.steps
    step_timeout = cfg.timeouts.command
    if unchanged:
        steps.append(PlannedStep("lock", hoststate.lock_argv(paths), step_timeout,
                                 "take the deploy lock", stdin="the lock's holder",
                                 undo="release the lock"))
    else:
        steps.append(PlannedStep("lock+env", hoststate.lock_and_env_argv(paths, lock),
                                 step_timeout, "take the deploy lock and write the env file",
                                 stdin="the env file, secrets included (not shown)",
                                 undo="release the lock"))
        if not reuse:
            if cfg.host_mode:
                steps += host_registry_steps(cfg, target, paths)
            steps.append(PlannedStep("pull", docker.pull(target.pinned), cfg.timeouts.pull,
                                     "docker pull"))
        proxied = cfg.proxy is not None
        if proxied:
            # Before the migration: the proxy's boot creates the network that the migration
            # and app containers join (on a fresh host nothing else has made it).
            steps.append(PlannedStep(
                "proxy-boot", None, step_timeout,
                "make sure the host's proxy runs with these host-level settings (boot it, "
                "and create its network, when absent)",
                undo="nothing to undo: the proxy is the host's, shared by its services"))
        if migrate_here and cfg.migrate and backup and cfg.backup:
            from plainsail.backup.host import folder, take_argv

            steps.append(PlannedStep(
                "backup", take_argv(cfg, paths, backup_id, deploy_id, app_network(cfg)),
                cfg.backup.timeout,
                f"back up the database (pg_dump -Fc, {backup}) to {folder(paths)}/"
                f"{backup_id}.dump, keep the newest {cfg.backup.keep}",
                undo="nothing to undo: a failed backup leaves no file, and the deploy stops "
                "before the migrations"))
        if migrate_here and cfg.migrate:
            steps.append(PlannedStep(
                "migrate", migrate_argv(cfg, target, paths.env, deploy_id),
                cfg.migrate.timeout, "migrations",
                undo="nothing to undo: a failing migration file rolls back alone, and the "
                "deploy stops before any container is switched"))
        after: list[Container] = list(containers)
        if not proxied and previous:
            steps.append(PlannedStep(
                "stop-old", docker.stop(previous.name, cfg.app.stop_timeout),
                cfg.app.stop_timeout + step_timeout, "docker stop",
                undo=f"start {previous.tag} again (the restore)"))
        if reuse:
            plan.new_name = reuse.name
            steps.append(PlannedStep("start-retained", docker.start(reuse.name), step_timeout,
                                     "docker start", undo="stop it; restore"))
        else:
            name = container_name(cfg.service, target.tag)
            clash = next((c for c in containers if c.name == name), None)
            if clash and proxied:
                # The proxy routes by container name: the running one keeps its name until
                # the switch, and the new one takes another.
                name, clash = f"{name}-{deploy_id[-6:]}", None
            if clash:
                alias = f"{name}-{clash.deploy_id[-6:] or 'old'}-{deploy_id[-6:]}"
                plan.rename = (name, alias)
                after = [replace(c, name=alias) if c is clash else c for c in containers]
                steps.append(PlannedStep("rename-old", docker.rename(name, alias),
                                         step_timeout, "docker rename"))
            plan.new_name = name
            steps.append(PlannedStep(
                "start-new", app_run_argv(cfg, target, name, paths.env, deploy_id, fp,
                                          settings),
                step_timeout, "docker run", undo="stop and remove it; restore"))
        hc = cfg.health
        if proxied:
            gate_undo = ("remove the new container; the route never pointed at it and the "
                         "old version never stopped")
        elif cfg.on_failure == "stop":
            gate_undo = "leave it for a human (on_failure: stop)"
        else:
            gate_undo = ("stop and remove the new container; start the previous version and "
                         "gate it")
        steps.append(PlannedStep(
            "gate", None, hc.attempts * (hc.interval + hc.timeout),
            f"health gate: GET {hc.path} until {hc.status}"
            + (f" with {hc.body_contains!r}" if hc.body_contains else "")
            + f", at most {hc.attempts} attempts {hc.interval:g}s apart"
            + (" (the new container's own address)" if proxied else ""),
            undo=gate_undo))
        if cfg.proxy is not None:
            back = (f"route back to {previous.tag} and remove the new container" if previous
                    else "remove the route's upstream: nothing ran before")
            route = PlannedStep(
                "route", None, step_timeout,
                f"switch the route of {', '.join(cfg.proxy.hosts)}{cfg.proxy.path} to the new "
                "container (one atomic change of the proxy's config)", undo=back)
            # traffic_gate: watched only when an old version serves to compare with.
            tg = cfg.traffic_gate if previous is not None and judge_traffic else None
            if tg is not None and tg.canary is not None:
                steps.append(PlannedStep(
                    "canary", None, step_timeout,
                    f"send {tg.canary:g}% of the route's requests to the new container",
                    undo=back))
            else:
                steps.append(route)
            steps.append(PlannedStep(
                "check-through", None, hc.timeout + step_timeout,
                f"GET {hc.path} once through the proxy, by host name", undo=back))
            if tg is not None:
                steps.append(PlannedStep(
                    "traffic-gate", None, 3 * tg.window + step_timeout,
                    f"watch the new version's real answers for {tg.window:g}s (once more "
                    f"with fewer than {tg.min_requests} requests) and judge them against "
                    "the old version's", undo=back))
                if tg.canary is not None:
                    steps.append(route)
            if previous:
                steps.append(PlannedStep(
                    "drain", None, cfg.proxy.drain,
                    f"wait until {previous.name} has no request in flight, at most "
                    f"{cfg.proxy.drain:g}s"))
                steps.append(PlannedStep(
                    "stop-old", docker.stop(previous.name, cfg.app.stop_timeout),
                    cfg.app.stop_timeout + step_timeout, "docker stop",
                    undo=f"start {previous.tag} again and route back to it"))
        doomed, images = prune_plan(after, plan.new_name, target.digest, cfg.retain,
                                    target.image)
        plan.doomed = doomed
        # A doomed container may still run (an interrupted attempt left it, or it served
        # until this switch): it stops the way the old version does, letting its requests
        # in flight finish, before `docker rm --force` could cut them.
        still = [a.name for c, a in zip(containers, after, strict=True)
                 if a.name in doomed and c.running and not _same(c, previous)]
        if still:
            steps.append(PlannedStep(
                "stop-others", docker.stop(still[0], cfg.app.stop_timeout, *still[1:]),
                cfg.app.stop_timeout + step_timeout, "docker stop",
                undo="nothing to undo: the route does not point at them"))
        if doomed:
            steps.append(PlannedStep("prune", docker.rm(doomed, force=True), step_timeout,
                                     "remove old containers"))
        if images:
            steps.append(PlannedStep("prune-images", docker.rmi(images), step_timeout,
                                     "remove their images"))
    steps.append(PlannedStep("record", hoststate.append_argv(paths), step_timeout,
                             "append the record", stdin="the record (JSON)"))
    steps.append(PlannedStep("unlock", hoststate.release_argv(paths, deploy_id),
                             step_timeout, "release the lock"))
    return plan
