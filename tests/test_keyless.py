"""Keyless (Fulcio + Rekor + CT) verification, offline against a TrustedRoot: real upstream
signatures against the real public-good trusted root, and a private CA, Rekor key and CT
log key with one failing case per check."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from plainsail.config.model import KeylessConfig
from plainsail.errors import SigningKeyError, VerificationError
from plainsail.supply import keyless, merkle, signatures
from plainsail.supply.verification import VerifiedImage, verify_image
from tests.support.fakesig import FakeRegistry, make_config, sha
from tests.support.sigstore import GITHUB, SIGNED_AT, WORKFLOW, Sigstore, _ca
from tests.support.sigstorebundle import (
    CONTAINERS_IMAGE,
    CONTAINERS_IMAGE_REPO,
    GITHUB_ACTIONS,
    PUBLIC_GOOD_ROOT,
    WHEEL_SIGNER,
    candidate,
    containers_image_layer,
    wheel_layer,
)

VECTORS = Path(__file__).resolve().parent / "data" / "cosign"
REPO = "registry.example.com/acme/api"
DIGEST = "sha256:" + "ab" * 32
TAG = "0123abcd"
FEATURE = WORKFLOW.replace("refs/heads/main", "refs/heads/feature")


@pytest.fixture(scope="module")
def store() -> Sigstore:
    return Sigstore()


def keyless_cfg(tmp_path: Path, store: Sigstore, *, identity: str | None = WORKFLOW,
                regexp: str | None = None, issuer: str = GITHUB) -> KeylessConfig:
    store.trusted_root(tmp_path / "root.json")
    return KeylessConfig(issuer=issuer, trusted_root="root.json", identity=identity,
                         identity_regexp=regexp)


def run(tmp_path: Path, store: Sigstore, layer: tuple[bytes, dict[str, Any]],
        **kwargs: object) -> VerifiedImage:
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.put_layers(DIGEST, [layer])
    cfg = make_config(tmp_path, REPO, public_key=None,
                      keyless=keyless_cfg(tmp_path, store, **kwargs))  # type: ignore[arg-type]
    return verify_image(cfg, TAG, None, client=reg.client())


def refused(tmp_path: Path, store: Sigstore, layer: tuple[bytes, dict[str, Any]],
            **kwargs: object) -> VerificationError:
    with pytest.raises(VerificationError) as err:
        run(tmp_path, store, layer, **kwargs)
    assert "\n" not in str(err.value)
    return err.value


# ---------------------------------------------------------------- upstream


def test_upstream_fulcio_rekor_signature_verifies() -> None:
    """containers/image's dir-img-cosign-fulcio-rekor-valid, made by the public Sigstore,
    against a TrustedRoot holding the public Fulcio root and Rekor key."""
    folder = VECTORS / "signatures" / "fulcio-rekor-valid"
    raw = (folder / "signature-1").read_bytes()
    doc = json.loads(raw[raw.index(b"\n") + 1 :])
    candidate = signatures.Candidate(base64.b64decode(doc["payload"]),
                                     doc["annotations"][signatures.SIGNATURE_ANNOTATION],
                                     doc["annotations"])
    root = keyless.load_trusted_root(VECTORS / "keys" / "trusted-root.json")
    policy = keyless.KeylessPolicy("https://github.com/login/oauth", "mitr@redhat.com")
    signer = keyless.verify_candidate(candidate, root, policy)
    assert (signer.identity, signer.issuer) == ("mitr@redhat.com",
                                                "https://github.com/login/oauth")
    payload = signatures.parse_payload(candidate.payload)
    assert payload.digest == sha((folder / "manifest.json").read_bytes())
    assert payload.identity == "192.168.64.2:5000/cosign-signed/fulcio-rekor-1"
    with pytest.raises(keyless.KeylessFailure, match="identity: signed by mitr@redhat.com, "
                       "expected someone@example.com"):
        keyless.verify_candidate(candidate, root, keyless.KeylessPolicy(
            "https://github.com/login/oauth", "someone@example.com"))


# ---------------------------------------------------------------- private sigstore


def test_happy_path_reports_who_signed(tmp_path: Path, store: Sigstore) -> None:
    v = run(tmp_path, store, store.sign(REPO, DIGEST))
    assert (v.signer, v.issuer, v.identity, v.key_path) == (WORKFLOW, GITHUB, REPO, "")
    assert v.to_json()["signer"] == WORKFLOW


def test_identity_regexp_is_anchored(tmp_path: Path, store: Sigstore) -> None:
    layer = store.sign(REPO, DIGEST)
    assert run(tmp_path, store, layer, identity=None,
               regexp=r"https://github\.com/acme/api/\.github/workflows/.*@refs/heads/main")
    err = refused(tmp_path, store, layer, identity=None, regexp=r"https://github\.com/acme")
    assert err.reason == "wrong-identity"


def test_wrong_san_names_both_identities(tmp_path: Path, store: Sigstore) -> None:
    err = refused(tmp_path, store, store.sign(REPO, DIGEST, identity=FEATURE))
    assert err.reason == "wrong-identity"
    assert f"identity: signed by {FEATURE}, expected {WORKFLOW}" in str(err)


def test_wrong_issuer(tmp_path: Path, store: Sigstore) -> None:
    err = refused(tmp_path, store, store.sign(REPO, DIGEST, issuer="https://evil.example"))
    assert err.reason == "wrong-identity"
    assert "issuer https://evil.example, expected issuer " + GITHUB in str(err)


def test_expired_at_integrated_time(tmp_path: Path, store: Sigstore) -> None:
    late = SIGNED_AT + timedelta(minutes=11)
    err = refused(tmp_path, store, store.sign(REPO, DIGEST, integrated=late))
    assert err.reason == "untrusted" and "validity:" in str(err)
    assert "integrated time" in str(err)


def test_bad_set(tmp_path: Path, store: Sigstore) -> None:
    err = refused(tmp_path, store, store.sign(REPO, DIGEST, break_set=True))
    assert err.reason == "untrusted" and "tlog: the signed entry timestamp" in str(err)


def test_unknown_rekor_log(tmp_path: Path, store: Sigstore) -> None:
    other = Sigstore(root_key=store.root_key, inter_key=store.inter_key)
    err = refused(tmp_path, store, other.sign(REPO, DIGEST))
    assert err.reason == "untrusted" and "not a Rekor log of trusted_root" in str(err)


def test_untrusted_chain(tmp_path: Path, store: Sigstore) -> None:
    rogue_key = ec.generate_private_key(ec.SECP384R1())
    rogue = _ca("test-fulcio-intermediate", rogue_key)  # same name, self-signed, not trusted
    err = refused(tmp_path, store, store.sign(REPO, DIGEST, ca=(rogue, rogue_key),
                                              chain=[rogue]))
    assert err.reason == "untrusted" and "chain:" in str(err)
    assert "does not chain to a certificate authority of trusted_root" in str(err)


def test_wrong_digest(tmp_path: Path, store: Sigstore) -> None:
    err = refused(tmp_path, store, store.sign(REPO, "sha256:" + "cd" * 32))
    assert err.reason == "wrong-digest" and "cd" * 32 in str(err)


def test_other_repository(tmp_path: Path, store: Sigstore) -> None:
    err = refused(tmp_path, store, store.sign("registry.example.com/acme/billing", DIGEST))
    assert err.reason == "wrong-identity" and "acme/billing" in str(err)


def test_altered_payload(tmp_path: Path, store: Sigstore) -> None:
    payload, d = store.sign(REPO, DIGEST)
    other_payload = signatures.make_payload(REPO + "2", DIGEST)
    err = refused(tmp_path, store, (other_payload, d))
    assert err.reason == "untrusted" and "tlog-entry:" in str(err)


def test_entry_for_another_signature(tmp_path: Path, store: Sigstore) -> None:
    payload, d = store.sign(REPO, DIGEST)
    _, d2 = store.sign(REPO, DIGEST)
    d["annotations"][signatures.BUNDLE_ANNOTATION] = d2["annotations"][
        signatures.BUNDLE_ANNOTATION]
    err = refused(tmp_path, store, (payload, d))
    assert err.reason == "untrusted" and "tlog-entry:" in str(err)


def test_key_signature_is_not_keyless(tmp_path: Path, store: Sigstore) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    payload = signatures.make_payload(REPO, DIGEST)
    layer = (payload, {"annotations": {
        signatures.SIGNATURE_ANNOTATION: signatures.sign(key, payload)}})
    err = refused(tmp_path, store, layer)
    assert err.reason == "untrusted" and "certificate:" in str(err)


def test_a_good_layer_after_a_failing_one(tmp_path: Path, store: Sigstore) -> None:
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.put_layers(DIGEST, [store.sign(REPO, DIGEST, identity=FEATURE),
                            store.sign(REPO, DIGEST)])
    cfg = make_config(tmp_path, REPO, public_key=None, keyless=keyless_cfg(tmp_path, store))
    assert verify_image(cfg, TAG, None, client=reg.client()).signer == WORKFLOW


def test_trusted_root_problems_are_one_line(tmp_path: Path, store: Sigstore) -> None:
    with pytest.raises(SigningKeyError, match="does not exist"):
        keyless.load_trusted_root(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"mediaType": "something else"}')
    with pytest.raises(SigningKeyError, match="not a Sigstore TrustedRoot"):
        keyless.load_trusted_root(bad)
    shutil.copy(VECTORS / "keys" / "trusted-root.json", tmp_path / "ok.json")
    assert keyless.load_trusted_root(tmp_path / "ok.json").logs


# ---------------------------------------------------------------- certificate transparency


def test_private_happy_path_checks_the_sct(tmp_path: Path, store: Sigstore) -> None:
    v = run(tmp_path, store, store.sign(REPO, DIGEST))
    assert v.unchecked == [] and v.inclusion_proof is False
    assert "unchecked" in v.to_json()


@pytest.mark.parametrize(("sct", "message"), [
    ("none", "sct: the certificate has no signed certificate timestamp"),
    ("other-log", "which is not a CT log of trusted_root"),
    ("altered", "sct: the SCT from https://ctfe.test does not verify with that CT log's key"),
    ("malformed", "certificate: the certificate has a malformed extension"),
])
def test_sct_failures_name_the_check(tmp_path: Path, store: Sigstore, sct: str,
                                     message: str) -> None:
    err = refused(tmp_path, store, store.sign(REPO, DIGEST, sct=sct))
    assert err.reason == "untrusted" and message in str(err)


def test_sct_outside_the_ct_key_validity(tmp_path: Path, store: Sigstore) -> None:
    layer = store.sign(REPO, DIGEST)
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.put_layers(DIGEST, [layer])
    cfg = make_config(tmp_path, REPO, public_key=None, keyless=keyless_cfg(tmp_path, store))
    store.trusted_root(tmp_path / "root.json", ct_valid={"start": "2020-01-01T00:00:00Z",
                                                          "end": "2025-12-31T23:59:59Z"})
    with pytest.raises(VerificationError, match="sct: the SCT from https://ctfe.test is "
                       "dated 2026-03-01 12:00:00Z, outside the validity"):
        verify_image(cfg, TAG, None, client=reg.client())


def test_no_ctlogs_in_the_trusted_root_says_ct_was_not_checked(
        tmp_path: Path, store: Sigstore) -> None:
    layer = store.sign(REPO, DIGEST, sct="none")
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.put_layers(DIGEST, [layer])
    cfg = make_config(tmp_path, REPO, public_key=None, keyless=keyless_cfg(tmp_path, store))
    store.trusted_root(tmp_path / "root.json", ctlogs=False)
    v = verify_image(cfg, TAG, None, client=reg.client())
    assert v.signer == WORKFLOW
    assert v.unchecked == [keyless.CT_NOT_CHECKED]
    assert "certificate transparency" in v.to_json()["unchecked"][0]


# ---------------------------------------------------------------- real public-good data


def public_root(tmp_path: Path, edit: Callable[[dict[str, Any]], None] | None = None
                ) -> keyless.TrustedRoot:
    doc = json.loads(PUBLIC_GOOD_ROOT.read_text())
    if edit:
        edit(doc)
    path = tmp_path / "public-good.json"
    path.write_text(json.dumps(doc))
    return keyless.load_trusted_root(path)


def ctlog(doc: dict[str, Any], url: str) -> dict[str, Any]:
    return next(c for c in doc["ctlogs"] if c["baseUrl"] == url)


def containers_image_run(tmp_path: Path, *, digest: str | None = None,
                         image: str = CONTAINERS_IMAGE_REPO, identity: str = "mitr@redhat.com",
                         root_edit: Callable[[dict[str, Any]], None] | None = None
                         ) -> VerifiedImage:
    manifest_digest = sha((CONTAINERS_IMAGE / "manifest.json").read_bytes())
    target = digest or manifest_digest
    reg = FakeRegistry(image, "v1", target)
    reg.put_layers(target, [containers_image_layer()])
    public_root(tmp_path, root_edit)
    cfg = make_config(tmp_path, image, public_key=None, keyless=KeylessConfig(
        issuer="https://github.com/login/oauth", trusted_root="public-good.json",
        identity=identity, identity_regexp=None))
    return verify_image(cfg, "v1", None, client=reg.client())


def test_containers_image_signature_with_the_public_good_root(tmp_path: Path) -> None:
    """A real `cosign sign` keyless image signature (public Fulcio, Rekor and CT log), checked
    against the real public-good trusted root: chain, SET, SCT, identity, digest."""
    v = containers_image_run(tmp_path)
    assert (v.signer, v.issuer, v.identity) == ("mitr@redhat.com",
                                                "https://github.com/login/oauth",
                                                CONTAINERS_IMAGE_REPO)
    assert v.unchecked == [] and v.inclusion_proof is False
    signer = keyless.verify_candidate(
        candidate(containers_image_layer()), public_root(tmp_path),
        keyless.KeylessPolicy("https://github.com/login/oauth", "mitr@redhat.com"))
    assert signer.ct_log == "https://ctfe.sigstore.dev/2022"


def test_containers_image_signature_for_another_digest(tmp_path: Path) -> None:
    with pytest.raises(VerificationError) as err:
        containers_image_run(tmp_path, digest="sha256:" + "ab" * 32)
    assert err.value.reason == "wrong-digest" and "signature names another digest" in str(
        err.value)


def test_containers_image_signature_wrong_identity(tmp_path: Path) -> None:
    with pytest.raises(VerificationError) as err:
        containers_image_run(tmp_path, identity="someone@example.com")
    assert err.value.reason == "wrong-identity"
    assert "identity: signed by mitr@redhat.com, expected someone@example.com" in str(err.value)


def test_containers_image_signature_for_another_repository(tmp_path: Path) -> None:
    with pytest.raises(VerificationError) as err:
        containers_image_run(tmp_path, image="registry.example.com/acme/api")
    assert err.value.reason == "wrong-identity" and CONTAINERS_IMAGE_REPO in str(err.value)


def test_real_sct_against_another_ct_key_fails(tmp_path: Path) -> None:
    def swap(doc: dict[str, Any]) -> None:  # the 2022 log's ID, the test log's key
        ctlog(doc, "https://ctfe.sigstore.dev/2022")["publicKey"]["rawBytes"] = ctlog(
            doc, "https://ctfe.sigstore.dev/test")["publicKey"]["rawBytes"]

    with pytest.raises(VerificationError, match="sct: the SCT from https://ctfe.sigstore.dev/"
                       "2022 does not verify with that CT log's key"):
        containers_image_run(tmp_path, root_edit=swap)


def test_real_sct_from_a_log_missing_in_the_root_fails(tmp_path: Path) -> None:
    def drop(doc: dict[str, Any]) -> None:
        doc["ctlogs"] = [ctlog(doc, "https://ctfe.sigstore.dev/test")]

    with pytest.raises(VerificationError, match=r"sct: an SCT from CT log dd3d306ac6c71132\.\.\."
                       ", which is not a CT log of trusted_root"):
        containers_image_run(tmp_path, root_edit=drop)


def test_real_signature_without_ctlogs_says_so(tmp_path: Path) -> None:
    def drop(doc: dict[str, Any]) -> None:
        doc["ctlogs"] = []

    assert containers_image_run(tmp_path, root_edit=drop).unchecked == [keyless.CT_NOT_CHECKED]


GHA = keyless.KeylessPolicy(GITHUB_ACTIONS, WHEEL_SIGNER)


@pytest.mark.parametrize("shape", ["sigstore", "cosign"])
def test_real_github_actions_signature_with_inclusion_proof(tmp_path: Path,
                                                            shape: str) -> None:
    """sigstore-python's production bundle for a wheel, signed in GitHub Actions: its tlog
    entry verbatim (SET + inclusion proof + checkpoint), or in cosign's SET-only shape."""
    signer = keyless.verify_candidate(candidate(wheel_layer(shape)), public_root(tmp_path), GHA)
    assert (signer.identity, signer.issuer) == (WHEEL_SIGNER, GITHUB_ACTIONS)
    assert signer.ct_log == "https://ctfe.sigstore.dev/2022"
    assert signer.inclusion_proof is (shape == "sigstore")
    assert signer.log_index == 79605083


