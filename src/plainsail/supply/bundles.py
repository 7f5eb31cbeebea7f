"""Sigstore bundles, cosign 3's signature format, as pure functions without I/O.

`cosign sign` (3.x, and 2.x with `--new-bundle-format`) signs an image `REPO@sha256:HEX` by
storing a Sigstore bundle (`application/vnd.dev.sigstore.bundle.v0.3+json`) as an OCI 1.1
*referrer* of the image (cosign's specs/BUNDLE_SPEC.md):

- the bundle JSON is a blob; an OCI image manifest with `artifactType` the bundle media
  type, the empty config (`application/vnd.oci.empty.v1+json`, `{}`), one layer (the
  bundle) and `subject` the image's descriptor, stored by its digest, with annotations
  `dev.sigstore.bundle.content: dsse-envelope`, `dev.sigstore.bundle.predicateType` and
  `org.opencontainers.image.created`;
- a registry with the referrers API lists it under `GET /v2/REPO/referrers/sha256:HEX`;
  for one without it (such as distribution 2.8) the client keeps an OCI image index under
  the tag `sha256-HEX` (the referrers tag schema) and adds the manifest's descriptor.

The bundle's content is a DSSE envelope (payload type `application/vnd.in-toto+json`)
whose payload is an in-toto statement: subject `[{"digest": {"sha256": HEX}}]`, predicate
type `https://sigstore.dev/cosign/sign/v1`, predicate `{}`. The signature is over DSSE's
pre-authentication encoding (`pae`). Its verification material is the signer's public key
hint (key-based) or a Fulcio certificate (keyless), with Rekor log entries.

cosign's statement names no repository: only the digest is signed. plainsail writes the
repository as the subject's `name` (in-toto's field for it, which cosign ignores), and
checks it like a simple-signing `docker-reference` when a statement carries one.

Parsing is as strict as for `.sig` signatures: at most MAX_BUNDLE bytes, JSON nested no
deeper than plainsail.inputs allows, no key given twice, standard base64 padded as Go's
decoder wants it (plainsail.supply.signatures.decode_b64), the fields of the bundle's
version.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from plainsail.inputs import InputError, duplicate_key, loads_json
from plainsail.supply.images import DIGEST_RE
from plainsail.supply.signatures import decode_b64

BUNDLE_MEDIA = "application/vnd.dev.sigstore.bundle.v0.3+json"
_BUNDLE_VERSIONS = {
    "application/vnd.dev.sigstore.bundle+json;version=0.1": 1,
    "application/vnd.dev.sigstore.bundle+json;version=0.2": 2,
    "application/vnd.dev.sigstore.bundle+json;version=0.3": 3,
    BUNDLE_MEDIA: 3,
}
INTOTO = "application/vnd.in-toto+json"
STATEMENT_TYPES = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest()
CONTENT_ANNOTATION = "dev.sigstore.bundle.content"
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
CREATED_ANNOTATION = "org.opencontainers.image.created"
MAX_BUNDLE = 1024 * 1024
MAX_REFERRERS = 200


class BundleError(ValueError):
    """A bundle, a referrer manifest or a referrers index is malformed."""


@dataclass(frozen=True)
class Bundle:
    """One Sigstore bundle, as read. `certificates` are DER, leaf first (empty for a
    key-based bundle); `payload` and `payload_type` are the DSSE envelope's (None for a
    message-signature bundle); `signature` is the raw signature bytes."""

    version: int  # the minor version: 1, 2 or 3
    certificates: list[bytes]
    key_hint: str | None
    tlog_entries: list[dict[str, Any]]
    payload_type: str | None
    payload: bytes | None
    signature: bytes

    @property
    def is_dsse(self) -> bool:
        return self.payload is not None

    def signed_bytes(self) -> bytes:
        """What the signature is over: DSSE's pre-authentication encoding."""
        assert self.payload is not None and self.payload_type is not None
        return pae(self.payload_type, self.payload)


