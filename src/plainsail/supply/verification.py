"""Verify an image before it is deployed: signed by our key (or, keyless, by the
configured CI identity), for exactly this digest and this repository, and its tag has not
moved since the build.

`verify_image` is what `plainsail verify` and the deploy stage call. It fails with a
VerificationError whose `reason` (and the first words of its message) say which case it
was: unsigned, signed by another key, signature names another digest, signature made for
another repository or tag (wrong-identity), a valid signature over something that is not a
cosign payload (not-cosign), a keyless signature that fails a check
(untrusted), tag drift, or the tag (or digest) is not in the registry. On success the
VerifiedImage says which signed identity matched and who signed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from plainsail.config.model import Config
from plainsail.errors import (
    RegistryError,
    RegistryNotFoundError,
    SigningKeyError,
    VerificationError,
)
from plainsail.supply import buildrecords, bundles
from plainsail.supply.bundleverify import Found, classify, judge_key, judge_keyless
from plainsail.supply.images import ImageRef
from plainsail.supply.registry import RegistryClient
from plainsail.supply.signatures import (
    Candidate,
    IdentityPolicy,
    PayloadError,
    SignatureManifest,
    judge,
    parse_payload,
    read_manifest,
    signature_tag,
)


@dataclass(frozen=True)
class VerifiedImage:
    """What was verified. `identity` is the docker-reference the accepted signature names;
    `signer` is the public key file, or for a keyless signature the certificate identity
    (with `issuer`); `skipped` lists signature layers that were malformed or not
    signatures at all. For a keyless signature, `unchecked` names checks that the trusted
    root did not allow (certificate transparency when it lists no CT logs), and
    `inclusion_proof` says whether the Rekor entry's inclusion proof was verified (cosign's
    bundle annotation carries the signed entry timestamp only). `format` says which kind of
    signature was accepted: a `.sig` layer ("classic") or a Sigstore bundle attached as an
    OCI referrer ("bundle", cosign 3's format)."""

    repository: str
    tag: str | None
    digest: str
    key_path: str  # "" for a keyless signature
    identity: str = ""
    signer: str = ""
    issuer: str = ""
    skipped: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    inclusion_proof: bool = False
    format: str = "classic"  # "classic" (a .sig tag layer) or "bundle" (a Sigstore bundle)

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.digest}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "pinned": self.pinned}


def pin_digest(cfg: Config, client: RegistryClient, tag: str | None, digest: str | None) -> str:
    """The digest to sign or deploy: the tag's digest now, checked against the build record
    and against `digest` when given (tag drift), or `digest` itself when no tag is given."""
    if tag is None and digest is None:
        raise ValueError("a tag or a digest is needed")
    if tag is None:
        assert digest is not None
        if client.resolve(ImageRef(cfg.image, digest=digest)) is None:
            raise VerificationError(
                "not-found", f"not found: {cfg.image}@{digest} is not in the registry"
            )
        return digest
    current = client.resolve(ImageRef(cfg.image, tag=tag))
    if current is None:
        raise VerificationError(
            "not-found", f"tag not found: {cfg.image}:{tag} is not in the registry; "
            "was it pushed (plainsail build)?"
        )
    record = buildrecords.find(cfg, tag)
    expected = digest or (record.digest if record else None)
    if expected and expected != current:
        source = "was given" if digest else "the build record says"
        raise VerificationError(
            "tag-drift", f"tag drift: {cfg.image}:{tag} now points to {current}, but "
            f"{expected} {source}; the tag was pushed again since the build. Refusing it; "
            "find out who re-pushed it, and deploy a digest you have checked"
        )
    return current


def fetch_signatures(
    client: RegistryClient, repository: str, digest: str
) -> tuple[SignatureManifest | None, list[Candidate]]:
    """`digest`'s `.sig` manifest (None if unsigned) and the payload of each well-formed
    signature layer. A layer whose blob is missing is added to the manifest's `skipped`."""
    sig_ref = ImageRef(repository, tag=signature_tag(digest))
    try:
        data, _, _ = client.get_manifest(sig_ref)
    except RegistryNotFoundError:
        return None, []
    try:
        manifest = read_manifest(data)
    except PayloadError as exc:
        return SignatureManifest([], [str(exc)], []), []
    candidates = []
    for i, layer in enumerate(manifest.layers, 1):
        try:
            payload = client.get_blob(sig_ref, layer.digest, max_size=layer.size)
        except RegistryNotFoundError:
            manifest.skipped.append(f"signature {i}: its payload blob is not in the registry")
            continue
        except RegistryError as exc:  # e.g. larger than its descriptor says
            manifest.skipped.append(f"signature {i}: its payload cannot be read ({exc})")
            continue
        candidates.append(Candidate(payload, layer.signature, dict(layer.annotations),
                                    f"signature {i}"))
    return manifest, candidates


