"""Signed certificate timestamps (RFC 6962): the CT log's promise that it logged a Fulcio
certificate, embedded in the certificate itself.

Fulcio submits a precertificate to its CT log before issuing, and embeds the log's SCT in
the final certificate. The SCT signs (RFC 6962 section 3.2, `digitally-signed struct`):

    version(1) = 0 | signature_type(1) = 0 (certificate_timestamp) | timestamp(8, ms) |
    entry_type(2) = 1 (precert_entry) | issuer_key_hash(32) = SHA-256(issuer's SPKI DER) |
    tbs_length(3) | TBSCertificate without the SCT extension | extensions_length(2) | ext

`cryptography` parses the SCT list and gives the TBS without the SCT extension
(`tbs_precertificate_bytes`); this module rebuilds the signed bytes and verifies them with
the CT log key of the trusted root. One verifying SCT from a trusted CT log is enough (as
cosign and sigstore-go require by default).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.certificate_transparency import (
    LogEntryType,
    SignedCertificateTimestamp,
    Version,
)

from plainsail.supply.trustedroot import KeylessFailure, TransparencyLog, verify_signature

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def verify_scts(leaf: x509.Certificate, issuer: x509.Certificate,
                ctlogs: dict[str, TransparencyLog]) -> str:
    """The URL (or ID) of the CT log whose SCT embedded in `leaf` verifies; KeylessFailure
    `sct` when none does."""
    try:
        scts = list(leaf.extensions.get_extension_for_class(
            x509.PrecertificateSignedCertificateTimestamps).value)
    except x509.ExtensionNotFound:
        scts = []
    except ValueError:  # an SCT list cryptography cannot parse
        raise KeylessFailure("sct", "the certificate's signed certificate timestamp list "
                             "is malformed") from None
    if not scts:
        raise KeylessFailure("sct", "the certificate has no signed certificate timestamp "
                             "(it was not logged in a certificate transparency log)")
    try:
        tbs = leaf.tbs_precertificate_bytes
    except ValueError:
        raise KeylessFailure("sct", "the certificate's precertificate cannot be "
                             "rebuilt") from None
    issuer_key_hash = hashlib.sha256(issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()
    problems = []
    for sct in scts:
        log_id = sct.log_id.hex()
        log = ctlogs.get(log_id)
        if log is None:
            problems.append(f"an SCT from CT log {log_id[:16]}..., which is not a CT log of "
                            "trusted_root")
            continue
        name = log.url or log_id[:16] + "..."
        when = sct.timestamp.replace(tzinfo=UTC)
        if not log.valid.covers(when):
            problems.append(f"the SCT from {name} is dated {when:%Y-%m-%d %H:%M:%S}Z, "
                            "outside the validity of that CT log key in trusted_root")
            continue
        try:
            verify_signature(log.key, sct.signature, signed_data(sct, issuer_key_hash, tbs),
                             _hash(sct))
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            problems.append(f"the SCT from {name} does not verify with that CT log's key "
                            "(the certificate was altered, or the SCT is not for it)")
            continue
        return name
    raise KeylessFailure("sct", "; ".join(problems))


def signed_data(sct: SignedCertificateTimestamp, issuer_key_hash: bytes, tbs: bytes) -> bytes:
    """The bytes an SCT for a precertificate signs (RFC 6962 section 3.2)."""
    if sct.version != Version.v1 or sct.entry_type != LogEntryType.PRE_CERTIFICATE:
        raise ValueError("not a v1 precertificate SCT")
    extensions = sct.extension_bytes
    return b"".join([
        b"\x00",  # sct_version v1
        b"\x00",  # signature_type certificate_timestamp
        timestamp_ms(sct.timestamp).to_bytes(8, "big"),
        b"\x00\x01",  # entry_type precert_entry
        issuer_key_hash,
        len(tbs).to_bytes(3, "big"), tbs,
        len(extensions).to_bytes(2, "big"), extensions,
    ])


def timestamp_ms(when: datetime) -> int:
    """Milliseconds since the epoch (cryptography gives the SCT time as a naive UTC datetime
    with millisecond precision)."""
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(milliseconds=1)


def _hash(sct: SignedCertificateTimestamp) -> hashes.HashAlgorithm:
    algorithm = sct.signature_hash_algorithm
    if not isinstance(algorithm, hashes.HashAlgorithm):
        raise ValueError("no hash algorithm")
    return algorithm
