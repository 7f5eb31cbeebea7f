"""The first deploy of a new user's app to a host that has never seen plainsail, in every
mode (stop-start, behind the proxy, host registry): no network, no proxy, no host_dir, no
image of the app. Each test runs its own sshd whose sessions get a fresh, empty $HOME, and
builds its own image under a name no other test uses, so nothing is left over from
another test (the earlier tests' hosts already had the proxy's network, which hid that the
migration container joined it before anything created it)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plainsail.proxy import argv as pargv
from tests.support.cli import CliResult, plainsail
from tests.support.gitrepo import git
from tests.support.services import Registry, free_port
from tests.support.sshd import SSHHost, start_sshd, stop_sshd

PASSWORD = {"COSIGN_PASSWORD": "pristine-host-test"}
DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY start.sh /start.sh
CMD ["/bin/busybox", "sh", "/start.sh"]
"""
START = """/bin/busybox mkdir -p /www
echo '{"status": "ok"}' > /www/health
exec /bin/busybox httpd -f -p "$PORT" -h /www
"""
# The migration runs in a container of the new image, on the app's network.
MIGRATE = 'migrate:\n  command: [/bin/busybox, sh, -c, "echo migrated"]\n'


@dataclass
class FreshHost:
    ssh: SSHHost
    home: Path  # $HOME of every SSH session: empty at the start
    tag: str  # unique per test: service, image, network and host_dir names

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.ssh.run(list(argv))


@pytest.fixture
def fresh_host() -> Iterator[FreshHost]:
    """An SSH host whose sessions start in an empty home folder (sshd's SetEnv HOME)."""
    home = Path(tempfile.mkdtemp(prefix="psfresh-"))
    home.chmod(0o755)
    host, proc = start_sshd(extra_config=f"SetEnv HOME={home}\n")
    user = pwd.getpwnam(host.user)
    os.chown(home, user.pw_uid, user.pw_gid)
    tag = uuid.uuid4().hex[:8]
    try:
        yield FreshHost(host, home, tag)
    finally:
        stop_sshd(proc, host.directory)
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class NewApp:
    path: Path
    service: str
    image: str
    host: FreshHost

    def cli(self, *args: str) -> CliResult:
        return plainsail(*args, cwd=self.path, env=PASSWORD)

    def build_and_sign(self) -> str:
        b = self.cli("build", "--json")
        assert b.code == 0, b.text
        rec = json.loads(b.out)
        s = self.cli("sign", rec["tag"])
        assert s.code == 0, s.text
        # The test host shares this machine's Docker Engine: the build's local copy goes,
        # so the host holds no image of the app.
        forget_local_images(self.image)
        return f"{rec['tag']}@{rec['digest']}"

    def first_deploy(self, network: str = "", proxy: str = "") -> None:
        """Build and sign, check the host holds nothing of the app, then deploy: it must
        succeed, its migration included."""
        ref = self.build_and_sign()
        h = self.host
        assert not any(h.home.iterdir()), list(h.home.iterdir())
        found = h.run("docker", "image", "ls", "--format", "{{.Repository}}").stdout.split()
        assert not [r for r in found if r.endswith(self.image.rsplit("/", 1)[-1])], found
        for name in (network, proxy):
            assert not name or h.run("docker", "inspect", name).returncode != 0, name
        r = self.cli("deploy", ref, "--json")
        doc = json.loads(r.out)
        assert r.code == 0 and doc["outcome"] == "succeeded", r.text
        assert doc["migration"]["exit_code"] == 0, doc

    def remove_from_host(self) -> None:
        h = self.host
        ids = h.run("docker", "ps", "-aq", "--filter",
                    f"label=dev.plainsail.service={self.service}").stdout.split()
        if ids:
            h.run("docker", "rm", "-f", *ids)
        mine = h.run("docker", "image", "ls", "--format", "{{.Repository}} {{.ID}}").stdout
        ids = {line.split()[1] for line in mine.splitlines()
               if line.split()[0].endswith(self.image.rsplit("/", 1)[-1])}
        if ids:
            h.run("docker", "image", "rm", "-f", *ids)


