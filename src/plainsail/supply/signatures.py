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

Several signatures are several layers of the one manifest. Keyless (Fulcio/Rekor)
signatures are the same layers with three more annotations: the signing certificate, its
chain, and the Rekor bundle (see plainsail.supply.keyless).

Each layer is judged alone, as cosign and containers/image do: a layer that is not a
simple-signing layer, or whose descriptor is malformed, is skipped (and said why), and the
layers after it are still read.

A signature binds a digest *and* a repository: `identity_problem` compares the signed
`docker-reference` with the repository being verified, normalised as Docker does.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from plainsail.inputs import InputError, duplicate_key, loads_json
from plainsail.supply.images import DIGEST_RE, ImageRef

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
MAX_PAYLOAD = 1024 * 1024
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
    """A simple-signing payload, read as strictly as containers/image reads it
    (signature/internal/sigstore_payload.go): a JSON object with exactly the keys `critical`
    and `optional`; `critical` with exactly `type`, `image` and `identity`; `image` with
    exactly `docker-manifest-digest`; `identity` with exactly `docker-reference`; strings
    where strings belong; no key given twice in any of these objects; `optional` null or an
    object whose `creator`, when present, is a string and `timestamp` an integer. Raises
    PayloadError saying what is wrong."""
    if len(data) > MAX_PAYLOAD:
        raise PayloadError(f"the payload is larger than {MAX_PAYLOAD // 1024} KiB")
    try:
        doc = loads_json(data, keep_duplicates=True)
    except InputError as exc:
        raise PayloadError(f"the payload is {exc}") from None
    except ValueError:
        raise PayloadError("the payload is not JSON") from None
    top = _fields(doc, "the payload", ("critical", "optional"))
    critical = _fields(top["critical"], "critical", ("type", "image", "identity"))
    kind = _string(critical, "type", "critical")
    if kind != PAYLOAD_TYPE:
        raise PayloadError(f"its type is {kind[:80]!r}, not {PAYLOAD_TYPE!r}")
    image = _fields(critical["image"], "critical.image", ("docker-manifest-digest",))
    identity = _fields(critical["identity"], "critical.identity", ("docker-reference",))
    optional = top["optional"]
    if optional is not None:
        _fields(optional, "optional", None)
        if "creator" in optional:
            _string(optional, "creator", "optional")
        stamp = optional.get("timestamp")
        if "timestamp" in optional and (
                isinstance(stamp, bool) or not isinstance(stamp, int | float)
                or (isinstance(stamp, float) and not stamp.is_integer())):
            raise PayloadError("optional.timestamp is not an integer")
    return Payload(_string(identity, "docker-reference", "critical.identity"),
                   _string(image, "docker-manifest-digest", "critical.image"))


def _fields(value: Any, where: str, exact: tuple[str, ...] | None) -> dict[str, Any]:
    """`value` as a JSON object with exactly the keys `exact` (any keys when None)."""
    if not isinstance(value, dict):
        raise PayloadError(f"{where} is {_json_kind(value)}, not a JSON object")
    twice = duplicate_key(value)
    if twice is not None:
        raise PayloadError(f"{where} has the key {twice[:80]!r} twice")
    if exact is not None:
        for key in exact:
            if key not in value:
                raise PayloadError(f"{where} has no {key!r} key")
        for key in value:
            if key not in exact:
                raise PayloadError(f"{where} has an unknown key {key[:80]!r}")
    return value


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise PayloadError(f"{where}.{key} is {_json_kind(value)}, not a string")
    return value


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def sign(key: ec.EllipticCurvePrivateKey, payload: bytes) -> str:
    return base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode("ascii")


_B64_ALPHABET = re.compile(r"[A-Za-z0-9+/]*")


def decode_b64(text: str) -> bytes:
    """Standard, padded base64 exactly as Go's base64.StdEncoding reads it: `\\r` and `\\n`
    are ignored; anything else outside the alphabet, a missing padding, or padding anywhere
    but at the end of the last quantum (`AAAA====`, `AA===`, `AA==AA==`) is an error
    (binascii.Error, a ValueError)."""
    clean = text.replace("\r", "").replace("\n", "")
    body = clean.rstrip("=")
    if len(clean) % 4 or len(clean) - len(body) > 2 or not _B64_ALPHABET.fullmatch(body):
        raise binascii.Error("not standard base64 (padded, nothing after the padding)")
    return base64.b64decode(clean, validate=True)


