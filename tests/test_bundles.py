"""Sigstore bundles (cosign 3's image signatures): parsing, the referrer layout, and
verification, key-based and keyless, against real public vectors (cosign's test data,
verified offline against its trusted root) and against an independent verifier written
from the specifications (tests/support/bundlecheck.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plainsail.config.model import KeylessConfig
from plainsail.errors import VerificationError
from plainsail.supply import bundles, bundleverify, keys, signatures
from plainsail.supply.keyless import KeylessFailure, KeylessPolicy, load_trusted_root
from plainsail.supply.keyless import verify_bundle as keyless_verify_bundle
from plainsail.supply.verification import VerifiedImage, verify_image
from tests.support import bundlecheck
from tests.support.fakesig import FakeRegistry, make_config, sha
from tests.support.sigstore import GITHUB, WORKFLOW, Sigstore

DATA = Path(__file__).parent / "data" / "bundles"
COSIGN_BUNDLE = DATA / "cosign-oci-attestation.sigstore.json"
COSIGN_ROOT = DATA / "cosign-trusted-root-pgi.json"
COSIGN_DIGEST = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
COSIGN_SIGNER = KeylessPolicy("https://github.com/login/oauth", "cody@soyland.com")
REPO = "registry.example.com/team/api"
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
TAG = "0123abcd"


# ---------------------------------------------------------------- cosign's public vector


def _cosign_bundle(change: Callable[[dict[str, Any]], None] | None = None) -> bundles.Bundle:
    doc = json.loads(COSIGN_BUNDLE.read_text())
    if change:
        change(doc)
    return bundles.parse_bundle(json.dumps(doc).encode())


def _entry(doc: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = doc["verificationMaterial"]["tlogEntries"][0]
    return entry


def _payload(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
        change(statement)
        doc["dsseEnvelope"]["payload"] = base64.b64encode(
            json.dumps(statement).encode()).decode()
    return edit


def test_cosign_vector_verifies_as_cosign_says() -> None:
    """cosign's pkg/cosign/testdata/oci-attestation.sigstore.json: cosign's
    TestVerifyImageAttestationsSigstoreBundle accepts it for the image it was made for,
    identity any; so does plainsail's bundle check (every keyless check, real data)."""
    root = load_trusted_root(COSIGN_ROOT)
    bundle = _cosign_bundle()
    signer = keyless_verify_bundle(bundle, root, COSIGN_SIGNER)
    assert (signer.identity, signer.issuer) == (COSIGN_SIGNER.identity, COSIGN_SIGNER.issuer)
    assert signer.inclusion_proof and signer.ct_log == "https://ctfe.sigstore.dev/2022"
    statement = bundles.parse_statement(bundle.payload or b"")
    assert statement.names_digest(COSIGN_DIGEST)
    # cosign: "provided artifact digest does not match any digest in statement"
    assert not statement.names_digest(DIGEST)


def test_cosign_vector_wrong_identity_refused_as_cosign_does() -> None:
    """cosign refuses the same bundle with SubjectRegExp "wrong"."""
    root = load_trusted_root(COSIGN_ROOT)
    with pytest.raises(KeylessFailure) as err:
        keyless_verify_bundle(_cosign_bundle(), root,
                              KeylessPolicy("https://github.com/login/oauth", None, "wrong"))
    assert err.value.check == "identity"


@pytest.mark.parametrize(("change", "check"), [
    (_payload(lambda s: s["subject"][0]["digest"].update(sha256="00" * 32)), "tlog-entry"),
    (lambda d: d["dsseEnvelope"]["signatures"][0].update(
        sig=base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()), "tlog-entry"),
    (lambda d: _entry(d).pop("inclusionProof"), "inclusion-proof"),
    (lambda d: _entry(d).update(integratedTime="1740770292"), "tlog"),
    (lambda d: _entry(d)["inclusionProof"].update(
        rootHash=base64.b64encode(b"\x00" * 32).decode()), "inclusion-proof"),
    (lambda d: d["verificationMaterial"]["certificate"].update(
        rawBytes=base64.b64encode(b"\x30\x03\x02\x01\x01").decode()), "certificate"),
])
def test_cosign_vector_altered_is_refused(change: Callable[[dict[str, Any]], None],
                                          check: str) -> None:
    """Each alteration of the real bundle fails the check that covers it (sigstore-go
    refuses each of these too: payload hash, signature, missing proof in v0.3, SET,
    root hash, certificate)."""
    root = load_trusted_root(COSIGN_ROOT)
    with pytest.raises(KeylessFailure) as err:
        keyless_verify_bundle(_cosign_bundle(change), root, COSIGN_SIGNER)
    assert err.value.check == check