def failing_check(tmp_path: Path, layer: tuple[bytes, dict[str, Any]],
                  policy: keyless.KeylessPolicy = GHA) -> str:
    with pytest.raises(keyless.KeylessFailure) as err:
        keyless.verify_candidate(candidate(layer), public_root(tmp_path), policy)
    assert str(err.value).startswith(err.value.check + ": ")
    return str(err.value)


def test_real_signature_over_altered_content(tmp_path: Path) -> None:
    payload, d = wheel_layer()
    altered = payload[:100] + bytes([payload[100] ^ 1]) + payload[101:]
    message = failing_check(tmp_path, (altered, d))
    assert message == "tlog-entry: the logged entry is for another payload"


def test_real_signature_wrong_identity_names_both(tmp_path: Path) -> None:
    main = WHEEL_SIGNER.replace("refs/tags/v0.1.2", "refs/heads/main")
    message = failing_check(tmp_path, wheel_layer(), keyless.KeylessPolicy(GITHUB_ACTIONS, main))
    assert message == f"identity: signed by {WHEEL_SIGNER}, expected {main}"
    message = failing_check(tmp_path, wheel_layer(), keyless.KeylessPolicy(
        "https://accounts.google.com", WHEEL_SIGNER))
    assert message.startswith(f"identity: signed by {WHEEL_SIGNER} with issuer {GITHUB_ACTIONS}")


