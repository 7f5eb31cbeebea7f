"""The registry client: auth (basic against a real htpasswd registry, bearer tokens through
a token endpoint that follows the distribution token spec), errors, credentials lookup."""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from plainsail.config import Config, RegistryAuth
from plainsail.errors import RegistryError
from plainsail.images import ImageRef
from plainsail.registry import (
    OCI_MANIFEST,
    RegistryClient,
    docker_credentials,
    is_loopback,
    parse_challenge,
    sha256_digest,
)
from plainsail.secret import Secret
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
