"""Keyless (Fulcio + Rekor) verification, offline against a TrustedRoot: a real upstream
signature, then a private CA and Rekor key with one failing case per check."""

from __future__ import annotations

import base64
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from plainsail.config.model import KeylessConfig
from plainsail.errors import SigningKeyError, VerificationError
from plainsail.supply import keyless, signatures
from plainsail.supply.verification import VerifiedImage, verify_image
from tests.support.fakesig import FakeRegistry, make_config, sha
from tests.support.sigstore import GITHUB, SIGNED_AT, WORKFLOW, Sigstore, _ca

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


def run(tmp_path: Path, store: Sigstore, layer: tuple[bytes, dict[str, object]],
        **kwargs: object) -> VerifiedImage:
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.put_layers(DIGEST, [layer])
    cfg = make_config(tmp_path, REPO, public_key=None,
                      keyless=keyless_cfg(tmp_path, store, **kwargs))  # type: ignore[arg-type]
    return verify_image(cfg, TAG, None, client=reg.client())


def refused(tmp_path: Path, store: Sigstore, layer: tuple[bytes, dict[str, object]],
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
    d["annotations"][signatures.BUNDLE_ANNOTATION] = d2["annotations"][  # type: ignore[index]
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