@dataclass(frozen=True)
class Statement:
    """An in-toto statement: its predicate type and subjects (name or None, digests)."""

    predicate_type: str
    subjects: list[tuple[str | None, dict[str, str]]] = field(default_factory=list)

    def names_digest(self, digest: str) -> bool:
        algorithm, _, hex_ = digest.partition(":")
        return any(d.get(algorithm) == hex_ for _, d in self.subjects)

    def names_for(self, digest: str) -> list[str]:
        """The subject names given with `digest` (cosign gives none)."""
        algorithm, _, hex_ = digest.partition(":")
        return [n for n, d in self.subjects if n and d.get(algorithm) == hex_]

    def digests(self) -> list[str]:
        return sorted({f"{a}:{v}" for _, d in self.subjects for a, v in d.items()})


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: `DSSEv1 LEN(type) type LEN(body) body`."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


# ---------------------------------------------------------------- strict JSON


def _duplicate(value: Any) -> str | None:
    """A key given twice anywhere in a document read with keep_duplicates."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if duplicate_key(item) is not None:
                return duplicate_key(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def strict_json(data: bytes, what: str, limit: int = MAX_BUNDLE) -> Any:
    """`data` parsed as JSON, refused (BundleError) when larger than `limit`, not UTF-8,
    nested deeper than plainsail.inputs allows, or with a key given twice."""
    if len(data) > limit:
        raise BundleError(f"{what} is {len(data)} bytes, more than {limit}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{what} is not UTF-8") from None
    try:
        doc = loads_json(text, keep_duplicates=True)
    except InputError as exc:
        raise BundleError(f"{what} is {exc}") from None
    except ValueError:
        raise BundleError(f"{what} is not JSON") from None
    key = _duplicate(doc)
    if key is not None:
        raise BundleError(f"{what}: the key {key[:40]!r} appears twice")
    return doc


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise BundleError(f"{what} is not a base64 string")
    try:
        return decode_b64(value)
    except ValueError:
        raise BundleError(f"{what} is not standard padded base64") from None


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(f"{what} is not a JSON object")
    return value


# ---------------------------------------------------------------- bundles


def parse_bundle(data: bytes) -> Bundle:
    """A Sigstore bundle (v0.1 to v0.3); BundleError saying what is wrong otherwise."""
    doc = _obj(strict_json(data, "the bundle"), "the bundle")
    media_type = doc.get("mediaType")
    version = _BUNDLE_VERSIONS.get(media_type) if isinstance(media_type, str) else None
    if version is None:
        raise BundleError(f"media type {str(media_type)[:80]!r} is not a Sigstore bundle "
                          "(v0.1 to v0.3)")
    material = _obj(doc.get("verificationMaterial"), "verificationMaterial")
    certificates: list[bytes] = []
    hint = None
    kinds = [k for k in ("publicKey", "x509CertificateChain", "certificate") if k in material]
    if len(kinds) != 1:
        raise BundleError("verificationMaterial must hold exactly one of publicKey, "
                          "x509CertificateChain and certificate")
    if kinds[0] == "publicKey":
        key = _obj(material["publicKey"], "verificationMaterial.publicKey")
        raw_hint = key.get("hint", "")
        if not isinstance(raw_hint, str):
            raise BundleError("verificationMaterial.publicKey.hint is not a string")
        hint = raw_hint
    elif kinds[0] == "certificate":
        if version < 3:
            raise BundleError("a single certificate needs a v0.3 bundle")
        cert = _obj(material["certificate"], "verificationMaterial.certificate")
        certificates = [_b64(cert.get("rawBytes"), "the certificate")]
    else:
        if version >= 3:
            raise BundleError("a v0.3 bundle carries one certificate, not a chain")
        chain = _obj(material["x509CertificateChain"], "x509CertificateChain")
        certs = chain.get("certificates")
        if not isinstance(certs, list) or not certs:
            raise BundleError("the certificate chain is empty")
        certificates = [_b64(_obj(c, "a chain certificate").get("rawBytes"),
                             "a chain certificate") for c in certs]
    entries = material.get("tlogEntries", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BundleError("tlogEntries is not a list of objects")
    has_dsse, has_message = "dsseEnvelope" in doc, "messageSignature" in doc
    if has_dsse == has_message:
        raise BundleError("the bundle must hold exactly one of dsseEnvelope and "
                          "messageSignature")
    if has_message:
        message = _obj(doc["messageSignature"], "messageSignature")
        return Bundle(version, certificates, hint, entries, None, None,
                      _b64(message.get("signature"), "messageSignature.signature"))
    envelope = _obj(doc["dsseEnvelope"], "dsseEnvelope")
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str) or not payload_type:
        raise BundleError("dsseEnvelope.payloadType is not a string")
    payload = _b64(envelope.get("payload"), "dsseEnvelope.payload")
    sigs = envelope.get("signatures")
    if not isinstance(sigs, list) or len(sigs) != 1:
        raise BundleError("a bundle's DSSE envelope must carry exactly one signature")
    signature = _b64(_obj(sigs[0], "a DSSE signature").get("sig"), "the DSSE signature")
    return Bundle(version, certificates, hint, entries, payload_type, payload, signature)


def parse_statement(payload: bytes) -> Statement:
    """The in-toto statement of a DSSE payload; BundleError when it is not one."""
    doc = _obj(strict_json(payload, "the statement"), "the statement")
    if doc.get("_type") not in STATEMENT_TYPES:
        raise BundleError(f"_type {str(doc.get('_type'))[:80]!r} is not an in-toto "
                          "statement")
    predicate_type = doc.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise BundleError("the statement has no predicateType")
    raw = doc.get("subject")
    if not isinstance(raw, list) or not raw:
        raise BundleError("the statement has no subject")
    subjects: list[tuple[str | None, dict[str, str]]] = []
    for s in raw:
        s = _obj(s, "a subject")
        name = s.get("name")
        digests = _obj(s.get("digest"), "a subject's digest")
        if name is not None and not isinstance(name, str):
            raise BundleError("a subject's name is not a string")
        if not all(isinstance(v, str) for v in digests.values()):
            raise BundleError("a subject's digest values are not strings")
        subjects.append((name or None, dict(digests)))
    return Statement(predicate_type, subjects)


def make_statement(digest: str, name: str | None = None) -> bytes:
    """The statement `cosign sign` signs, plus the subject's `name` when given."""
    if not DIGEST_RE.fullmatch(digest):
        raise ValueError(f"{digest!r} is not a sha256 digest")
    subject: dict[str, Any] = {"name": name} if name else {}
    subject["digest"] = {"sha256": digest.split(":", 1)[1]}
    doc = {"_type": STATEMENT_TYPES[0], "subject": [subject],
           "predicateType": SIGN_PREDICATE, "predicate": {}}
    return json.dumps(doc, separators=(",", ":")).encode()


