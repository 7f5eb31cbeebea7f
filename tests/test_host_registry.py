"""registry.mode host end to end, over the real SSH test host and Docker Engine: build and
sign into the deployer's loopback registry, deploy (the image and its signature copied to
the host's loopback registry over SSH, verified there, pulled by digest), a second
version, a rollback to the first whose image only the host's registry still holds, and
unsigned or tampered images refused before anything changes."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import CliResult, plainsail
from tests.support.gitrepo import git
from tests.support.services import free_port
from tests.support.sshd import SSHHost

PASSWORD = {"COSIGN_PASSWORD": "host-mode-test"}
DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY start.sh /start.sh
COPY version /version
CMD ["/bin/busybox", "sh", "/start.sh"]
"""
START = """/bin/busybox mkdir -p /www
echo '{"database": "ok", "version": "'"$(/bin/busybox cat /version)"'"}' > /www/health
exec /bin/busybox httpd -f -p "$PORT" -h /www
"""


@dataclass
class HostModeRepo:
    path: Path
    service: str
    image: str
    app_port: int
    registry_port: int
    ssh: SSHHost

    def run(self, *args: str) -> CliResult:
        return plainsail(*args, cwd=self.path, env=PASSWORD)

    def commit_version(self, version: str) -> None:
        (self.path / "version").write_text(version + "\n")
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "-m", f"version {version}")

    def build_sign(self, sign: bool = True) -> tuple[str, str]:
        b = self.run("build", "--json")
        assert b.code == 0, b.text
        rec = json.loads(b.out)
        assert rec["image"] == self.image
        if sign:
            s = self.run("sign", rec["tag"])
            assert s.code == 0, s.text
        return rec["tag"], rec["digest"]

    def health(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.app_port}/health",
                                    timeout=3) as r:
            return str(r.read().decode())

    def records(self) -> list[dict[str, object]]:
        res = self.ssh.run(["cat", f"{self.ssh.home}/.plainsail/{self.service}/history.jsonl"])
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    def host_images(self) -> list[str]:
        res = self.ssh.run(["docker", "image", "ls", "--digests", "--format",
                            "{{.Repository}}@{{.Digest}}"])
        return [line for line in res.stdout.split() if self.image in line]

    def running(self) -> list[str]:
        res = self.ssh.run(["docker", "ps", "--filter",
                            f"label=dev.plainsail.service={self.service}",
                            "--filter", "label=dev.plainsail.role=app", "--quiet"])
        if not res.stdout.split():
            return []
        res = self.ssh.run(["docker", "inspect", "--format", "{{.Config.Image}}",
                            *res.stdout.split()])
        return res.stdout.split()


@pytest.fixture
def host_mode_repo(tmp_path: Path, ssh_host: SSHHost) -> Iterator[HostModeRepo]:
    root = tmp_path / "svc"
    root.mkdir()
    shutil.copy("/bin/busybox", root / "busybox")
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / "start.sh").write_text(START)
    service = f"hm-{uuid.uuid4().hex[:8]}"
    image = f"t/hostmode-{uuid.uuid4().hex[:8]}"  # no registry host: that is the point
    app_port, registry_port = free_port(), free_port()
    (root / "plainsail.yml").write_text(
        f"service: {service}\nimage: {image}\n"
        f"registry:\n  mode: host\n  port: {registry_port}\n"
        "signing:\n  key: cosign.key\n  public_key: cosign.pub\n"
        f"hosts: ['{ssh_host.host}']\n"
        f"ssh:\n  identity_file: {ssh_host.identity_file}\n"
        f"  known_hosts: {ssh_host.known_hosts}\n"
        f"app:\n  port: {app_port}\n  env:\n    PORT: '{app_port}'\n  network: host\n"
        "  stop_timeout: 1s\n"
        "health:\n  path: /health\n  body_contains: '\"database\": \"ok\"'\n"
        "  attempts: 20\n  interval: 250ms\n  timeout: 2s\n"
        "retain: 0\n"
    )
    git(root, "init", "-q", "-b", "main")
    repo = HostModeRepo(root, service, image, app_port, registry_port, ssh_host)
    k = repo.run("keygen")
    assert k.code == 0, k.text
    repo.commit_version("1")
    yield repo
    state = f"{ssh_host.home}/.plainsail/{service}"
    ssh_host.run(["sh", "-c", 'kill "$(cat "$1/registry/pid")"', "sh", state])
    ids = ssh_host.run(["docker", "ps", "-aq", "--filter",
                        f"label=dev.plainsail.service={service}"]).stdout.split()
    if ids:
        ssh_host.run(["docker", "rm", "-f", *ids])
    images = ssh_host.run(["docker", "image", "ls", "--format", "{{.ID}}",
                           f"127.0.0.1:{registry_port}/{image}"]).stdout.split()
    if images:
        ssh_host.run(["docker", "image", "rm", "-f", *set(images)])
    ssh_host.run(["rm", "-rf", state])
    local = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}",
                            image], capture_output=True, text=True).stdout.split()
    if local:
        subprocess.run(["docker", "image", "rm", "-f", *local], capture_output=True)