def edited_entry(edit: Callable[[dict[str, Any]], None]) -> tuple[bytes, dict[str, Any]]:
    payload, d = wheel_layer()
    entry = json.loads(d["annotations"][signatures.BUNDLE_ANNOTATION])
    edit(entry)
    d["annotations"][signatures.BUNDLE_ANNOTATION] = json.dumps(entry)
    return payload, d


def _flip_hash(e: dict[str, Any]) -> None:
    hashes = e["inclusionProof"]["hashes"]
    hashes[3] = base64.b64encode(bytes(32)).decode()


def _other_tree(e: dict[str, Any]) -> None:
    e["inclusionProof"]["treeSize"] = str(int(e["inclusionProof"]["treeSize"]) + 1)


def _bad_checkpoint_signature(e: dict[str, Any]) -> None:
    cp = e["inclusionProof"]["checkpoint"]
    cp["envelope"] = cp["envelope"].replace("75441653\n", "75441654\n", 1)


def _no_checkpoint(e: dict[str, Any]) -> None:
    del e["inclusionProof"]["checkpoint"]


def _checkpoint_by_another_key(e: dict[str, Any]) -> None:
    cp = e["inclusionProof"]["checkpoint"]
    text, _, _ = cp["envelope"].partition("\n\n")
    key = ec.generate_private_key(ec.SECP256R1())
    sig = b"\x01\x02\x03\x04" + key.sign((text + "\n").encode(), ec.ECDSA(hashes.SHA256()))
    cp["envelope"] = f"{text}\n\n\u2014 rekor.sigstore.dev {base64.b64encode(sig).decode()}\n"