def forget_local_images(image: str) -> None:
    local = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}",
                            image], capture_output=True, text=True).stdout.split()
    if local:
        subprocess.run(["docker", "image", "rm", "-f", *local], capture_output=True)


def new_app(root: Path, host: FreshHost, image: str, config: str) -> NewApp:
    """A new user's app folder: a git repository with a tiny image, keys made by keygen."""
    service = f"fresh-{host.tag}"
    root.mkdir()
    shutil.copy("/bin/busybox", root / "busybox")
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / "start.sh").write_text(START)
    ssh = host.ssh
    (root / "plainsail.yml").write_text(
        f"service: {service}\nimage: {image}\n"
        "signing:\n  key: cosign.key\n  public_key: cosign.pub\n"
        f"hosts: ['{ssh.host}']\nhost_dir: ~/.plainsail-{host.tag}\n"
        f"ssh:\n  identity_file: {ssh.identity_file}\n  known_hosts: {ssh.known_hosts}\n"
        + MIGRATE + config
        + "health:\n  path: /health\n  attempts: 40\n  interval: 250ms\n  timeout: 2s\n")
    git(root, "init", "-q", "-b", "main")
    app = NewApp(root, service, image, host)
    k = app.cli("keygen")
    assert k.code == 0, k.text
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "a new app")
    return app


def get(port: int, host_header: str | None = None) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/health", headers={"Host": host_header} if host_header else {})
        r = conn.getresponse()
        return f"{r.status} {r.read().decode().strip()}"
    finally:
        conn.close()


def test_stop_start_first_deploy_on_a_pristine_host(tmp_path: Path, fresh_host: FreshHost,
                                                    registry: Registry) -> None:
    port = free_port()
    image = registry.repo(f"t/fresh-{fresh_host.tag}")
    app = new_app(tmp_path / "app", fresh_host, image,
                  f"app:\n  port: 8000\n  env:\n    PORT: '8000'\n  publish: {port}\n")
    try:
        app.first_deploy()
        assert get(port) == '200 {"status": "ok"}'
    finally:
        app.remove_from_host()


def test_proxy_first_deploy_on_a_pristine_host(tmp_path: Path, fresh_host: FreshHost,
                                               registry: Registry, caddy_image: str) -> None:
    network, http_port = f"fresh-{fresh_host.tag}", free_port()
    image = registry.repo(f"t/fresh-{fresh_host.tag}")
    app = new_app(tmp_path / "app", fresh_host, image,
                  "app:\n  port: 8000\n  env:\n    PORT: '8000'\n"
                  f"proxy:\n  host: {network}.test\n  image: {caddy_image}\n  tls: off\n"
                  f"  http_port: {http_port}\n  https_port: {free_port()}\n"
                  f"  network: {network}\n")
    proxy_name = pargv.container_name(f"~/.plainsail-{fresh_host.tag}")
    try:
        app.first_deploy(network, proxy_name)
        assert get(http_port, f"{network}.test") == '200 {"status": "ok"}'
    finally:
        app.remove_from_host()
        fresh_host.run("docker", "rm", "-f", proxy_name)
        fresh_host.run("docker", "network", "rm", network)


def test_host_registry_first_deploy_on_a_pristine_host(tmp_path: Path,
                                                       fresh_host: FreshHost) -> None:
    port, registry_port = free_port(), free_port()
    image = f"t/fresh-{fresh_host.tag}"  # no registry host: the host's own registry
    app = new_app(tmp_path / "app", fresh_host, image,
                  f"registry:\n  mode: host\n  port: {registry_port}\n"
                  f"app:\n  port: {port}\n  env:\n    PORT: '{port}'\n  network: host\n")
    state = f"{fresh_host.home}/.plainsail-{fresh_host.tag}/{app.service}"
    try:
        app.first_deploy()
        assert get(port) == '200 {"status": "ok"}'
    finally:
        fresh_host.run("sh", "-c", 'kill "$(cat "$1/registry/pid")"', "sh", state)
        app.remove_from_host()
        forget_local_images(image)