def test_host_mode_build_sign_deploy_second_version_rollback(
        host_mode_repo: HostModeRepo) -> None:
    r = host_mode_repo
    pulled_from = f"127.0.0.1:{r.registry_port}/{r.image}"

    tag1, digest1 = r.build_sign()
    assert (r.path / ".plainsail" / "registry" / "data").is_dir()
    v = r.run("verify", tag1)
    # the signed identity is the configured image, not the loopback address it travels by
    assert v.code == 0 and f"for index.docker.io/{r.image}\n" in v.out, v.text

    dry = r.run("deploy", "--dry-run")
    assert dry.code == 0, dry.text
    for step in ("host-registry:", "send:", "verify-host:", "pull:"):
        assert step in dry.out, dry.out
    assert dry.out.index("send:") < dry.out.index("pull:")
    assert f"docker pull --quiet {pulled_from}@{digest1}" in dry.out
    assert r.running() == [] and r.records() == []  # a dry run changes nothing

    first = r.run("deploy", "--json")
    assert first.code == 0, first.text
    assert json.loads(first.out)["outcome"] == "succeeded"
    assert '"version": "1"' in r.health()
    assert r.running() == [f"{pulled_from}@{digest1}"]
    rec = r.records()[-1]
    assert rec["image"] == r.image and rec["digest"] == digest1
    assert rec["signed_by"]["identity"] == f"index.docker.io/{r.image}"  # type: ignore[index]
    steps = [s["name"] for s in rec["steps"]]  # type: ignore[union-attr]
    assert steps.index("host-registry") < steps.index("send") < steps.index(
        "verify-host") < steps.index("pull")

    r.commit_version("2")
    tag2, digest2 = r.build_sign()
    second = r.run("deploy")
    assert second.code == 0, second.text
    # only what changed travels: the busybox layer is already on the host
    assert "already there" in second.out and "signature included" in second.out, second.out
    # The long steps report as they go, one line per event without a terminal.
    assert "] 1 blob(s) sent (" in second.out and "[send " in second.out, second.out
    assert "[gate " in second.out and "attempt 1/" in second.out, second.out
    assert '"version": "2"' in r.health()
    # retain: 0 pruned the first version's container and image from Docker on the host
    assert not any(digest1 in i for i in r.host_images())

    back = r.run("rollback")
    assert back.code == 0, back.text
    assert f"{tag2} -> {tag1}" in back.out
    assert "send: 0 blob(s) sent" in back.out, back.out  # the host's registry still had it
    assert '"version": "1"' in r.health()
    assert r.running() == [f"{pulled_from}@{digest1}"]
    rec = r.records()[-1]
    assert rec["kind"] == "rollback" and rec["digest"] == digest1
    # the image is verified again where the host pulls it from
    assert {"verify-host", "pull"} <= {s["name"] for s in rec["steps"]}  # type: ignore[union-attr]


