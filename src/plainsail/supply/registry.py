"""A small client for the OCI distribution API: manifests, blobs, tags, with auth.

Auth follows what Docker does: HTTP basic when the registry asks for it, and the bearer
token challenge (`WWW-Authenticate: Bearer realm=...,service=...,scope=...`) that public
registries use: fetch a token from the realm with the basic credentials, cache it per
scope, retry. Plain http:// is used only for loopback registries, https:// otherwise,
unless the config says `registry.insecure: true` (as Docker's `insecure-registries`): then
plain http:// is used for that registry, with a warning each time a client is made.

Credentials stay with the registry: the basic credentials and its bearer tokens go only to
the registry's own origin (scheme, host and port), never to an upload `Location`, a `Link`
or a redirect elsewhere. The token service may be another host (Docker Hub's is
auth.docker.io) and gets the basic credentials, but only over https:// or on loopback.
Redirects are followed here, not by httpx, so that each hop is checked against that rule.

Every response body is streamed and capped (manifests 4 MiB, blobs 16 MiB unless the caller
allows more, token responses and anything else 1 MiB), and every request, redirects and body
included, must be done within `deadline` seconds: a registry that sends without end, or a
byte at a time, is cut off with an error saying so, not read into memory until it runs out.

Every failure becomes a RegistryError whose one line says what to do; credentials never
appear in a message or a log line (only the user name does).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import httpx

from plainsail.errors import RegistryError, RegistryNotFoundError
from plainsail.inputs import InputError, loads_json
from plainsail.secret import Secret
from plainsail.supply.images import DIGEST_RE, ImageRef

if TYPE_CHECKING:
    from plainsail.config.model import Config

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
_ACCEPT = ", ".join(MANIFEST_TYPES)
_MiB = 1024 * 1024
_MAX_MANIFEST = 4 * _MiB  # the distribution spec's suggested limit
_MAX_BLOB = 16 * _MiB  # what this client fetches: signature payloads and image configs
_MAX_TAGS = 4 * _MiB
_MAX_SMALL = 1 * _MiB  # token responses, error bodies, anything else
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^\s,]+)')
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 10

Origin = tuple[str, str, int | None]


class Sink(Protocol):
    """Where a streamed body goes (a binary file, or something that passes it on)."""

    def write(self, data: bytes, /) -> int: ...


Body = bytes | Iterable[bytes] | None  # a request body: bytes, or chunks streamed from a file
_CHUNK = _MiB


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_loopback(registry: str) -> bool:
    """localhost, 127.0.0.0/8 and [::1] are spoken to over plain HTTP, as Docker does."""
    host = registry
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Reply:
    """A response whose body has been read, within its size limit."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    url: httpx.URL

    def json(self) -> Any:
        return loads_json(self.content)


def origin(url: httpx.URL) -> Origin:
    """(scheme, host, port) of a URL, the unit credentials are scoped to."""
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x",service="y"` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for m in _CHALLENGE_PARAM.finditer(rest):
        key = m.group(1) or m.group(3)
        params[key.lower()] = m.group(2) if m.group(1) else m.group(4)
    return scheme.lower(), params


def insecure_warning(cfg: Config) -> str | None:
    """What `registry.insecure: true` risks, for a registry off this machine (None when
    plainsail talks to it over HTTPS, or on the loopback)."""
    host = cfg.registry_host
    if cfg.host_mode or not (cfg.registry and cfg.registry.insecure) or is_loopback(host):
        return None
    return (f"registry.insecure is true: talking to {host} over plain HTTP; anyone on the "
            "network path can read the credentials and swap what is pulled (the signature "
            "check still guards deploys)")


