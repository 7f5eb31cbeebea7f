"""The containers of a service on one host, as plain data read from `docker inspect`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from plainsail.hosts import docker
from plainsail.hosts.executor import Executor

# Docker copies an image's labels onto its containers: the commit a container was built from.
REVISION_LABEL = "org.opencontainers.image.revision"


@dataclass(frozen=True)
class Container:
    name: str
    id: str
    tag: str
    digest: str
    deploy_id: str
    fingerprint: str
    status: str  # running, exited, created, restarting, ...
    created: str
    started: str
    image: str
    revision: str = ""  # the image's org.opencontainers.image.revision label, if any
    settings: str = ""  # digests of its settings (plainsail.deploy.settings.label)

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting")


def list_service(ex: Executor, service: str) -> list[Container]:
    """Every app container of the service, newest first (migration containers excluded)."""
    res = ex.run(docker.ps_service(service), timeout=30, what="list containers")
    ids = []
    for line in res.stdout.splitlines():
        try:
            ids.append(json.loads(line)["ID"])
        except (ValueError, KeyError):
            continue
    if not ids:
        return []
    res = ex.run(docker.inspect(ids), timeout=30, what="inspect containers")
    return sorted_containers(json.loads(res.stdout or "[]"))


def sorted_containers(inspect_output: object) -> list[Container]:
    """App containers from `docker container inspect` JSON, newest first."""
    items = inspect_output if isinstance(inspect_output, list) else []
    out = [c for c in (parse_inspect(d) for d in items if isinstance(d, dict)) if c]
    return sorted(out, key=lambda c: c.created, reverse=True)


def parse_inspect(data: Mapping[str, object]) -> Container | None:
    config = data.get("Config") or {}
    labels = (config.get("Labels") if isinstance(config, dict) else None) or {}
    if labels.get(docker.LABEL_ROLE, "app") != "app":
        return None
    state = data.get("State") or {}
    assert isinstance(state, dict)
    return Container(
        name=str(data.get("Name", "")).lstrip("/"),
        id=str(data.get("Id", "")),
        tag=labels.get(docker.LABEL_TAG, ""),
        digest=labels.get(docker.LABEL_DIGEST, ""),
        deploy_id=labels.get(docker.LABEL_DEPLOY, ""),
        fingerprint=labels.get(docker.LABEL_ENV, ""),
        status=str(state.get("Status", "unknown")),
        created=str(data.get("Created", "")),
        started=str(state.get("StartedAt", "")),
        image=str(config.get("Image", "")) if isinstance(config, dict) else "",
        revision=str(labels.get(REVISION_LABEL, "")),
        settings=str(labels.get(docker.LABEL_SETTINGS, "")),
    )


def current(containers: Sequence[Container]) -> Container | None:
    running = [c for c in containers if c.running]
    return running[0] if running else None


def fingerprint(env_content: str, run_options: Sequence[str]) -> str:
    """A digest of what a container was created with: the env (secrets included, never
    stored in clear) and the run options. Equal fingerprints mean a retained container can
    be started again instead of created anew."""
    h = hashlib.sha256()
    h.update(env_content.encode())
    h.update(b"\0")
    h.update(json.dumps(list(run_options)).encode())
    return "sha256:" + h.hexdigest()
