"""Round trips against a real registry: keygen -> docker build/push -> sign -> verify, and
every way verification must fail (unsigned, other key, other digest, tampering, tag drift)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from plainsail.cli import main
from plainsail.config.model import Config, SigningConfig
from plainsail.errors import RegistryNotFoundError, VerificationError
from plainsail.secret import Secret
from plainsail.supply import buildrecords, bundles, keys, signatures
from plainsail.supply.images import ImageRef
from plainsail.supply.registry import RegistryClient
from plainsail.supply.signing import sign_image
from plainsail.supply.verification import verify_image
from tests.support import bundlecheck
from tests.support.services import Registry

pytestmark = pytest.mark.integration
LABEL = "plainsail.test=sign-verify"
PASS = Secret("test-passphrase")


def _docker(*argv: str) -> str:
    return subprocess.run(["docker", *argv], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def local_images() -> Iterator[tuple[str, str]]:
    """Two tiny local images (FROM scratch + static busybox) that differ in one file."""
    busybox = shutil.which("busybox")
    if not busybox or not shutil.which("docker"):
        pytest.skip("needs docker and busybox-static")
    names = []
    run_id = uuid.uuid4().hex[:8]
    for variant in ("one", "two"):
        with tempfile.TemporaryDirectory() as d:
            shutil.copy(busybox, Path(d) / "busybox")
            (Path(d) / "variant").write_text(variant + run_id)
            (Path(d) / "Dockerfile").write_text(
                f"FROM scratch\nCOPY busybox /bin/busybox\nCOPY variant /variant\nLABEL {LABEL}\n"
                "LABEL org.opencontainers.image.title=signtest\n")
            name = f"plainsail-signtest-{variant}:{run_id}"
            _docker("build", "-q", "-t", name, d)
            names.append(name)
    yield names[0], names[1]
    _docker("rmi", "-f", *names)


def push(local: str, repo: str, tag: str) -> None:
    target = f"{repo}:{tag}"
    _docker("tag", local, target)
    try:
        _docker("push", target)
    finally:
        _docker("rmi", target)


@dataclass
class Env:
    cfg: Config
    client: RegistryClient
    tag: str
    digest: str
    other_image: str


def make_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.with_suffix(".key").write_bytes(keys.encrypt_private_key(key, PASS))
    path.with_suffix(".pub").write_bytes(keys.public_pem(key.public_key()))
    return path


@pytest.fixture
def env(registry: Registry, local_images: tuple[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.delenv("PLAINSAIL_BUILD_RECORDS", raising=False)
    monkeypatch.setenv("COSIGN_PASSWORD", PASS.reveal())
    repo = registry.repo(f"signtest-{uuid.uuid4().hex[:10]}")
    tag = uuid.uuid4().hex[:8]
    push(local_images[0], repo, tag)
    make_key(tmp_path / "cosign")
    cfg = Config(service="signtest", image=repo, path=tmp_path / "plainsail.yml",
                 signing=SigningConfig(key="cosign.key", public_key="cosign.pub"))
    (tmp_path / "plainsail.yml").write_text(
        f"service: signtest\nimage: {repo}\n"
        "signing:\n  key: cosign.key\n  public_key: cosign.pub\n")
    client = RegistryClient(registry.host)
    digest = client.resolve(ImageRef(repo, tag=tag))
    assert digest
    yield Env(cfg, client, tag, digest, local_images[1])
    client.close()


def sig_manifest(e: Env) -> dict:  # type: ignore[type-arg]
    data, media_type, _ = e.client.get_manifest(
        ImageRef(e.cfg.image, tag=signatures.signature_tag(e.digest)))
    assert media_type == signatures.OCI_MANIFEST
    return json.loads(data)  # type: ignore[no-any-return]


def write_sig_manifest(e: Env, layers: list[signatures.Layer]) -> None:
    ref = ImageRef(e.cfg.image, tag=signatures.signature_tag(e.digest))
    config = signatures.make_config(layers)
    config_digest = e.client.put_blob(ref, config)
    e.client.put_manifest(ref, signatures.make_manifest(config_digest, len(config), layers),
                          signatures.OCI_MANIFEST)


def reason_of(e: Env, **kwargs: object) -> str:
    with pytest.raises(VerificationError) as err:
        verify_image(e.cfg, kwargs.pop("tag", e.tag), kwargs.pop("digest", None),  # type: ignore[arg-type]
                     client=e.client, **kwargs)  # type: ignore[arg-type]
    return err.value.reason


def test_round_trip_via_cli(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cosign.key").unlink()
    (tmp_path / "cosign.pub").unlink()
    assert main(["keygen"]) == 0
    cfg_arg = ["-c", str(tmp_path / "plainsail.yml")]
    assert main(["verify", env.tag, *cfg_arg]) == 1
    assert "unsigned" in capsys.readouterr().err
    assert main(["sign", env.tag, *cfg_arg]) == 0
    assert main(["verify", env.tag, *cfg_arg]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == env.digest
    assert main(["verify", env.digest, *cfg_arg, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pinned"] == f"{env.cfg.image}@{env.digest}"
    assert main(["inspect", env.tag, *cfg_arg, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["digest"] == env.digest and shown["title"] == "signtest"


def test_signature_has_cosigns_shape(env: Env) -> None:
    result = sign_image(env.cfg, env.tag, None, passphrase=PASS, client=env.client)
    assert result.added and result.layers == 1 and result.digest == env.digest
    manifest = sig_manifest(env)
    assert manifest["schemaVersion"] == 2
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = env.client.get_blob(env.cfg.image, layer["digest"])
    assert payload == signatures.make_payload(env.cfg.image, env.digest)
    config = json.loads(env.client.get_blob(env.cfg.image, manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]
    pub = keys.load_public_key(env.cfg.resolve("cosign.pub"))
    assert signatures.verify(pub, payload,
                             layer["annotations"]["dev.cosignproject.cosign/signature"])


def test_sign_twice_leaves_one_layer(env: Env) -> None:
    assert sign_image(env.cfg, env.tag, None, passphrase=PASS, client=env.client).added
    again = sign_image(env.cfg, None, env.digest, passphrase=PASS, client=env.client)
    assert not again.added and again.layers == 1
    assert len(sig_manifest(env)["layers"]) == 1


def test_two_keys_two_layers_each_verifies(env: Env, tmp_path: Path) -> None:
    make_key(tmp_path / "second")
    make_key(tmp_path / "third")
    sign_image(env.cfg, env.tag, None, passphrase=PASS, client=env.client)
    sign_image(env.cfg, env.tag, None, key=str(tmp_path / "second.key"), passphrase=PASS,
               client=env.client)
    assert len(sig_manifest(env)["layers"]) == 2
    for pub in ("cosign.pub", "second.pub"):
        v = verify_image(env.cfg, env.tag, None, public_key=str(tmp_path / pub),
                         client=env.client)
        assert v.digest == env.digest
    assert reason_of(env, public_key=str(tmp_path / "third.pub")) == "wrong-key"


def test_unsigned_refused(env: Env) -> None:
    assert reason_of(env) == "unsigned"
    assert reason_of(env, tag=None, digest=env.digest) == "unsigned"


def test_signed_by_another_key_refused(env: Env, tmp_path: Path) -> None:
    make_key(tmp_path / "other")
    sign_image(env.cfg, env.tag, None, key=str(tmp_path / "other.key"), passphrase=PASS,
               client=env.client)
    assert reason_of(env) == "wrong-key"


def test_tampered_payload_detected(env: Env) -> None:
    sign_image(env.cfg, env.tag, None, passphrase=PASS, client=env.client)
    (layer,) = signatures.parse_manifest(json.dumps(sig_manifest(env)).encode())
    payload = env.client.get_blob(env.cfg.image, layer.digest)
    forged = payload.replace(b'"optional":null', b'"optional":{"by":"mallory"}')
    forged_digest = env.client.put_blob(env.cfg.image, forged)
    write_sig_manifest(env, [signatures.Layer(forged_digest, len(forged), layer.signature)])
    assert reason_of(env) == "wrong-key"


def test_signature_naming_another_digest_detected(env: Env) -> None:
    key = keys.load_private_key(env.cfg.resolve("cosign.key"), PASS)
    other = "sha256:" + "0" * 64
    payload = signatures.make_payload(env.cfg.image, other)
    digest = env.client.put_blob(env.cfg.image, payload)
    write_sig_manifest(env, [signatures.Layer(digest, len(payload), signatures.sign(key, payload))])
    assert reason_of(env) == "wrong-digest"


def test_tampered_signature_bytes_detected(env: Env) -> None:
    sign_image(env.cfg, env.tag, None, passphrase=PASS, client=env.client)
    (layer,) = signatures.parse_manifest(json.dumps(sig_manifest(env)).encode())
    raw = bytearray(base64.b64decode(layer.signature))
    raw[-1] ^= 0x01
    bad = base64.b64encode(bytes(raw)).decode()
    write_sig_manifest(env, [signatures.Layer(layer.digest, layer.size, bad)])
    assert reason_of(env) == "wrong-key"


def test_repushed_tag_is_tag_drift(env: Env) -> None:
    sign_image(env.cfg, env.tag, None, passphrase=PASS, client=env.client)
    buildrecords.write(
        buildrecords.BuildRecord(image=env.cfg.image, tag=env.tag, digest=env.digest,
                                 git_sha="0" * 40, created="2024-01-01T00:00:00Z",
                                 builder="test"),
        buildrecords.record_dir(env.cfg))
    assert verify_image(env.cfg, env.tag, None, client=env.client).digest == env.digest
    push(env.other_image, env.cfg.image, env.tag)  # someone re-pushes the tag
    assert reason_of(env) == "tag-drift"
    assert reason_of(env, digest=env.digest) == "tag-drift"
    with pytest.raises(VerificationError, match="tag drift"):
        sign_image(env.cfg, env.tag, None, passphrase=PASS, client=env.client)
    # the originally signed digest still verifies when asked for by digest
    assert verify_image(env.cfg, None, env.digest, client=env.client).tag is None


def test_tag_not_found(env: Env) -> None:
    assert reason_of(env, tag="0000000") == "not-found"
    assert reason_of(env, tag=None, digest="sha256:" + "1" * 64) == "not-found"


def test_cli_errors_are_one_line(env: Env, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg_arg = ["-c", str(tmp_path / "plainsail.yml")]
    for argv in (["verify", env.tag], ["verify", "nosuchtag"],
                 ["verify", env.tag, "--key", str(tmp_path / "missing.pub")],
                 ["sign", "latest:bad"]):
        code = main([*argv, *cfg_arg])
        err = capsys.readouterr().err
        assert code in (1, 2), argv
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err


def test_same_key_other_repository_is_wrong_identity(env: Env, local_images: tuple[str, str],
                                                     registry: Registry) -> None:
    """Service A's signed image pushed as service B, with A's signature copied along."""
    other_repo = registry.repo(f"signtest-b-{uuid.uuid4().hex[:10]}")
    push(local_images[0], other_repo, env.tag)
    other = replace(env.cfg, image=other_repo)
    sign_image(env.cfg, env.tag, None, passphrase=PASS, client=env.client)
    layers = signatures.parse_manifest(json.dumps(sig_manifest(env)).encode())
    for layer in layers:
        env.client.put_blob(other_repo, env.client.get_blob(env.cfg.image, layer.digest))
    ref = ImageRef(other_repo, tag=signatures.signature_tag(env.digest))
    config = signatures.make_config(layers)
    config_digest = env.client.put_blob(ref, config)
    env.client.put_manifest(ref, signatures.make_manifest(config_digest, len(config), layers),
                            signatures.OCI_MANIFEST)
    with pytest.raises(VerificationError) as err:
        verify_image(other, env.tag, None, client=env.client)
    assert err.value.reason == "wrong-identity" and env.cfg.image in str(err.value)
    widened = replace(other, signing=replace(other.signing, repositories=[env.cfg.image]))
    assert verify_image(widened, env.tag, None, client=env.client).identity == env.cfg.image


def test_signing_keeps_foreign_layers_and_skips_them(env: Env) -> None:
    note = b"an attachment, not a signature"
    note_digest = env.client.put_blob(env.cfg.image, note)
    write_sig_manifest(env, [signatures.Layer(note_digest, len(note), "c2ln",
                                              media_type="text/plain")])
    assert reason_of(env) == "unsigned"
    result = sign_image(env.cfg, env.tag, None, passphrase=PASS, client=env.client)
    assert result.added and result.layers == 2
    kinds = [x["mediaType"] for x in sig_manifest(env)["layers"]]
    assert kinds == ["text/plain", signatures.SIMPLESIGNING]
    v = verify_image(env.cfg, env.tag, None, client=env.client)
    assert v.digest == env.digest and "text/plain" in v.skipped[0]


# ---------------------------------------------------------------- cosign 3's bundle format


def test_bundle_format_round_trip_on_a_registry_without_referrers_api(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`signing.format: bundle` on distribution 2.8 (no referrers API): the bundle is a
    referrer manifest listed in the `sha256-<hex>` index; an independent verifier written
    from the specifications accepts all three; `verify` (CLI) accepts the image; signing
    again adds nothing."""
    assert env.client.referrers(env.cfg.image, env.digest) is None  # no referrers API
    cfg = replace(env.cfg, signing=replace(env.cfg.signing, format="bundle"))
    result = sign_image(cfg, env.tag, None, passphrase=PASS, client=env.client)
    assert result.added and result.layers == 1
    index, media_type, _ = env.client.get_manifest(
        ImageRef(env.cfg.image, tag=bundles.referrers_tag(env.digest)))
    assert media_type == bundles.OCI_INDEX
    referrer = json.loads(index)["manifests"][0]["digest"]
    manifest, _, _ = env.client.get_manifest(ImageRef(env.cfg.image, digest=referrer))
    bundlecheck.check_fallback_index(index, manifest)
    bundle_digest, size = bundlecheck.check_referrer(manifest, env.digest)
    bundle = env.client.get_blob(env.cfg.image, bundle_digest, max_size=size)
    public = keys.load_public_key(env.cfg.resolve("cosign.pub"))
    statement = bundlecheck.check_bundle(bundle, public, env.digest)
    assert statement["subject"][0]["name"] == env.cfg.image
    with pytest.raises(RegistryNotFoundError):  # no classic signature was written
        env.client.get_manifest(ImageRef(env.cfg.image,
                                         tag=signatures.signature_tag(env.digest)))
    found = verify_image(env.cfg, env.tag, None, client=env.client)
    assert (found.format, found.identity) == ("bundle", env.cfg.image)
    again = sign_image(cfg, env.tag, None, passphrase=PASS, client=env.client)
    assert not again.added and again.layers == 1
    monkeypatch.chdir(tmp_path)
    assert main(["verify", env.tag, "-c", str(tmp_path / "plainsail.yml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "bundle"


def test_cosign3_bundle_from_elsewhere_and_classic_side_by_side(
        env: Env, tmp_path: Path) -> None:
    """A cosign 3 signature (statement naming the digest only) by a second key, next to a
    classic signature by the first: each key finds its own; a third key finds neither."""
    sign_image(env.cfg, env.tag, None, passphrase=PASS, client=env.client)
    make_key(tmp_path / "second")
    cfg2 = replace(env.cfg, signing=replace(env.cfg.signing, key="second.key",
                                            public_key="second.pub", format="bundle"))
    assert sign_image(cfg2, env.tag, None, passphrase=PASS, client=env.client).added
    assert verify_image(env.cfg, env.tag, None, client=env.client).format == "classic"
    found = verify_image(cfg2, env.tag, None, client=env.client)
    assert found.format == "bundle"
    make_key(tmp_path / "third")
    assert reason_of(env, public_key=str(tmp_path / "third.pub")) == "wrong-key"


def test_keyless_cosign3_bundle_on_a_real_registry(env: Env, tmp_path: Path) -> None:
    """A keyless cosign 3 signature (private Sigstore: Fulcio-like CA, Rekor and CT keys)
    attached on distribution 2.8 through the referrers tag schema: verified keyless;
    another workflow's identity is wrong-identity."""
    from plainsail.config.model import KeylessConfig
    from plainsail.supply.signing import attach_bundle
    from tests.support.sigstore import GITHUB, WORKFLOW, Sigstore

    store = Sigstore()
    store.trusted_root(tmp_path / "root.json")
    attach_bundle(env.client, env.cfg.image, env.digest,
                  store.sign_bundle(bundles.make_statement(env.digest)))

    def keyless(identity: str) -> Config:
        return replace(env.cfg, signing=replace(env.cfg.signing, public_key=None,
                                                keyless=KeylessConfig(
                                                    issuer=GITHUB, trusted_root="root.json",
                                                    identity=identity)))
    found = verify_image(keyless(WORKFLOW), env.tag, None, client=env.client)
    assert (found.format, found.signer, found.inclusion_proof) == ("bundle", WORKFLOW, True)
    with pytest.raises(VerificationError) as err:
        verify_image(keyless(WORKFLOW.replace("main", "feature")), env.tag, None,
                     client=env.client)
    assert err.value.reason == "wrong-identity"
