"""The registry client: auth (basic against a real htpasswd registry, bearer tokens through
a token endpoint that follows the distribution token spec), errors, credentials lookup."""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from plainsail.config.model import Config, RegistryAuth
from plainsail.errors import RegistryError, RegistryNotFoundError
from plainsail.secret import Secret
from plainsail.supply.images import ImageRef
from plainsail.supply.registry import (
    OCI_MANIFEST,
    RegistryClient,
    docker_credentials,
    insecure_warning,
    is_loopback,
    origin,
    parse_challenge,
    sha256_digest,
)
from tests.support.services import Registry, free_port

# ---------------------------------------------------------------- pure logic


def test_loopback_hosts_use_http() -> None:
    for host in ("localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "localhost"):
        assert is_loopback(host), host
        assert RegistryClient(host).base_url.startswith("http://")
    for host in ("registry.example.com", "10.0.0.1:5000", "ghcr.io"):
        assert not is_loopback(host), host
        assert RegistryClient(host).base_url.startswith("https://")
    assert RegistryClient("docker.io").base_url == "https://registry-1.docker.io"


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg.example",'
        'scope="repository:a/b:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "reg.example",
                      "scope": "repository:a/b:pull,push"}
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def test_docker_credentials(tmp_path: Path) -> None:
    auth = base64.b64encode(b"alice:pa:ss").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "reg.example:5000": {"auth": auth},
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"bob:x").decode()},
    }}))
    user, password = docker_credentials("reg.example:5000", str(tmp_path)) or ("", Secret(""))
    assert user == "alice" and password.reveal() == "pa:ss"
    assert (docker_credentials("docker.io", str(tmp_path)) or ("",))[0] == "bob"
    assert docker_credentials("other.example", str(tmp_path)) is None
    assert docker_credentials("x", str(tmp_path / "missing")) is None


