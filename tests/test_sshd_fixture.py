"""The SSH test host is real: key login as an unprivileged user, Docker access, strict host
key checking, its own HOME, and the invoking user's ~/.ssh left alone."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.sshd import SSHHost, _keygen, ssh_argv

pytestmark = pytest.mark.integration


def _ssh_dir_state() -> tuple[bool, list[str], list[float]]:
    ssh_dir = Path(os.path.expanduser("~")) / ".ssh"
    if not ssh_dir.exists():
        return False, [], []
    files = sorted(p.name for p in ssh_dir.iterdir())
    return True, files, [(ssh_dir / f).stat().st_mtime for f in files]


def test_login_as_the_unprivileged_user(ssh_host: SSHHost) -> None:
    before = _ssh_dir_state()
    result = ssh_host.run(["id", "-un"])
    assert result.returncode == 0, result.stderr + ssh_host.log
    assert result.stdout.strip() == "psdeploy"
    uid = ssh_host.run(["id", "-u"]).stdout.strip()
    assert uid != "0"
    assert "docker" in ssh_host.run(["id", "-Gn"]).stdout.split()
    assert ssh_host.host == f"ssh://psdeploy@127.0.0.1:{ssh_host.port}"
    assert _ssh_dir_state() == before, "the invoking user's ~/.ssh was changed"


def test_home_is_its_own_and_writable(ssh_host: SSHHost) -> None:
    result = ssh_host.run(["sh", "-c", 'echo "$HOME"; cd && touch .plainsail-probe && pwd'])
    assert result.returncode == 0, result.stderr
    home, cwd = result.stdout.split()
    assert home == str(ssh_host.home) == cwd
    assert home != os.path.expanduser("~")
    assert ssh_host.run(["rm", "-f", f"{home}/.plainsail-probe"]).returncode == 0


def test_docker_works_over_ssh(ssh_host: SSHHost) -> None:
    result = ssh_host.run(["docker", "ps", "--format", "{{.ID}}"])
    assert result.returncode == 0, result.stderr
    images = ssh_host.run(["docker", "image", "inspect", "plainsail-base:bookworm"])
    assert images.returncode == 0, images.stderr


def test_arguments_keep_their_quoting(ssh_host: SSHHost) -> None:
    tricky = ["a b", "it's", "$HOME", "semi;colon", ""]
    result = ssh_host.run(["printf", "%s\\n", *tricky])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:-1] == tricky


def test_wrong_host_key_is_refused(ssh_host: SSHHost, tmp_path: Path) -> None:
    other = tmp_path / "other_host_key"
    _keygen(other, "not-the-test-host")
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{ssh_host.port} {(tmp_path / 'other_host_key.pub').read_text()}")
    argv = ssh_argv(user=ssh_host.user, port=ssh_host.port,
                    identity_file=ssh_host.identity_file, known_hosts=wrong,
                    command=["true"])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 255
    assert "host key" in result.stderr.lower()


def test_unknown_host_is_refused(ssh_host: SSHHost, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = ssh_argv(user=ssh_host.user, port=ssh_host.port,
                    identity_file=ssh_host.identity_file, known_hosts=empty,
                    command=["true"])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 255
    assert empty.read_text() == "", "an unknown host key was added to known_hosts"


def test_only_the_throwaway_key_logs_in(ssh_host: SSHHost, tmp_path: Path) -> None:
    stranger = tmp_path / "id_ed25519"
    _keygen(stranger, "stranger")
    argv = ssh_argv(user=ssh_host.user, port=ssh_host.port, identity_file=stranger,
                    known_hosts=ssh_host.known_hosts, command=["true"])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 255
    assert "permission denied" in result.stderr.lower()
