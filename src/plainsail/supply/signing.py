"""Sign an image's digest and store the signature in the registry, as cosign does.

The signature goes into the image's own repository under `sha256-<hex>.sig`, appended to
the signatures already there. Like cosign's duplicate detection, a layer whose payload is
the same and which verifies under the same key counts as the same signature: signing twice
with one key leaves one layer.

With `signing.format: bundle` it writes cosign 3's format instead: a Sigstore bundle
attached as an OCI referrer of the image (see plainsail.supply.bundles).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plainsail.config.model import Config
from plainsail.errors import RegistryNotFoundError, SigningKeyError
from plainsail.secret import Secret
from plainsail.supply import bundles
from plainsail.supply.images import ImageRef
from plainsail.supply.registry import RegistryClient, sha256_digest
from plainsail.supply.signatures import (
    OCI_MANIFEST,
    SIGNATURE_ANNOTATION,
    Layer,
    identity_of,
    make_config,
    make_manifest,
    make_payload,
    sign,
    signature_tag,
    verify,
)
from plainsail.supply.verification import fetch_bundles, fetch_signatures, pin_digest


@dataclass(frozen=True)
class SignResult:
    repository: str
    tag: str | None
    digest: str
    signature_ref: str  # REPO:sha256-<hex>.sig, or REPO@<referrer manifest digest>
    layers: int  # signatures in the manifest now (bundle format: signature bundles)
    added: bool  # False: this key had already signed this digest

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def private_key_path(cfg: Config, key: str | None) -> Path:
    if key:
        return Path(key)
    if not cfg.signing.key:
        raise SigningKeyError(
            "no signing key: set signing.key in plainsail.yml or give --key cosign.key "
            "(create one with plainsail keygen)"
        )
    return cfg.resolve(cfg.signing.key)


def sign_image(
    cfg: Config,
    tag: str | None,
    digest: str | None,
    *,
    key: str | None = None,
    passphrase: Secret | None = None,
    client: RegistryClient | None = None,
) -> SignResult:
    """Resolve `tag` (or take `digest`), sign the digest, store the signature."""
    from plainsail.supply.keys import load_private_key

    private = load_private_key(private_key_path(cfg, key), passphrase)
    public = private.public_key()
    own = client is None
    client = client or RegistryClient.for_config(cfg)
    try:
        pinned = pin_digest(cfg, client, tag, digest)
        if cfg.signing.format == "bundle":
            return _sign_bundle(cfg, client, tag, pinned, private)
        image = ImageRef(cfg.image)
        payload = make_payload(identity_of(image), pinned)
        sig_ref = ImageRef(cfg.image, tag=signature_tag(pinned))
        found, candidates = fetch_signatures(client, cfg.image, pinned)
        layers: list[Layer | dict[str, Any]] = [*found.descriptors] if found else []
        result = SignResult(cfg.image, tag, pinned, str(sig_ref), len(layers), False)
        for c in candidates:
            if c.payload == payload and verify(public, c.payload, c.signature):
                return result
        signature = sign(private, payload)
        payload_digest = client.put_blob(sig_ref, payload)
        new = Layer(payload_digest, len(payload), signature,
                    annotations={SIGNATURE_ANNOTATION: signature})
        all_layers = [*layers, new]  # layers not read as signatures are kept as found
        config = make_config(all_layers)
        config_digest = client.put_blob(sig_ref, config)
        manifest = make_manifest(config_digest, len(config), all_layers)
        client.put_manifest(sig_ref, manifest, OCI_MANIFEST)
        return SignResult(cfg.image, tag, pinned, str(sig_ref), len(all_layers), True)
    finally:
        if own:
            client.close()


def _sign_bundle(
    cfg: Config, client: RegistryClient, tag: str | None, pinned: str,
    private: ec.EllipticCurvePrivateKey,
) -> SignResult:
    """Attach a Sigstore bundle, as cosign 3 does (see plainsail.supply.bundles): a DSSE
    in-toto statement with cosign's signing predicate, the subject named by digest and,
    beyond what cosign writes, by repository. On a registry without the referrers API the
    referrers tag schema's index `sha256-<hex>` lists it. Signing again with the same key
    adds nothing."""
    from plainsail.supply.bundleverify import judge_key

    public = private.public_key()
    found = fetch_bundles(client, cfg.image, pinned)
    count = len(found.found)
    if found.found and judge_key(public, pinned, found.found, None)[0] is not None:
        return SignResult(cfg.image, tag, pinned, f"{cfg.image}@{pinned} (referrers)",
                          count, False)
    statement = bundles.make_statement(pinned, identity_of(ImageRef(cfg.image)))
    signature = private.sign(bundles.pae(bundles.INTOTO, statement), ec.ECDSA(hashes.SHA256()))
    public_der = public.public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    bundle = bundles.make_key_bundle(statement, signature, public_der)
    manifest_digest = attach_bundle(client, cfg.image, pinned, bundle)
    return SignResult(cfg.image, tag, pinned, f"{cfg.image}@{manifest_digest}", count + 1,
                      True)


def attach_bundle(client: RegistryClient, repository: str, digest: str, bundle: bytes) -> str:
    """Attach a Sigstore bundle to image `repository@digest` as cosign 3 does
    (WriteAttestationNewBundleFormat): the bundle blob, the empty config, a referrer
    manifest whose subject is the image, stored by its digest; and, on a registry without
    the referrers API, that manifest's descriptor added to the `sha256-<hex>` index. The
    referrer manifest's digest."""
    image, media_type, _ = client.get_manifest(ImageRef(repository, digest=digest))
    client.put_blob(repository, bundles.EMPTY_CONFIG)
    bundle_digest = client.put_blob(repository, bundle)
    manifest = bundles.make_referrer_manifest(
        {"mediaType": media_type, "size": len(image), "digest": digest}, bundle_digest,
        len(bundle))
    manifest_digest = client.put_manifest(
        ImageRef(repository, digest=sha256_digest(manifest)), manifest, bundles.OCI_MANIFEST)
    if client.referrers(repository, digest) is None:
        index_ref = ImageRef(repository, tag=bundles.referrers_tag(digest))
        try:
            existing: bytes | None = client.get_manifest(index_ref)[0]
        except RegistryNotFoundError:
            existing = None
        client.put_manifest(index_ref, bundles.index_with(
            existing, bundles.referrer_descriptor(manifest)), bundles.OCI_INDEX)
    return manifest_digest