def test_for_config_prefers_config_then_docker(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "reg.example": {"auth": base64.b64encode(b"docker-user:pw").decode()}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    cfg = Config(service="s", image="reg.example/team/app")
    assert RegistryClient.for_config(cfg).username == "docker-user"
    cfg2 = Config(service="s", image="reg.example/team/app",
                  registry=RegistryAuth("cfg-user", Secret("pw")))
    assert RegistryClient.for_config(cfg2).username == "cfg-user"
    cfg3 = Config(service="s", image="reg.example/team/app",
                  registry=RegistryAuth("", Secret("")))  # ${REGISTRY_USER:-} left empty
    assert RegistryClient.for_config(cfg3).username == "docker-user"
    cfg4 = Config(service="s", image="other.example/app")
    assert RegistryClient.for_config(cfg4).username is None


def test_unreachable_registry_is_one_clear_line() -> None:
    host = f"127.0.0.1:{free_port()}"
    client = RegistryClient(host, "ci", Secret("hunter22"), timeout=2)
    with pytest.raises(RegistryError) as err:
        client.resolve(ImageRef(f"{host}/app", tag="abc1234"))
    msg = str(err.value)
    assert msg == (f"cannot reach registry {host}: connection refused; is it running and is "
                   "the address in `image` right?")


def test_bearer_token_flow_with_access_token_field() -> None:
    """The token spec allows `access_token` instead of `token`; anonymous pulls work."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path} {request.headers.get('authorization')}")
        if request.url.host == "auth.example":
            assert "authorization" not in request.headers  # anonymous
            assert request.url.params["scope"] == "repository:team/app:pull"
            assert request.url.params["service"] == "reg.example"
            return httpx.Response(200, json={"access_token": "T1"})
        if request.headers.get("authorization") != "Bearer T1":
            return httpx.Response(401, headers={"WWW-Authenticate": (
                'Bearer realm="https://auth.example/token",service="reg.example"')})
        return httpx.Response(200, json={"name": "team/app", "tags": ["abc1234"]})

    client = RegistryClient("reg.example", transport=httpx.MockTransport(handler))
    assert client.tags("team/app") == ["abc1234"]
    assert client.tags("team/app") == ["abc1234"]  # token cached per scope: no new challenge
    assert [s.split()[1] for s in seen] == ["/v2/team/app/tags/list", "/token",
                                            "/v2/team/app/tags/list", "/v2/team/app/tags/list"]


# ---------------------------------------------------------------- basic auth, real registry


def _push_small_artifact(client: RegistryClient, repo: str) -> tuple[ImageRef, str]:
    """Push a tiny OCI image (config + one blob) with the client; return (ref, digest)."""
    ref = ImageRef(repo, tag="abc1234")
    layer = uuid.uuid4().bytes
    layer_digest = client.put_blob(ref, layer)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Labels": {"org.opencontainers.image.title": "t"}},
                         "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    config_digest = client.put_blob(ref, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "size": len(config), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "size": len(layer), "digest": layer_digest}],
    }).encode()
    return ref, client.put_manifest(ref, manifest, OCI_MANIFEST)


@pytest.mark.integration
def test_basic_auth_against_real_registry(auth_registry: Registry) -> None:
    assert auth_registry.username and auth_registry.password
    client = RegistryClient(auth_registry.host, auth_registry.username,
                            Secret(auth_registry.password))
    repo = auth_registry.repo(f"basic-{uuid.uuid4().hex[:8]}")
    ref, digest = _push_small_artifact(client, repo)
    assert digest == sha256_digest(client.get_manifest(ref)[0])
    assert client.resolve(ref) == digest
    assert client.tags(repo) == ["abc1234"]
    assert client.image_config(ref)["config"]["Labels"] == {"org.opencontainers.image.title": "t"}


@pytest.mark.integration
def test_wrong_password_names_user_not_password(auth_registry: Registry) -> None:
    client = RegistryClient(auth_registry.host, "ci", Secret("wrong-pass-123"))
    with pytest.raises(RegistryError) as err:
        client.resolve(ImageRef(auth_registry.repo("app"), tag="abc1234"))
    msg = str(err.value)
    assert "rejected the credentials of user 'ci'" in msg
    assert "wrong-pass-123" not in msg and "\n" not in msg
    assert auth_registry.password and auth_registry.password not in msg
    anonymous = RegistryClient(auth_registry.host)
    with pytest.raises(RegistryError, match="requires credentials"):
        anonymous.tags(auth_registry.repo("app"))


# ---------------------------------------------------------------- bearer flow, real registry


@dataclass
class TokenProxy:
    """A registry front that demands bearer tokens, and the token endpoint issuing them."""

    upstream: str
    user: str
    password: str
    host: str = ""
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)


def _handler(proxy: TokenProxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
                   ) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _token(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            proxy.token_requests.append(query)
            expected = "Basic " + base64.b64encode(
                f"{proxy.user}:{proxy.password}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
                return
            scope = query.get("scope", [""])[0]
            self._reply(200, json.dumps({"token": f"tok {scope}", "expires_in": 300}).encode())

        def _proxy(self) -> None:
            path = urlsplit(self.path).path
            parts = path.split("/")[2:]  # after /v2/
            kinds = [i for i, x in enumerate(parts) if x in ("manifests", "blobs", "tags")]
            repo = "/".join(parts[: kinds[-1]]) if kinds else ""
            action = "pull" if self.command in ("GET", "HEAD") else "pull,push"
            scope = f"repository:{repo}:{action}"
            auth = self.headers.get("Authorization", "")
            granted = auth.removeprefix("Bearer tok ")
            ok = auth.startswith("Bearer tok ") and (
                granted == scope or granted == f"repository:{repo}:pull,push")
            if not ok:
                realm = f"http://{proxy.host}/token"
                self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {
                    "WWW-Authenticate": f'Bearer realm="{realm}",service="test-registry",'
                                        f'scope="{scope}"'})
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            conn = http.client.HTTPConnection(proxy.upstream, timeout=10)
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("authorization", "host", "connection")}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = {k: v for k, v in resp.getheaders()
                   if k.lower() not in ("content-length", "connection", "transfer-encoding")}
            if "Location" in out:
                out["Location"] = out["Location"].replace(proxy.upstream, proxy.host)
            self._reply(resp.status, data, out)
            conn.close()

        def _dispatch(self) -> None:
            if self.path.startswith("/token"):
                self._token()
            else:
                self._proxy()

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _dispatch

    return Handler


@pytest.fixture
def token_proxy(registry: Registry) -> Iterator[TokenProxy]:
    proxy = TokenProxy(registry.host, "robot", "t0ken-pass-" + uuid.uuid4().hex[:6])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    proxy.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield proxy
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_bearer_token_flow_against_real_registry(token_proxy: TokenProxy) -> None:
    client = RegistryClient(token_proxy.host, token_proxy.user, Secret(token_proxy.password))
    repo = f"{token_proxy.host}/bearer-{uuid.uuid4().hex[:8]}"
    ref, digest = _push_small_artifact(client, repo)
    assert client.resolve(ref) == digest
    assert client.tags(repo) == ["abc1234"]
    path = repo.split("/", 1)[1]
    scopes = [q["scope"][0] for q in token_proxy.token_requests]
    assert all(q["service"] == ["test-registry"] for q in token_proxy.token_requests)
    # one token per scope, then cached: pull,push for the upload, pull for reads
    assert sorted(scopes) == sorted({f"repository:{path}:pull,push",
                                     f"repository:{path}:pull"})


@pytest.mark.integration
def test_bearer_wrong_password_is_clear(token_proxy: TokenProxy) -> None:
    client = RegistryClient(token_proxy.host, token_proxy.user, Secret("nope-nope-nope"))
    with pytest.raises(RegistryError) as err:
        client.tags(f"{token_proxy.host}/app")
    msg = str(err.value)
    assert f"credentials of user {token_proxy.user!r}" in msg
    assert "nope-nope-nope" not in msg and token_proxy.password not in msg


@pytest.mark.integration
def test_credential_helper_against_the_real_auth_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth_registry: Registry
) -> None:
    """credHelpers / credsStore: a real helper program speaking Docker's helper protocol."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-pstest"
    helper.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 1\n'
        "read server\n"
        f'if [ "$server" = "{auth_registry.host}" ]; then\n'
        f'  printf \'{{"ServerURL": "%s", "Username": "ci", '
        f'"Secret": "{auth_registry.password}"}}\' "$server"\n'
        "else echo 'credentials not found in native keychain'; exit 1; fi\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    (tmp_path / "config.json").write_text(json.dumps(
        {"auths": {}, "credHelpers": {auth_registry.host: "pstest"}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    found = docker_credentials(auth_registry.host)
    assert found and found[0] == "ci" and found[1].reveal() == auth_registry.password
    with RegistryClient(auth_registry.host, *found) as client:
        assert client.tags(ImageRef(f"{auth_registry.host}/t/nothing-here")) == []
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "pstest"}))
    assert docker_credentials("other.example") is None  # "not found": anonymous
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "absent"}))
    with pytest.raises(RegistryError, match="docker-credential-absent is not on PATH"):
        docker_credentials(auth_registry.host)