def _short_path(e: dict[str, Any]) -> None:
    e["inclusionProof"]["hashes"] = e["inclusionProof"]["hashes"][:-1]


def _later_time(e: dict[str, Any]) -> None:
    e["integratedTime"] = str(int(e["integratedTime"]) + 60)


@pytest.mark.parametrize(("edit", "message"), [
    (_flip_hash, "inclusion-proof: the audit path does not lead from this entry to the "
                 "proof's root hash"),
    (_short_path, "inclusion-proof: the inclusion proof is malformed: the audit path is "
                  "shorter than the tree is deep"),
    (_other_tree, "inclusion-proof: the inclusion proof is malformed"),
    (_bad_checkpoint_signature, "inclusion-proof: the checkpoint's signature does not verify"),
    (_no_checkpoint, "inclusion-proof: the inclusion proof has no checkpoint"),
    (_checkpoint_by_another_key, "inclusion-proof: the checkpoint carries no signature by "
                                 "the Rekor key of trusted_root"),
    (_later_time, "tlog: the signed entry timestamp (SET) does not verify"),
])
def test_real_inclusion_proof_tampering(tmp_path: Path, edit: Callable[[dict[str, Any]], None],
                                        message: str) -> None:
    assert failing_check(tmp_path, edited_entry(edit)).startswith(message)


