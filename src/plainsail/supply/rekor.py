"""The Rekor transparency-log entry of a keyless signature, verified offline: the signed
entry timestamp (SET) and, when the entry carries one, the inclusion proof.

The `dev.sigstore.cosign/bundle` annotation holds the entry in one of two shapes:

- cosign's (what `cosign sign` writes; SET only, no inclusion proof):
  `{"SignedEntryTimestamp": B64, "Payload": {"body": B64, "integratedTime": UNIX,
  "logIndex": N, "logID": HEX}}`;
- a Sigstore bundle's transparency log entry (protobuf-specs
  `dev.sigstore.rekor.v1.TransparencyLogEntry` in its JSON form, as in
  `verificationMaterial.tlogEntries[]` of a `.sigstore.json` bundle): `logIndex`,
  `logId.keyId`, `integratedTime`, `inclusionPromise.signedEntryTimestamp`,
  `canonicalizedBody`, and optionally `inclusionProof` {`logIndex`, `rootHash`, `treeSize`,
  `hashes`, `checkpoint.envelope`}.

The SET is Rekor's signature over the canonical JSON of body, integratedTime, logID and
logIndex: it binds the integrated time that certificate validity is judged at. An
inclusion proof is an RFC 6962 audit path from the entry's leaf hash to a tree root, and a
checkpoint (a signed note: origin, tree size, root hash) signed by the same log key.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature

from plainsail.inputs import loads_json
from plainsail.supply import merkle
from plainsail.supply.signatures import decode_b64
from plainsail.supply.trustedroot import (
    KeylessFailure,
    TransparencyLog,
    TrustedRoot,
    verify_signature,
)

_SIGNATURE_LINE = re.compile("\u2014 (\\S+) (\\S+)\n")


@dataclass(frozen=True)
class InclusionProof:
    log_index: int  # the leaf's index in the tree the proof is for (a Rekor shard)
    tree_size: int
    root_hash: bytes
    hashes: list[bytes]
    checkpoint: str


@dataclass(frozen=True)
class LogEntry:
    body_b64: str  # the canonicalized entry (JSON), base64 as the SET signs it
    integrated_time: int
    log_index: int
    log_id: str  # hex
    set_signature: bytes
    proof: InclusionProof | None

    @property
    def body(self) -> bytes:
        return base64.b64decode(self.body_b64)

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.integrated_time, UTC)

    def set_payload(self) -> bytes:
        """What the SET signs: canonical JSON (sorted keys, no spaces)."""
        return json.dumps({"body": self.body_b64,
                           "integratedTime": self.integrated_time, "logID": self.log_id,
                           "logIndex": self.log_index},
                          sort_keys=True, separators=(",", ":")).encode()


def parse_bundle(raw: str) -> LogEntry:
    """The log entry of a bundle annotation in either shape; ValueError when malformed."""
    try:
        doc = loads_json(raw)
        if not isinstance(doc, dict):
            raise TypeError
        if "Payload" in doc:  # cosign's annotation: Go's standard base64, as cosign reads it
            p = doc["Payload"]
            _b64(p["body"], strict=True)
            return LogEntry(p["body"], _int(p["integratedTime"], True),
                            _int(p["logIndex"], True), _hex(p["logID"]),
                            _b64(doc["SignedEntryTimestamp"], strict=True), None)
        promise = doc.get("inclusionPromise")
        if not promise:
            raise ValueError("no inclusionPromise (signed entry timestamp)")
        proof = doc.get("inclusionProof")
        body = base64.b64encode(_b64(doc["canonicalizedBody"])).decode()
        return LogEntry(body, _int(doc["integratedTime"]),
                        _int(doc["logIndex"]), _b64(doc["logId"]["keyId"]).hex(),
                        _b64(promise["signedEntryTimestamp"]),
                        _proof(proof) if proof else None)
    except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise ValueError(f"malformed log entry ({exc!s:.60})") from None


def _proof(doc: dict[str, Any]) -> InclusionProof:
    checkpoint = (doc.get("checkpoint") or {}).get("envelope", "")
    hashes = doc.get("hashes") or []
    if not isinstance(checkpoint, str) or not isinstance(hashes, list):
        raise TypeError("malformed inclusion proof")
    return InclusionProof(_int(doc["logIndex"]), _int(doc["treeSize"]), _b64(doc["rootHash"]),
                          [_b64(h) for h in hashes], checkpoint)


def _b64(value: Any, strict: bool = False) -> bytes:
    """Base64 bytes; `strict` as Go's StdEncoding (cosign's fields), else as protobuf's
    JSON reads a Sigstore bundle's bytes fields."""
    if not isinstance(value, str):
        raise TypeError("not a base64 string")
    return decode_b64(value) if strict else base64.b64decode(value, validate=True)