# ---------------------------------------------------------------- credentials stay at home

_CREDS = ("ci", "pw-" + uuid.uuid4().hex[:8])
_BASIC = "Basic " + base64.b64encode(f"{_CREDS[0]}:{_CREDS[1]}".encode()).decode()


@dataclass
class HostileRegistry:
    """A MockTransport registry at https://reg.example that demands basic auth and whose
    upload Location, redirects and token realm are chosen by the test; every request seen
    is kept as (method, url, Authorization header)."""

    location: str = "/v2/team/app/blobs/uploads/u1?state=s"
    realm: str | None = None  # a bearer realm instead of basic auth
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)

    def auth_ok(self, request: httpx.Request) -> bool:
        got = request.headers.get("authorization")
        return got == ("Bearer T1" if self.realm else _BASIC)

    def handler(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        self.seen.append((request.method, str(url), request.headers.get("authorization")))
        if origin(url) != ("https", "reg.example", 443):  # token service, storage: answer
            if url.path == "/token":
                return httpx.Response(200, json={"token": "T1"})
            return httpx.Response(201 if request.method == "PUT" else 200, content=b"{}")
        if not self.auth_ok(request):
            challenge = (f'Bearer realm="{self.realm}",service="reg.example"' if self.realm
                         else 'Basic realm="reg"')
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if request.method == "HEAD":
            return httpx.Response(404)
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": self.location})
        if request.method == "GET":
            return httpx.Response(200, json={"name": "team/app", "tags": []})
        return httpx.Response(201)

    def client(self) -> RegistryClient:
        return RegistryClient("reg.example", _CREDS[0], Secret(_CREDS[1]),
                              transport=httpx.MockTransport(self.handler))

    def auth_sent_to(self, host: str) -> list[str | None]:
        return [a for _, u, a in self.seen if httpx.URL(u).host == host and a]

    def auth_sent_home(self) -> list[str | None]:
        return [a for _, u, a in self.seen if origin(httpx.URL(u)) == ("https", "reg.example", 443)
                and a]


@pytest.mark.parametrize("location", [
    "/v2/team/app/blobs/uploads/u1?state=s",                    # absolute path
    "u1?state=s",                                               # relative to the POST URL
    "https://reg.example/v2/team/app/blobs/uploads/u1?state=s",  # full URL, same origin
])
def test_same_origin_upload_location_keeps_credentials(location: str) -> None:
    reg = HostileRegistry(location=location)
    reg.client().put_blob("team/app", b"layer")
    method, url, auth = reg.seen[-1]
    assert method == "PUT" and auth == _BASIC
    assert httpx.URL(url).host == "reg.example"
    assert httpx.URL(url).path == "/v2/team/app/blobs/uploads/u1"
    assert httpx.URL(url).params["digest"] == sha256_digest(b"layer")


@pytest.mark.parametrize("realm", [None, "https://auth.example/token"])
@pytest.mark.parametrize("location", [
    "https://storage.example/upload/u1",  # another host
    "http://reg.example/v2/team/app/blobs/uploads/u1",  # same host, plain HTTP
    "https://reg.example:8443/v2/team/app/blobs/uploads/u1",  # same host, other port
])
def test_upload_location_on_another_origin_gets_no_credentials(
    location: str, realm: str | None
) -> None:
    reg = HostileRegistry(location=location, realm=realm)
    reg.client().put_blob("team/app", b"layer")
    method, url, auth = reg.seen[-1]
    assert method == "PUT" and url.startswith(location)
    assert auth is None  # neither the basic credentials nor the registry's bearer token
    # the registry itself did get them, so the check above is not vacuous
    assert reg.auth_sent_home()


def test_redirects_to_another_origin_carry_no_credentials() -> None:
    """Blob downloads are redirected to storage; an upgrade to https:// on the same host is
    another origin too (httpx itself would keep the header there)."""
    seen: list[tuple[str, str | None]] = []
    targets = {"/v2/team/app/blobs/sha256:a": "https://cdn.example/blob",
               "/v2/team/app/blobs/sha256:b": "https://localhost/v2/team/app/blobs/sha256:b2",
               "/v2/team/app/blobs/sha256:c": "/v2/team/app/blobs/sha256:c2"}
    bodies = {b"cdn", b"upgraded", b"moved"}

    def handler(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization")
        seen.append((str(request.url), auth))
        if request.url.host == "localhost" and request.url.scheme == "http":
            if auth != _BASIC:
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
            if request.url.path in targets:
                return httpx.Response(307, headers={"Location": targets[request.url.path]})
            return httpx.Response(200, content=b"moved")
        return httpx.Response(200, content=b"cdn" if request.url.host == "cdn.example"
                              else b"upgraded")

    client = RegistryClient("localhost", *_CREDS[:1], Secret(_CREDS[1]),
                            transport=httpx.MockTransport(handler))
    got = set()
    for digest in ("sha256:a", "sha256:b", "sha256:c"):
        with pytest.raises(RegistryError, match="does not match its digest"):
            client.get_blob("team/app", digest)  # the digests are made up; the bodies came
        got.add(next(u for u, _ in reversed(seen)))
    assert [a for u, a in seen if u.startswith("https://")] == [None, None]
    assert ("http://localhost/v2/team/app/blobs/sha256:c2", _BASIC) in seen  # same origin
    assert len(got) == len(bodies)


def test_plain_http_token_realm_elsewhere_is_refused_before_sending_credentials() -> None:
    reg = HostileRegistry(realm="http://evil.example/token")
    with pytest.raises(RegistryError) as err:
        reg.client().tags("team/app")
    msg = str(err.value)
    assert msg == ("registry reg.example asked for credentials to be sent to "
                   "http://evil.example/token over plain HTTP; refused (a token service that "
                   "is not on this machine must use https://)")
    assert _CREDS[1] not in msg
    assert all(auth is None for _, _, auth in reg.seen)
    assert not [u for _, u, _ in reg.seen if "evil.example" in u]


def test_plain_http_token_realm_without_credentials_is_fine() -> None:
    """Anonymous pulls send no credentials, so a plain-HTTP token service may answer."""
    reg = HostileRegistry(realm="http://evil.example/token")
    client = RegistryClient("reg.example", transport=httpx.MockTransport(reg.handler))
    assert client.tags("team/app") == []
    assert [u.split("?")[0] for _, u, _ in reg.seen] == [
        "https://reg.example/v2/team/app/tags/list", "http://evil.example/token",
        "https://reg.example/v2/team/app/tags/list"]
    assert all(auth in (None, "Bearer T1") for _, _, auth in reg.seen)


@pytest.mark.parametrize("realm", ["https://auth.example/token", "http://127.0.0.1:5999/token",
                                   "http://localhost/token"])
def test_token_realm_over_https_or_on_loopback_gets_basic_credentials(realm: str) -> None:
    """Docker Hub's realm is https://auth.docker.io/token, another host than the registry."""
    reg = HostileRegistry(realm=realm)
    assert reg.client().tags("team/app") == []
    realm_host = httpx.URL(realm).host
    assert reg.auth_sent_to(realm_host) == [_BASIC]
    assert reg.auth_sent_to("reg.example") == ["Bearer T1"]


def test_registry_tokens_do_not_follow_links_or_redirects_elsewhere() -> None:
    """A `Link` to the next page on another host gets no token; nor does a token service
    redirect to another host get the basic credentials."""
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization")
        seen.append((f"{request.url.host}{request.url.path}", auth))
        if request.url.host == "auth.example":
            return httpx.Response(302, headers={"Location": "https://tokens.example/t"})
        if request.url.host == "tokens.example":
            return httpx.Response(200, json={"token": "T1"})
        if request.url.host == "other.example":
            return httpx.Response(200, json={"tags": ["b"]})
        if auth != "Bearer T1":
            return httpx.Response(401, headers={"WWW-Authenticate": (
                'Bearer realm="https://auth.example/token",service="reg.example"')})
        return httpx.Response(200, json={"tags": ["a"]}, headers={
            "Link": '<https://other.example/v2/team/app/tags/list?last=a>; rel="next"'})

    client = RegistryClient("reg.example", *_CREDS[:1], Secret(_CREDS[1]),
                            transport=httpx.MockTransport(handler))
    assert client.tags("team/app") == ["a", "b"]
    assert seen == [("reg.example/v2/team/app/tags/list", None),
                    ("auth.example/token", _BASIC),
                    ("tokens.example/t", None),
                    ("reg.example/v2/team/app/tags/list", "Bearer T1"),
                    ("other.example/v2/team/app/tags/list", None)]


def test_another_origin_asking_for_credentials_is_a_clear_error() -> None:
    reg = HostileRegistry(location="https://storage.example/upload/u1")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "storage.example":
            reg.seen.append((request.method, str(request.url),
                             request.headers.get("authorization")))
            return httpx.Response(401, headers={"WWW-Authenticate": (
                'Bearer realm="https://storage.example/token"')})
        return reg.handler(request)

    client = RegistryClient("reg.example", _CREDS[0], Secret(_CREDS[1]),
                            transport=httpx.MockTransport(handler))
    with pytest.raises(RegistryError) as err:
        client.put_blob("team/app", b"layer")
    assert str(err.value) == (
        "registry reg.example directed PUT team/app to another host "
        "(https://storage.example), which asks for credentials; plainsail sends credentials "
        "only to reg.example, so it refused")
    assert reg.auth_sent_to("storage.example") == []
    assert "/token" not in " ".join(u for _, u, _ in reg.seen)


@dataclass
class LeakCatcher:
    """A real HTTP server on a loopback port: a registry that wants basic auth and sends
    uploads to another origin (its second port), recording every Authorization header."""

    registry_port: int = 0
    storage_port: int = 0
    seen: list[tuple[int, str, str | None]] = field(default_factory=list)


@pytest.fixture
def leak_catcher() -> Iterator[LeakCatcher]:
    state = LeakCatcher()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _dispatch(self) -> None:
            port = self.server.server_address[1]
            auth = self.headers.get("Authorization")
            state.seen.append((port, f"{self.command} {unquote(self.path)}", auth))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers = 201, {}
            if port == state.registry_port:
                if auth != _BASIC:
                    status, headers = 401, {"WWW-Authenticate": 'Basic realm="r"'}
                elif self.command == "HEAD":
                    status = 404
                elif self.command == "POST":
                    status = 202
                    headers = {"Location": f"http://127.0.0.1:{state.storage_port}/up/u1"}
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = do_PUT = do_POST = _dispatch

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
    state.registry_port, state.storage_port = (s.server_address[1] for s in servers)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    yield state
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.mark.integration
def test_upload_to_another_origin_gets_no_credentials_over_real_sockets(
    leak_catcher: LeakCatcher,
) -> None:
    host = f"127.0.0.1:{leak_catcher.registry_port}"
    with RegistryClient(host, _CREDS[0], Secret(_CREDS[1]), timeout=5) as client:
        client.put_blob(f"{host}/team/app", b"layer")
    storage = [(what, auth) for port, what, auth in leak_catcher.seen
               if port == leak_catcher.storage_port]
    assert storage == [(f"PUT /up/u1?digest={sha256_digest(b'layer')}", None)]
    assert (leak_catcher.registry_port, "POST /v2/team/app/blobs/uploads/", _BASIC) in \
        leak_catcher.seen


# ---------------------------------------------------------------- bounded responses

MiB = 1024 * 1024
_CHUNK = b"x" * (64 * 1024)


@dataclass
class Firehose:
    """Response bodies from a generator that counts how much of it was asked for."""

    sent: int = 0

    def body(self, total: int | None, delay: float = 0.0, chunk: bytes = _CHUNK
             ) -> Iterator[bytes]:
        while total is None or self.sent < total:
            if delay:
                time.sleep(delay)
            self.sent += len(chunk)
            yield chunk


def _peak_of(call: Callable[[], object]) -> tuple[int, BaseException | None]:
    """Peak traced memory while `call` runs, and what it raised."""
    raised: BaseException | None = None
    tracemalloc.start()
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - returned to the test to check
        raised = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


@pytest.mark.parametrize(("call", "message"), [
    (lambda c: c.get_manifest(ImageRef("reg.example/team/app", tag="abc")),
     "registry reg.example sent a manifest larger than 4 MiB for "
     "reg.example/team/app:abc; refused"),
    (lambda c: c.get_blob("team/app", "sha256:" + "0" * 64),
     f"registry reg.example sent a blob larger than 16 MiB for team/app@sha256:{'0' * 64}; "
     "refused"),
    (lambda c: c.tags("team/app"),
     "registry reg.example sent a tag list larger than 4 MiB for team/app; refused"),
], ids=["manifest", "blob", "tags"])
def test_a_huge_body_is_refused_while_it_streams(
    call: Callable[[RegistryClient], object], message: str
) -> None:
    """200 MB without Content-Length: read in chunks and dropped as soon as it passes the
    limit, so memory stays far below the body's size."""
    hose = Firehose()
    client = RegistryClient("reg.example", transport=httpx.MockTransport(
        lambda request: httpx.Response(200, content=hose.body(200 * MiB))))
    peak, raised = _peak_of(lambda: call(client))
    assert isinstance(raised, RegistryError) and str(raised) == message
    assert peak < 64 * MiB, f"peak {peak / MiB:.0f} MiB"
    assert hose.sent <= 17 * MiB


def test_a_caller_may_allow_a_bigger_blob() -> None:
    data = b"y" * (20 * MiB)
    client = RegistryClient("reg.example", transport=httpx.MockTransport(
        lambda request: httpx.Response(200, content=Firehose().body(len(data), chunk=data[:MiB]))))
    assert client.get_blob("team/app", sha256_digest(data), max_size=32 * MiB) == data
    with pytest.raises(RegistryError, match="larger than 16 MiB"):
        client.get_blob("team/app", sha256_digest(data))


def test_content_length_over_the_limit_is_refused_before_reading() -> None:
    hose = Firehose()
    client = RegistryClient("reg.example", transport=httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"Content-Length": str(600 * MiB)},
                                       content=hose.body(8 * MiB))))
    with pytest.raises(RegistryError, match=r"sent a manifest larger than 4 MiB for "):
        client.get_manifest(ImageRef("reg.example/team/app", tag="abc"))
    assert hose.sent == 0


