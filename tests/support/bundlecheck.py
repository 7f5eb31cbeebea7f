"""An independent check of key-based Sigstore bundles attached to an image, written from the
specifications only (no plainsail code): the Sigstore bundle format (protobuf-specs
`sigstore_bundle.proto`, JSON mapping), DSSE v1 (its PAE), the in-toto Statement v1, cosign's
specs/BUNDLE_SPEC.md (OCI referrer layout) and the OCI distribution spec's referrers tag
schema. Used to judge what plainsail writes, so that plainsail does not grade its own work.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
COSIGN_SIGN = "https://sigstore.dev/cosign/sign/v1"


class Rejected(Exception):
    pass


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _pae(kind: str, body: bytes) -> bytes:
    # DSSE protocol.md: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, LEN in ASCII decimal
    t = kind.encode("utf-8")
    return b" ".join([b"DSSEv1", str(len(t)).encode(), t, str(len(body)).encode(), body])


def check_bundle(raw: bytes, key: ec.EllipticCurvePublicKey, image_digest: str) -> dict[str, Any]:
    """The in-toto statement of a key-based v0.3 bundle, when its DSSE signature verifies with
    `key` and the statement is cosign's signing statement for `image_digest`."""
    doc = json.loads(raw)
    if doc.get("mediaType") != BUNDLE_TYPE:
        raise Rejected(f"mediaType {doc.get('mediaType')!r}")
    material = doc["verificationMaterial"]
    if "publicKey" not in material:
        raise Rejected("not a key-based bundle")
    spki = key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
    hint = material["publicKey"].get("hint")
    if hint is not None and hint != base64.b64encode(hashlib.sha256(spki).digest()).decode():
        raise Rejected("the public key hint names another key")
    if "messageSignature" in doc or "dsseEnvelope" not in doc:
        raise Rejected("no DSSE envelope")
    env = doc["dsseEnvelope"]
    if env["payloadType"] != "application/vnd.in-toto+json":
        raise Rejected(f"payloadType {env['payloadType']!r}")
    body = base64.b64decode(env["payload"], validate=True)
    if len(env["signatures"]) != 1:
        raise Rejected("a bundle's envelope has exactly one signature")
    sig = base64.b64decode(env["signatures"][0]["sig"], validate=True)
    try:
        key.verify(sig, _pae(env["payloadType"], body), ec.ECDSA(hashes.SHA256()))
    except Exception as exc:  # noqa: BLE001 - a verifier's verdict, not plainsail's
        raise Rejected("the DSSE signature does not verify") from exc
    statement = json.loads(body)
    if statement.get("_type") != "https://in-toto.io/Statement/v1":
        raise Rejected(f"_type {statement.get('_type')!r}")
    if statement.get("predicateType") != COSIGN_SIGN:
        raise Rejected(f"predicateType {statement.get('predicateType')!r}")
    algorithm, hexdigest = image_digest.split(":")
    if not any(s.get("digest", {}).get(algorithm) == hexdigest for s in statement["subject"]):
        raise Rejected("the statement does not name the image digest")
    return dict(statement)


def check_referrer(manifest: bytes, image_digest: str) -> tuple[str, int]:
    """(bundle digest, size) of an OCI 1.1 referrer manifest laid out as cosign's
    BUNDLE_SPEC.md says, whose subject is `image_digest`."""
    doc = json.loads(manifest)
    if doc.get("mediaType") != "application/vnd.oci.image.manifest.v1+json":
        raise Rejected("not an OCI image manifest")
    if doc.get("artifactType") != BUNDLE_TYPE:
        raise Rejected(f"artifactType {doc.get('artifactType')!r}")
    config = doc["config"]
    if config["mediaType"] != "application/vnd.oci.empty.v1+json" or config["size"] != 2 \
            or config["digest"] != _sha256(b"{}"):
        raise Rejected("config is not the empty descriptor")
    if len(doc["layers"]) != 1 or doc["layers"][0]["mediaType"] != BUNDLE_TYPE:
        raise Rejected("not exactly one bundle layer")
    if doc["subject"]["digest"] != image_digest:
        raise Rejected("subject is another image")
    annotations = doc.get("annotations", {})
    if annotations.get("dev.sigstore.bundle.content") != "dsse-envelope" or \
            annotations.get("dev.sigstore.bundle.predicateType") != COSIGN_SIGN or \
            "org.opencontainers.image.created" not in annotations:
        raise Rejected(f"annotations {annotations!r}")
    layer = doc["layers"][0]
    return layer["digest"], layer["size"]


def check_fallback_index(index: bytes, manifest: bytes) -> None:
    """The referrers tag schema's index lists `manifest` with its artifactType."""
    doc = json.loads(index)
    if doc.get("mediaType") != "application/vnd.oci.image.index.v1+json" or \
            doc.get("schemaVersion") != 2:
        raise Rejected("not an OCI image index")
    wanted = _sha256(manifest)
    for d in doc["manifests"]:
        if d["digest"] == wanted:
            if d.get("artifactType") != BUNDLE_TYPE or d.get("size") != len(manifest):
                raise Rejected(f"descriptor {d!r}")
            return
    raise Rejected("the index does not list the referrer")