@dataclass(frozen=True)
class BundleSet:
    """The signature bundles found as referrers of a digest, and why others were passed
    over. `api` says how they were listed: "referrers" (the registry's referrers API),
    "tag" (the `sha256-<hex>` referrers tag schema), or "" (neither lists any)."""

    found: list[Found]
    skipped: list[str]
    api: str = ""


def fetch_bundles(client: RegistryClient, repository: str, digest: str) -> BundleSet:
    """The Sigstore bundles attached to `digest` as OCI referrers: through the referrers
    API, or for a registry without it, the referrers tag schema's index `sha256-<hex>`.
    Each referrer is judged alone: one that is malformed, not a bundle, names another
    subject, or is not a signature is skipped and said why."""
    index = client.referrers(repository, digest)
    api = "referrers"
    if index is None:
        api = "tag"
        try:
            index, media_type, _ = client.get_manifest(
                ImageRef(repository, tag=bundles.referrers_tag(digest)))
        except RegistryNotFoundError:
            return BundleSet([], [], "")
        if media_type != bundles.OCI_INDEX:
            return BundleSet([], [f"{bundles.referrers_tag(digest)} is a {media_type}, "
                                  "not a referrers index"], api)
    try:
        digests, skipped = bundles.bundle_referrers(index)
    except bundles.BundleError as exc:
        return BundleSet([], [f"referrers index: {exc}"], api)
    found: list[Found] = []
    for ref_digest in digests:
        where = f"referrer {ref_digest[:19]}"
        try:
            manifest, _, _ = client.get_manifest(ImageRef(repository, digest=ref_digest))
            layer_digest, size = bundles.bundle_layer(manifest, digest)
            raw = client.get_blob(repository, layer_digest, max_size=size)
            item = classify(where, bundles.parse_bundle(raw))
        except bundles.BundleError as exc:
            skipped.append(f"{where}: {exc}")
            continue
        except RegistryNotFoundError:
            skipped.append(f"{where}: its manifest or bundle is not in the registry")
            continue
        except RegistryError as exc:
            skipped.append(f"{where}: cannot be read ({exc})")
            continue
        if isinstance(item, str):
            skipped.append(item)
        else:
            found.append(item)
    return BundleSet(found, skipped, api)


def public_key_path(cfg: Config, public_key: str | None) -> Path:
    if public_key:
        return Path(public_key)
    if not cfg.signing.public_key:
        raise SigningKeyError(
            "no public key to verify with: set signing.public_key in plainsail.yml or give "
            "--key cosign.pub"
        )
    return cfg.resolve(cfg.signing.public_key)


