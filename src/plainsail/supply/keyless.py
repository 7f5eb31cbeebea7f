"""Keyless (Fulcio certificate + Rekor entry) cosign signatures, verified offline.

`cosign sign` in CI without a key gets a short-lived certificate from Fulcio for the job's
OIDC identity, signs the payload with its key, and records the signature in the Rekor
transparency log. The `.sig` layer then carries, next to the usual signature annotation:

- `dev.sigstore.cosign/certificate`: the leaf certificate (PEM);
- `dev.sigstore.cosign/chain`: the certificates up to the Fulcio root (PEM);
- `dev.sigstore.cosign/bundle`: `{"SignedEntryTimestamp": B64, "Payload": {"body": B64,
  "integratedTime": UNIX, "logIndex": N, "logID": HEX}}`, Rekor's signed promise (SET)
  that the entry `body` was logged at `integratedTime` (or a Sigstore bundle's log entry,
  which may also carry an inclusion proof: see plainsail.supply.rekor).

Everything is checked against a Sigstore TrustedRoot JSON file given in the config (no
network at deploy), each check named in its failure:

- `certificate`: the leaf is a certificate for code signing;
- `tlog`: the bundle's log is a Rekor log of the trusted root, and its SET verifies with
  that log's key over the canonical JSON of body, integratedTime, logID and logIndex;
- `inclusion-proof`: when the bundle carries an inclusion proof (a Sigstore bundle's log
  entry does, cosign's annotation does not), its audit path leads from the entry to the
  root hash of a checkpoint signed by that log's key (see plainsail.supply.rekor);
- `tlog-entry`: the logged entry is this signature: same signature, same certificate,
  SHA-256 of this payload;
- `chain`: the leaf chains (through the layer's chain) to a CA certificate of the trusted
  root, each link signed by its issuer, each issuer a CA;
- `validity`: every certificate of the chain, the CA and the log key were valid at the
  integrated time (Fulcio certificates live ten minutes: the log's time is what counts);
- `sct`: a signed certificate timestamp embedded in the leaf verifies with a CT log key of
  the trusted root (see plainsail.supply.ctlog); skipped, and said so in the result, when
  the trusted root lists no CT logs;
- `signature`: the signature verifies with the leaf's key over the payload;
- `identity`: the certificate's OIDC issuer extension equals `issuer` and one of its
  subject alternative names equals `identity` (or fully matches `identity_regexp`).

The payload's digest and repository are then checked as for key-based signatures.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from plainsail.inputs import loads_json
from plainsail.supply import ctlog, rekor
from plainsail.supply.bundles import Bundle
from plainsail.supply.signatures import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    Candidate,
    decode_b64,
)
from plainsail.supply.trustedroot import (  # re-exported: the keyless API in one place
    KeylessFailure,
    TrustedRoot,
    load_trusted_root,
    parse_trusted_root,
    verify_signature,
)

__all__ = ["KeylessFailure", "KeylessPolicy", "Signer", "TrustedRoot", "load_trusted_root",
           "parse_trusted_root", "verify_bundle", "verify_candidate"]

ISSUER_V2_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # DER UTF8String
ISSUER_V1_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # raw bytes (deprecated)
MAX_CHAIN = 5
CT_NOT_CHECKED = ("certificate transparency: trusted_root lists no CT logs, so the "
                  "certificate's signed certificate timestamps were not checked")


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
    """Who signed, as the certificate says, and when Rekor logged it. `ct_log` is the CT
    log whose SCT verified ("" when the trusted root has no CT logs: not checked);
    `inclusion_proof` says whether the Rekor entry carried an inclusion proof (verified)."""

    identity: str
    issuer: str
    integrated_time: datetime
    log_index: int
    ct_log: str = ""
    inclusion_proof: bool = False

    @property
    def unchecked(self) -> list[str]:
        return [] if self.ct_log else [CT_NOT_CHECKED]


# ---------------------------------------------------------------- one signature


def verify_candidate(c: Candidate, root: TrustedRoot, policy: KeylessPolicy) -> Signer:
    """The signer of keyless signature `c`, or KeylessFailure naming the check that failed.
    The payload's digest and repository are the caller's to check."""
    leaf = _leaf(c)
    logged = _logged(c, root)
    _entry_matches(_entry_json(logged), c, leaf)
    try:
        given = _pem_certificates(c.annotations.get(CHAIN_ANNOTATION, ""))
    except ValueError:
        raise KeylessFailure("chain", "the chain annotation is not PEM certificates") from None
    try:
        signature = decode_b64(c.signature)
    except ValueError:
        signature = b""
    return verify_signed(leaf, given, logged, c.payload, signature, root, policy)


def verify_bundle(bundle: Bundle, root: TrustedRoot, policy: KeylessPolicy) -> Signer:
    """The signer of a keyless Sigstore bundle holding a DSSE envelope (cosign 3's image
    signature), or KeylessFailure naming the check that failed: the same checks as for a
    `.sig` layer, the log entry being a `dsse` record of this envelope. A v0.2 or later
    bundle must carry the entry's inclusion proof (the bundle specification's rule)."""
    if not bundle.certificates:
        raise KeylessFailure("certificate", "the bundle carries a public key hint, not a "
                             "certificate (not a keyless signature)")
    try:
        certs = [x509.load_der_x509_certificate(c) for c in bundle.certificates]
    except ValueError:
        raise KeylessFailure("certificate", "the bundle's certificate is not DER") from None
    leaf = check_leaf(certs[0])
    if not bundle.tlog_entries:
        raise KeylessFailure("tlog", "the bundle has no transparency log entry")
    try:
        logged = rekor.parse_bundle(json.dumps(bundle.tlog_entries[0]))
    except ValueError as exc:
        raise KeylessFailure("tlog", f"the bundle's log entry is malformed ({exc})") from None
    if bundle.version >= 2 and logged.proof is None:
        raise KeylessFailure("inclusion-proof", "the bundle's log entry has no inclusion "
                             "proof, which a v0.2 or later bundle must carry")
    rekor.verify_entry(logged, root)
    kind_version = bundle.tlog_entries[0].get("kindVersion")
    kind = kind_version.get("kind") if isinstance(kind_version, dict) else None
    entry = _entry_json(logged)
    if kind is not None and kind != entry.get("kind"):
        raise KeylessFailure("tlog-entry", f"the bundle says the entry is a {kind!r}, the "
                             f"log says {entry.get('kind')!r}")
    assert bundle.payload is not None
    _dsse_entry_matches(entry, bundle.payload, bundle.signature, leaf)
    return verify_signed(leaf, certs[1:], logged, bundle.signed_bytes(), bundle.signature,
                         root, policy)


def verify_signed(
    leaf: x509.Certificate, given: list[x509.Certificate], logged: rekor.LogEntry,
    signed: bytes, signature: bytes, root: TrustedRoot, policy: KeylessPolicy,
) -> Signer:
    """The checks after the log entry: chain, validity, SCT, signature, identity."""
    when = logged.when
    path = _chain(leaf, given, root, when)
    for cert in path:
        start, end = _validity(cert)
        if not start <= when <= end:
            raise KeylessFailure(
                "validity", f"certificate {cert.subject.rfc4514_string() or '(leaf)'} was "
                f"not valid at the log's integrated time {when:%Y-%m-%d %H:%M:%S}Z (valid "
                f"{start:%Y-%m-%d %H:%M:%S}Z to {end:%Y-%m-%d %H:%M:%S}Z)")
    ct_log = ctlog.verify_scts(leaf, path[1] if len(path) > 1 else leaf,
                                root.ctlogs) if root.ctlogs else ""
    try:
        verify_signature(leaf.public_key(), signature, signed)
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
    return Signer(names[0], issuer, when, logged.log_index, ct_log,
                  logged.proof is not None)


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
    return check_leaf(leaf)


def check_leaf(leaf: x509.Certificate) -> x509.Certificate:
    """`leaf`, when it is a certificate for code signing; KeylessFailure otherwise."""
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    except ValueError:  # an extension cryptography cannot parse (e.g. a broken SCT list)
        raise KeylessFailure("certificate", "the certificate has a malformed "
                             "extension") from None
    if usage is None or ExtendedKeyUsageOID.CODE_SIGNING not in usage:
        raise KeylessFailure("certificate", "the certificate is not for code signing")
    return leaf


def _logged(c: Candidate, root: TrustedRoot) -> rekor.LogEntry:
    raw = c.annotations.get(BUNDLE_ANNOTATION)
    if not raw:
        raise KeylessFailure("tlog", f"no {BUNDLE_ANNOTATION} annotation: the signature "
                             "was not recorded in a transparency log")
    try:
        entry = rekor.parse_bundle(raw)
    except ValueError:
        raise KeylessFailure("tlog", "the Rekor bundle annotation is malformed") from None
    rekor.verify_entry(entry, root)
    return entry


def _entry_json(logged: rekor.LogEntry) -> dict[str, Any]:
    try:
        entry = loads_json(logged.body)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        raise KeylessFailure("tlog-entry", "the logged entry is not a JSON object")
    return entry


def _entry_matches(entry: dict[str, Any], c: Candidate, leaf: x509.Certificate) -> None:
    try:
        if entry["kind"] not in ("hashedrekord", "rekord"):
            raise KeylessFailure("tlog-entry", f"the logged entry is a {entry['kind']!r}, "
                                 "not a signature record")
        spec = entry["spec"]
        hashed = spec["data"]["hash"]
        signature = decode_b64(spec["signature"]["content"])
        logged_cert = decode_b64(spec["signature"]["publicKey"]["content"])
    except (KeyError, TypeError, ValueError):
        raise KeylessFailure("tlog-entry", "the logged entry is not a hashedrekord "
                             "record") from None
    try:
        ours = decode_b64(c.signature)
    except ValueError:
        ours = b""
    _logged_is(hashed, c.payload, signature, ours, logged_cert, leaf)


def _logged_is(hashed: Any, payload: bytes, logged_sig: bytes, signature: bytes,
               logged_cert: bytes, leaf: x509.Certificate) -> None:
    """The logged record's payload hash, signature and certificate are this signature's."""
    if hashed != {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}:
        raise KeylessFailure("tlog-entry", "the logged entry is for another payload")
    if logged_sig != signature:
        raise KeylessFailure("tlog-entry", "the logged entry holds another signature")
    try:
        cert = x509.load_pem_x509_certificate(logged_cert)
    except ValueError:
        cert = None
    if cert is None or cert.public_bytes(serialization.Encoding.DER) != \
            leaf.public_bytes(serialization.Encoding.DER):
        raise KeylessFailure("tlog-entry", "the logged entry names another certificate")


def _dsse_entry_matches(entry: dict[str, Any], payload: bytes, signature: bytes,
                        leaf: x509.Certificate) -> None:
    """The logged record of a DSSE envelope is this envelope: the SHA-256 of its payload,
    its one signature, and the certificate that made it. Rekor v1 logs it as a `dsse`
    record (v0.0.1: `spec.signatures[].signature` and `.verifier`, base64 of the signature
    and of the PEM) or an `intoto` record (v0.0.2: `spec.content.envelope.signatures[]`,
    whose `sig` is base64 of the envelope's base64 signature and `publicKey` base64 of
    the PEM, and `spec.content.payloadHash`)."""
    try:
        kind = entry["kind"]
        if kind == "dsse":
            hashed = entry["spec"]["payloadHash"]
            logged = entry["spec"]["signatures"]
            fields = ("signature", "verifier")
        elif kind == "intoto" and entry.get("apiVersion") == "0.0.2":
            hashed = entry["spec"]["content"]["payloadHash"]
            logged = entry["spec"]["content"]["envelope"]["signatures"]
            fields = ("sig", "publicKey")
        else:
            raise KeylessFailure("tlog-entry", f"the logged entry is a {str(kind)[:40]!r} "
                                 "record, not a dsse (v0.0.1) or intoto (v0.0.2) one")
        if not isinstance(logged, list) or len(logged) != 1:
            raise KeylessFailure("tlog-entry", "the logged entry does not hold exactly one "
                                 "signature")
        logged_sig = decode_b64(logged[0][fields[0]])
        if kind == "intoto":
            logged_sig = decode_b64(logged_sig.decode("ascii"))
        logged_cert = decode_b64(logged[0][fields[1]])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise KeylessFailure("tlog-entry", "the logged entry is not a DSSE record") from None
    _logged_is(hashed, payload, logged_sig, signature, logged_cert, leaf)


def _chain(
    leaf: x509.Certificate, given: list[x509.Certificate], root: TrustedRoot, when: datetime
) -> list[x509.Certificate]:
    """[leaf, intermediates..., trusted issuer]: the path to a CA of the trusted root,
    through the certificates `given` with the signature."""
    trusted = [cert for ca in root.authorities if ca.valid.covers(when)
               for cert in ca.certificates]
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
        verify_signature(issuer.public_key(), cert.signature, cert.tbs_certificate_bytes,
                         cert.signature_hash_algorithm)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


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
