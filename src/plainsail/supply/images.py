"""Image references: repository, tag and digest, and the rules for tags plainsail accepts."""

from __future__ import annotations

import re
from dataclasses import dataclass

from plainsail.config.model import registry_host_of

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# A content-derived tag: a short or full git SHA, optionally with the -dirty-<random> suffix.
SHA_TAG_RE = re.compile(r"[0-9a-f]{7,40}(?:-dirty-[0-9a-z]{6,12})?")


@dataclass(frozen=True)
class ImageRef:
    """repository (as in config `image`) plus an optional tag and digest."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def registry(self) -> str:
        return registry_host_of(self.repository)

    @property
    def path(self) -> str:
        """The repository path inside its registry (docker.io gets its library/ prefix)."""
        host = self.registry
        if self.repository.startswith(host + "/"):
            path = self.repository[len(host) + 1 :]
        else:
            path = self.repository
        if host == "docker.io" and "/" not in path:
            path = f"library/{path}"
        return path

    def __str__(self) -> str:
        s = self.repository
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    @property
    def pinned(self) -> str:
        """`repository@digest`: what hosts pull and run, never a tag."""
        if not self.digest:
            raise ValueError(f"{self} has no digest")
        return f"{self.repository}@{self.digest}"


def mutable_tag_problem(tag: str) -> str | None:
    """Explain why `tag` is refused, or return None when it is content-derived."""
    if SHA_TAG_RE.fullmatch(tag):
        return None
    why = (
        "a mutable tag makes rollback and audit impossible: you cannot know what it "
        "contained yesterday"
    )
    if tag == "latest":
        return (f"refusing the tag 'latest': {why}. Deploy the git SHA tag that "
                "plainsail build printed")
    return (
        f"refusing the tag {tag!r}: plainsail only uses tags derived from the git commit "
        f"(its short SHA); {why}"
    )


def split_ref(text: str) -> tuple[str | None, str | None]:
    """Split `TAG`, `TAG@DIGEST` or `DIGEST` into (tag, digest); raise ValueError if malformed."""
    tag, sep, digest = text.partition("@")
    if not sep and DIGEST_RE.fullmatch(text):
        return None, text
    if sep and not DIGEST_RE.fullmatch(digest):
        raise ValueError(f"{digest!r} is not a digest; expected sha256: and 64 hex characters")
    if ":" in tag or "/" in tag:
        raise ValueError(
            f"{text!r}: give only the tag (e.g. a3f1b2c3), not the repository; the "
            "repository comes from plainsail.yml"
        )
    if tag and not TAG_RE.fullmatch(tag):
        raise ValueError(f"{tag!r} is not a valid tag")
    return tag or None, digest or None
