"""A Sigstore TrustedRoot JSON file: the Fulcio CA chains, the Rekor log keys and the
certificate transparency (CT) log keys keyless signatures are verified against, offline.

This module also holds what the keyless checks share: `KeylessFailure` (one check failed,
named) and `verify_signature` (ECDSA, RSA PKCS#1 v1.5 or Ed25519 with `cryptography`).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from plainsail.errors import SigningKeyError
from plainsail.inputs import InputError, TooLarge, loads_json, read_bounded

TRUSTED_ROOT_MEDIA = "application/vnd.dev.sigstore.trustedroot"
MAX_TRUSTED_ROOT = 1024 * 1024  # Sigstore's public trusted_root.json is about 10 KB


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
    """A Rekor log or a CT log: its public key, when that key was valid, and its URL."""

    key: Any  # a public key object
    valid: Window
    url: str = ""


@dataclass(frozen=True)
class TrustedRoot:
    authorities: tuple[CertificateAuthority, ...]
    logs: dict[str, TransparencyLog]  # Rekor: log ID (hex) -> log
    ctlogs: dict[str, TransparencyLog]  # CT: log ID (hex) -> log; may be empty


def load_trusted_root(path: Path) -> TrustedRoot:
    """Read a Sigstore TrustedRoot JSON file (what `cosign trusted-root create` and the
    Sigstore TUF repository's trusted_root.json hold)."""
    try:
        doc = loads_json(read_bounded(path, MAX_TRUSTED_ROOT))
    except FileNotFoundError:
        raise SigningKeyError(
            f"trusted root {path} does not exist; set signing.keyless.trusted_root to a "
            "Sigstore TrustedRoot JSON file (e.g. trusted_root.json from Sigstore's TUF "
            "repository)"
        ) from None
    except OSError as exc:
        raise SigningKeyError(f"cannot read trusted root {path}: {exc.strerror}") from None
    except InputError as exc:
        advice = "; a Sigstore TrustedRoot is a few kilobytes: is this the right file?"
        raise SigningKeyError(f"trusted root {path} is {exc}"
                              f"{advice if isinstance(exc, TooLarge) else ''}") from None
    except ValueError:
        raise SigningKeyError(f"trusted root {path} is not JSON") from None
    try:
        return parse_trusted_root(doc)
    except (KeyError, TypeError, ValueError, AttributeError, UnsupportedAlgorithm) as exc:
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
    logs = _logs(doc.get("tlogs"))
    if not authorities:
        raise ValueError("no certificateAuthorities")
    if not logs:
        raise ValueError("no tlogs")
    return TrustedRoot(tuple(authorities), logs, _logs(doc.get("ctlogs")))


def _logs(entries: list[dict[str, Any]] | None) -> dict[str, TransparencyLog]:
    logs = {}
    for tlog in entries or []:
        raw = base64.b64decode(tlog["publicKey"]["rawBytes"])
        key = serialization.load_der_public_key(raw)
        key_id = (tlog.get("logId") or {}).get("keyId")
        log_id = base64.b64decode(key_id).hex() if key_id else hashlib.sha256(raw).hexdigest()
        logs[log_id] = TransparencyLog(key, _window(tlog["publicKey"].get("validFor")),
                                       str(tlog.get("baseUrl") or ""))
    return logs


def _window(doc: dict[str, Any] | None) -> Window:
    doc = doc or {}
    return Window(_time(doc.get("start")), _time(doc.get("end")))


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def verify_signature(key: Any, signature: bytes, data: bytes,
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