def test_attestation_is_not_a_signature(tmp_path: Path) -> None:
    """The vector is an attestation (`cosign attest`), not `cosign sign`'s statement: as a
    signature of the image it is passed over, and said why."""
    reg = FakeRegistry(REPO, TAG, COSIGN_DIGEST)
    reg.attach_bundle(COSIGN_DIGEST, COSIGN_BUNDLE.read_bytes())
    COSIGN_ROOT_COPY = tmp_path / "root.json"
    COSIGN_ROOT_COPY.write_bytes(COSIGN_ROOT.read_bytes())
    cfg = make_config(tmp_path, REPO, public_key=None, keyless=KeylessConfig(
        issuer=COSIGN_SIGNER.issuer, trusted_root="root.json", identity="cody@soyland.com"))
    with pytest.raises(VerificationError) as err:
        verify_image(cfg, TAG, None, client=reg.client())
    assert err.value.reason == "unsigned"
    assert "an attestation (https://cosign.sigstore.dev/attestation/v1)" in str(err.value)


# ---------------------------------------------------------------- keyless, cosign 3's shape


@pytest.fixture(scope="module")
def store() -> Sigstore:
    return Sigstore()


def keyless(tmp_path: Path, store: Sigstore, bundle: bytes, *, api: bool = False,
            digest: str = DIGEST, identity: str = WORKFLOW) -> VerifiedImage:
    reg = FakeRegistry(REPO, TAG, digest)
    reg.attach_bundle(digest, bundle, api=api)
    store.trusted_root(tmp_path / "root.json")
    cfg = make_config(tmp_path, REPO, public_key=None, keyless=KeylessConfig(
        issuer=GITHUB, trusted_root="root.json", identity=identity))
    return verify_image(cfg, TAG, None, client=reg.client())


@pytest.mark.parametrize("api", [False, True], ids=["tag-schema", "referrers-api"])
def test_keyless_cosign3_signature_verifies(tmp_path: Path, store: Sigstore,
                                            api: bool) -> None:
    found = keyless(tmp_path, store, store.sign_bundle(bundles.make_statement(DIGEST)),
                    api=api)
    assert found.format == "bundle" and found.signer == WORKFLOW and found.issuer == GITHUB
    assert found.inclusion_proof and found.identity == ""
    assert bundleverify.NO_REPOSITORY in found.unchecked


@pytest.mark.parametrize(("kwargs", "reason", "words"), [
    ({"identity": WORKFLOW.replace("main", "feature")}, "wrong-identity", "identity:"),
    ({"log_other_payload": True}, "untrusted", "tlog-entry: the logged entry is for another"),
    ({"proof": False}, "untrusted", "inclusion-proof: the bundle's log entry has no"),
])
def test_keyless_bundle_refused(tmp_path: Path, store: Sigstore, kwargs: dict[str, Any],
                                reason: str, words: str) -> None:
    with pytest.raises(VerificationError) as err:
        keyless(tmp_path, store, store.sign_bundle(bundles.make_statement(DIGEST), **kwargs))
    assert err.value.reason == reason and words in str(err.value)
    assert "\n" not in str(err.value)


def test_keyless_bundle_for_another_digest_refused(tmp_path: Path, store: Sigstore) -> None:
    with pytest.raises(VerificationError) as err:
        keyless(tmp_path, store, store.sign_bundle(bundles.make_statement(OTHER)))
    assert err.value.reason == "wrong-digest"


def test_keyless_named_repository_checked(tmp_path: Path, store: Sigstore) -> None:
    ok = keyless(tmp_path, store, store.sign_bundle(bundles.make_statement(DIGEST, REPO)))
    assert ok.identity == REPO and not any("repository" in u for u in ok.unchecked)
    with pytest.raises(VerificationError) as err:
        keyless(tmp_path, store, store.sign_bundle(
            bundles.make_statement(DIGEST, "registry.example.com/other/api")))
    assert err.value.reason == "wrong-identity"