def test_real_proof_with_the_root_of_another_tree(tmp_path: Path) -> None:
    """A consistent proof for a different (one entry larger) tree: the audit path fits, but
    the checkpoint signs another tree."""
    payload, d = wheel_layer()
    entry = json.loads(d["annotations"][signatures.BUNDLE_ANNOTATION])
    proof = entry["inclusionProof"]
    index, size = int(proof["logIndex"]), int(proof["treeSize"])
    hashes_ = [base64.b64decode(h) for h in proof["hashes"]]
    leaf = merkle.leaf_hash(base64.b64decode(entry["canonicalizedBody"]))
    assert merkle.root_from_inclusion_proof(index, size, leaf, hashes_) == base64.b64decode(
        proof["rootHash"])
    # the leaf is the last one of its tree: a tree one larger has a new right neighbour
    other = hashlib.sha256(b"another entry").digest()
    proof["hashes"] = [base64.b64encode(merkle.leaf_hash(other)).decode(), *proof["hashes"]]
    proof["treeSize"] = str(size + 1)
    proof["rootHash"] = base64.b64encode(merkle.root_from_inclusion_proof(
        index, size + 1, leaf, [merkle.leaf_hash(other), *hashes_])).decode()
    d["annotations"][signatures.BUNDLE_ANNOTATION] = json.dumps(entry)
    message = failing_check(tmp_path, (payload, d))
    assert message.startswith("inclusion-proof: the checkpoint is for a tree of 75441653 "
                              "entries with another root hash than the proof's (75441654")