def verify_image(
    cfg: Config,
    tag: str | None,
    digest: str | None,
    *,
    public_key: str | None = None,
    client: RegistryClient | None = None,
) -> VerifiedImage:
    """Check that `tag`/`digest` of cfg.image carries a valid signature for this digest and
    this repository (or one of `signing.repositories`): by the public key (`public_key`,
    else `signing.public_key`), or keyless as `signing.keyless` says. With both configured,
    either kind of signature is enough.

    With a tag: the tag is resolved in the registry now, and must match `digest` when given
    and the tag's build record when there is one. Raises VerificationError.
    """
    from plainsail.supply.keys import load_public_key

    keyless_cfg = None if public_key else cfg.signing.keyless
    use_key = bool(public_key or cfg.signing.public_key or not keyless_cfg)
    key_path = public_key_path(cfg, public_key) if use_key else None
    key = load_public_key(key_path) if key_path else None
    root = None
    if keyless_cfg is not None:
        from plainsail.supply.keyless import load_trusted_root

        root = load_trusted_root(cfg.resolve(keyless_cfg.trusted_root))
    own = client is None
    client = client or RegistryClient.for_config(cfg)
    try:
        pinned = pin_digest(cfg, client, tag, digest)
        manifest, candidates = fetch_signatures(client, cfg.image, pinned)
        attached = fetch_bundles(client, cfg.image, pinned)
    finally:
        if own:
            client.close()
    skipped = (manifest.skipped if manifest else []) + attached.skipped
    what = f"{cfg.image}@{pinned}" + (f" (tag {tag})" if tag else "")
    if not candidates and not attached.found:
        if manifest is None:
            where = f"no {signature_tag(pinned)} tag"
        else:
            where = f"{signature_tag(pinned)} holds no signature layer: " + "; ".join(
                manifest.skipped)
        where += ", and no signature bundle among its OCI referrers"
        if attached.skipped:
            where += ": " + "; ".join(attached.skipped)
        raise VerificationError(
            "unsigned", f"unsigned: {what} has no signature in the registry ({where}); "
            "sign it with plainsail sign"
        )
    identity = IdentityPolicy.for_image(cfg.image, cfg.signing.repositories, tag)
    failures: list[tuple[str, str]] = []
    if key is not None and key_path is not None:
        if candidates:
            payload, verdict = judge(key, pinned, candidates, identity)
            if payload is not None:
                return VerifiedImage(cfg.image, tag, pinned, str(key_path), payload.identity,
                                     str(key_path), "", skipped)
            assert verdict is not None
            failures.append((verdict[0], f"{verdict[1]}: {what}, key {key_path}"))
        if attached.found:
            accepted, verdict = judge_key(key, pinned, attached.found, identity)
            if accepted is not None:
                return VerifiedImage(cfg.image, tag, pinned, str(key_path),
                                     accepted.identity, str(key_path), "", skipped,
                                     accepted.unchecked, format="bundle")
            assert verdict is not None
            failures.append((verdict[0], f"{verdict[1]}: {what}, key {key_path}"))
    if keyless_cfg is not None and root is not None:
        if candidates:
            found = _verify_keyless(keyless_cfg, root, pinned, candidates, identity)
            if isinstance(found, VerifiedImage):
                return VerifiedImage(cfg.image, tag, pinned, "", found.identity, found.signer,
                                     found.issuer, skipped, found.unchecked,
                                     found.inclusion_proof)
            failures.append((found[0], f"{found[1]}: {what}"))
        if attached.found:
            from plainsail.supply.keyless import KeylessPolicy

            policy = KeylessPolicy(keyless_cfg.issuer, keyless_cfg.identity,
                                   keyless_cfg.identity_regexp)
            accepted, verdict = judge_keyless(root, policy, pinned, attached.found, identity)
            if accepted is not None:
                return VerifiedImage(cfg.image, tag, pinned, "", accepted.identity,
                                     accepted.signer, accepted.issuer, skipped,
                                     accepted.unchecked, accepted.inclusion_proof,
                                     format="bundle")
            assert verdict is not None
            failures.append((verdict[0], f"keyless verification failed: {verdict[1]}: "
                             f"{what}"))
    order = ("wrong-identity", "wrong-digest", "not-cosign", "untrusted", "wrong-key")
    failures.sort(key=lambda f: order.index(f[0]) if f[0] in order else len(order))
    reason = failures[0][0]
    detail = "; and ".join(f[1] for f in failures)
    if skipped:
        detail += f" (skipped: {'; '.join(skipped)})"
    raise VerificationError(reason, f"{detail}; refusing it")


def _verify_keyless(
    keyless_cfg: Any, root: Any, digest: str, candidates: list[Candidate],
    identity: IdentityPolicy,
) -> VerifiedImage | tuple[str, str]:
    """The signer of the first keyless signature that passes every check, or
    (reason, what failed for each signature)."""
    from plainsail.supply.keyless import KeylessFailure, KeylessPolicy, verify_candidate

    policy = KeylessPolicy(keyless_cfg.issuer, keyless_cfg.identity,
                           keyless_cfg.identity_regexp)
    problems: list[tuple[str, str]] = []
    for c in candidates:
        try:
            signer = verify_candidate(c, root, policy)
        except KeylessFailure as exc:
            reason = "wrong-identity" if exc.check == "identity" else "untrusted"
            problems.append((reason, f"{c.where}: {exc}"))
            continue
        try:
            payload = parse_payload(c.payload)
        except PayloadError as exc:
            problems.append(("not-cosign", f"{c.where}: not a cosign signature: the "
                             f"signature is valid, but what it signs is not a cosign image "
                             f"signature payload ({exc})"))
            continue
        if payload.digest != digest:
            problems.append(("wrong-digest", f"{c.where}: signature names another digest "
                             f"({payload.digest}), not {digest}"))
            continue
        problem = identity.problem(payload.identity, digest)
        if problem:
            problems.append(("wrong-identity", f"{c.where}: wrong identity: the signature "
                             f"was {problem}"))
            continue
        return VerifiedImage("", None, digest, "", payload.identity, signer.identity,
                             signer.issuer, [], signer.unchecked, signer.inclusion_proof)
    order = ("wrong-identity", "wrong-digest", "not-cosign", "untrusted")
    problems.sort(key=lambda p: order.index(p[0]))
    return problems[0][0], "keyless verification failed: " + "; ".join(p[1] for p in problems)
