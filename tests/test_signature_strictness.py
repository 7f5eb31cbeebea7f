"""Signatures read as strictly as the reference (containers/image, cosign), and hostile
signature data (deep nesting, huge trusted roots) refused in one line, layer by layer.
Pure logic and an in-memory registry (no services)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey as Key

from plainsail.config.model import KeylessConfig
from plainsail.errors import RegistryError, SigningKeyError, VerificationError
from plainsail.supply import keys, signatures
from plainsail.supply.images import ImageRef
from plainsail.supply.keyless import (
    KeylessFailure,
    KeylessPolicy,
    load_trusted_root,
    verify_candidate,
)
from plainsail.supply.registry import RegistryClient
from plainsail.supply.verification import verify_image
from tests.support.fakesig import FakeRegistry, make_config
from tests.support.sigstore import GITHUB, WORKFLOW, Sigstore

REPO = "registry.example.com/acme/api"
DIGEST = "sha256:" + "ab" * 32
TAG = "0123abcd"
GOOD = signatures.make_payload(REPO, DIGEST).decode()


@pytest.fixture
def key(tmp_path: Path) -> Key:
    k = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cosign.pub").write_bytes(keys.public_pem(k.public_key()))
    return k


def layer(key: Key, payload: bytes | str = GOOD,
          **annotations: str) -> tuple[bytes, dict[str, Any]]:
    data = payload.encode() if isinstance(payload, str) else payload
    notes = {signatures.SIGNATURE_ANNOTATION: signatures.sign(key, data), **annotations}
    return data, {"annotations": notes}


def outcome(tmp_path: Path, layers: list[tuple[bytes, dict[str, Any]]],
            **kwargs: Any) -> Any:
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.put_layers(DIGEST, layers)
    cfg = make_config(tmp_path, REPO, **kwargs)
    try:
        return verify_image(cfg, TAG, None, client=reg.client())
    except VerificationError as exc:
        assert "\n" not in str(exc)
        return exc


# ---------------------------------------------------------------- base64 as Go reads it


@pytest.mark.parametrize("text", ["AAAA====", "AA===", "AAA==", "AA==AA==", "AA=A", "AAA",
                                  "=AAA", "A", "AA AA==", "AA-_", "====", "AAA=\t"])
def test_base64_refused_like_gos_std_encoding(text: str) -> None:
    with pytest.raises(ValueError):
        signatures.decode_b64(text)


@pytest.mark.parametrize(("text", "data"), [("", b""), ("AA==", b"\0"), ("AAA=", b"\0\0"),
                                            ("AAAA", b"\0\0\0"), ("AA\r\n==", b"\0"),
                                            ("AB==", b"\0")])
def test_base64_accepted_like_gos_std_encoding(text: str, data: bytes) -> None:
    assert signatures.decode_b64(text) == data


def test_signature_with_extra_padding_is_skipped_not_verified(tmp_path: Path,
                                                             key: Key) -> None:
    payload, d = layer(key)
    d["annotations"][signatures.SIGNATURE_ANNOTATION] += "=="
    refused = outcome(tmp_path, [(payload, d)])
    assert refused.reason == "unsigned" and "not standard base64" in str(refused)
    verified = outcome(tmp_path, [(payload, d), layer(key)])
    assert verified.digest == DIGEST and "layer 1" in verified.skipped[0]


# ---------------------------------------------------------------- the payload, strictly


def _with(edit: Any) -> str:
    doc = json.loads(GOOD)
    edit(doc)
    return json.dumps(doc)


BAD_PAYLOADS = {
    "no optional": (_with(lambda d: d.pop("optional")), "has no 'optional' key"),
    "unknown top key": (_with(lambda d: d.update(extra=1)), "unknown key 'extra'"),
    "unknown critical key": (_with(lambda d: d["critical"].update(x=1)),
                             "critical has an unknown key 'x'"),
    "no identity": (_with(lambda d: d["critical"].pop("identity")),
                    "critical has no 'identity' key"),
    "extra image key": (_with(lambda d: d["critical"]["image"].update(tag="1")),
                        "critical.image has an unknown key 'tag'"),
    "duplicate top key": (GOOD[:-1] + ',"optional":null}', "the key 'optional' twice"),
    "duplicate digest": (GOOD.replace('"docker-manifest-digest":',
                                      f'"docker-manifest-digest":"{DIGEST}",'
                                      '"docker-manifest-digest":'),
                         "critical.image has the key 'docker-manifest-digest' twice"),
    "digest a number": (_with(lambda d: d["critical"]["image"].update(
        {"docker-manifest-digest": 7})), "docker-manifest-digest is a number"),
    "reference null": (_with(lambda d: d["critical"]["identity"].update(
        {"docker-reference": None})), "docker-reference is null"),
    "type a list": (_with(lambda d: d["critical"].update(type=[])), "type is an array"),
    "critical a string": (_with(lambda d: d.update(critical="x")),
                          "critical is a string, not a JSON object"),
    "optional a list": (_with(lambda d: d.update(optional=[])), "optional is an array"),
    "timestamp 1.5": (_with(lambda d: d.update(optional={"timestamp": 1.5})),
                      "optional.timestamp is not an integer"),
    "creator a number": (_with(lambda d: d.update(optional={"creator": 5})),
                         "optional.creator is a number"),
    "not an object": ("[]", "the payload is an array"),
    "NaN": (GOOD[:-1] + ',"n":NaN}', "not JSON"),
    "other type": (GOOD.replace("cosign container image signature", "in-toto"),
                   "its type is 'in-toto'"),
}


@pytest.mark.parametrize("name", sorted(BAD_PAYLOADS))
def test_payload_parsed_as_strictly_as_containers_image(name: str) -> None:
    text, problem = BAD_PAYLOADS[name]
    with pytest.raises(signatures.PayloadError) as err:
        signatures.parse_payload(text.encode())
    assert problem in str(err.value)


def test_payload_optional_fields_the_reference_accepts() -> None:
    text = _with(lambda d: d.update(optional={"creator": "me", "timestamp": 1700000000,
                                              "ref": {"nested": [1, 2]}}))
    assert signatures.parse_payload(text.encode()) == signatures.Payload(REPO, DIGEST)
    text = _with(lambda d: d.update(optional={"timestamp": 1700000000.0}))
    assert signatures.parse_payload(text.encode()).digest == DIGEST


def test_valid_signature_over_another_payload_is_named_as_such(tmp_path: Path,
                                                               key: Key) -> None:
    """Not "signed by another key": the key is right, what it signed is not cosign's."""
    text = BAD_PAYLOADS["unknown critical key"][0]
    refused = outcome(tmp_path, [layer(key, text)])
    assert refused.reason == "not-cosign"
    assert str(refused).startswith("not a cosign signature: a signature by this key "
                                   "verifies")
    assert "critical has an unknown key 'x'" in str(refused)
    other = ec.generate_private_key(ec.SECP256R1())
    assert outcome(tmp_path, [layer(other)]).reason == "wrong-key"
    assert outcome(tmp_path, [layer(key, text), layer(key)]).digest == DIGEST