def test_real_blob_signature_is_not_an_image_signature(tmp_path: Path) -> None:
    """Every keyless check passes, but the signed payload names no image: refused, and said
    to be what it is (not a failed keyless check)."""
    digest = "sha256:" + "ab" * 32
    reg = FakeRegistry(REPO, TAG, digest)
    reg.put_layers(digest, [wheel_layer()])
    public_root(tmp_path)
    cfg = make_config(tmp_path, REPO, public_key=None, keyless=KeylessConfig(
        issuer=GITHUB_ACTIONS, trusted_root="public-good.json", identity=WHEEL_SIGNER,
        identity_regexp=None))
    with pytest.raises(VerificationError) as err:
        verify_image(cfg, TAG, None, client=reg.client())
    assert err.value.reason == "not-cosign"
    assert "not a cosign signature: the signature is valid" in str(err.value)


# ---------------------------------------------------------------- Merkle audit paths


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1 Merkle tree hash, by its recursive definition."""
    if len(leaves) == 1:
        return merkle.leaf_hash(leaves[0])
    k = 1 << (len(leaves) - 1).bit_length() - 1
    return merkle.node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def _path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1 audit path PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = 1 << (len(leaves) - 1).bit_length() - 1
    if m < k:
        return [*_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_path(m - k, leaves[k:]), _mth(leaves[:k])]


def test_inclusion_proofs_match_the_rfc_6962_definition() -> None:
    for n in range(1, 34):
        leaves = [f"entry {i}".encode() for i in range(n)]
        root = _mth(leaves)
        for m in range(n):
            path = _path(m, leaves)
            assert merkle.root_from_inclusion_proof(m, n, merkle.leaf_hash(leaves[m]),
                                                    path) == root
            if path:
                with pytest.raises(ValueError):
                    merkle.root_from_inclusion_proof(m, n, merkle.leaf_hash(leaves[m]),
                                                     path[:-1])
            with pytest.raises(ValueError):
                merkle.root_from_inclusion_proof(m, n, merkle.leaf_hash(leaves[m]),
                                                 [*path, root])
    with pytest.raises(ValueError, match="outside"):
        merkle.root_from_inclusion_proof(5, 5, b"", [])


def test_malformed_log_entry_is_a_tlog_failure(tmp_path: Path) -> None:
    payload, d = wheel_layer()
    d["annotations"][signatures.BUNDLE_ANNOTATION] = json.dumps({"logIndex": "x"})
    assert failing_check(tmp_path, (payload, d)) == (
        "tlog: the Rekor bundle annotation is malformed")


def test_verify_command_warns_what_was_not_checked(
        tmp_path: Path, store: Sigstore, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from plainsail.commands import verify as verify_command
    from plainsail.supply.registry import RegistryClient

    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.put_layers(DIGEST, [store.sign(REPO, DIGEST)])
    cfg = make_config(tmp_path, REPO, public_key=None, keyless=keyless_cfg(tmp_path, store))
    store.trusted_root(tmp_path / "root.json", ctlogs=False)
    monkeypatch.setattr("plainsail.config.model.load", lambda _path, **_kw: cfg)
    monkeypatch.setattr(RegistryClient, "for_config", lambda _cfg: reg.client())
    args = argparse.Namespace(config="plainsail.yml", ref=TAG, key=None, json=False)
    assert verify_command.run(args) == 0
    out, err = capsys.readouterr()
    assert f"Verified: {REPO}@{DIGEST} is signed by {WORKFLOW}" in out
    assert f"warning: not checked: {keyless.CT_NOT_CHECKED}" in err
    store.trusted_root(tmp_path / "root.json")
    assert verify_command.run(args) == 0
    assert "not checked" not in capsys.readouterr().err