def test_token_responses_error_bodies_and_redirect_bodies_are_bounded() -> None:
    hose = Firehose()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return httpx.Response(200, content=hose.body(200 * MiB))
        if request.url.path.endswith("/tags/list"):
            return httpx.Response(401, headers={"WWW-Authenticate": (
                'Bearer realm="https://auth.example/token",service="reg.example"')})
        if request.url.path.endswith("/manifests/gone"):
            return httpx.Response(404, content=hose.body(200 * MiB))
        if request.url.path.endswith("/manifests/moved"):
            return httpx.Response(307, headers={"Location": "/v2/team/app/manifests/gone"},
                                  content=hose.body(200 * MiB))
        raise AssertionError(request.url)

    client = RegistryClient("reg.example", transport=httpx.MockTransport(handler))
    with pytest.raises(RegistryError) as err:
        client.tags("team/app")
    assert str(err.value) == ("the token service of registry reg.example (auth.example) sent a "
                              "token response larger than 1 MiB for team/app; refused")
    assert hose.sent <= 2 * MiB
    for tag in ("gone", "moved"):  # an error body past 1 MiB is dropped, the status stays
        hose.sent = 0
        with pytest.raises(RegistryNotFoundError) as not_found:
            client.get_manifest(ImageRef("reg.example/team/app", tag=tag))
        assert str(not_found.value) == f"registry reg.example has no team/app/manifests/{tag} (404)"
        assert hose.sent <= 2 * MiB