def _hex(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a hex string")
    bytes.fromhex(value)
    return value


def _int(value: Any, strict: bool = False) -> int:
    """An integer; the protobuf JSON form writes 64-bit integers as decimal strings."""
    if type(value) is int:
        return value
    if not strict and isinstance(value, str) and value.isdigit():
        return int(value)
    raise TypeError("not an integer")


def verify_entry(entry: LogEntry, root: TrustedRoot) -> TransparencyLog:
    """Check the SET, the Rekor key's validity at the integrated time, and the inclusion
    proof when there is one; KeylessFailure naming the check otherwise."""
    log = root.logs.get(entry.log_id.lower())
    if log is None:
        raise KeylessFailure("tlog", f"the entry is in log {entry.log_id[:16]}..., which is "
                             "not a Rekor log of trusted_root")
    try:
        verify_signature(log.key, entry.set_signature, entry.set_payload())
    except (InvalidSignature, ValueError, TypeError):
        raise KeylessFailure("tlog", "the signed entry timestamp (SET) does not verify "
                             "with the Rekor key of trusted_root") from None
    if not log.valid.covers(entry.when):
        raise KeylessFailure("validity", "the Rekor key of trusted_root was not valid at "
                             f"the integrated time {entry.when:%Y-%m-%d %H:%M:%S}Z")
    if entry.proof is not None:
        verify_inclusion(entry, entry.proof, log)
    return log


def verify_inclusion(entry: LogEntry, proof: InclusionProof, log: TransparencyLog) -> None:
    """The entry's leaf is in the tree the checkpoint, signed by `log`, commits to."""
    try:
        computed = merkle.root_from_inclusion_proof(
            proof.log_index, proof.tree_size, merkle.leaf_hash(entry.body), proof.hashes)
    except ValueError as exc:
        raise KeylessFailure("inclusion-proof", f"the inclusion proof is malformed: "
                             f"{exc}") from None
    if computed != proof.root_hash:
        raise KeylessFailure("inclusion-proof", "the audit path does not lead from this "
                             "entry to the proof's root hash (the entry or the proof was "
                             "altered)")
    if not proof.checkpoint:
        raise KeylessFailure("inclusion-proof", "the inclusion proof has no checkpoint (a "
                             "signed tree head), so its root hash is not vouched for")
    size, root_hash = verify_checkpoint(proof.checkpoint, log, entry.log_id)
    if (size, root_hash) != (proof.tree_size, proof.root_hash):
        raise KeylessFailure("inclusion-proof", f"the checkpoint is for a tree of {size} "
                             "entries with another root hash than the proof's "
                             f"({proof.tree_size} entries)")


def verify_checkpoint(envelope: str, log: TransparencyLog, log_id: str) -> tuple[int, bytes]:
    """(tree size, root hash) of a checkpoint signed note that `log`'s key signed.

    A signed note is the note text, a blank line, and lines `— NAME BASE64` where BASE64
    holds a 4-byte key hint (the first bytes of the log ID) and the signature over the
    note text (its lines up to and including the newline before the blank line)."""
    text, sep, signatures = envelope.partition("\n\n")
    lines = text.split("\n")
    try:
        if not sep or len(lines) < 3 or not lines[0]:
            raise ValueError
        size, root_hash = int(lines[1]), base64.b64decode(lines[2], validate=True)
    except (ValueError, binascii.Error):
        raise KeylessFailure("inclusion-proof", "the checkpoint is not a signed note with "
                             "origin, tree size and root hash") from None
    hint = bytes.fromhex(log_id)[:4]
    note = (text + "\n").encode()
    for _name, b64 in _SIGNATURE_LINE.findall(signatures):
        try:
            raw = base64.b64decode(b64, validate=True)
        except binascii.Error:
            continue
        if raw[:4] != hint:
            continue
        try:
            verify_signature(log.key, raw[4:], note)
        except (InvalidSignature, ValueError, TypeError):
            raise KeylessFailure("inclusion-proof", "the checkpoint's signature does not "
                                 "verify with the Rekor key of trusted_root") from None
        return size, root_hash
    raise KeylessFailure("inclusion-proof", "the checkpoint carries no signature by the "
                         "Rekor key of trusted_root")
