"""Verify an image before it is deployed: signed by our key, for exactly this digest,
and its tag has not moved since the build.

`verify_image` is what `plainsail verify` and the deploy stage call. It fails with a
VerificationError whose `reason` (and the first words of its message) say which case it
was: unsigned, signed by another key, signature names another digest, tag drift, or the
tag (or digest) is not in the registry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plainsail import buildrecords
from plainsail.config import Config
from plainsail.errors import RegistryNotFoundError, SigningKeyError, VerificationError
from plainsail.images import ImageRef
from plainsail.registry import RegistryClient
from plainsail.signatures import (
    Candidate,
    Layer,
    PayloadError,
    check,
    parse_manifest,
    signature_tag,
)

_MAX_PAYLOAD = 1024 * 1024


@dataclass(frozen=True)
class VerifiedImage:
    repository: str
    tag: str | None
    digest: str
    key_path: str

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.digest}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "pinned": self.pinned}


def pin_digest(cfg: Config, client: RegistryClient, tag: str | None, digest: str | None) -> str:
    """The digest to sign or deploy: the tag's digest now, checked against the build record
    and against `digest` when given (tag drift), or `digest` itself when no tag is given."""
    if tag is None and digest is None:
        raise ValueError("a tag or a digest is needed")
    if tag is None:
        assert digest is not None
        if client.resolve(ImageRef(cfg.image, digest=digest)) is None:
            raise VerificationError(
                "not-found", f"not found: {cfg.image}@{digest} is not in the registry"
            )
        return digest
    current = client.resolve(ImageRef(cfg.image, tag=tag))
    if current is None:
        raise VerificationError(
            "not-found", f"tag not found: {cfg.image}:{tag} is not in the registry; "
            "was it pushed (plainsail build)?"
        )
    record = buildrecords.find(cfg, tag)
    expected = digest or (record.digest if record else None)
    if expected and expected != current:
        source = "was given" if digest else "the build record says"
        raise VerificationError(
            "tag-drift", f"tag drift: {cfg.image}:{tag} now points to {current}, but "
            f"{expected} {source}; the tag was pushed again since the build. Refusing it; "
            "find out who re-pushed it, and deploy a digest you have checked"
        )
    return current


def fetch_signatures(
    client: RegistryClient, repository: str, digest: str
) -> tuple[list[Layer], list[Candidate]]:
    """The layers of `digest`'s `.sig` manifest and their payloads (empty if unsigned)."""
    sig_ref = ImageRef(repository, tag=signature_tag(digest))
    try:
        data, _, _ = client.get_manifest(sig_ref)
    except RegistryNotFoundError:
        return [], []
    try:
        layers = parse_manifest(data)
    except PayloadError:
        return [], []
    candidates = []
    for layer in layers:
        if layer.size > _MAX_PAYLOAD:
            continue
        try:
            payload = client.get_blob(sig_ref, layer.digest)
        except RegistryNotFoundError:
            continue
        candidates.append(Candidate(payload, layer.signature))
    return layers, candidates


def public_key_path(cfg: Config, public_key: str | None) -> Path:
    if public_key:
        return Path(public_key)
    if not cfg.signing.public_key:
        raise SigningKeyError(
            "no public key to verify with: set signing.public_key in plainsail.yml or give "
            "--key cosign.pub"
        )
    return cfg.resolve(cfg.signing.public_key)


def verify_image(
    cfg: Config,
    tag: str | None,
    digest: str | None,
    *,
    public_key: str | None = None,
    client: RegistryClient | None = None,
) -> VerifiedImage:
    """Check that `tag`/`digest` of cfg.image carries a valid signature by the public key.

    With a tag: the tag is resolved in the registry now, and must match `digest` when given
    and the tag's build record when there is one. Raises VerificationError.
    """
    from plainsail.keys import load_public_key

    key_path = public_key_path(cfg, public_key)
    key = load_public_key(key_path)
    own = client is None
    client = client or RegistryClient.for_config(cfg)
    try:
        pinned = pin_digest(cfg, client, tag, digest)
        _, candidates = fetch_signatures(client, cfg.image, pinned)
    finally:
        if own:
            client.close()
    verdict = check(key, pinned, candidates)
    if verdict is not None:
        reason, detail = verdict
        what = f"{cfg.image}@{pinned}" + (f" (tag {tag})" if tag else "")
        if reason == "unsigned":
            raise VerificationError(
                reason, f"unsigned: {what} has no signature in the registry "
                f"(no {signature_tag(pinned)} tag); sign it with plainsail sign"
            )
        raise VerificationError(reason, f"{detail}: {what}, key {key_path}; refusing it")
    return VerifiedImage(cfg.image, tag, pinned, str(key_path))