@pytest.mark.timeout(30)
def test_a_body_that_trickles_forever_ends_within_the_deadline() -> None:
    hose = Firehose()
    client = RegistryClient("reg.example", deadline=1.0, transport=httpx.MockTransport(
        lambda request: httpx.Response(200, content=hose.body(None, delay=0.01, chunk=b"{"))))
    start = time.monotonic()
    with pytest.raises(RegistryError) as err:
        client.get_manifest(ImageRef("reg.example/team/app", tag="abc"))
    assert time.monotonic() - start < 5
    assert str(err.value) == (
        "registry reg.example did not finish sending a manifest for reg.example/team/app:abc "
        "within 1s; gave up (is the network or a proxy between here and the registry slow?)")
    assert 10 < hose.sent < 1000


class EndlessServer:
    """A real HTTP server on a free loopback port whose every answer is an endless chunked
    body, as fast as the socket takes it or one byte at a time (`delay`)."""

    def __init__(self, delay: float = 0.0) -> None:
        stop = self.stop = threading.Event()
        self.sent = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self.send_response(200)
                self.send_header("Content-Type", OCI_MANIFEST)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"{" if delay else _CHUNK
                frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
                try:
                    while not stop.is_set():
                        self.wfile.write(frame)
                        outer.sent += len(chunk)
                        if delay:
                            self.wfile.flush()
                            time.sleep(delay)
                except OSError:
                    pass  # the client hung up, as it should
                self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EndlessServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_an_endless_chunked_body_over_a_real_socket_is_cut_at_the_limit() -> None:
    with EndlessServer() as server, RegistryClient(server.host, timeout=5) as client:
        ref = ImageRef(f"{server.host}/team/app", tag="abc")
        peak, raised = _peak_of(lambda: client.get_manifest(ref))
    assert isinstance(raised, RegistryError)
    assert str(raised) == f"registry {server.host} sent a manifest larger than 4 MiB for {ref}; " \
                          "refused"
    assert peak < 64 * MiB, f"peak {peak / MiB:.0f} MiB"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_trickling_body_over_a_real_socket_ends_within_the_deadline() -> None:
    with EndlessServer(delay=0.02) as server, \
            RegistryClient(server.host, timeout=5, deadline=2) as client:
        start = time.monotonic()
        with pytest.raises(RegistryError) as err:
            client.get_blob(f"{server.host}/team/app", "sha256:" + "0" * 64)
        elapsed = time.monotonic() - start
    assert 1.9 < elapsed < 8
    assert str(err.value).startswith(f"registry {server.host} did not finish sending a blob "
                                     "for team/app@sha256:")
    assert server.sent > 10  # it did trickle: the read timeout alone would never end this


