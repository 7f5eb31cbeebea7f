"""Which signatures count: identity binding, layer media types, malformed layers, wrapped
base64, SEC1 keys. Pure logic and an in-memory registry (no services)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey as Key

from plainsail.errors import SigningKeyError, VerificationError
from plainsail.secret import Secret
from plainsail.supply import keys, signatures
from plainsail.supply.signatures import IdentityPolicy
from plainsail.supply.verification import verify_image
from tests.support.fakesig import FakeRegistry, make_config, sha

VECTORS = Path(__file__).resolve().parent / "data" / "cosign"
REPO = "registry.example.com/acme/api"
DIGEST = "sha256:" + "ab" * 32
TAG = "0123abcd"


def upstream(name: str) -> tuple[str, signatures.Candidate]:
    folder = VECTORS / "signatures" / name
    raw = (folder / "signature-1").read_bytes()
    doc = json.loads(raw[raw.index(b"\n") + 1 :])
    return sha((folder / "manifest.json").read_bytes()), signatures.Candidate(
        base64.b64decode(doc["payload"]), doc["annotations"][signatures.SIGNATURE_ANNOTATION],
        doc["annotations"])


@pytest.fixture
def key(tmp_path: Path) -> Key:
    k = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cosign.pub").write_bytes(keys.public_pem(k.public_key()))
    return k


def signed(key: Key, identity: str = REPO,
           **overrides: object) -> tuple[bytes, dict[str, object]]:
    payload = signatures.make_payload(identity, DIGEST)
    sig = signatures.sign(key, payload)
    d: dict[str, object] = {"annotations": {signatures.SIGNATURE_ANNOTATION: sig}}
    d.update(overrides)
    return payload, d


def verify(tmp_path: Path, reg: FakeRegistry, tag: str | None = TAG,
           **kwargs: object) -> object:
    cfg = make_config(tmp_path, reg.repository, **kwargs)  # type: ignore[arg-type]
    return verify_image(cfg, tag, None if tag else DIGEST, client=reg.client())


def refusal(tmp_path: Path, reg: FakeRegistry, **kwargs: object) -> VerificationError:
    with pytest.raises(VerificationError) as err:
        verify(tmp_path, reg, **kwargs)
    return err.value


# ---------------------------------------------------------------- 1. identity


def test_same_key_other_repository_is_refused_naming_it(tmp_path: Path, key: Key) -> None:
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.put_layers(DIGEST, [signed(key, "registry.example.com/acme/billing")])
    err = refusal(tmp_path, reg)
    assert err.reason == "wrong-identity"
    assert "registry.example.com/acme/billing" in str(err)
    assert "signing.repositories" in str(err)


def test_signing_repositories_widen_the_binding(tmp_path: Path, key: Key) -> None:
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.put_layers(DIGEST, [signed(key, "registry.example.com/acme/billing")])
    v = verify(tmp_path, reg, repositories=["registry.example.com/acme/billing"])
    assert v.identity == "registry.example.com/acme/billing"  # type: ignore[attr-defined]
    v = verify(tmp_path, reg, repositories=["registry.example.com/acme/*"])
    assert v.identity == "registry.example.com/acme/billing"  # type: ignore[attr-defined]
    assert refusal(tmp_path, reg, repositories=["registry.example.com/other/*"]).reason == \
        "wrong-identity"


def test_own_repository_is_accepted_and_reported(tmp_path: Path, key: Key) -> None:
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.put_layers(DIGEST, [signed(key)])
    v = verify(tmp_path, reg)
    assert (v.identity, v.signer) == (REPO, str(tmp_path / "cosign.pub"))  # type: ignore[attr-defined]


@pytest.mark.parametrize(("signed_ref", "image"), [
    ("index.docker.io/library/busybox", "busybox"),
    ("docker.io/library/busybox", "busybox"),
    ("index.docker.io/acme/api", "acme/api"),
    ("registry.example.com/acme/api", "registry.example.com/acme/api"),
])
def test_docker_normalisation(signed_ref: str, image: str) -> None:
    assert IdentityPolicy.for_image(image).problem(signed_ref, DIGEST) is None


def test_normalisation_keeps_registries_apart() -> None:
    policy = IdentityPolicy.for_image("registry.example.com/acme/api")
    assert policy.problem("other.example.com/acme/api", DIGEST)
    assert policy.problem("registry.example.com/acme/api2", DIGEST)
    assert policy.problem("registry.example.com/acme", DIGEST)
    assert policy.problem(f"registry.example.com/acme/api@sha256:{'cd' * 32}", DIGEST)
    assert policy.problem(f"registry.example.com/acme/api@{DIGEST}", DIGEST) is None


def test_upstream_tagged_signature_tag_vs_othertag() -> None:
    """containers/image's dir-img-cosign-valid-with-tag: signed for `...:tag`."""
    digest, candidate = upstream("valid-with-tag")
    pub = keys.load_public_key(VECTORS / "keys" / "cosign.pub")
    repo = "192.168.64.2:5000/skopeo-signed"
    assert signatures.check(pub, digest, [candidate],
                            IdentityPolicy.for_image(repo, tag="tag")) is None
    verdict = signatures.check(pub, digest, [candidate],
                               IdentityPolicy.for_image(repo, tag="othertag"))
    assert verdict and verdict[0] == "wrong-identity" and "tag tag" in verdict[1]
    assert signatures.check(pub, digest, [candidate], IdentityPolicy.for_image(repo)) is None
    verdict = signatures.check(pub, digest, [candidate],
                               IdentityPolicy.for_image("192.168.64.2:5000/other"))
    assert verdict and verdict[0] == "wrong-identity"