# ---------------------------------------------------------------- nesting and size


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_sig_manifest_nested_deep_is_one_line_not_a_crash(tmp_path: Path, key: Key) -> None:
    with pytest.raises(signatures.PayloadError, match=r"nested 100\d levels deep"):
        signatures.read_manifest(('{"layers":' + nested(1000) + "}").encode())
    reg = FakeRegistry(REPO, TAG, DIGEST)
    reg.put_layers(DIGEST, [layer(key)])
    reg.manifests[signatures.signature_tag(DIGEST)] = (
        ('{"layers":[' + nested(3000) + "]}").encode())
    cfg = make_config(tmp_path, REPO)
    with pytest.raises(VerificationError) as err:
        verify_image(cfg, TAG, None, client=reg.client())
    assert err.value.reason == "unsigned" and "nested 3002 levels deep" in str(err.value)


def test_registry_manifest_nested_deep_is_a_registry_error() -> None:
    body = ('{"layers":' + nested(1000) + "}").encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body,
                              headers={"Content-Type": signatures.OCI_MANIFEST})

    client = RegistryClient("reg.example", transport=httpx.MockTransport(handler))
    with pytest.raises(RegistryError, match=r"nested 100\d levels deep"):
        client.get_manifest(ImageRef("reg.example/acme/api", tag="1"))


def test_deep_bundle_annotation_fails_its_layer_only(tmp_path: Path, key: Key) -> None:
    """A keyless layer whose bundle is about 2 KB of brackets: that layer fails its tlog
    check; a valid layer next to it still verifies."""
    store = Sigstore()
    payload, d = store.sign(REPO, DIGEST)
    d["annotations"][signatures.BUNDLE_ANNOTATION] = nested(1000)
    store.trusted_root(tmp_path / "root.json")
    root = load_trusted_root(tmp_path / "root.json")
    cand = signatures.Candidate(payload, d["annotations"][signatures.SIGNATURE_ANNOTATION],
                                d["annotations"])
    with pytest.raises(KeylessFailure, match="^tlog: the Rekor bundle annotation is "
                                             "malformed"):
        verify_candidate(cand, root, KeylessPolicy(GITHUB, WORKFLOW))
    kl = KeylessConfig(issuer=GITHUB, trusted_root="root.json", identity=WORKFLOW,
                       identity_regexp=None)
    verified = outcome(tmp_path, [(payload, d), store.sign(REPO, DIGEST)],
                       public_key=None, keyless=kl)
    assert verified.signer == WORKFLOW


def test_trusted_root_deep_or_huge_is_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"mediaType":' + nested(1000) + "}")
    with pytest.raises(SigningKeyError, match=r"nested 100\d levels deep"):
        load_trusted_root(deep)
    huge = tmp_path / "huge.json"
    with huge.open("wb") as f:
        f.truncate(300 * 1024 * 1024)  # sparse: nothing is written, nothing may be read
    with pytest.raises(SigningKeyError, match="larger than 1 MiB"):
        load_trusted_root(huge)


def test_huge_key_file_is_refused_unread(tmp_path: Path) -> None:
    huge = tmp_path / "cosign.pub"
    with huge.open("wb") as f:
        f.truncate(200 * 1024 * 1024)
    with pytest.raises(SigningKeyError, match="larger than 64 KiB"):
        keys.load_public_key(huge)