def key_hint(public_der: bytes) -> str:
    """sigstore-go's public key hint: base64 of SHA-256 of the DER public key."""
    return base64.b64encode(hashlib.sha256(public_der).digest()).decode()


def make_key_bundle(payload: bytes, signature: bytes, public_der: bytes) -> bytes:
    """A v0.3 bundle of a key-based DSSE signature without log entries, as cosign writes
    with `--key` and `--tlog-upload=false`."""
    doc = {"mediaType": BUNDLE_MEDIA,
           "verificationMaterial": {"publicKey": {"hint": key_hint(public_der)}},
           "dsseEnvelope": {"payload": base64.b64encode(payload).decode(),
                            "payloadType": INTOTO,
                            "signatures": [{"sig": base64.b64encode(signature).decode()}]}}
    return json.dumps(doc, separators=(",", ":")).encode()


# ---------------------------------------------------------------- OCI referrers


def referrers_tag(digest: str) -> str:
    """`sha256:HEX` -> `sha256-HEX`, the referrers tag schema's tag."""
    if not DIGEST_RE.fullmatch(digest):
        raise ValueError(f"{digest!r} is not a sha256 digest")
    return digest.replace(":", "-")


def make_referrer_manifest(subject: dict[str, Any], bundle_digest: str, bundle_size: int,
                           created: datetime | None = None) -> bytes:
    """The referrer manifest cosign writes for a signature bundle of `subject` (the image's
    descriptor: mediaType, digest, size)."""
    when = (created or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_EMPTY, "artifactType": BUNDLE_MEDIA,
                   "size": len(EMPTY_CONFIG), "digest": EMPTY_DIGEST},
        "layers": [{"mediaType": BUNDLE_MEDIA, "size": bundle_size,
                    "digest": bundle_digest}],
        "annotations": {CONTENT_ANNOTATION: "dsse-envelope",
                        PREDICATE_ANNOTATION: SIGN_PREDICATE, CREATED_ANNOTATION: when},
        "subject": {"mediaType": subject["mediaType"], "size": subject["size"],
                    "digest": subject["digest"]},
        "artifactType": BUNDLE_MEDIA,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def referrer_descriptor(manifest: bytes) -> dict[str, Any]:
    """The descriptor of a referrer manifest as a referrers index lists it."""
    doc = json.loads(manifest)
    d: dict[str, Any] = {"mediaType": OCI_MANIFEST, "size": len(manifest),
                         "digest": "sha256:" + hashlib.sha256(manifest).hexdigest()}
    if doc.get("artifactType"):
        d["artifactType"] = doc["artifactType"]
    if doc.get("annotations"):
        d["annotations"] = doc["annotations"]
    return d


