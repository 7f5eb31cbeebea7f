"""Copy one image, and its cosign signature, from one registry to another.

Used by `registry: {mode: host}`: from the deployer's loopback registry to a host's, through
a port forwarded over SSH. Blobs the destination already has (asked with a HEAD request)
are not sent again, so a repeat deploy sends only the layers that changed; a blob is
streamed through a temporary file, its digest checked on the way. Manifests are stored by
digest, then under the tag, so the destination answers a tag lookup (the tag-drift check)
as the source does. An index (multi-platform image) is copied with every image it lists.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from plainsail.errors import RegistryError, RegistryNotFoundError
from plainsail.inputs import loads_json
from plainsail.progress import NULL, Progress
from plainsail.supply.images import DIGEST_RE, ImageRef
from plainsail.supply.registry import INDEX_TYPES, RegistryClient
from plainsail.supply.signatures import signature_tag

MAX_LAYER = 64 * 1024 * 1024 * 1024  # a descriptor claiming more is not an image layer


@dataclass
class CopyStats:
    """What a copy did: blobs sent and bytes, blobs the destination had, manifests stored,
    and whether a signature travelled along."""

    blobs_sent: int = 0
    bytes_sent: int = 0
    blobs_present: int = 0
    manifests: int = 0
    signature: bool = False
    progress: Progress = field(default=NULL, repr=False, compare=False)
    key: str = field(default="send", repr=False, compare=False)

    def summary(self) -> str:
        return (f"{self.blobs_sent} blob(s) sent ({_human(self.bytes_sent)}), "
                f"{self.blobs_present} already there, {self.manifests} manifest(s)"
                + (", signature included" if self.signature else ", no signature found"))


def copy_image(src: RegistryClient, dst: RegistryClient, repository: str, tag: str | None,
               digest: str, *, deadline: float, progress: Progress = NULL,
               key: str = "send") -> CopyStats:
    """Copy `repository@digest` (stored under `tag` too) and its `.sig` manifest from `src`
    to `dst`, within `deadline` seconds. Both clients address the same repository path.
    Each blob is reported to `progress` under `key` before and after it travels."""
    stats = CopyStats(progress=progress, key=key)
    until = time.monotonic() + deadline
    data, media_type = _copy_manifest(src, dst, repository, digest, stats, until)
    if tag:
        dst.put_manifest(ImageRef(repository, tag=tag), data, media_type)
    sig = ImageRef(repository, tag=signature_tag(digest))
    try:
        data, media_type, _ = src.get_manifest(sig)
    except RegistryNotFoundError:
        return stats
    _copy_blobs(src, dst, repository, loads_json(data), stats, until)
    dst.put_manifest(sig, data, media_type)
    stats.manifests += 1
    stats.signature = True
    return stats


def _copy_manifest(src: RegistryClient, dst: RegistryClient, repository: str, digest: str,
                   stats: CopyStats, until: float) -> tuple[bytes, str]:
    """Copy one manifest (an index with its children) and its blobs; (bytes, media type)."""
    ref = ImageRef(repository, digest=digest)
    data, media_type, _ = src.get_manifest(ref)
    manifest = loads_json(data)
    if media_type in INDEX_TYPES or "manifests" in manifest:
        for child in manifest.get("manifests") or []:
            child_digest = child.get("digest", "") if isinstance(child, dict) else ""
            if not DIGEST_RE.fullmatch(child_digest):
                raise RegistryError(f"the index {ref} lists a manifest without a digest")
            _copy_manifest(src, dst, repository, child_digest, stats, until)
    else:
        _copy_blobs(src, dst, repository, manifest, stats, until)
    dst.put_manifest(ref, data, media_type)
    stats.manifests += 1
    return data, media_type


def _copy_blobs(src: RegistryClient, dst: RegistryClient, repository: str,
                manifest: dict[str, Any], stats: CopyStats, until: float) -> None:
    descriptors = [manifest.get("config"), *(manifest.get("layers") or [])]
    for d in descriptors:
        if d is None:
            continue
        digest = d.get("digest", "") if isinstance(d, dict) else ""
        size = d.get("size") if isinstance(d, dict) else None
        if not DIGEST_RE.fullmatch(digest) or not isinstance(size, int) or not (
                0 <= size <= MAX_LAYER):
            raise RegistryError(f"a manifest of {repository} has a malformed blob descriptor "
                                f"({str(d)[:120]}); refusing to copy it")
        if time.monotonic() > until:
            raise RegistryError(f"copying {repository} took too long; gave up before {digest}")
        if dst.has_blob(repository, digest):
            stats.blobs_present += 1
            continue
        stats.progress.update(stats.key, f"{stats.blobs_sent} blob(s) sent "
                              f"({_human(stats.bytes_sent)}); sending {digest[7:19]} "
                              f"({_human(size)})")
        with tempfile.TemporaryFile(prefix="plainsail-blob-") as tmp:
            src.fetch_blob_to(repository, digest, tmp, size=size)
            tmp.flush()
            dst.push_blob_file(repository, digest, tmp, size)
        stats.blobs_sent += 1
        stats.bytes_sent += size
        stats.progress.update(stats.key, f"{stats.blobs_sent} blob(s) sent "
                              f"({_human(stats.bytes_sent)})")


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
