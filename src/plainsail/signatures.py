"""cosign's signature format (the `.sig` tag scheme), as pure functions without I/O.

An image `REPO@sha256:HEX` is signed by storing, in REPO under the tag `sha256-HEX.sig`,
an OCI image manifest whose layers are simple-signing payloads:

- layer media type `application/vnd.dev.cosign.simplesigning.v1+json`, the blob being the
  payload `{"critical":{"identity":{"docker-reference":REPO},"image":{"docker-manifest-
  digest":DIGEST},"type":"cosign container image signature"},"optional":null}`;
- annotation `dev.cosignproject.cosign/signature`: base64 of the ASN.1 DER ECDSA signature
  over SHA-256 of the exact payload bytes;
- config media type `application/vnd.oci.image.config.v1+json`, its rootfs.diff_ids
  listing the layer digests (the payload is stored uncompressed, so diff id = digest).

Several signatures are several layers of the one manifest.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from plainsail.images import DIGEST_RE, ImageRef

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_ZERO_TIME = "0001-01-01T00:00:00Z"


class PayloadError(ValueError):
    """A payload is not a cosign simple-signing payload."""


@dataclass(frozen=True)
class Payload:
    identity: str
    digest: str


@dataclass(frozen=True)
class Layer:
    """One signature layer: its descriptor as found in (or written to) the manifest."""

    digest: str
    size: int
    signature: str  # base64 DER, as in the annotation
    media_type: str = SIMPLESIGNING
    annotations: dict[str, str] = field(default_factory=dict)

    def descriptor(self) -> dict[str, Any]:
        annotations = dict(self.annotations) or {SIGNATURE_ANNOTATION: self.signature}
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest,
                "annotations": annotations}


def signature_tag(digest: str) -> str:
    """`sha256:HEX` -> `sha256-HEX.sig`, the tag cosign stores signatures under."""
    if not DIGEST_RE.fullmatch(digest):
        raise ValueError(f"{digest!r} is not a sha256 digest")
    return digest.replace(":", "-") + ".sig"


def identity_of(ref: ImageRef) -> str:
    """The docker-reference cosign writes: the repository, fully qualified, no tag."""
    if ref.registry == "docker.io":
        return f"index.docker.io/{ref.path}"
    return f"{ref.registry}/{ref.path}"


def make_payload(identity: str, digest: str) -> bytes:
    """The exact payload bytes cosign signs (Go's compact JSON, fields in this order)."""
    doc = {
        "critical": {
            "identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def parse_payload(data: bytes) -> Payload:
    try:
        doc = json.loads(data)
        critical = doc["critical"]
        digest = critical["image"]["docker-manifest-digest"]
        identity = critical["identity"]["docker-reference"]
        kind = critical["type"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PayloadError(f"not a simple-signing payload ({exc})") from None
    if kind != PAYLOAD_TYPE:
        raise PayloadError(f"payload type is {kind!r}, not {PAYLOAD_TYPE!r}")
    if not isinstance(digest, str) or not isinstance(identity, str):
        raise PayloadError("payload digest or identity is not a string")
    return Payload(identity, digest)


def sign(key: ec.EllipticCurvePrivateKey, payload: bytes) -> str:
    return base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode("ascii")


def verify(key: ec.EllipticCurvePublicKey, payload: bytes, signature_b64: str) -> bool:
    """True when `signature_b64` is `key`'s ECDSA signature over `payload`."""
    try:
        der = base64.b64decode(signature_b64, validate=True)
        key.verify(der, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


# ---------------------------------------------------------------- manifest and config


def parse_manifest(data: bytes) -> list[Layer]:
    """The signature layers of a `.sig` manifest (layers without a signature are skipped)."""
    try:
        doc = json.loads(data)
        raw_layers = doc.get("layers") or []
    except (ValueError, AttributeError):
        raise PayloadError("the signature manifest is not JSON") from None
    layers = []
    for d in raw_layers:
        if not isinstance(d, dict):
            continue
        annotations = d.get("annotations") or {}
        sig = annotations.get(SIGNATURE_ANNOTATION)
        digest = d.get("digest", "")
        if not sig or not DIGEST_RE.fullmatch(str(digest)):
            continue
        layers.append(Layer(digest, int(d.get("size", 0)), sig,
                            d.get("mediaType", SIMPLESIGNING), dict(annotations)))
    return layers


def make_config(layers: list[Layer], created: datetime | None = None) -> bytes:
    """The OCI config of a signature image, as cosign (go-containerregistry) writes it."""
    when = (created or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    doc = {
        "architecture": "",
        "created": when,
        "history": [{"created": _ZERO_TIME} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "config": {},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def make_manifest(config_digest: str, config_size: int, layers: list[Layer]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": config_size, "digest": config_digest},
        "layers": [layer.descriptor() for layer in layers],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


# ---------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Candidate:
    """A signature as fetched: the payload bytes and the base64 signature over them."""

    payload: bytes
    signature: str


def check(
    key: ec.EllipticCurvePublicKey, digest: str, candidates: list[Candidate]
) -> tuple[str, str] | None:
    """None when one candidate is `key`'s signature naming `digest`; else (reason, detail).

    reason is "unsigned", "wrong-key" (no signature verifies with this key) or
    "wrong-digest" (a valid signature by this key names another image).
    """
    if not candidates:
        return "unsigned", "no signature found"
    named: list[str] = []
    for c in candidates:
        if not verify(key, c.payload, c.signature):
            continue
        try:
            payload = parse_payload(c.payload)
        except PayloadError:
            continue
        if payload.digest == digest:
            return None
        named.append(payload.digest)
    if named:
        return "wrong-digest", (
            f"signature names another digest ({', '.join(sorted(set(named)))}), not {digest}"
        )
    n = len(candidates)
    return "wrong-key", (
        f"signed by another key: none of its {n} signature{'s' if n > 1 else ''} verifies "
        "with this public key (or the signed payload was altered)"
    )
