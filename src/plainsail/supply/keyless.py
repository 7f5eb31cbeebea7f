"""Keyless (Fulcio certificate + Rekor entry) cosign signatures, verified offline.

`cosign sign` in CI without a key gets a short-lived certificate from Fulcio for the job's
OIDC identity, signs the payload with its key, and records the signature in the Rekor
transparency log. The `.sig` layer then carries, next to the usual signature annotation:

- `dev.sigstore.cosign/certificate`: the leaf certificate (PEM);
- `dev.sigstore.cosign/chain`: the certificates up to the Fulcio root (PEM);
- `dev.sigstore.cosign/bundle`: `{"SignedEntryTimestamp": B64, "Payload": {"body": B64,
  "integratedTime": UNIX, "logIndex": N, "logID": HEX}}`, Rekor's signed promise (SET)
  that the entry `body` was logged at `integratedTime`.

Everything is checked against a Sigstore TrustedRoot JSON file given in the config (no
network at deploy), each check named in its failure:

- `certificate`: the leaf is a certificate for code signing;
- `tlog`: the bundle's log is a Rekor log of the trusted root, and its SET verifies with
  that log's key over the canonical JSON of body, integratedTime, logID and logIndex;
- `tlog-entry`: the logged entry is this signature: same signature, same certificate,
  SHA-256 of this payload;
- `chain`: the leaf chains (through the layer's chain) to a CA certificate of the trusted
  root, each link signed by its issuer, each issuer a CA;
- `validity`: every certificate of the chain, the CA and the log key were valid at the
  integrated time (Fulcio certificates live ten minutes: the log's time is what counts);
- `signature`: the signature verifies with the leaf's key over the payload;
- `identity`: the certificate's OIDC issuer extension equals `issuer` and one of its
  subject alternative names equals `identity` (or fully matches `identity_regexp`).

The payload's digest and repository are then checked as for key-based signatures. Signed
certificate timestamps (the CT log part of the trusted root) are not checked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from plainsail.errors import SigningKeyError
from plainsail.supply.signatures import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    Candidate,
    decode_b64,
)

ISSUER_V2_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # DER UTF8String
ISSUER_V1_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # raw bytes (deprecated)
TRUSTED_ROOT_MEDIA = "application/vnd.dev.sigstore.trustedroot"
MAX_CHAIN = 5


class KeylessFailure(Exception):
    """One keyless signature failed one check; `check` names it."""

    def __init__(self, check: str, detail: str) -> None:
        self.check = check
        super().__init__(f"{check}: {detail}")


@dataclass(frozen=True)
class Window:
    start: datetime | None
    end: datetime | None

    def covers(self, when: datetime) -> bool:
        return (self.start is None or self.start <= when) and (
            self.end is None or when <= self.end)


@dataclass(frozen=True)
class CertificateAuthority:
    certificates: tuple[x509.Certificate, ...]
    valid: Window


@dataclass(frozen=True)
class TransparencyLog:
    key: Any  # a public key object
    valid: Window


@dataclass(frozen=True)
class TrustedRoot:
    authorities: tuple[CertificateAuthority, ...]
    logs: dict[str, TransparencyLog]  # log ID (hex) -> log


@dataclass(frozen=True)
class KeylessPolicy:
    issuer: str
    identity: str | None = None
    identity_regexp: str | None = None

    @property
    def expected(self) -> str:
        return self.identity if self.identity is not None else f"/{self.identity_regexp}/"

    def matches(self, names: list[str]) -> bool:
        if self.identity is not None:
            return self.identity in names
        pattern = re.compile(self.identity_regexp or "")
        return any(pattern.fullmatch(n) for n in names)


@dataclass(frozen=True)
class Signer:
    """Who signed, as the certificate says, and when Rekor logged it."""

    identity: str
    issuer: str
    integrated_time: datetime
    log_index: int


# ---------------------------------------------------------------- trusted root


def load_trusted_root(path: Path) -> TrustedRoot:
    """Read a Sigstore TrustedRoot JSON file (what `cosign trusted-root create` and the
    Sigstore TUF repository's trusted_root.json hold)."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise SigningKeyError(
            f"trusted root {path} does not exist; set signing.keyless.trusted_root to a "
            "Sigstore TrustedRoot JSON file (e.g. trusted_root.json from Sigstore's TUF "
            "repository)"
        ) from None
    except OSError as exc:
        raise SigningKeyError(f"cannot read trusted root {path}: {exc.strerror}") from None
    except ValueError:
        raise SigningKeyError(f"trusted root {path} is not JSON") from None
    try:
        return parse_trusted_root(doc)
    except (KeyError, TypeError, ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(
            f"trusted root {path} is not a Sigstore TrustedRoot JSON file ({exc!s:.100})"
        ) from None


def parse_trusted_root(doc: dict[str, Any]) -> TrustedRoot:
    media = doc.get("mediaType", "")
    if not isinstance(media, str) or not media.startswith(TRUSTED_ROOT_MEDIA):
        raise ValueError(f"mediaType is {media!r}, not {TRUSTED_ROOT_MEDIA}+json")
    authorities = []
    for ca in doc.get("certificateAuthorities") or []:
        certs = tuple(
            x509.load_der_x509_certificate(base64.b64decode(c["rawBytes"]))
            for c in ca["certChain"]["certificates"]
        )
        if not certs:
            raise ValueError("a certificate authority has no certificates")
        authorities.append(CertificateAuthority(certs, _window(ca.get("validFor"))))
    logs = {}
    for tlog in doc.get("tlogs") or []:
        raw = base64.b64decode(tlog["publicKey"]["rawBytes"])
        key = serialization.load_der_public_key(raw)
        key_id = (tlog.get("logId") or {}).get("keyId")
        log_id = base64.b64decode(key_id).hex() if key_id else hashlib.sha256(raw).hexdigest()
        logs[log_id] = TransparencyLog(key, _window(tlog["publicKey"].get("validFor")))
    if not authorities:
        raise ValueError("no certificateAuthorities")
    if not logs:
        raise ValueError("no tlogs")
    return TrustedRoot(tuple(authorities), logs)


def _window(doc: dict[str, Any] | None) -> Window:
    doc = doc or {}
    return Window(_time(doc.get("start")), _time(doc.get("end")))


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# ---------------------------------------------------------------- one signature


def verify_candidate(c: Candidate, root: TrustedRoot, policy: KeylessPolicy) -> Signer:
    """The signer of keyless signature `c`, or KeylessFailure naming the check that failed.
    The payload's digest and repository are the caller's to check."""
    leaf = _leaf(c)
    entry, when, log_index = _logged(c, root)
    _entry_matches(entry, c, leaf)
    path = _chain(leaf, c, root, when)
    for cert in path:
        start, end = _validity(cert)
        if not start <= when <= end:
            raise KeylessFailure(
                "validity", f"certificate {cert.subject.rfc4514_string() or '(leaf)'} was "
                f"not valid at the log's integrated time {when:%Y-%m-%d %H:%M:%S}Z (valid "
                f"{start:%Y-%m-%d %H:%M:%S}Z to {end:%Y-%m-%d %H:%M:%S}Z)")
    try:
        _verify(leaf.public_key(), decode_b64(c.signature), c.payload)
    except (InvalidSignature, ValueError, TypeError):
        raise KeylessFailure(
            "signature", "the signature does not verify with the certificate's key over "
            "the payload (the payload was altered, or the signature belongs elsewhere)"
        ) from None
    issuer = oidc_issuer(leaf)
    names = subject_names(leaf)
    shown = ", ".join(names) or "no identity"
    if issuer != policy.issuer:
        raise KeylessFailure(
            "identity", f"signed by {shown} with issuer {issuer or '(none)'}, expected "
            f"issuer {policy.issuer}")
    if not policy.matches(names):
        raise KeylessFailure("identity", f"signed by {shown}, expected {policy.expected}")
    return Signer(names[0], issuer, when, log_index)


def _leaf(c: Candidate) -> x509.Certificate:
    pem = c.annotations.get(CERTIFICATE_ANNOTATION)
    if not pem:
        raise KeylessFailure("certificate", f"no {CERTIFICATE_ANNOTATION} annotation (not "
                             "a keyless signature)")
    try:
        leaf = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise KeylessFailure("certificate", "the certificate annotation is not a PEM "
                             "certificate") from None
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or ExtendedKeyUsageOID.CODE_SIGNING not in usage:
        raise KeylessFailure("certificate", "the certificate is not for code signing")
    return leaf


def _logged(c: Candidate, root: TrustedRoot) -> tuple[dict[str, Any], datetime, int]:
    raw = c.annotations.get(BUNDLE_ANNOTATION)
    if not raw:
        raise KeylessFailure("tlog", f"no {BUNDLE_ANNOTATION} annotation: the signature "
                             "was not recorded in a transparency log")
    try:
        bundle = json.loads(raw)
        set_b64 = bundle["SignedEntryTimestamp"]
        p = bundle["Payload"]
        body, t, index, log_id = p["body"], p["integratedTime"], p["logIndex"], p["logID"]
        if not (isinstance(body, str) and isinstance(log_id, str) and type(t) is int
                and type(index) is int):
            raise TypeError
        entry = json.loads(base64.b64decode(body, validate=True))
        signed_time = decode_b64(set_b64)
    except (ValueError, KeyError, TypeError):
        raise KeylessFailure("tlog", "the Rekor bundle annotation is malformed") from None
    log = root.logs.get(log_id)
    if log is None:
        raise KeylessFailure("tlog", f"the entry is in log {log_id[:16]}..., which is not a "
                             "Rekor log of trusted_root")
    when = datetime.fromtimestamp(t, UTC)
    canonical = json.dumps({"body": body, "integratedTime": t, "logID": log_id,
                            "logIndex": index}, sort_keys=True, separators=(",", ":"))
    try:
        _verify(log.key, signed_time, canonical.encode())
    except (InvalidSignature, ValueError, TypeError):
        raise KeylessFailure("tlog", "the signed entry timestamp (SET) does not verify "
                             "with the Rekor key of trusted_root") from None
    if not log.valid.covers(when):
        raise KeylessFailure("validity", "the Rekor key of trusted_root was not valid at "
                             f"the integrated time {when:%Y-%m-%d %H:%M:%S}Z")
    if not isinstance(entry, dict):
        raise KeylessFailure("tlog-entry", "the logged entry is not a JSON object")
    return entry, when, index


def _entry_matches(entry: dict[str, Any], c: Candidate, leaf: x509.Certificate) -> None:
    try:
        if entry["kind"] not in ("hashedrekord", "rekord"):
            raise KeylessFailure("tlog-entry", f"the logged entry is a {entry['kind']!r}, "
                                 "not a signature record")
        spec = entry["spec"]
        hashed = spec["data"]["hash"]
        signature = base64.b64decode(spec["signature"]["content"])
        logged_cert = base64.b64decode(spec["signature"]["publicKey"]["content"])
    except (KeyError, TypeError, ValueError):
        raise KeylessFailure("tlog-entry", "the logged entry is not a hashedrekord "
                             "record") from None
    if hashed != {"algorithm": "sha256", "value": hashlib.sha256(c.payload).hexdigest()}:
        raise KeylessFailure("tlog-entry", "the logged entry is for another payload")
    try:
        ours = decode_b64(c.signature)
    except ValueError:
        ours = b""
    if signature != ours:
        raise KeylessFailure("tlog-entry", "the logged entry holds another signature")
    try:
        logged = x509.load_pem_x509_certificate(logged_cert)
    except ValueError:
        logged = None
    if logged is None or logged.public_bytes(serialization.Encoding.DER) != \
            leaf.public_bytes(serialization.Encoding.DER):
        raise KeylessFailure("tlog-entry", "the logged entry names another certificate")


def _chain(
    leaf: x509.Certificate, c: Candidate, root: TrustedRoot, when: datetime
) -> list[x509.Certificate]:
    """[leaf, intermediates..., trusted issuer]: the path to a CA of the trusted root."""
    trusted = [cert for ca in root.authorities if ca.valid.covers(when)
               for cert in ca.certificates]
    try:
        given = _pem_certificates(c.annotations.get(CHAIN_ANNOTATION, ""))
    except ValueError:
        raise KeylessFailure("chain", "the chain annotation is not PEM certificates") from None
    path = [leaf]
    current = leaf
    for _ in range(MAX_CHAIN):
        anchor = next((t for t in trusted if _issued(current, t)), None)
        if anchor is not None:
            if anchor.public_bytes(serialization.Encoding.DER) != current.public_bytes(
                    serialization.Encoding.DER):
                path.append(anchor)
            return path
        step = next((g for g in given if g not in path and _issued(current, g)), None)
        if step is None:
            break
        path.append(step)
        current = step
    raise KeylessFailure(
        "chain", f"the certificate (issued by {leaf.issuer.rfc4514_string() or '?'}) does "
        "not chain to a certificate authority of trusted_root (valid at the integrated time)")


_PEM_CERT_RE = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.S)