@pytest.mark.parametrize("name", ["valid", "modified-manifest", "unknown-key"])
def test_upstream_vectors_keep_their_verdict_with_identity(name: str) -> None:
    digest, candidate = upstream(name)
    pub = keys.load_public_key(VECTORS / "keys" / "cosign.pub")
    policy = IdentityPolicy.for_image("192.168.64.2:5000/cosign-signed-single-sample")
    verdict = signatures.check(pub, digest, [candidate], policy)
    expected = {"valid": None, "modified-manifest": "wrong-digest", "unknown-key": "wrong-key"}
    assert (verdict[0] if verdict else None) == expected[name]


# ---------------------------------------------------------------- 3, 4. layers


def test_only_non_signature_layers_is_unsigned(tmp_path: Path, key: Key) -> None:
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.put_layers(DIGEST, [signed(key, mediaType="text/plain")])
    err = refusal(tmp_path, reg)
    assert err.reason == "unsigned" and "text/plain" in str(err)


def test_upstream_other_attachment_is_not_a_signature() -> None:
    folder = VECTORS / "signatures" / "other-attachment"
    raw = (folder / "signature-1").read_bytes()
    doc = json.loads(raw[raw.index(b"\n") + 1 :])
    payload = base64.b64decode(doc["payload"])
    manifest = json.dumps({"layers": [{"mediaType": doc["mimeType"], "size": len(payload),
                                       "digest": sha(payload),
                                       "annotations": doc["annotations"]}]}).encode()
    read = signatures.read_manifest(manifest)
    assert read.layers == [] and "text/plain" in read.skipped[0]


def test_mixed_layers_and_multiple_signatures(tmp_path: Path, key: Key) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.put_layers(DIGEST, [signed(other), signed(key, mediaType="text/plain"), signed(key)])
    v = verify(tmp_path, reg)
    assert v.digest == DIGEST and len(v.skipped) == 1  # type: ignore[attr-defined]
    reg.put_layers(DIGEST, [signed(other), signed(key, mediaType="text/plain")])
    assert refusal(tmp_path, reg).reason == "wrong-key"


@pytest.mark.parametrize("bad", [
    {"size": None},
    {"size": "12"},
    {"size": True},
    {"annotations": {signatures.SIGNATURE_ANNOTATION: ["a", "b"]}},
    {"annotations": {signatures.SIGNATURE_ANNOTATION: 42}},
    {"annotations": ["x"]},
    {"digest": 7},
    {"mediaType": None},
])
def test_malformed_layer_is_skipped_and_a_later_good_one_verifies(
        tmp_path: Path, key: Key, bad: dict[str, object]) -> None:
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.put_layers(DIGEST, [signed(key, **bad), signed(key)])
    v = verify(tmp_path, reg)
    assert v.digest == DIGEST and v.skipped and "layer 1" in v.skipped[0]  # type: ignore[attr-defined]
    reg.put_layers(DIGEST, [signed(key, **bad)])
    err = refusal(tmp_path, reg)
    assert err.reason == "unsigned" and "layer 1" in str(err)


def test_a_non_dict_layer_and_garbage_manifest() -> None:
    read = signatures.read_manifest(b'{"layers": ["x", 3, null]}')
    assert read.layers == [] and len(read.skipped) == 3
    with pytest.raises(signatures.PayloadError):
        signatures.read_manifest(b'{"layers": {"a": 1}}')
    with pytest.raises(signatures.PayloadError):
        signatures.read_manifest(b"not json")


# ---------------------------------------------------------------- 5. base64


def test_base64_with_line_breaks_is_accepted(key: Key) -> None:
    payload = signatures.make_payload(REPO, DIGEST)
    sig = signatures.sign(key, payload)
    wrapped = "\r\n".join(sig[i : i + 20] for i in range(0, len(sig), 20)) + "\n"
    assert signatures.verify(key.public_key(), payload, wrapped)
    assert not signatures.verify(key.public_key(), payload, sig[:10] + " " + sig[10:])
    assert not signatures.verify(key.public_key(), payload, sig[:10] + "!" + sig[10:])


# ---------------------------------------------------------------- 2. SEC1


def _encrypt_der(der: bytes, passphrase: str) -> bytes:
    import nacl.secret

    salt, nonce = os.urandom(32), os.urandom(24)
    box = nacl.secret.SecretBox(keys._kdf(Secret(passphrase), salt, 32768, 8, 1))
    doc = {"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1},
                   "salt": base64.b64encode(salt).decode()},
           "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
           "ciphertext": base64.b64encode(box.encrypt(der, nonce).ciphertext).decode()}
    return keys.pem(keys.COSIGN_LABEL, json.dumps(doc).encode())


def test_encrypted_sec1_key_is_refused_like_cosign() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sec1 = key.private_bytes(serialization.Encoding.DER,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())
    with pytest.raises(SigningKeyError, match="SEC1.*PKCS#8.*plainsail keygen") as err:
        keys.decrypt_private_key(_encrypt_der(sec1, "pw"), Secret("pw"), "k.key")
    assert "\n" not in str(err.value)
    pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    back = keys.decrypt_private_key(_encrypt_der(pkcs8, "pw"), Secret("pw"), "k.key")
    assert back.private_numbers() == key.private_numbers()
