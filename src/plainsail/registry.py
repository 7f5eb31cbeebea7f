"""A small client for the OCI distribution API: manifests, blobs, tags, with auth.

Auth follows what Docker does: HTTP basic when the registry asks for it, and the bearer
token challenge (`WWW-Authenticate: Bearer realm=...,service=...,scope=...`) that public
registries use: fetch a token from the realm with the basic credentials, cache it per
scope, retry. Plain http:// is used only for loopback registries, https:// otherwise.

Credentials stay with the registry: the basic credentials and its bearer tokens go only to
the registry's own origin (scheme, host and port), never to an upload `Location`, a `Link`
or a redirect elsewhere. The token service may be another host (Docker Hub's is
auth.docker.io) and gets the basic credentials, but only over https:// or on loopback.
Redirects are followed here, not by httpx, so that each hop is checked against that rule.

Every failure becomes a RegistryError whose one line says what to do; credentials never
appear in a message or a log line (only the user name does).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from plainsail.errors import RegistryError, RegistryNotFoundError
from plainsail.images import DIGEST_RE, ImageRef
from plainsail.secret import Secret

if TYPE_CHECKING:
    from plainsail.config import Config

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
_ACCEPT = ", ".join(MANIFEST_TYPES)
_MAX_MANIFEST = 4 * 1024 * 1024  # the distribution spec's suggested limit
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^\s,]+)')
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 10

Origin = tuple[str, str, int | None]


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


def docker_credentials(registry: str, config_dir: str | None = None) -> tuple[str, Secret] | None:
    """User name and password for `registry` from Docker's config.json `auths`, if any."""
    folder = config_dir or os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    path = Path(folder) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
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
        data = json.loads(proc.stdout)
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
    ) -> None:
        self.registry = registry
        self.username = username or None
        self._password = password
        api_host = "registry-1.docker.io" if registry == "docker.io" else registry
        scheme = "http" if is_loopback(registry) else "https"
        self.base_url = f"{scheme}://{api_host}"
        self._origin = origin(httpx.URL(self.base_url))
        self.timeout = timeout
        # redirects are followed in _request, which decides where credentials may go
        self._http = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False)
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        self._basic = False  # the registry asked for basic auth once: send it up front

    @classmethod
    def for_config(cls, cfg: Config, **kwargs: Any) -> RegistryClient:
        """Credentials from plainsail.yml `registry`, else Docker's config.json, else none."""
        host = cfg.registry_host
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
        resp = self._send("GET", ref, f"manifests/{reference}", headers={"Accept": _ACCEPT})
        data = resp.content
        if len(data) > _MAX_MANIFEST:
            raise RegistryError(f"the manifest of {ref} is larger than 4 MiB; refusing it")
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
            declared = json.loads(data).get("mediaType")
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
        manifest = json.loads(data)
        if media_type in INDEX_TYPES or "manifests" in manifest:
            chosen = _pick_platform(manifest.get("manifests") or [], ref)
            child = ImageRef(ref.repository, digest=chosen)
            manifest = json.loads(self.get_manifest(child)[0])
        config = manifest.get("config") or {}
        config_digest = config.get("digest", "")
        if not DIGEST_RE.fullmatch(config_digest):
            raise RegistryError(f"the manifest of {ref} ({digest}) names no image config")
        try:
            result: dict[str, Any] = json.loads(self.get_blob(ref, config_digest))
        except ValueError:
            raise RegistryError(f"the image config of {ref} is not valid JSON") from None
        return result

    # ------------------------------------------------------------ tags and blobs

    def tags(self, repository: ImageRef | str) -> list[str]:
        """Every tag of the repository (empty when the repository does not exist)."""
        ref = self._as_ref(repository)
        found: list[str] = []
        url: str | None = "tags/list?n=1000"
        while url:
            resp = self._send("GET", ref, url, ok=(200, 404))
            if resp.status_code == 404:
                return found
            found.extend(resp.json().get("tags") or [])
            url = _next_link(resp.headers.get("Link"), ref.path)
        return found

    def get_blob(self, repository: ImageRef | str, digest: str) -> bytes:
        ref = self._as_ref(repository)
        data = self._send("GET", ref, f"blobs/{digest}").content
        if sha256_digest(data) != digest:
            raise RegistryError(
                f"blob {digest} from {self.registry}/{ref.path} does not match its digest"
            )
        return data

    def has_blob(self, repository: ImageRef | str, digest: str) -> bool:
        ref = self._as_ref(repository)
        return self._send("HEAD", ref, f"blobs/{digest}", ok=(200, 404)).status_code == 200

    def put_blob(self, repository: ImageRef | str, data: bytes) -> str:
        """Upload `data` as a blob (monolithic upload); return its digest."""
        ref = self._as_ref(repository)
        digest = sha256_digest(data)
        if self.has_blob(ref, digest):
            return digest
        resp = self._send("POST", ref, "blobs/uploads/", push=True, ok=(202,))
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.registry} started an upload without a Location")
        url = resp.url.join(location).copy_merge_params({"digest": digest})
        self._send("PUT", ref, str(url), push=True, content=data, ok=(201, 204),
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
        content: bytes | None = None,
    ) -> httpx.Response:
        if path.startswith(("http://", "https://")):
            url = path
        elif path.startswith("/"):
            url = self.base_url + path
        else:
            url = f"{self.base_url}/v2/{ref.path}/{path}"
        scope = f"repository:{ref.path}:{'pull,push' if push else 'pull'}"
        hdrs = dict(headers or {})
        home = origin(httpx.URL(url)) == self._origin  # credentials go nowhere else
        auth = self._auth_header(scope) if home else None
        if auth:
            hdrs["Authorization"] = auth
        resp = self._request(method, url, hdrs, content, trusted=self._origin)
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
            resp = self._request(method, url, hdrs, content, trusted=self._origin)
            if resp.status_code == 401:
                raise self._unauthorized(ref)
        if resp.status_code in tuple(ok):
            return resp
        raise self._status_error(method, ref, path, resp)

    def _request(
        self,
        method: str,
        url: str | httpx.URL,
        headers: dict[str, str],
        content: bytes | None,
        *,
        trusted: Origin,
        where: str | None = None,
    ) -> httpx.Response:
        """One request, following redirects; the Authorization header goes only to the
        `trusted` origin and is dropped for good at the first hop elsewhere."""
        target = httpx.URL(url)
        hdrs = dict(headers)
        for _ in range(_MAX_REDIRECTS + 1):
            if origin(target) != trusted:
                hdrs.pop("Authorization", None)
            resp = self._exchange(method, target, hdrs, content, where)
            location = resp.headers.get("Location")
            if resp.status_code not in _REDIRECTS or not location:
                return resp
            try:
                target = target.join(location)
            except httpx.InvalidURL:
                return resp  # not a usable redirect: the caller reports the status
            if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                method, content = "GET", None
                hdrs.pop("Content-Type", None)
        raise RegistryError(
            f"{where or f'registry {self.registry}'} redirected {method} "
            f"{target.copy_with(query=None)} more than {_MAX_REDIRECTS} times; refused"
        )

    def _exchange(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        content: bytes | None,
        where: str | None,
    ) -> httpx.Response:
        try:
            resp = self._http.request(method, url, headers=headers, content=content)
        except httpx.TimeoutException:
            raise RegistryError(
                f"cannot reach {where or f'registry {self.registry}'}: no answer within "
                f"{self.timeout:g}s" + ("" if where else
                                        "; is it running and is the address in `image` right?")
            ) from None
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"cannot reach {where or f'registry {self.registry}'}: {_reason(exc)}"
                + ("" if where else "; is it running and is the address in `image` right?")
            ) from None
        log.debug("%s %s -> %s", method, str(url).split("?")[0], resp.status_code)
        return resp

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
            if realm.scheme != "https" and not is_loopback(realm.host):
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
        self, method: str, ref: ImageRef, path: str, resp: httpx.Response
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


def _error_detail(resp: httpx.Response) -> str:
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
