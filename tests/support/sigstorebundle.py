"""Real keyless signatures from public repositories, turned into the `.sig` layer form
plainsail reads (see tests/data/keyless/README.md for where each file comes from)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plainsail.supply import signatures

DATA = Path(__file__).resolve().parent.parent / "data"
PUBLIC_GOOD_ROOT = DATA / "keyless" / "public-good-trusted-root.json"
WHEEL = DATA / "keyless" / "rfc8785-0.1.2-py3-none-any.whl"
WHEEL_BUNDLE = DATA / "keyless" / "rfc8785-0.1.2-py3-none-any.whl.sigstore"
WHEEL_SIGNER = ("https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml"
                "@refs/tags/v0.1.2")
GITHUB_ACTIONS = "https://token.actions.githubusercontent.com"
CONTAINERS_IMAGE = DATA / "cosign" / "signatures" / "fulcio-rekor-valid"
CONTAINERS_IMAGE_REPO = "192.168.64.2:5000/cosign-signed/fulcio-rekor-1"


def _pem(der_b64: str) -> str:
    cert = x509.load_der_x509_certificate(base64.b64decode(der_b64))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def cosign_rekor_bundle(entry: dict[str, Any]) -> dict[str, Any]:
    """A Sigstore bundle's tlog entry in cosign's `dev.sigstore.cosign/bundle` shape (the
    SET and what it signs; cosign's shape has no room for the inclusion proof)."""
    return {"SignedEntryTimestamp": entry["inclusionPromise"]["signedEntryTimestamp"],
            "Payload": {"body": entry["canonicalizedBody"],
                        "integratedTime": int(entry["integratedTime"]),
                        "logIndex": int(entry["logIndex"]),
                        "logID": base64.b64decode(entry["logId"]["keyId"]).hex()}}


def layer_from_bundle(bundle: dict[str, Any], payload: bytes, *,
                      shape: str = "sigstore") -> tuple[bytes, dict[str, Any]]:
    """(payload, descriptor overrides) of a `.sig` layer carrying a Sigstore bundle's
    message signature: the signature, the leaf certificate (PEM), the rest of its chain,
    and its first tlog entry, verbatim (`shape="sigstore"`, inclusion proof included) or
    in cosign's SET-only shape (`shape="cosign"`)."""
    material = bundle["verificationMaterial"]
    if "x509CertificateChain" in material:
        certs = [c["rawBytes"] for c in material["x509CertificateChain"]["certificates"]]
    else:
        certs = [material["certificate"]["rawBytes"]]
    entry = material["tlogEntries"][0]
    annotations = {
        signatures.SIGNATURE_ANNOTATION: bundle["messageSignature"]["signature"],
        signatures.CERTIFICATE_ANNOTATION: _pem(certs[0]),
        signatures.BUNDLE_ANNOTATION: json.dumps(
            entry if shape == "sigstore" else cosign_rekor_bundle(entry)),
    }
    if certs[1:]:
        annotations[signatures.CHAIN_ANNOTATION] = "".join(_pem(c) for c in certs[1:])
    return payload, {"annotations": annotations}


def wheel_layer(shape: str = "sigstore") -> tuple[bytes, dict[str, Any]]:
    return layer_from_bundle(json.loads(WHEEL_BUNDLE.read_text()), WHEEL.read_bytes(),
                             shape=shape)


def containers_image_layer() -> tuple[bytes, dict[str, Any]]:
    """containers/image's keyless cosign image signature (payload, descriptor overrides)."""
    raw = (CONTAINERS_IMAGE / "signature-1").read_bytes()
    doc = json.loads(raw[raw.index(b"\n") + 1 :])
    return base64.b64decode(doc["payload"]), {"annotations": doc["annotations"]}


def candidate(layer: tuple[bytes, dict[str, Any]]) -> signatures.Candidate:
    payload, d = layer
    annotations = d["annotations"]
    return signatures.Candidate(payload, annotations[signatures.SIGNATURE_ANNOTATION],
                                annotations)