def index_with(existing: bytes | None, descriptor: dict[str, Any]) -> bytes:
    """The referrers tag schema's index with `descriptor` added (once). Descriptors already
    listed are kept as found; BundleError when `existing` is not an image index."""
    manifests: list[Any] = []
    if existing is not None:
        doc = _obj(strict_json(existing, "the referrers index"), "the referrers index")
        found = doc.get("manifests", [])
        if not isinstance(found, list):
            raise BundleError("the referrers index's manifests are not a list")
        manifests = list(found)
    if not any(isinstance(m, dict) and m.get("digest") == descriptor["digest"]
               for m in manifests):
        manifests.append(descriptor)
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return json.dumps(doc, separators=(",", ":")).encode()


def bundle_referrers(index: bytes) -> tuple[list[str], list[str]]:
    """(digests of the referrer manifests that may hold a Sigstore bundle, why others were
    passed over) of a referrers index. An entry without artifactType is kept (the
    manifest says what it is)."""
    doc = _obj(strict_json(index, "the referrers index"), "the referrers index")
    raw = doc.get("manifests", [])
    if not isinstance(raw, list):
        raise BundleError("the referrers index's manifests are not a list")
    digests: list[str] = []
    passed: list[str] = []
    for i, d in enumerate(raw[:MAX_REFERRERS], 1):
        if not isinstance(d, dict) or not isinstance(d.get("digest"), str) or \
                not DIGEST_RE.fullmatch(d["digest"]):
            passed.append(f"referrer {i}: not a descriptor with a sha256 digest")
            continue
        kind = d.get("artifactType")
        if kind is not None and not str(kind).startswith("application/vnd.dev.sigstore."
                                                         "bundle"):
            continue  # another kind of artifact (an SBOM, ...): not ours to judge
        if d["digest"] not in digests:
            digests.append(d["digest"])
    if len(raw) > MAX_REFERRERS:
        passed.append(f"only the first {MAX_REFERRERS} of {len(raw)} referrers were read")
    return digests, passed


def bundle_layer(manifest: bytes, subject_digest: str) -> tuple[str, int]:
    """(digest, size) of the bundle a referrer manifest holds; BundleError when it is not
    a Sigstore bundle manifest whose subject is `subject_digest`."""
    doc = _obj(strict_json(manifest, "the referrer manifest"), "the referrer manifest")
    subject = doc.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != subject_digest:
        raise BundleError(f"its subject is not {subject_digest}")
    layers = doc.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        raise BundleError("it does not hold exactly one layer")
    layer = layers[0]
    media_type = layer.get("mediaType")
    if not isinstance(media_type, str) or not media_type.startswith(
            "application/vnd.dev.sigstore.bundle"):
        raise BundleError(f"its layer is {str(media_type)[:80]!r}, not a Sigstore bundle")
    digest, size = layer.get("digest"), layer.get("size")
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise BundleError("its layer's digest is not a sha256 digest")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_BUNDLE:
        raise BundleError(f"its layer's size {size!r} is not that of a bundle")
    return digest, size