def _pem_certificates(text: str) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(m.group().encode())
            for m in _PEM_CERT_RE.finditer(text)]


def _validity(cert: x509.Certificate) -> tuple[datetime, datetime]:
    """(not before, not after), timezone-aware (cryptography < 42 has naive ones only)."""
    if hasattr(cert, "not_valid_before_utc"):
        return cert.not_valid_before_utc, cert.not_valid_after_utc
    return (cert.not_valid_before.replace(tzinfo=UTC),  # pragma: no cover - old releases
            cert.not_valid_after.replace(tzinfo=UTC))


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """`issuer` is a CA certificate that signed `cert`."""
    if cert.issuer != issuer.subject:
        return False
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca:
        return False
    try:
        _verify(issuer.public_key(), cert.signature, cert.tbs_certificate_bytes,
                cert.signature_hash_algorithm)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _verify(key: Any, signature: bytes, data: bytes,
            algorithm: hashes.HashAlgorithm | None = None) -> None:
    """Raise InvalidSignature (or ValueError/TypeError) unless `signature` verifies."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(algorithm or hashes.SHA256()))
    elif isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PKCS1v15(), algorithm or hashes.SHA256())
    elif isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, data)
    else:
        raise TypeError(f"unsupported key type {type(key).__name__}")


def oidc_issuer(cert: x509.Certificate) -> str:
    """The Fulcio OIDC issuer extension (v2, DER UTF8String; else the deprecated v1)."""
    for oid, der in ((ISSUER_V2_OID, True), (ISSUER_V1_OID, False)):
        try:
            value = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = getattr(value, "value", b"")
        try:
            return _utf8string(raw) if der else raw.decode()
        except (ValueError, IndexError):
            return ""
    return ""


def _utf8string(der: bytes) -> str:
    if not der or der[0] != 0x0C:
        raise ValueError("not a UTF8String")
    length, offset = der[1], 2
    if length & 0x80:
        n = length & 0x7F
        length, offset = int.from_bytes(der[2 : 2 + n], "big"), 2 + n
    if offset + length != len(der):
        raise ValueError("bad length")
    return der[offset:].decode()


def subject_names(cert: x509.Certificate) -> list[str]:
    """The URIs and e-mail addresses in the certificate's subject alternative names."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.UniformResourceIdentifier),
            *san.get_values_for_type(x509.RFC822Name)]
