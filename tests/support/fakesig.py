"""An in-memory registry holding one image and its `.sig` manifest, injected into
verify_image as its `client` (no network), plus helpers to write signature layers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, cast

from plainsail.config.model import Config, KeylessConfig, SigningConfig
from plainsail.errors import RegistryNotFoundError
from plainsail.supply import signatures
from plainsail.supply.images import ImageRef
from plainsail.supply.registry import RegistryClient


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry:
    def __init__(self, repository: str, tag: str, digest: str) -> None:
        self.repository = repository
        self.tags = {tag: digest}
        self.digests = {digest}
        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}

    def resolve(self, ref: ImageRef) -> str | None:
        if ref.digest:
            return ref.digest if ref.digest in self.digests else None
        return self.tags.get(ref.tag or "")

    def get_manifest(self, ref: ImageRef) -> tuple[bytes, str, str]:
        data = self.manifests.get(ref.tag or "")
        if data is None:
            raise RegistryNotFoundError(f"{ref} not found")
        return data, signatures.OCI_MANIFEST, sha(data)

    def get_blob(self, ref: ImageRef | str, digest: str, *, max_size: int = 0) -> bytes:
        if digest not in self.blobs:
            raise RegistryNotFoundError(f"blob {digest} not found")
        return self.blobs[digest]

    def close(self) -> None:
        pass

    def put_layers(self, digest: str, layers: list[tuple[bytes, dict[str, Any]]]) -> None:
        """Store a `.sig` manifest for `digest`: each layer is (payload, descriptor
        overrides); the default descriptor is a simple-signing layer of that payload."""
        descriptors = []
        for payload, overrides in layers:
            self.blobs[sha(payload)] = payload
            d: dict[str, Any] = {"mediaType": signatures.SIMPLESIGNING, "size": len(payload),
                                 "digest": sha(payload), "annotations": {}}
            d.update(overrides)
            descriptors.append(d)
        doc = {"schemaVersion": 2, "mediaType": signatures.OCI_MANIFEST,
               "config": {"mediaType": signatures.OCI_CONFIG, "size": 2,
                          "digest": sha(b"{}")}, "layers": descriptors}
        self.manifests[signatures.signature_tag(digest)] = json.dumps(doc).encode()

    def client(self) -> RegistryClient:
        return cast(RegistryClient, self)


def make_config(tmp_path: Path, image: str, *, public_key: str | None = "cosign.pub",
                repositories: list[str] | None = None,
                keyless: KeylessConfig | None = None) -> Config:
    return Config(service="svc", image=image, path=tmp_path / "plainsail.yml",
                  signing=SigningConfig(public_key=public_key,
                                        repositories=repositories or [], keyless=keyless))