def docker_credentials(registry: str, config_dir: str | None = None) -> tuple[str, Secret] | None:
    """User name and password for `registry` from Docker's config.json `auths`, if any."""
    folder = config_dir or os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    path = Path(folder) / "config.json"
    try:
        data = loads_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read Docker credentials in {path}: {exc}") from None
    auths = data.get("auths") or {}
    names = [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/"]
    if registry == "docker.io":
        names += ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
    helpers = data.get("credHelpers") or {}
    helper = next((helpers[n] for n in names if n in helpers), None) or data.get("credsStore")
    if helper:
        found = helper_credentials(str(helper), names[0] if registry != "docker.io"
                                   else "https://index.docker.io/v1/")
        if found:
            return found
    for name in names:
        entry = auths.get(name)
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except ValueError:
                raise RegistryError(
                    f"the auth entry for {registry} in {path} is not base64 user:password; "
                    f"run `docker login {registry}` again"
                ) from None
            return user, Secret(password)
        if entry.get("username"):
            return entry["username"], Secret(entry.get("password", ""))
    return None


def helper_credentials(helper: str, server: str) -> tuple[str, Secret] | None:
    """Ask a Docker credential helper (`docker-credential-<helper> get`) for `server`."""
    import shutil
    import subprocess

    program = f"docker-credential-{helper}"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", helper) or not shutil.which(program):
        raise RegistryError(
            f"Docker's config names the credential helper {helper!r}, but {program} is not "
            "on PATH; install it, or set registry.username and registry.password"
        )
    try:
        proc = subprocess.run([program, "get"], input=server, capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError(f"{program} get failed: {exc}") from None
    if proc.returncode != 0:
        if "not found" in (proc.stdout + proc.stderr).lower():
            return None
        raise RegistryError(f"{program} get failed: {proc.stderr.strip()[:200] or proc.returncode}")
    try:
        data = loads_json(proc.stdout)
        return str(data["Username"]), Secret(str(data["Secret"]))
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"{program} get did not answer with Username and Secret") from None


class RegistryClient:
    """Speaks the OCI distribution API to one registry host."""

    def __init__(
        self,
        registry: str,
        username: str | None = None,
        password: Secret | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        deadline: float = 120.0,
        insecure: bool = False,
    ) -> None:
        """`timeout` bounds each connect, read or write; `deadline` a whole request.
        `insecure` speaks plain http:// to a registry that is not on this machine."""
        self.registry = registry
        self.username = username or None
        self._password = password
        api_host = "registry-1.docker.io" if registry == "docker.io" else registry
        self.insecure = insecure
        scheme = "http" if insecure or is_loopback(registry) else "https"
        self.base_url = f"{scheme}://{api_host}"
        self._origin = origin(httpx.URL(self.base_url))
        self.timeout = timeout
        self.deadline = deadline
        # redirects are followed in _request, which decides where credentials may go
        self._http = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False)
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        self._basic = False  # the registry asked for basic auth once: send it up front

    @classmethod
    def for_config(cls, cfg: Config, **kwargs: Any) -> RegistryClient:
        """Credentials from plainsail.yml `registry`, else Docker's config.json, else none.
        With `registry.insecure: true`, plain HTTP (`insecure_warning` says what that
        risks; the CLI tells it). With `registry.mode: host`, plainsail's own registry on
        this machine's loopback (started on demand)."""
        if cfg.host_mode:  # plainsail's own registry on this machine's loopback
            from plainsail.supply.localregistry import address_for

            return cls(address_for(cfg), **kwargs)
        host = cfg.registry_host
        if insecure_warning(cfg):
            kwargs.setdefault("insecure", True)
        if cfg.registry and cfg.registry.username:
            return cls(host, cfg.registry.username, cfg.registry.password, **kwargs)
        found = docker_credentials(host)
        if found:
            return cls(host, found[0], found[1], **kwargs)
        return cls(host, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ manifests

    def resolve(self, ref: ImageRef) -> str | None:
        """The manifest digest `ref`'s tag (or digest) names now, or None if there is none."""
        reference = self._reference(ref)
        resp = self._send("HEAD", ref, f"manifests/{reference}", headers={"Accept": _ACCEPT},
                          ok=(200, 404))
        if resp.status_code == 404:
            return None
        digest: str = resp.headers.get("Docker-Content-Digest", "")
        if DIGEST_RE.fullmatch(digest):
            return digest
        try:
            computed: str = self.get_manifest(ref)[2]
            return computed
        except RegistryNotFoundError:
            return None

    def get_manifest(self, ref: ImageRef) -> tuple[bytes, str, str]:
        """(raw bytes, media type, digest) of the manifest; the digest is checked."""
        reference = self._reference(ref)
        resp = self._send("GET", ref, f"manifests/{reference}", headers={"Accept": _ACCEPT},
                          limit=_MAX_MANIFEST, what="a manifest", subject=str(ref))
        data = resp.content
        digest = sha256_digest(data)
        expected = reference if DIGEST_RE.fullmatch(reference) else None
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:"):
            expected = expected or header
        if expected and expected != digest:
            raise RegistryError(
                f"registry {self.registry} returned a manifest for {ref} whose digest is "
                f"{digest}, not {expected}; the registry or a proxy altered it"
            )
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            declared = loads_json(data).get("mediaType")
        except InputError as exc:
            raise RegistryError(f"the manifest of {ref} is {exc}") from None
        except (ValueError, AttributeError):
            raise RegistryError(f"the manifest of {ref} is not valid JSON") from None
        return data, declared or media_type, digest

    def put_manifest(self, ref: ImageRef, data: bytes, media_type: str) -> str:
        """Store a manifest under ref's tag (or its digest); return its digest."""
        reference = self._reference(ref)
        digest = sha256_digest(data)
        resp = self._send("PUT", ref, f"manifests/{reference}", push=True, content=data,
                          headers={"Content-Type": media_type}, ok=(201, 200, 202))
        header = resp.headers.get("Docker-Content-Digest")
        if header and header != digest:
            raise RegistryError(
                f"registry {self.registry} stored the manifest for {ref} as {header}, "
                f"but its bytes hash to {digest}"
            )
        return digest

    def delete_manifest(self, ref: ImageRef) -> None:
        if not ref.digest:
            raise ValueError("delete_manifest needs a digest")
        self._send("DELETE", ref, f"manifests/{ref.digest}", push=True, ok=(202, 200))

    def image_config(self, ref: ImageRef) -> dict[str, Any]:
        """The image config JSON (labels are under ["config"]["Labels"])."""
        data, media_type, digest = self.get_manifest(ref)
        manifest = loads_json(data)
        if media_type in INDEX_TYPES or "manifests" in manifest:
            chosen = _pick_platform(manifest.get("manifests") or [], ref)
            child = ImageRef(ref.repository, digest=chosen)
            manifest = loads_json(self.get_manifest(child)[0])
        config = manifest.get("config") or {}
        config_digest = config.get("digest", "")
        if not DIGEST_RE.fullmatch(config_digest):
            raise RegistryError(f"the manifest of {ref} ({digest}) names no image config")
        try:
            result: dict[str, Any] = loads_json(self.get_blob(ref, config_digest))
        except ValueError:
            raise RegistryError(f"the image config of {ref} is not valid JSON") from None
        return result

    def referrers(self, repository: ImageRef | str, digest: str) -> bytes | None:
        """The OCI 1.1 referrers index of `digest` (`GET /v2/REPO/referrers/DIGEST`), or
        None when the registry has no referrers API (it answers 404 to that route)."""
        ref = self._as_ref(repository)
        resp = self._send("GET", ref, f"referrers/{digest}", ok=(200, 404),
                          headers={"Accept": "application/vnd.oci.image.index.v1+json"},
                          limit=_MAX_MANIFEST, what="a referrers index",
                          subject=f"{ref.path}@{digest}")
        if resp.status_code == 404:
            return None
        content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != "application/vnd.oci.image.index.v1+json":
            return None  # not the referrers API (some other page at that path)
        return resp.content

    # ------------------------------------------------------------ tags and blobs

    def tags(self, repository: ImageRef | str) -> list[str]:
        """Every tag of the repository (empty when the repository does not exist)."""
        ref = self._as_ref(repository)
        found: list[str] = []
        url: str | None = "tags/list?n=1000"
        while url:
            resp = self._send("GET", ref, url, ok=(200, 404), limit=_MAX_TAGS,
                              what="a tag list", subject=ref.path)
            if resp.status_code == 404:
                return found
            found.extend(resp.json().get("tags") or [])
            url = _next_link(resp.headers.get("Link"), ref.path)
        return found

    def get_blob(
        self, repository: ImageRef | str, digest: str, *, max_size: int = _MAX_BLOB
    ) -> bytes:
        """A blob's bytes, checked against its digest; larger than `max_size` is refused."""
        ref = self._as_ref(repository)
        data = self._send("GET", ref, f"blobs/{digest}", limit=max_size, what="a blob",
                          subject=f"{ref.path}@{digest}").content
        if sha256_digest(data) != digest:
            raise RegistryError(
                f"blob {digest} from {self.registry}/{ref.path} does not match its digest"
            )
        return data

    def has_blob(self, repository: ImageRef | str, digest: str) -> bool:
        ref = self._as_ref(repository)
        return self._send("HEAD", ref, f"blobs/{digest}", ok=(200, 404)).status_code == 200

    def fetch_blob_to(
        self, repository: ImageRef | str, digest: str, sink: BinaryIO, *, size: int
    ) -> None:
        """Stream a blob of `size` bytes (its descriptor's) into `sink`, checking its
        digest; a blob larger than `size` or with other content is refused."""
        ref = self._as_ref(repository)
        hashing = _HashingWriter(sink)
        self._send("GET", ref, f"blobs/{digest}", limit=size, what="a blob",
                   subject=f"{ref.path}@{digest}", sink=hashing)
        if hashing.digest() != digest or hashing.size != size:
            raise RegistryError(
                f"blob {digest} from {self.registry}/{ref.path} does not match its digest "
                "or size; the registry or a proxy altered it"
            )

    def push_blob_file(
        self, repository: ImageRef | str, digest: str, source: BinaryIO, size: int
    ) -> bool:
        """Upload `size` bytes of `source` (from its start) as blob `digest`, streamed;
        False when the registry already has the blob (nothing is sent)."""
        ref = self._as_ref(repository)
        if self.has_blob(ref, digest):
            return False
        url = self._start_upload(ref, digest)
        source.seek(0)

        def chunks() -> Iterator[bytes]:
            while chunk := source.read(_CHUNK):
                yield chunk

        self._send("PUT", ref, url, push=True, content=chunks(), ok=(201, 204),
                   headers={"Content-Type": "application/octet-stream",
                            "Content-Length": str(size)})
        return True

    def _start_upload(self, ref: ImageRef, digest: str) -> str:
        """Open a blob upload; the URL that completes it as `digest`."""
        resp = self._send("POST", ref, "blobs/uploads/", push=True, ok=(202,))
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.registry} started an upload without a Location")
        return str(resp.url.join(location).copy_merge_params({"digest": digest}))

    def put_blob(self, repository: ImageRef | str, data: bytes) -> str:
        """Upload `data` as a blob (monolithic upload); return its digest."""
        ref = self._as_ref(repository)
        digest = sha256_digest(data)
        if self.has_blob(ref, digest):
            return digest
        url = self._start_upload(ref, digest)
        self._send("PUT", ref, url, push=True, content=data, ok=(201, 204),
                   headers={"Content-Type": "application/octet-stream"})
        return digest

    # ------------------------------------------------------------ HTTP and auth

    def _reference(self, ref: ImageRef) -> str:
        reference = ref.tag or ref.digest
        if not reference:
            raise ValueError(f"{ref} has neither a tag nor a digest")
        return reference

    def _as_ref(self, repository: ImageRef | str) -> ImageRef:
        if isinstance(repository, ImageRef):
            return repository
        if repository.startswith(self.registry + "/"):
            return ImageRef(repository)
        return ImageRef(f"{self.registry}/{repository}")

    def _send(
        self,
        method: str,
        ref: ImageRef,
        path: str,
        *,
        push: bool = False,
        ok: Iterable[int] = (200,),
        headers: dict[str, str] | None = None,
        content: Body = None,
        limit: int = _MAX_SMALL,
        what: str = "a response",
        subject: str | None = None,
        sink: Sink | None = None,
    ) -> Reply:
        """One registry request with auth; its body is read up to `limit` bytes (`what` for
        `subject` names it in the error when it is larger)."""
        if path.startswith(("http://", "https://")):
            url = path
        elif path.startswith("/"):
            url = self.base_url + path
        else:
            url = f"{self.base_url}/v2/{ref.path}/{path}"
        scope = f"repository:{ref.path}:{'pull,push' if push else 'pull'}"
        hdrs = dict(headers or {})
        try:
            home = origin(httpx.URL(url)) == self._origin  # credentials go nowhere else
        except httpx.InvalidURL:
            raise RegistryError(
                f"registry {self.registry} pointed {method} {ref.path} at an unusable URL "
                f"({url[:100]!r}); refused"
            ) from None
        auth = self._auth_header(scope) if home else None
        if auth:
            hdrs["Authorization"] = auth
        subject = subject or f"{method} {ref.path}/{path.split('?')[0]}"
        ok = tuple(ok)
        resp = self._request(method, url, hdrs, content, trusted=self._origin, ok=ok,
                             limit=limit, what=what, subject=subject, sink=sink)
        if resp.status_code == 401:
            if not home or origin(resp.url) != self._origin:
                elsewhere = resp.url
                raise RegistryError(
                    f"registry {self.registry} directed {method} {ref.path} to another host "
                    f"({elsewhere.scheme}://{elsewhere.netloc.decode()}), which "
                    f"asks for credentials; plainsail sends credentials only to "
                    f"{self.registry}, so it refused"
                )
            challenge = resp.headers.get("WWW-Authenticate", "")
            scheme, params = parse_challenge(challenge)
            if scheme == "bearer" and "realm" in params:
                self._fetch_token(params, scope)
            elif scheme == "basic" and not self._basic and self.username:
                self._basic = True
            else:
                raise self._unauthorized(ref)
            hdrs["Authorization"] = self._auth_header(scope) or ""
            resp = self._request(method, url, hdrs, content, trusted=self._origin, ok=ok,
                                 limit=limit, what=what, subject=subject, sink=sink)
            if resp.status_code == 401:
                raise self._unauthorized(ref)
        if resp.status_code in ok:
            return resp
        raise self._status_error(method, ref, path, resp)

    def _request(
        self,
        method: str,
        url: str | httpx.URL,
        headers: dict[str, str],
        content: Body,
        *,
        trusted: Origin,
        ok: tuple[int, ...],
        limit: int,
        what: str,
        subject: str,
        where: str | None = None,
        sink: Sink | None = None,
    ) -> Reply:
        """One request, following redirects, done within the deadline; the Authorization
        header goes only to the `trusted` origin and is dropped for good at the first hop
        elsewhere. A redirect's body is not read; an `ok` answer's body is read up to
        `limit` (more is an error), any other's up to 1 MiB (more is dropped)."""
        who = where or f"registry {self.registry}"
        deadline = time.monotonic() + self.deadline
        target = httpx.URL(url)
        hdrs = dict(headers)
        for _ in range(_MAX_REDIRECTS + 1):
            if origin(target) != trusted:
                hdrs.pop("Authorization", None)
            resp = self._exchange(method, target, hdrs, content, where, deadline)
            try:
                location = resp.headers.get("Location")
                if resp.status_code not in _REDIRECTS or not location:
                    wanted = resp.status_code in ok
                    data = self._read(resp, limit if wanted else _MAX_SMALL, deadline,
                                      f"{who} sent {what} larger than {_size(limit)} for "
                                      f"{subject}; refused" if wanted else None,
                                      f"{who} did not finish sending {what} for {subject}",
                                      sink if wanted else None)
                    return Reply(resp.status_code, resp.headers, data, target)
                target = target.join(location)
            except httpx.InvalidURL:  # not a usable Location: the caller reports the status
                return Reply(resp.status_code, resp.headers, b"", target)
            finally:
                resp.close()
            if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                method, content = "GET", None
                hdrs.pop("Content-Type", None)
        raise RegistryError(
            f"{who} redirected {what} for {subject} more than {_MAX_REDIRECTS} times; refused"
        )

    def _exchange(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        content: Body,
        where: str | None,
        deadline: float,
    ) -> httpx.Response:
        """Send one request; the answer's headers are in, its body is still to be read."""
        hint = "" if where else "; is it running and is the address in `image` right?"
        wait = min(self.timeout, deadline - time.monotonic())
        try:
            if wait <= 0:
                raise httpx.TimeoutException("deadline")
            request = self._http.build_request(method, url, headers=headers, content=content,
                                               timeout=wait)
            resp = self._http.send(request, stream=True)
        except httpx.TimeoutException:
            raise RegistryError(
                f"cannot reach {where or f'registry {self.registry}'}: no answer within "
                f"{self.timeout if wait == self.timeout else self.deadline:g}s{hint}"
            ) from None
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"cannot reach {where or f'registry {self.registry}'}: {_reason(exc)}{hint}"
            ) from None
        log.debug("%s %s -> %s", method, str(url).split("?")[0], resp.status_code)
        return resp

    def _read(
        self, resp: httpx.Response, limit: int, deadline: float, too_large: str | None,
        unfinished: str, sink: Sink | None = None,
    ) -> bytes:
        """The body, read in chunks. Past `limit` it is refused with `too_large`, or
        dropped (b"") when that is None; past the deadline the read is abandoned."""
        if resp.request.method == "HEAD":
            return b""
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            if too_large:
                raise RegistryError(too_large)
            return b""
        data = bytearray()
        count = 0
        try:
            for chunk in resp.iter_bytes():
                count += len(chunk)
                if sink is not None:
                    sink.write(chunk)  # a large blob goes to a file, not into memory
                else:
                    data += chunk
                if count > limit:
                    if too_large:
                        raise RegistryError(too_large)
                    return b""
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"{unfinished} within {self.deadline:g}s; gave up (is the network or "
                        "a proxy between here and the registry slow?)"
                    )
        except httpx.TimeoutException:
            waited = resp.request.extensions.get("timeout", {}).get("read") or self.timeout
            raise RegistryError(f"{unfinished}: nothing more arrived within {waited:g}s") from None
        except httpx.HTTPError as exc:
            raise RegistryError(f"{unfinished}: {_reason(exc)}") from None
        return bytes(data)

    def _auth_header(self, scope: str) -> str | None:
        token = self._tokens.get(scope)
        if token:
            return f"Bearer {token}"
        if self._basic and self.username:
            return self._basic_header()
        return None

    def _basic_header(self) -> str:
        raw = f"{self.username}:{self._password.reveal() if self._password else ''}"
        return "Basic " + base64.b64encode(raw.encode()).decode()

    def _fetch_token(self, params: dict[str, str], scope: str) -> None:
        """The distribution token flow: GET realm?service=..&scope=.. with basic creds.

        The realm may be another host (Docker Hub's is auth.docker.io); the credentials go
        there only over https://, or over http:// when it is on this machine."""
        try:
            realm = httpx.URL(params["realm"])
        except httpx.InvalidURL:
            realm = httpx.URL()
        if realm.scheme not in ("http", "https") or not realm.host:
            raise RegistryError(
                f"registry {self.registry} named a token service that is not an http(s) "
                f"URL ({params['realm'][:100]!r}); refused"
            )
        shown = f"{realm.scheme}://{realm.netloc.decode()}{realm.path}"
        hdrs: dict[str, str] = {}
        if self.username:
            if realm.scheme != "https" and not is_loopback(realm.host) and not (
                    self.insecure and origin(realm)[1] == self._origin[1]):
                raise RegistryError(
                    f"registry {self.registry} asked for credentials to be sent to {shown} "
                    "over plain HTTP; refused (a token service that is not on this machine "
                    "must use https://)"
                )
            hdrs["Authorization"] = self._basic_header()
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        resp = self._request(
            "GET", realm.copy_merge_params(query), hdrs, None, trusted=origin(realm),
            ok=(200,), limit=_MAX_SMALL, what="a token response", subject=scope.split(":")[1],
            where=f"the token service of registry {self.registry} ({realm.host})",
        )
        if resp.status_code in (401, 403):
            raise self._unauthorized(ImageRef(f"{self.registry}/{scope.split(':')[1]}"))
        if resp.status_code != 200:
            raise RegistryError(
                f"the token service of registry {self.registry} answered {resp.status_code}"
            )
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token or not isinstance(token, str):
            raise RegistryError(
                f"the token service of registry {self.registry} returned no token"
            )
        self._tokens[scope] = token

    def _unauthorized(self, ref: ImageRef) -> RegistryError:
        host = self.registry
        if self.username:
            return RegistryError(
                f"registry {host} rejected the credentials of user {self.username!r} for "
                f"{ref.path} (401); check registry.username/registry.password in plainsail.yml "
                f"or run `docker login {host}`"
            )
        return RegistryError(
            f"registry {host} requires credentials for {ref.path} (401); set registry.username "
            f"and registry.password in plainsail.yml or run `docker login {host}`"
        )

    def _status_error(
        self, method: str, ref: ImageRef, path: str, resp: Reply
    ) -> RegistryError:
        what = f"{method} {ref.path}/{path.split('?')[0]}"
        detail = _error_detail(resp)
        if resp.status_code == 403:
            who = f"user {self.username!r}" if self.username else "anonymous access"
            return RegistryError(
                f"registry {self.registry} denied {what} to {who} (403); the account needs "
                f"{'push' if method in ('PUT', 'POST', 'DELETE') else 'pull'} permission "
                f"on {ref.path}{detail}"
            )
        if resp.status_code == 404:
            return RegistryNotFoundError(
                f"registry {self.registry} has no {ref.path}/{path.split('?')[0]} (404){detail}"
            )
        return RegistryError(
            f"registry {self.registry} answered {resp.status_code} to {what}{detail}"
        )


