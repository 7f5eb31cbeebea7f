"""Provenance of an image as the registry has it: digest and OCI labels."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from plainsail.config.model import Config
from plainsail.errors import RegistryError
from plainsail.supply.images import ImageRef
from plainsail.supply.registry import RegistryClient

LABEL_PREFIX = "org.opencontainers.image."
FIELDS = ("title", "version", "revision", "source", "created")


@dataclass(frozen=True)
class Provenance:
    repository: str
    tag: str | None
    digest: str
    labels: dict[str, str] = field(default_factory=dict)

    def field(self, name: str) -> str | None:
        return self.labels.get(LABEL_PREFIX + name)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update({name: self.field(name) for name in FIELDS})
        data["pinned"] = f"{self.repository}@{self.digest}"
        return data


def inspect_image(
    cfg: Config, tag: str | None, digest: str | None, *, client: RegistryClient | None = None
) -> Provenance:
    own = client is None
    client = client or RegistryClient.for_config(cfg)
    try:
        ref = ImageRef(cfg.image, tag=tag, digest=digest)
        current = client.resolve(ref)
        if current is None:
            raise RegistryError(f"{ref} is not in the registry; was it pushed (plainsail build)?")
        if digest and current != digest:
            raise RegistryError(f"{cfg.image}:{tag} points to {current}, not {digest}")
        config = client.image_config(ImageRef(cfg.image, digest=current))
    finally:
        if own:
            client.close()
    labels = (config.get("config") or {}).get("Labels") or {}
    return Provenance(cfg.image, tag, current, {str(k): str(v) for k, v in labels.items()})
