"""What a deploy will do, decided before anything changes: the verified image, the hosts,
and the docker commands for the app and migration containers (plain data and argv lists).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from plainsail import buildrecords, docker, secretsources
from plainsail.config import Config
from plainsail.errors import SignatureError, UsageError
from plainsail.hosts import Host, parse_host
from plainsail.images import ImageRef, mutable_tag_problem, split_ref
from plainsail.output import warn
from plainsail.runner import SSHOptions


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


@dataclass
class Target:
    image: str
    tag: str
    digest: str
    verified: bool
    signed_by: dict[str, str] | None = None  # the signature that matched: identity, signer

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
    """Environment variables that app secrets are read from but that are unset or empty:
    CI gives an empty value for a missing secret, and an empty value would overwrite the
    host's env file with nothing. (Other sources are checked as `app_env` reads them.)"""
    return [s.env for s in cfg.app.secrets.values()
            if isinstance(s, secretsources.EnvSource) and not environ.get(s.env)]


def health_target(cfg: Config) -> tuple[str, int] | None:
    """Where the host reaches the app: its published port, or None (use the container IP)."""
    if cfg.app.network == "host":
        return "127.0.0.1", cfg.app.port
    if cfg.app.publish:
        return "127.0.0.1", cfg.app.publish
    return None


def run_options(cfg: Config) -> list[str]:
    """The parts of `docker run` that decide what a container is (for the fingerprint)."""
    publish = None if cfg.app.network == "host" or not cfg.app.publish else (
        cfg.app.publish, cfg.app.port)
    return docker.run_args(
        name="-", image="-", env_file=None, labels={}, network=cfg.app.network,
        publish=publish, volumes=cfg.app.volumes, init=cfg.app.init,
        stop_timeout=cfg.app.stop_timeout, restart="unless-stopped",
        command=cfg.app.command or (),
    )


def app_run_argv(cfg: Config, target: Target, name: str, env_file: str, deploy_id: str,
                 fp: str) -> list[str]:
    publish = None if cfg.app.network == "host" or not cfg.app.publish else (
        cfg.app.publish, cfg.app.port)
    labels = {
        docker.LABEL_SERVICE: cfg.service,
        docker.LABEL_ROLE: "app",
        docker.LABEL_TAG: target.tag,
        docker.LABEL_DIGEST: target.digest,
        docker.LABEL_DEPLOY: deploy_id,
        docker.LABEL_ENV: fp,
    }
    return docker.run_args(
        name=name, image=target.pinned, env_file=env_file, labels=labels,
        network=cfg.app.network, publish=publish, volumes=cfg.app.volumes, init=cfg.app.init,
        stop_timeout=cfg.app.stop_timeout, restart="unless-stopped",
        command=cfg.app.command or (),
    )


def migrate_argv(cfg: Config, target: Target, env_file: str, deploy_id: str) -> list[str]:
    assert cfg.migrate is not None
    return docker.run_args(
        name=f"{cfg.service}-migrate-{deploy_id[-6:]}", image=target.pinned, env_file=env_file,
        labels={docker.LABEL_SERVICE: cfg.service, docker.LABEL_ROLE: "migrate",
                docker.LABEL_DEPLOY: deploy_id, docker.LABEL_TAG: target.tag},
        network=cfg.app.network, volumes=cfg.app.volumes, init=True, detach=False, remove=True,
        command=cfg.migrate.command,
        # The runner reads no plainsail.yml inside the image: the layout travels as a variable.
        env=({"PLAINSAIL_MIGRATIONS_LAYOUT": cfg.migrate.layout}
             if cfg.migrate.layout != "auto" else None),
    )


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
        from plainsail.verification import verify_image

        verified = verify_image(cfg, tag, digest)
        return Target(cfg.image, tag, verified.digest, True,
                      signed_by={"identity": verified.identity, "signer": verified.signer,
                                 "issuer": verified.issuer} if verified.identity else None)
    warn("signing.verify is false: deploying an image whose origin is not verified")
    from plainsail.registry import RegistryClient

    with RegistryClient.for_config(cfg) as client:
        now_digest = client.resolve(ImageRef(cfg.image, tag))
    if now_digest is None and digest is None:
        raise SignatureError(f"{cfg.image}:{tag} is not in the registry; build and push it first")
    if digest and now_digest and now_digest != digest:
        raise SignatureError(
            f"tag drift: {cfg.image}:{tag} now points to {now_digest}, but the build produced "
            f"{digest}; someone re-pushed the tag. Investigate before deploying"
        )
    return Target(cfg.image, tag, digest or now_digest or "", False)


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
