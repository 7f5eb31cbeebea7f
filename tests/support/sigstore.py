"""A private Sigstore for tests: a Fulcio-like CA (root + intermediate), a Rekor key, a CT
log key, a TrustedRoot JSON naming them, and keyless cosign signatures made with them (the
leaf certificates carry an RFC 6962 SCT by the CT log key, as Fulcio's do)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plainsail.supply import signatures

GITHUB = "https://token.actions.githubusercontent.com"
WORKFLOW = "https://github.com/acme/api/.github/workflows/deploy.yml@refs/heads/main"
SIGNED_AT = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SCT_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test-sigstore"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name,
        ec.EllipticCurvePrivateKey] | None = None) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (_name(cn), key)
    return (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(issuer_key, hashes.SHA384()))


def _octet_string(raw: bytes) -> bytes:
    n = len(raw)
    length = bytes([n]) if n < 128 else bytes([0x82]) + n.to_bytes(2, "big")
    return b"\x04" + length + raw


def spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def sct_list(ct_key: ec.EllipticCurvePrivateKey, tbs: bytes, issuer: x509.Certificate,
             when: datetime) -> bytes:
    """The extension value of an embedded SCT list holding one SCT (RFC 6962 3.2-3.3)."""
    log_id = hashlib.sha256(spki(ct_key.public_key())).digest()
    ms = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    issuer_key_hash = hashlib.sha256(spki(issuer.public_key())).digest()  # type: ignore[arg-type]
    signed = (b"\x00\x00" + ms.to_bytes(8, "big") + b"\x00\x01" + issuer_key_hash
              + len(tbs).to_bytes(3, "big") + tbs + b"\x00\x00")
    sig = ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
    sct = (b"\x00" + log_id + ms.to_bytes(8, "big") + b"\x00\x00" + b"\x04\x03"
           + len(sig).to_bytes(2, "big") + sig)
    one = len(sct).to_bytes(2, "big") + sct
    return _octet_string(len(one).to_bytes(2, "big") + one)


def _der_utf8(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 128
    return bytes([0x0C, len(raw)]) + raw


def _leaf_builder(ca: x509.Certificate, leaf_key: ec.EllipticCurvePrivateKey, identity: str,
                  issuer: str) -> x509.CertificateBuilder:
    """A Fulcio-like code-signing leaf for `identity` (SAN) and `issuer` (OIDC extension)."""
    return (x509.CertificateBuilder().subject_name(x509.Name([]))
            .issuer_name(ca.subject).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(SIGNED_AT).not_valid_after(SIGNED_AT + timedelta(minutes=10))
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                         False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(identity)]), critical=True)
            .add_extension(x509.UnrecognizedExtension(
                x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8"), _der_utf8(issuer)),
                critical=False))


@dataclass
class Sigstore:
    root_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    inter_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    rekor_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    ct_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        self.root = _ca("test-fulcio", self.root_key)
        self.intermediate = _ca("test-fulcio-intermediate", self.inter_key,
                                (self.root.subject, self.root_key))

    @property
    def rekor_der(self) -> bytes:
        return self.rekor_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def log_id(self) -> str:
        return hashlib.sha256(self.rekor_der).hexdigest()

    @property
    def ct_log_id(self) -> str:
        return hashlib.sha256(spki(self.ct_key.public_key())).hexdigest()

    def trusted_root(self, path: Path, *, ctlogs: bool = True,
                     ct_valid: dict[str, str] | None = None) -> Path:
        """Write the TrustedRoot JSON; `ctlogs=False` leaves the CT log out, `ct_valid`
        is the CT log key's validFor."""
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        ct = [{"baseUrl": "https://ctfe.test", "hashAlgorithm": "SHA2_256",
               "publicKey": {"rawBytes": b64(spki(self.ct_key.public_key())),
                             "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                             "validFor": ct_valid or {"start": "2020-01-01T00:00:00Z"}},
               "logId": {"keyId": b64(bytes.fromhex(self.ct_log_id))}}]

        doc = {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{"baseUrl": "https://rekor.test", "hashAlgorithm": "SHA2_256",
                       "publicKey": {"rawBytes": b64(self.rekor_der),
                                     "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                                     "validFor": {"start": "2020-01-01T00:00:00Z"}},
                       "logId": {"keyId": b64(bytes.fromhex(self.log_id))}}],
            "certificateAuthorities": [{
                "subject": {"organization": "test-sigstore", "commonName": "test-fulcio"},
                "uri": "https://fulcio.test",
                "certChain": {"certificates": [
                    {"rawBytes": b64(c.public_bytes(serialization.Encoding.DER))}
                    for c in (self.intermediate, self.root)]},
                "validFor": {"start": "2020-01-01T00:00:00Z"}}],
            "ctlogs": ct if ctlogs else [], "timestampAuthorities": [],
        }
        path.write_text(json.dumps(doc, indent=2))
        return path

    def sign(
        self,
        repository: str,
        digest: str,
        *,
        identity: str = WORKFLOW,
        issuer: str = GITHUB,
        integrated: datetime = SIGNED_AT + timedelta(seconds=5),
        ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
        chain: list[x509.Certificate] | None = None,
        break_set: bool = False,
        sct: str = "valid",
    ) -> tuple[bytes, dict[str, Any]]:
        """(payload, descriptor overrides) of one keyless signature layer. `sct`: "valid",
        "none" (no SCT), "malformed" (an SCT list that does not parse), "other-log" (by a
        CT key not in the trusted root) or "altered" (signed over another certificate)."""
        ca_cert, ca_key = ca or (self.intermediate, self.inter_key)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        builder = _leaf_builder(ca_cert, leaf_key, identity, issuer)
        if sct == "none":
            leaf = builder.sign(ca_key, hashes.SHA384())
        elif sct == "malformed":
            leaf = builder.add_extension(x509.UnrecognizedExtension(
                SCT_OID, _octet_string(b"\x00\x05\x00\x03abc")), critical=False).sign(
                ca_key, hashes.SHA384())
        else:
            tbs = builder.sign(ca_key, hashes.SHA384()).tbs_certificate_bytes
            ct_key = self.ct_key if sct != "other-log" else ec.generate_private_key(
                ec.SECP256R1())
            if sct == "altered":
                tbs = tbs.replace(identity.encode(), identity.upper().encode())
            leaf = builder.add_extension(x509.UnrecognizedExtension(
                SCT_OID, sct_list(ct_key, tbs, ca_cert, SIGNED_AT)), critical=False).sign(
                ca_key, hashes.SHA384())
            assert sct == "altered" or leaf.tbs_precertificate_bytes == tbs
        leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
        payload = signatures.make_payload(repository, digest)
        sig = signatures.sign(leaf_key, payload)
        body = base64.b64encode(json.dumps({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {"data": {"hash": {"algorithm": "sha256",
                                       "value": hashlib.sha256(payload).hexdigest()}},
                     "signature": {"content": sig, "publicKey": {
                         "content": base64.b64encode(leaf_pem).decode()}}},
        }, separators=(",", ":")).encode()).decode()
        entry = {"body": body, "integratedTime": int(integrated.timestamp()),
                 "logID": self.log_id, "logIndex": 42}
        canonical = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
        set_sig = self.rekor_key.sign(canonical, ec.ECDSA(hashes.SHA256()))
        if break_set:
            entry["logIndex"] = 43  # the SET no longer covers what the bundle says
        bundle = {"SignedEntryTimestamp": base64.b64encode(set_sig).decode(), "Payload": entry}
        chain_certs = chain if chain is not None else [self.intermediate, self.root]
        return payload, {"annotations": {
            signatures.SIGNATURE_ANNOTATION: sig,
            signatures.CERTIFICATE_ANNOTATION: leaf_pem.decode(),
            signatures.CHAIN_ANNOTATION: b"".join(
                c.public_bytes(serialization.Encoding.PEM) for c in chain_certs).decode(),
            signatures.BUNDLE_ANNOTATION: json.dumps(bundle),
        }}

    def leaf(self, identity: str = WORKFLOW, issuer: str = GITHUB
             ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A Fulcio-like leaf certificate (with an SCT) and its key."""
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        builder = _leaf_builder(self.intermediate, leaf_key, identity, issuer)
        tbs = builder.sign(self.inter_key, hashes.SHA384()).tbs_certificate_bytes
        leaf = builder.add_extension(x509.UnrecognizedExtension(
            SCT_OID, sct_list(self.ct_key, tbs, self.intermediate, SIGNED_AT)),
            critical=False).sign(self.inter_key, hashes.SHA384())
        return leaf, leaf_key

    def sign_bundle(
        self,
        statement: bytes,
        *,
        identity: str = WORKFLOW,
        issuer: str = GITHUB,
        integrated: datetime = SIGNED_AT + timedelta(seconds=5),
        proof: bool = True,
        log_other_payload: bool = False,
    ) -> bytes:
        """A v0.3 Sigstore bundle of a keyless DSSE signature over `statement` (an in-toto
        statement), as cosign 3 writes it: the leaf certificate, and a Rekor `dsse` entry
        with its SET and (unless `proof=False`) an inclusion proof in a one-entry tree with
        a signed checkpoint. `log_other_payload` logs the hash of another payload."""
        from plainsail.supply import bundles, merkle

        leaf, leaf_key = self.leaf(identity, issuer)
        signature = leaf_key.sign(bundles.pae(bundles.INTOTO, statement),
                                  ec.ECDSA(hashes.SHA256()))
        logged = statement + b" " if log_other_payload else statement
        leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
        body = json.dumps({
            "apiVersion": "0.0.1", "kind": "dsse",
            "spec": {"envelopeHash": {"algorithm": "sha256", "value": "00" * 32},
                     "payloadHash": {"algorithm": "sha256",
                                     "value": hashlib.sha256(logged).hexdigest()},
                     "signatures": [{"signature": base64.b64encode(signature).decode(),
                                     "verifier": base64.b64encode(leaf_pem).decode()}]},
        }, separators=(",", ":")).encode()
        body_b64 = base64.b64encode(body).decode()
        when = int(integrated.timestamp())
        canonical = json.dumps({"body": body_b64, "integratedTime": when,
                                "logID": self.log_id, "logIndex": 7},
                               sort_keys=True, separators=(",", ":")).encode()
        entry: dict[str, Any] = {
            "logIndex": "7", "logId": {"keyId": base64.b64encode(
                bytes.fromhex(self.log_id)).decode()},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
            "integratedTime": str(when),
            "inclusionPromise": {"signedEntryTimestamp": base64.b64encode(
                self.rekor_key.sign(canonical, ec.ECDSA(hashes.SHA256()))).decode()},
            "canonicalizedBody": body_b64,
        }
        if proof:
            root_hash = merkle.leaf_hash(body)
            note = f"rekor.test - 1\n1\n{base64.b64encode(root_hash).decode()}\n"
            sig = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
            hint = bytes.fromhex(self.log_id)[:4]
            envelope = (note + "\n\u2014 rekor.test "
                        + base64.b64encode(hint + sig).decode() + "\n")
            entry["inclusionProof"] = {
                "logIndex": "0", "rootHash": base64.b64encode(root_hash).decode(),
                "treeSize": "1", "hashes": [], "checkpoint": {"envelope": envelope}}
        doc = {"mediaType": bundles.BUNDLE_MEDIA,
               "verificationMaterial": {
                   "certificate": {"rawBytes": base64.b64encode(
                       leaf.public_bytes(serialization.Encoding.DER)).decode()},
                   "tlogEntries": [entry]},
               "dsseEnvelope": {"payload": base64.b64encode(statement).decode(),
                                "payloadType": bundles.INTOTO,
                                "signatures": [{"sig": base64.b64encode(
                                    signature).decode()}]}}
        return json.dumps(doc).encode()