class _HashingWriter:
    """Writes to a file and hashes what passes through (sha256)."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._sink.write(data)

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def _pick_platform(manifests: list[dict[str, Any]], ref: ImageRef) -> str:
    if len(manifests) == 1:
        return str(manifests[0]["digest"])
    for m in manifests:
        platform = m.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return str(m["digest"])
    raise RegistryError(f"{ref} is a multi-platform index without a linux/amd64 image")


def _next_link(link: str | None, path: str) -> str | None:
    """The next page from a `Link: </v2/...>; rel="next"` header."""
    if not link or 'rel="next"' not in link:
        return None
    target = link.split(";")[0].strip().strip("<>")
    return target if target.startswith(("/", "http")) else f"/{target}"


def _size(n: int) -> str:
    return f"{n // _MiB} MiB" if n % _MiB == 0 else f"{n} bytes"


def _error_detail(resp: Reply) -> str:
    try:
        errors = resp.json().get("errors") or []
        first = errors[0]
        return f": {first.get('code', '')} {first.get('message', '')}".rstrip()
    except (ValueError, AttributeError, IndexError, KeyError, TypeError):
        return ""


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc)
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "unknown host name"
    if "ssl" in lowered or "certificate" in lowered:
        return f"TLS failed ({text})"
    return text or type(exc).__name__