def test_redirect_loops_bad_urls_and_odd_realms_are_clear_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/manifests/loop"):
            return httpx.Response(302, headers={"Location": path})
        if path.endswith("/tags/list"):
            return httpx.Response(200, json={"tags": ["a"]},
                                  headers={"Link": '<http://[::1/x>; rel="next"'})
        if path.endswith("/manifests/odd"):
            return httpx.Response(401, headers={"WWW-Authenticate":
                                                'Bearer realm="file:///etc/token"'})
        if request.method == "HEAD":  # a 600 MB layer exists: its size is no body to read
            return httpx.Response(200, headers={"Content-Length": str(600 * MiB)})
        raise AssertionError(request.url)

    client = RegistryClient("reg.example", "ci", Secret("pw"),
                            transport=httpx.MockTransport(handler))
    with pytest.raises(RegistryError) as err:
        client.get_manifest(ImageRef("reg.example/team/app", tag="loop"))
    assert str(err.value) == ("registry reg.example redirected a manifest for "
                              "reg.example/team/app:loop more than 10 times; refused")
    with pytest.raises(RegistryError, match=r"pointed GET team/app at an unusable URL"):
        client.tags("team/app")
    with pytest.raises(RegistryError) as err:
        client.get_manifest(ImageRef("reg.example/team/app", tag="odd"))
    assert str(err.value) == ("registry reg.example named a token service that is not an "
                              "http(s) URL ('file:///etc/token'); refused")
    assert client.has_blob("team/app", "sha256:" + "1" * 64)


def _non_loopback_address() -> str | None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: picks the outgoing address
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_insecure_registry_over_real_plain_http(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """registry.insecure: true reaches a plain-HTTP registry on a non-loopback address;
    without it the same registry is spoken to over https:// and fails clearly."""
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps({"name": "acme/svc", "tags": ["0123abcd"]}).encode()
            self.send_response(200 if self.path.startswith("/v2/acme/svc/tags/list") else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((address, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host = f"{address}:{server.server_address[1]}"
        auth = RegistryAuth(insecure=True)
        cfg = Config(service="svc", image=f"{host}/acme/svc", registry=auth)
        with RegistryClient.for_config(cfg) as client:
            assert client.tags(f"{host}/acme/svc") == ["0123abcd"]
        assert "registry.insecure is true" in str(insecure_warning(cfg))
        assert capsys.readouterr().err == ""  # the caller tells it, not the library
        plain = Config(service="svc", image=f"{host}/acme/svc")
        with RegistryClient.for_config(plain, deadline=10) as client, \
                pytest.raises(RegistryError):
            client.tags(f"{host}/acme/svc")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