def verify(key: ec.EllipticCurvePublicKey, payload: bytes, signature_b64: str) -> bool:
    """True when `signature_b64` is `key`'s ECDSA signature over `payload`."""
    try:
        der = decode_b64(signature_b64)
        key.verify(der, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# ---------------------------------------------------------------- manifest and config


@dataclass(frozen=True)
class SignatureManifest:
    """A `.sig` manifest, read layer by layer."""

    layers: list[Layer]  # well-formed simple-signing layers, in manifest order
    skipped: list[str]  # why each other layer was not taken, e.g. "layer 2: ..."
    descriptors: list[dict[str, Any]]  # every layer descriptor as found (kept on re-signing)


def _layer_problem(d: Any) -> str | None:
    """Why descriptor `d` is not a usable signature layer, or None."""
    if not isinstance(d, dict):
        return "not a JSON object"
    media_type = d.get("mediaType")
    if media_type != SIMPLESIGNING:
        shown = media_type if isinstance(media_type, str) else repr(media_type)
        return f"media type {shown[:80]!r} is not a cosign signature ({SIMPLESIGNING})"
    digest = d.get("digest")
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        return "its digest is not a sha256 digest"
    size = d.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return f"its size is {size!r}, not a byte count"
    if size > MAX_PAYLOAD:
        return f"its payload is {size} bytes, more than a signature payload can be"
    annotations = d.get("annotations")
    if not isinstance(annotations, dict):
        return "it has no annotations (no signature)"
    bad = sorted(k for k, v in annotations.items() if not isinstance(v, str))
    if bad:
        return f"annotation {str(bad[0])[:80]!r} is not a string"
    if not annotations.get(SIGNATURE_ANNOTATION):
        return f"it has no {SIGNATURE_ANNOTATION} annotation"
    try:
        decode_b64(annotations[SIGNATURE_ANNOTATION])
    except ValueError:
        return f"its {SIGNATURE_ANNOTATION} annotation is not standard base64"
    return None


def read_manifest(data: bytes) -> SignatureManifest:
    """Every layer of a `.sig` manifest judged alone; raises PayloadError only when the
    manifest itself is not a JSON object with a list of layers."""
    try:
        doc = loads_json(data)
    except InputError as exc:
        raise PayloadError(f"the signature manifest is {exc}") from None
    except ValueError:
        raise PayloadError("the signature manifest is not JSON") from None
    raw = doc.get("layers") if isinstance(doc, dict) else None
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise PayloadError("the signature manifest's layers are not a list")
    layers: list[Layer] = []
    skipped: list[str] = []
    for i, d in enumerate(raw, 1):
        problem = _layer_problem(d)
        if problem:
            skipped.append(f"layer {i}: {problem}")
            continue
        annotations = dict(d["annotations"])
        layers.append(Layer(d["digest"], d["size"], annotations[SIGNATURE_ANNOTATION],
                            SIMPLESIGNING, annotations))
    return SignatureManifest(layers, skipped, [d for d in raw if isinstance(d, dict)])


def parse_manifest(data: bytes) -> list[Layer]:
    """The well-formed signature layers of a `.sig` manifest (others are skipped)."""
    return read_manifest(data).layers


def make_config(
    layers: Sequence[Layer | dict[str, Any]], created: datetime | None = None
) -> bytes:
    """The OCI config of a signature image, as cosign (go-containerregistry) writes it."""
    when = (created or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    doc = {
        "architecture": "",
        "created": when,
        "history": [{"created": _ZERO_TIME} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [
            str(x.get("digest", "")) if isinstance(x, dict) else x.digest for x in layers]},
        "config": {},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def make_manifest(
    config_digest: str, config_size: int, layers: Sequence[Layer | dict[str, Any]]
) -> bytes:
    """The `.sig` manifest; a layer given as a dict is a descriptor kept as it was found."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": config_size, "digest": config_digest},
        "layers": [x if isinstance(x, dict) else x.descriptor() for x in layers],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


# ---------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Candidate:
    """A signature as fetched: the payload bytes, the base64 signature over them, and the
    layer's annotations (a keyless signature's certificate, chain and Rekor bundle)."""

    payload: bytes
    signature: str
    annotations: dict[str, str] = field(default_factory=dict)
    where: str = ""  # "layer N", for messages


# ---------------------------------------------------------------- identity


def normalize_reference(reference: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference, the repository normalised as
    Docker does: `docker.io` for Docker Hub (also written `index.docker.io`), `library/`
    before a one-part Hub name, e.g. `busybox:1` -> ("docker.io/library/busybox", "1",
    None)."""
    name, _, digest = reference.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        name, _, tag = name.rpartition(":")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    return f"{domain}/{path}", tag or None, digest or None


@dataclass(frozen=True)
class IdentityPolicy:
    """Which signed `docker-reference` values are accepted for one image.

    The signed repository must be one of `repositories` or lie under one of `prefixes`
    (both normalised); a signed tag must equal `tag` when the image is verified by tag;
    a signed digest must equal the digest verified.
    """

    repositories: tuple[str, ...]
    prefixes: tuple[str, ...] = ()
    tag: str | None = None

    @classmethod
    def for_image(
        cls, image: str, extra: Sequence[str] = (), tag: str | None = None
    ) -> IdentityPolicy:
        repos = [normalize_reference(image)[0]]
        prefixes = []
        for entry in extra:
            if entry.endswith("/*"):
                prefixes.append(normalize_reference(entry[:-2] + "/x")[0][:-1])
            else:
                repos.append(normalize_reference(entry)[0])
        return cls(tuple(repos), tuple(prefixes), tag)

    def problem(self, signed: str, digest: str) -> str | None:
        """Why a signature naming `signed` does not cover this image, or None."""
        repo, tag, signed_digest = normalize_reference(signed)
        if repo not in self.repositories and not repo.startswith(self.prefixes):
            return f"made for the repository {signed}, not {self.repositories[0]}"
        if signed_digest is not None and signed_digest != digest:
            return f"made for {signed}, not {digest}"
        if tag is not None and self.tag is not None and tag != self.tag:
            return f"made for the tag {tag} ({signed}), not {self.tag}"
        return None


# ---------------------------------------------------------------- verdicts


def check(
    key: ec.EllipticCurvePublicKey,
    digest: str,
    candidates: list[Candidate],
    identity: IdentityPolicy | None = None,
) -> tuple[str, str] | None:
    """None when one candidate is `key`'s signature naming `digest` (and, with `identity`,
    a repository it accepts); else (reason, detail).

    reason is "unsigned", "wrong-key" (no signature verifies with this key),
    "wrong-digest" (a valid signature by this key names another image), "not-cosign" (a
    valid signature by this key over something that is not a cosign payload) or
    "wrong-identity" (a valid signature by this key for this digest, made for another
    repository or tag).
    """
    return judge(key, digest, candidates, identity)[1]


def judge(
    key: ec.EllipticCurvePublicKey,
    digest: str,
    candidates: list[Candidate],
    identity: IdentityPolicy | None = None,
) -> tuple[Payload | None, tuple[str, str] | None]:
    """(the accepted payload, None), or (None, (reason, detail)) as `check` says."""
    if not candidates:
        return None, ("unsigned", "no signature found")
    named: list[str] = []
    elsewhere: list[str] = []
    not_cosign: list[str] = []
    for c in candidates:
        if not verify(key, c.payload, c.signature):
            continue
        try:
            payload = parse_payload(c.payload)
        except PayloadError as exc:
            not_cosign.append(f"{c.where + ': ' if c.where else ''}{exc}")
            continue
        if payload.digest != digest:
            named.append(payload.digest)
            continue
        problem = identity.problem(payload.identity, digest) if identity else None
        if problem is None:
            return payload, None
        elsewhere.append(problem)
    if elsewhere:
        return None, ("wrong-identity", (
            f"wrong identity: the signature by this key was {'; '.join(sorted(set(elsewhere)))}"
            " (list other repositories in signing.repositories to accept them)"
        ))
    if named:
        return None, ("wrong-digest", (
            f"signature names another digest ({', '.join(sorted(set(named)))}), not {digest}"
        ))
    if not_cosign:
        return None, ("not-cosign", (
            "not a cosign signature: a signature by this key verifies, but what it signs is "
            f"not a cosign image signature payload ({'; '.join(not_cosign)})"
        ))
    n = len(candidates)
    return None, ("wrong-key", (
        f"signed by another key: none of its {n} signature{'s' if n > 1 else ''} verifies "
        "with this public key (or the signed payload was altered)"
    ))