# ---------------------------------------------------------------- key-based


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_bundle(private: ec.EllipticCurvePrivateKey, statement: bytes) -> bytes:
    signature = private.sign(bundles.pae(bundles.INTOTO, statement), ec.ECDSA(hashes.SHA256()))
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return bundles.make_key_bundle(statement, signature, der)


def keyed(tmp_path: Path, public: ec.EllipticCurvePublicKey, bundle: bytes,
          repositories: list[str] | None = None, classic: bool = False) -> VerifiedImage:
    (tmp_path / "cosign.pub").write_bytes(keys.public_pem(public))
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.attach_bundle(DIGEST, bundle)
    if classic:
        other = ec.generate_private_key(ec.SECP256R1())
        payload = signatures.make_payload(REPO, DIGEST)
        reg.put_layers(DIGEST, [(payload, {"annotations": {
            signatures.SIGNATURE_ANNOTATION: signatures.sign(other, payload)}})])
    cfg = make_config(tmp_path, REPO, repositories=repositories)
    return verify_image(cfg, TAG, None, client=reg.client())


def test_plainsail_bundle_verifies_here_and_independently(
        tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    bundle = key_bundle(key, bundles.make_statement(DIGEST, REPO))
    statement = bundlecheck.check_bundle(bundle, key.public_key(), DIGEST)
    assert statement["subject"][0]["name"] == REPO
    found = keyed(tmp_path, key.public_key(), bundle)
    assert (found.format, found.identity, found.unchecked) == ("bundle", REPO, [])


def test_bundle_accepted_beside_a_classic_signature_by_another_key(
        tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    found = keyed(tmp_path, key.public_key(), key_bundle(key, bundles.make_statement(DIGEST)),
                  classic=True)
    assert found.format == "bundle"


def _variants(key: ec.EllipticCurvePrivateKey) -> dict[str, bytes]:
    """Bundles plainsail writes, and altered ones, for the verdict comparison."""
    good = key_bundle(key, bundles.make_statement(DIGEST, REPO))
    doc = json.loads(good)
    other_key = ec.generate_private_key(ec.SECP256R1())
    altered = dict(doc, dsseEnvelope=dict(doc["dsseEnvelope"], payload=base64.b64encode(
        bundles.make_statement(OTHER, REPO)).decode()))
    type_changed = dict(doc, dsseEnvelope=dict(doc["dsseEnvelope"],
                                               payloadType="application/json"))
    return {
        "good": good,
        "unnamed": key_bundle(key, bundles.make_statement(DIGEST)),
        "other-key": key_bundle(other_key, bundles.make_statement(DIGEST, REPO)),
        "other-digest": key_bundle(key, bundles.make_statement(OTHER, REPO)),
        "payload-swapped": json.dumps(altered).encode(),
        "payload-type-changed": json.dumps(type_changed).encode(),
        "attestation": key_bundle(key, json.dumps({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"digest": {"sha256": DIGEST[7:]}}],
            "predicateType": "https://slsa.dev/provenance/v1", "predicate": {}}).encode()),
    }


@pytest.mark.parametrize("name", ["good", "unnamed", "other-key", "other-digest",
                                  "payload-swapped", "payload-type-changed", "attestation"])
def test_verdict_agrees_with_independent_verifier(
        tmp_path: Path, key: ec.EllipticCurvePrivateKey, name: str) -> None:
    """Every disagreement between plainsail and the verifier written from the
    specifications is a defect."""
    bundle = _variants(key)[name]
    try:
        bundlecheck.check_bundle(bundle, key.public_key(), DIGEST)
        reference = True
    except bundlecheck.Rejected:
        reference = False
    try:
        keyed(tmp_path, key.public_key(), bundle)
        ours = True
    except VerificationError:
        ours = False
    assert ours == reference
    assert reference == (name in ("good", "unnamed"))


