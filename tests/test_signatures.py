"""Signature format and keys: pure logic, and cosign-made vectors (no registry needed)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from plainsail.cli import main
from plainsail.errors import SigningKeyError
from plainsail.secret import Secret
from plainsail.supply import keys, signatures

# Real cosign-made vectors (Apache-2.0; sources in data/cosign/README.md), kept in the repo.
VECTORS = Path(__file__).resolve().parent / "data" / "cosign"
needs_vectors = pytest.mark.skipif(
    not VECTORS.is_dir(), reason=f"cosign interop vectors not found at {VECTORS}"
)
DIGEST = "sha256:" + "ab" * 32


def load_vector(name: str) -> tuple[str, signatures.Candidate]:
    """(image digest, the signature) of a containers/image on-disk cosign fixture."""
    folder = VECTORS / "signatures" / name
    manifest = (folder / "manifest.json").read_bytes()
    raw = (folder / "signature-1").read_bytes()
    assert raw.startswith(b"\x00sigstore-json\n")
    doc = json.loads(raw[raw.index(b"\n") + 1 :])
    assert doc["mimeType"] == signatures.SIMPLESIGNING
    candidate = signatures.Candidate(
        base64.b64decode(doc["payload"]), doc["annotations"][signatures.SIGNATURE_ANNOTATION]
    )
    return "sha256:" + hashlib.sha256(manifest).hexdigest(), candidate


# ---------------------------------------------------------------- vectors


@needs_vectors
@pytest.mark.parametrize("name", ["cosign-label.key", "sigstore-label.key"])
def test_cosign_keys_decrypt_with_hello(name: str) -> None:
    key = keys.load_private_key(VECTORS / "keys" / name, Secret("hello"))
    assert isinstance(key.curve, ec.SECP256R1)


@needs_vectors
def test_wrong_passphrase_is_a_clear_error() -> None:
    with pytest.raises(SigningKeyError, match="wrong passphrase") as err:
        keys.load_private_key(VECTORS / "keys" / "cosign-label.key", Secret("nope"))
    assert "nope" not in str(err.value)


@needs_vectors
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("valid", None),
        ("modified-manifest", "wrong-digest"),
        ("manifest-digest-error", "wrong-digest"),
        ("unknown-key", "wrong-key"),
    ],
)
def test_cosign_signatures(name: str, reason: str | None) -> None:
    pub = keys.load_public_key(VECTORS / "keys" / "cosign.pub")
    digest, candidate = load_vector(name)
    verdict = signatures.check(pub, digest, [candidate])
    assert (verdict[0] if verdict else None) == reason


@needs_vectors
def test_valid_vector_fails_with_the_other_public_key() -> None:
    pub = keys.load_public_key(VECTORS / "keys" / "cosign2.pub")
    digest, candidate = load_vector("valid")
    verdict = signatures.check(pub, digest, [candidate])
    assert verdict and verdict[0] == "wrong-key"


@needs_vectors
def test_our_payload_bytes_equal_cosigns() -> None:
    _, candidate = load_vector("valid")
    parsed = signatures.parse_payload(candidate.payload)
    assert signatures.make_payload(parsed.identity, parsed.digest) == candidate.payload


@needs_vectors
def test_vector_key_signs_and_verifies() -> None:
    key = keys.load_private_key(VECTORS / "keys" / "sigstore-label.key", Secret("hello"))
    payload = signatures.make_payload("127.0.0.1:5000/x", DIGEST)
    sig = signatures.sign(key, payload)
    assert signatures.check(key.public_key(), DIGEST, [signatures.Candidate(payload, sig)]) \
        is None


# ---------------------------------------------------------------- keys


def test_key_file_round_trip_and_format(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    data = keys.encrypt_private_key(key, Secret("pw"))
    label, body = keys.unpem(data, "k")
    assert label == "ENCRYPTED COSIGN PRIVATE KEY"
    doc = json.loads(body)
    assert list(doc) == ["kdf", "cipher", "ciphertext"]
    assert doc["kdf"]["name"] == "scrypt"
    assert doc["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 32
    assert doc["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(doc["cipher"]["nonce"])) == 24
    back = keys.decrypt_private_key(data, Secret("pw"), "k")
    assert back.private_numbers() == key.private_numbers()


@pytest.mark.parametrize("n", [65536, 131072])
def test_reads_larger_scrypt_costs_and_sigstore_label(n: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    data = keys.encrypt_private_key(key, Secret("pw"), n=n, label=keys.SIGSTORE_LABEL)
    assert keys.decrypt_private_key(data, Secret("pw"), "k").private_numbers() == \
        key.private_numbers()


def test_rejects_unknown_scrypt_cost_and_labels() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SigningKeyError, match="unsupported scrypt"):
        keys.decrypt_private_key(keys.encrypt_private_key(key, Secret("p"), n=1024),
                                 Secret("p"), "k")
    with pytest.raises(SigningKeyError, match="not a cosign private key"):
        keys.decrypt_private_key(keys.pem("EC PRIVATE KEY", b"x"), Secret("p"), "k")
    with pytest.raises(SigningKeyError, match="not a PEM"):
        keys.decrypt_private_key(b"garbage", Secret("p"), "k")


def test_keygen_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "correct horse")
    prefix = str(tmp_path / "team")
    assert main(["keygen", "--output-key-prefix", prefix]) == 0
    key_file, pub_file = tmp_path / "team.key", tmp_path / "team.pub"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert key_file.read_text().startswith("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
    assert pub_file.read_text().startswith("-----BEGIN PUBLIC KEY-----\n")
    private = keys.load_private_key(key_file, Secret("correct horse"))
    assert keys.public_pem(private.public_key()) == pub_file.read_bytes()
    before = key_file.read_bytes()
    capsys.readouterr()
    assert main(["keygen", "--output-key-prefix", prefix]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err
    assert err.count("\n") == 1
    assert key_file.read_bytes() == before
    assert "correct horse" not in err


def test_keygen_without_terminal_or_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["keygen", "--output-key-prefix", str(tmp_path / "k")]) == 1
    assert "COSIGN_PASSWORD" in capsys.readouterr().err
    assert not (tmp_path / "k.key").exists()


# ---------------------------------------------------------------- format


def test_payload_exact_bytes() -> None:
    assert signatures.make_payload("reg.example:5000/a/b", DIGEST) == (
        b'{"critical":{"identity":{"docker-reference":"reg.example:5000/a/b"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )


def test_signature_tag_and_identity() -> None:
    from plainsail.supply.images import ImageRef

    assert signatures.signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"
    with pytest.raises(ValueError):
        signatures.signature_tag("latest")
    assert signatures.identity_of(ImageRef("127.0.0.1:5000/x/y")) == "127.0.0.1:5000/x/y"
    assert signatures.identity_of(ImageRef("busybox")) == "index.docker.io/library/busybox"


def test_manifest_and_config_shape() -> None:
    layers = [signatures.Layer("sha256:" + "1" * 64, 10, "c2ln"),
              signatures.Layer("sha256:" + "2" * 64, 11, "c2lnMg==")]
    config = json.loads(signatures.make_config(layers))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [x.digest for x in layers]}
    assert config["history"] == [{"created": "0001-01-01T00:00:00Z"}] * 2
    assert config["config"] == {} and config["os"] == "" and config["architecture"] == ""
    raw = signatures.make_manifest("sha256:" + "3" * 64, 99, layers)
    doc = json.loads(raw)
    assert doc["schemaVersion"] == 2
    assert doc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert doc["config"] == {"mediaType": "application/vnd.oci.image.config.v1+json",
                             "size": 99, "digest": "sha256:" + "3" * 64}
    assert doc["layers"][1] == {
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "size": 11,
        "digest": "sha256:" + "2" * 64,
        "annotations": {"dev.cosignproject.cosign/signature": "c2lnMg=="},
    }
    assert signatures.parse_manifest(raw) == [
        signatures.Layer(x.digest, x.size, x.signature,
                         annotations={signatures.SIGNATURE_ANNOTATION: x.signature})
        for x in layers
    ]


def test_check_reasons() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    payload = signatures.make_payload("r/x", DIGEST)
    good = signatures.Candidate(payload, signatures.sign(key, payload))
    pub = key.public_key()
    assert signatures.check(pub, DIGEST, []) == ("unsigned", "no signature found")
    assert signatures.check(pub, DIGEST, [good]) is None
    by_other = signatures.Candidate(payload, signatures.sign(other, payload))
    assert signatures.check(pub, DIGEST, [by_other])[0] == "wrong-key"  # type: ignore[index]
    assert signatures.check(pub, DIGEST, [by_other, good]) is None
    tampered = signatures.Candidate(payload.replace(b"r/x", b"r/y"), good.signature)
    assert signatures.check(pub, DIGEST, [tampered])[0] == "wrong-key"  # type: ignore[index]
    garbage = signatures.Candidate(payload, "not base64!")
    assert signatures.check(pub, DIGEST, [garbage])[0] == "wrong-key"  # type: ignore[index]
    other_digest = "sha256:" + "cd" * 32
    verdict = signatures.check(pub, other_digest, [good])
    assert verdict is not None and verdict[0] == "wrong-digest" and DIGEST in verdict[1]


def test_parse_payload_rejects_other_types() -> None:
    with pytest.raises(signatures.PayloadError):
        signatures.parse_payload(b'{"critical":{"identity":{"docker-reference":"x"},'
                                 b'"image":{"docker-manifest-digest":"d"},"type":"other"}}')
    with pytest.raises(signatures.PayloadError):
        signatures.parse_payload(b"[]")
