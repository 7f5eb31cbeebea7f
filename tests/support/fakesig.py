"""An in-memory registry holding one image and its `.sig` manifest, injected into
verify_image as its `client` (no network), plus helpers to write signature layers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, cast

from plainsail.config.model import Config, KeylessConfig, SigningConfig
from plainsail.errors import RegistryNotFoundError
from plainsail.supply import bundles, signatures
from plainsail.supply.images import ImageRef
from plainsail.supply.registry import RegistryClient


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry:
    def __init__(self, repository: str, tag: str, digest: str) -> None:
        self.repository = repository
        self.tags = {tag: digest}
        self.digests = {digest}
        self.manifests: dict[str, bytes] = {}  # by tag or by digest
        self.media_types: dict[str, str] = {}
        self.blobs: dict[str, bytes] = {}
        self.referrers_api: dict[str, bytes] | None = None  # None: no referrers API

    def resolve(self, ref: ImageRef) -> str | None:
        if ref.digest:
            return ref.digest if ref.digest in self.digests else None
        return self.tags.get(ref.tag or "")

    def get_manifest(self, ref: ImageRef) -> tuple[bytes, str, str]:
        key = ref.tag or ref.digest or ""
        data = self.manifests.get(key)
        if data is None:
            raise RegistryNotFoundError(f"{ref} not found")
        return data, self.media_types.get(key, signatures.OCI_MANIFEST), sha(data)

    def referrers(self, repository: ImageRef | str, digest: str) -> bytes | None:
        if self.referrers_api is None:
            return None
        empty = json.dumps({"schemaVersion": 2, "mediaType": bundles.OCI_INDEX,
                            "manifests": []}).encode()
        return self.referrers_api.get(digest, empty)

    def attach_bundle(self, digest: str, bundle: bytes, *, api: bool = False) -> str:
        """Attach `bundle` to `digest` as cosign 3 does: a referrer manifest listed by the
        referrers API (`api=True`) or in the referrers tag schema's index."""
        self.blobs[sha(bundle)] = bundle
        manifest = bundles.make_referrer_manifest(
            {"mediaType": signatures.OCI_MANIFEST, "size": 100, "digest": digest},
            sha(bundle), len(bundle))
        self.manifests[sha(manifest)] = manifest
        descriptor = bundles.referrer_descriptor(manifest)
        if api:
            self.referrers_api = self.referrers_api or {}
            self.referrers_api[digest] = bundles.index_with(
                self.referrers_api.get(digest), descriptor)
        else:
            tag = bundles.referrers_tag(digest)
            self.manifests[tag] = bundles.index_with(self.manifests.get(tag), descriptor)
            self.media_types[tag] = bundles.OCI_INDEX
        return sha(manifest)

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