def test_host_mode_refuses_unsigned_and_tampered_images(host_mode_repo: HostModeRepo) -> None:
    r = host_mode_repo
    tag1, digest1 = r.build_sign()
    assert r.run("deploy").code == 0
    before = r.records()

    # unsigned: refused in preflight, nothing changed on the host
    r.commit_version("3")
    tag3, digest3 = r.build_sign(sign=False)
    unsigned = r.run("deploy")
    assert unsigned.code != 0 and "unsigned" in unsigned.err, unsigned.text
    assert r.running() == [f"127.0.0.1:{r.registry_port}/{r.image}@{digest1}"]
    assert r.records() == before

    # tampered: the first version's signature copied onto the third image (names another
    # digest), and the first version's tag moved to the third image
    from plainsail.config.model import load
    from plainsail.supply.images import ImageRef
    from plainsail.supply.localregistry import stop_all
    from plainsail.supply.registry import RegistryClient
    from plainsail.supply.signatures import signature_tag

    cfg = load(r.path / "plainsail.yml", env={})
    with RegistryClient.for_config(cfg) as client:
        data, media_type, _ = client.get_manifest(
            ImageRef(r.image, tag=signature_tag(digest1)))
        client.put_manifest(ImageRef(r.image, tag=signature_tag(digest3)), data, media_type)
        forged = r.run("deploy", tag3)
        assert forged.code != 0 and "another digest" in forged.err, forged.text
        v3, v3_type, _ = client.get_manifest(ImageRef(r.image, digest=digest3))
        client.put_manifest(ImageRef(r.image, tag=tag1), v3, v3_type)
        drift = r.run("deploy", tag1, "--force")
        assert drift.code != 0 and "tag drift" in drift.err, drift.text
    stop_all()
    assert r.running() == [f"127.0.0.1:{r.registry_port}/{r.image}@{digest1}"]
    assert r.records() == before


def test_host_registry_is_plainsails_own_and_closed_to_other_users(
        host_mode_repo: HostModeRepo) -> None:
    """Another local user (here the test's own, not the SSH user) can neither read nor
    delete from the host's registry, cannot read its folder, and a program of theirs that
    holds registry.port gets neither the image nor the password."""
    import http.client
    import socket

    r = host_mode_repo
    tag1, digest1 = r.build_sign()
    assert r.run("deploy").code == 0
    folder = f"{r.ssh.home}/.plainsail/{r.service}/registry"
    modes = r.ssh.run(["stat", "-c", "%a %U", folder, f"{folder}/auth",
                       f"{folder}/auth/password", f"{folder}/auth/htpasswd"]).stdout.split("\n")
    assert [m.split()[0] for m in modes if m] == ["700", "700", "600", "600"], modes
    for method, path in (("GET", "/v2/_catalog"), ("GET", f"/v2/{r.image}/manifests/{tag1}"),
                         ("DELETE", f"/v2/{r.image}/manifests/{digest1}")):
        conn = http.client.HTTPConnection("127.0.0.1", r.registry_port, timeout=5)
        conn.request(method, path)
        assert conn.getresponse().status == 401, (method, path)
        conn.close()
    # Docker on the host pulls with the password (a rollback that must pull works).
    r.ssh.run(["docker", "image", "rm", "-f", f"127.0.0.1:{r.registry_port}/{r.image}"
               f"@{digest1}"])

    # The registry stops; another program takes its port before the next deploy.
    r.ssh.run(["sh", "-c", 'kill "$(cat "$1/pid")"; sleep 1', "sh", folder])
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", r.registry_port))
    squatter.listen(8)
    got: list[bytes] = []

    def serve() -> None:
        squatter.settimeout(20)
        try:
            while True:
                conn, _ = squatter.accept()
                with conn:
                    conn.settimeout(2)
                    data = conn.recv(65536)
                    got.append(data)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nDocker-Distribution-Api-Version: "
                                 b"registry/2.0\r\nContent-Length: 2\r\n\r\n{}")
        except OSError:
            return

    import threading

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        r.commit_version("2")
        r.build_sign()
        second = r.run("deploy")
    finally:
        squatter.close()
        t.join(5)
    assert second.code != 0, second.text
    assert "not plainsail's registry" in second.text, second.text
    assert not any(b"Authorization" in g or b"PUT" in g or b"POST" in g for g in got), got
    assert '"version": "1"' in r.health()
