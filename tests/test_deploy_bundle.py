"""`plainsail deploy` of an image signed in cosign 3's bundle format only (a Sigstore bundle
attached as an OCI referrer, on a registry without the referrers API): the deploy stage
finds and verifies it like a `.sig` signature, and refuses it under another key."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from plainsail.secret import Secret
from plainsail.supply import keys
from tests.support.cli import plainsail
from tests.support.deploy_env import DeployDir

PASS = "bundle-test-passphrase"


def _key(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path.with_suffix(".key").write_bytes(keys.encrypt_private_key(key, Secret(PASS)))
    path.with_suffix(".pub").write_bytes(keys.public_pem(key.public_key()))


def test_deploy_verifies_a_bundle_signature(deploy_dir: DeployDir, tmp_path: Path) -> None:
    d = deploy_dir
    signer = tmp_path / "signer"
    signer.mkdir()
    _key(signer / "ci")
    (signer / "plainsail.yml").write_text(
        f"service: {d.service}\nimage: {d.builds.image}\n"
        "signing:\n  key: ci.key\n  format: bundle\n")
    built = d.builds.versions["v1"]
    r = plainsail("sign", built.digest, cwd=signer, env={"COSIGN_PASSWORD": PASS})
    assert r.code == 0, r.text
    d.config()
    yml = d.path / "plainsail.yml"
    classic = yml.read_text()
    yml.write_text(classic.replace(str(d.builds.public_key), str(signer / "ci.pub")))
    ok = d.run("deploy", d.builds.ref("v1"))
    assert ok.code == 0, ok.text
    assert '"version": "1"' in d.get()[1]
    assert str(signer / "ci.pub") in str(d.host_records()[-1].get("signed_by"))
    # Another key accepts neither v1's bundle nor its classic signature by the build key.
    _key(signer / "other")
    yml.write_text(classic.replace(str(d.builds.public_key), str(signer / "other.pub")))
    refused = d.run("deploy", d.builds.ref("v1"), "--force")
    assert refused.code != 0
    assert "signed by another key" in refused.text