def test_named_other_repository_refused_unless_listed(
        tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    bundle = key_bundle(key, bundles.make_statement(DIGEST, "registry.example.com/x/api"))
    with pytest.raises(VerificationError) as err:
        keyed(tmp_path, key.public_key(), bundle)
    assert err.value.reason == "wrong-identity"
    assert keyed(tmp_path, key.public_key(), bundle,
                 repositories=["registry.example.com/x/*"]).identity.endswith("/x/api")


def test_other_key_is_wrong_key(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(VerificationError) as err:
        keyed(tmp_path, other.public_key(), key_bundle(key, bundles.make_statement(DIGEST)))
    assert err.value.reason == "wrong-key"


# ---------------------------------------------------------------- strict parsing


def _good(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(key_bundle(key, bundles.make_statement(DIGEST)))
    return doc


@pytest.mark.parametrize(("raw", "words"), [
    (b'{"mediaType": "a", "mediaType": "b"}', "appears twice"),
    (b"[" * 70 + b"]" * 70, "levels deep"),
    (b"\xff\xfe", "not UTF-8"),
    (b'{"mediaType": "application/json"}', "is not a Sigstore bundle"),
])
def test_malformed_bundles_refused(raw: bytes, words: str) -> None:
    with pytest.raises(bundles.BundleError) as err:
        bundles.parse_bundle(raw)
    assert words in str(err.value)


@pytest.mark.parametrize(("edit", "words"), [
    (lambda d: d["dsseEnvelope"].update(payload="YWI"), "padded base64"),
    (lambda d: d["dsseEnvelope"].update(payload="YW I="), "padded base64"),
    (lambda d: d["dsseEnvelope"].update(payload="YWI====="), "padded base64"),
    (lambda d: d["dsseEnvelope"]["signatures"].append({"sig": "AA=="}), "exactly one"),
    (lambda d: d.update(messageSignature={"signature": "AA=="}), "exactly one of"),
    (lambda d: d["verificationMaterial"].update(certificate={"rawBytes": "AA=="}),
     "exactly one of publicKey"),
])
def test_malformed_fields_refused(key: ec.EllipticCurvePrivateKey,
                                  edit: Callable[[dict[str, Any]], None], words: str) -> None:
    doc = _good(key)
    edit(doc)
    with pytest.raises(bundles.BundleError) as err:
        bundles.parse_bundle(json.dumps(doc).encode())
    assert words in str(err.value)


def test_message_signature_bundle_is_passed_over(key: ec.EllipticCurvePrivateKey) -> None:
    doc = _good(key)
    doc.pop("dsseEnvelope")
    doc["messageSignature"] = {"messageDigest": {"algorithm": "SHA2_256", "digest": "AA=="},
                               "signature": "AA=="}
    found = bundleverify.classify("referrer 1", bundles.parse_bundle(json.dumps(doc).encode()))
    assert isinstance(found, str) and "message-signature" in found


def test_referrer_for_another_subject_is_skipped(tmp_path: Path,
                                                 key: ec.EllipticCurvePrivateKey) -> None:
    """An index under `sha256-<hex>` can be written by anyone with push rights: a referrer
    whose subject is another image is not read as a signature of this one."""
    (tmp_path / "cosign.pub").write_bytes(keys.public_pem(key.public_key()))
    reg = FakeRegistry(REPO, TAG, DIGEST)
    bundle = key_bundle(key, bundles.make_statement(DIGEST))
    manifest_digest = reg.attach_bundle(OTHER, bundle)
    reg.manifests[bundles.referrers_tag(DIGEST)] = reg.manifests[bundles.referrers_tag(OTHER)]
    reg.media_types[bundles.referrers_tag(DIGEST)] = bundles.OCI_INDEX
    with pytest.raises(VerificationError) as err:
        verify_image(make_config(tmp_path, REPO), TAG, None, client=reg.client())
    assert err.value.reason == "unsigned"
    assert f"referrer {manifest_digest[:19]}: its subject is not {DIGEST}" in str(err.value)


def test_referrer_layout_matches_cosign_spec() -> None:
    bundle = b'{"mediaType":"x"}'
    manifest = bundles.make_referrer_manifest(
        {"mediaType": bundles.OCI_MANIFEST, "size": 10, "digest": DIGEST}, sha(bundle),
        len(bundle))
    assert bundlecheck.check_referrer(manifest, DIGEST) == (sha(bundle), len(bundle))
    index = bundles.index_with(None, bundles.referrer_descriptor(manifest))
    bundlecheck.check_fallback_index(index, manifest)
    again = bundles.index_with(index, bundles.referrer_descriptor(manifest))
    assert len(json.loads(again)["manifests"]) == 1


def test_signing_format_setting() -> None:
    from plainsail.config import model as configlib
    from plainsail.errors import ConfigError

    base = "service: api\nimage: registry.example.com/team/api\nsigning:\n  key: k\n"
    assert configlib.parse(base, Path("/x/plainsail.yml"), {}).signing.format == "classic"
    assert configlib.parse(base + "  format: bundle\n", Path("/x/plainsail.yml"),
                           {}).signing.format == "bundle"
    with pytest.raises(ConfigError) as err:
        configlib.parse(base + "  format: cosign3\n", Path("/x/plainsail.yml"), {})
    assert "signing.format" in str(err.value)


# ---------------------------------------------------------------- sigstore-conformance

CONFORMANCE = DATA / "conformance"
BEACON = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
          ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main")
A_TXT = "sha256:a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf"


@pytest.mark.parametrize("case", sorted(p.name for p in CONFORMANCE.iterdir()))
def test_conformance_dsse_verdicts(case: str) -> None:
    """Every disagreement with the conformance suite's verdict is a defect."""
    folder = CONFORMANCE / case
    own_root = folder / "trusted_root.json"
    root = load_trusted_root(own_root if own_root.exists() else
                             Path(__file__).parent / "data" / "keyless" /
                             "public-good-trusted-root.json")
    bundle = bundles.parse_bundle((folder / "bundle.sigstore.json").read_bytes())
    policy = KeylessPolicy("https://token.actions.githubusercontent.com", BEACON)
    artifact = folder / "artifact"  # the case's own signed file, else the suite's a.txt
    digest = sha(artifact.read_bytes()) if artifact.exists() else A_TXT
    try:
        keyless_verify_bundle(bundle, root, policy)
        accepted = bundles.parse_statement(bundle.payload or b"").names_digest(digest)
    except KeylessFailure:
        accepted = False
    assert accepted == (not case.endswith("_fail"))


def test_verify_command_says_bundle_and_what_it_did_not_check(
        tmp_path: Path, key: ec.EllipticCurvePrivateKey, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from plainsail.commands import verify as verify_command
    from plainsail.supply.registry import RegistryClient

    (tmp_path / "cosign.pub").write_bytes(keys.public_pem(key.public_key()))
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.attach_bundle(DIGEST, key_bundle(key, bundles.make_statement(DIGEST)))
    cfg = make_config(tmp_path, REPO)
    monkeypatch.setattr("plainsail.config.model.load", lambda _path, **_kw: cfg)
    monkeypatch.setattr(RegistryClient, "for_config", lambda _cfg: reg.client())
    args = argparse.Namespace(config="plainsail.yml", ref=TAG, key=None, json=False)
    assert verify_command.run(args) == 0
    out, err = capsys.readouterr()
    pub = tmp_path / "cosign.pub"
    assert f"Verified: {REPO}@{DIGEST} is signed (a Sigstore bundle) by {pub}\n" in out
    assert f"warning: not checked: {bundleverify.NO_REPOSITORY}" in err


def test_deploy_target_records_a_cosign3_signer(
        tmp_path: Path, key: ec.EllipticCurvePrivateKey,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cosign 3 bundle names no repository: the deploy record still says who signed,
    in which format, and what was not checked (it said nobody before)."""
    from plainsail.deploy.plan import Request, resolve_target
    from plainsail.supply.registry import RegistryClient

    (tmp_path / "cosign.pub").write_bytes(keys.public_pem(key.public_key()))
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.attach_bundle(DIGEST, key_bundle(key, bundles.make_statement(DIGEST)))
    monkeypatch.setattr(RegistryClient, "for_config", lambda _cfg, **_kw: reg.client())
    target = resolve_target(make_config(tmp_path, REPO), Request(ref=f"{TAG}@{DIGEST}"))
    assert target.signed_by is not None
    assert target.signed_by["signer"] == str(tmp_path / "cosign.pub")
    assert target.signed_by["format"] == "bundle" and target.signed_by["identity"] == ""
    assert bundleverify.NO_REPOSITORY in target.signed_by["unchecked"]
