"""Verdicts on the Sigstore bundles attached to an image (cosign 3's signatures), with the
same rules as `.sig` signatures (plainsail.supply.signatures): signed by the key (or,
keyless, by the configured identity, every check of plainsail.supply.keyless), for this
digest, and, when the statement names a repository, for a repository accepted.

Only DSSE envelopes of in-toto statements with cosign's signing predicate
(`https://sigstore.dev/cosign/sign/v1`) count as signatures; `classify` passes over the
rest and says why (a message-signature bundle, which cosign 3 does not accept for an
image either; an attestation of another predicate, such as build provenance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plainsail.supply.bundles import (
    INTOTO,
    SIGN_PREDICATE,
    Bundle,
    BundleError,
    Statement,
    parse_statement,
)
from plainsail.supply.signatures import IdentityPolicy

NO_REPOSITORY = ("repository: the bundle's statement names no repository (cosign 3 signs "
                 "the digest only), so signing.repositories was not checked")


@dataclass(frozen=True)
class Found:
    """A signature bundle found for an image: where (for messages), the bundle, and its
    statement (read before any signature check, to classify it only)."""

    where: str
    bundle: Bundle
    statement: Statement


@dataclass(frozen=True)
class Accepted:
    identity: str  # the repository the statement names, or "" when it names none
    signer: str = ""
    issuer: str = ""
    unchecked: list[str] = field(default_factory=list)
    inclusion_proof: bool = False


def classify(where: str, bundle: Bundle) -> Found | str:
    """A Found when `bundle` is a signature as cosign 3 makes it, else why it is not."""
    if not bundle.is_dsse:
        return (f"{where}: a message-signature bundle, which signs no image (cosign 3 "
                "signs a DSSE statement)")
    if bundle.payload_type != INTOTO:
        return f"{where}: DSSE payload type {str(bundle.payload_type)[:80]!r} is not {INTOTO}"
    assert bundle.payload is not None
    try:
        statement = parse_statement(bundle.payload)
    except BundleError as exc:
        return f"{where}: {exc}"
    if statement.predicate_type != SIGN_PREDICATE:
        return (f"{where}: an attestation ({statement.predicate_type[:80]}), not a "
                f"signature ({SIGN_PREDICATE})")
    return Found(where, bundle, statement)


def _subject(f: Found, digest: str, identity: IdentityPolicy | None
             ) -> tuple[Accepted | None, tuple[str, str] | None]:
    """The digest and repository checks, once the signature verified."""
    if not f.statement.names_digest(digest):
        return None, ("wrong-digest", f"{f.where}: the statement names "
                      f"{', '.join(f.statement.digests()) or 'no digest'}, not {digest}")
    names = f.statement.names_for(digest)
    if not names:
        return Accepted("", unchecked=[NO_REPOSITORY]), None
    problems = []
    for name in names:
        problem = identity.problem(name, digest) if identity else None
        if problem is None:
            return Accepted(name), None
        problems.append(problem)
    return None, ("wrong-identity", f"{f.where}: wrong identity: the signature was "
                  f"{'; '.join(sorted(set(problems)))} (list other repositories in "
                  "signing.repositories to accept them)")


_ORDER = ("wrong-identity", "wrong-digest", "untrusted", "wrong-key")


def _worst(problems: list[tuple[str, str]]) -> tuple[str, str]:
    problems.sort(key=lambda p: _ORDER.index(p[0]) if p[0] in _ORDER else len(_ORDER))
    return problems[0][0], "; ".join(p[1] for p in problems)


def judge_key(key: Any, digest: str, found: list[Found], identity: IdentityPolicy | None
              ) -> tuple[Accepted | None, tuple[str, str] | None]:
    """(Accepted, None) when a bundle is `key`'s signature for `digest` (and a repository
    `identity` accepts), else (None, (reason, detail)) as signatures.check says."""
    from cryptography.exceptions import InvalidSignature

    from plainsail.supply.trustedroot import verify_signature

    if not found:
        return None, ("unsigned", "no signature bundle found")
    problems: list[tuple[str, str]] = []
    for f in found:
        try:
            verify_signature(key, f.bundle.signature, f.bundle.signed_bytes())
        except (InvalidSignature, ValueError, TypeError):
            problems.append(("wrong-key", f"{f.where}: does not verify with this public "
                             "key (or the statement was altered)"))
            continue
        accepted, problem = _subject(f, digest, identity)
        if accepted is not None:
            return accepted, None
        assert problem is not None
        problems.append(problem)
    return None, _worst(problems)


def judge_keyless(root: Any, policy: Any, digest: str, found: list[Found],
                  identity: IdentityPolicy | None
                  ) -> tuple[Accepted | None, tuple[str, str] | None]:
    """As judge_key, for keyless bundles checked against `root` and `policy`."""
    from plainsail.supply.keyless import KeylessFailure, verify_bundle

    if not found:
        return None, ("unsigned", "no signature bundle found")
    problems: list[tuple[str, str]] = []
    for f in found:
        try:
            signer = verify_bundle(f.bundle, root, policy)
        except KeylessFailure as exc:
            reason = "wrong-identity" if exc.check == "identity" else "untrusted"
            problems.append((reason, f"{f.where}: {exc}"))
            continue
        accepted, problem = _subject(f, digest, identity)
        if accepted is not None:
            return Accepted(accepted.identity, signer.identity, signer.issuer,
                            [*signer.unchecked, *accepted.unchecked],
                            signer.inclusion_proof), None
        assert problem is not None
        problems.append(problem)
    return None, _worst(problems)
