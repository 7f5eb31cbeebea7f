"""A real SSH test host: OpenSSH's sshd on a free loopback port, logging in as an
unprivileged user in the docker group, with a throwaway key and its own known_hosts.

The invoking user's ~/.ssh is never read or written: every ssh command built here passes
`-F /dev/null`, an explicit identity and an explicit known_hosts file, and host keys are
checked strictly. The login user (`psdeploy`, HOME /home/psdeploy) is created once and left
in place; the sshd process and its files are removed at the end of the session.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.services import free_port

SSHD = "/usr/sbin/sshd"
DEFAULT_USER = "psdeploy"
DOCKER_SOCKET = Path("/var/run/docker.sock")


def ssh_argv(
    *,
    user: str,
    port: int,
    identity_file: str | os.PathLike[str],
    known_hosts: str | os.PathLike[str],
    command: Sequence[str] = (),
    hostname: str = "127.0.0.1",
    options: Sequence[str] = (),
) -> list[str]:
    """The ssh argv that runs `command` (an argv list, quoted with shlex.join) on the host.

    Uses no ssh_config file (so nothing in ~/.ssh is read or created), only the given key,
    and strict host key checking against the given known_hosts file.
    """
    argv = [
        "ssh", "-F", "/dev/null",
        "-i", str(identity_file),
        "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10",
        "-o", "LogLevel=ERROR",
        "-p", str(port),
    ]
    for opt in options:
        argv += ["-o", opt]
    argv += [f"{user}@{hostname}", "--"]
    if command:
        argv.append(shlex.join(command))
    return argv


@dataclass(frozen=True)
class SSHHost:
    host: str  # for plainsail.yml: ssh://psdeploy@127.0.0.1:PORT
    hostname: str
    port: int
    user: str
    home: Path
    identity_file: Path
    known_hosts: Path
    directory: Path  # holds the key, known_hosts, sshd_config and sshd.log

    def argv(self, command: Sequence[str] = (), options: Sequence[str] = ()) -> list[str]:
        return ssh_argv(
            user=self.user, port=self.port, identity_file=self.identity_file,
            known_hosts=self.known_hosts, command=command, hostname=self.hostname,
            options=options,
        )

    def run(
        self, command: Sequence[str], *, input: str | None = None, timeout: float = 60,  # noqa: A002
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run an argv on the host as the login user; stdout and stderr are captured."""
        return subprocess.run(
            self.argv(command), input=input, capture_output=True, text=True,
            timeout=timeout, check=check,
        )

    @property
    def log(self) -> str:
        path = self.directory / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""


# ---------------------------------------------------------------- set-up steps


def ensure_user(name: str = DEFAULT_USER) -> pwd.struct_passwd:
    """Create the unprivileged login user once (idempotent, safe against a parallel run)."""
    if os.geteuid() != 0:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            pytest.fail(f"user {name} does not exist and only root can create it; run the "
                        "tests as root (scripts/test.sh does)")
        return entry
    try:
        pwd.getpwnam(name)
    except KeyError:
        created = subprocess.run(
            ["useradd", "--create-home", "--home-dir", f"/home/{name}",
             "--shell", "/bin/bash", "--groups", "docker", name],
            capture_output=True, text=True,
        )
        if created.returncode not in (0, 9):  # 9: created meanwhile by a parallel run
            pytest.fail(f"useradd {name} failed: {created.stderr.strip()}")
    entry = pwd.getpwnam(name)
    if name not in grp.getgrnam("docker").gr_mem:
        subprocess.run(["usermod", "-aG", "docker", name], check=True)
    # Without PAM, sshd refuses a locked account ("!" in /etc/shadow, useradd's default);
    # "*" keeps password logins impossible without locking the account.
    shadow = subprocess.run(["getent", "shadow", name], capture_output=True, text=True)
    if shadow.stdout.split(":")[1:2] != ["*"]:
        subprocess.run(["usermod", "-p", "*", name], check=True)
    home = Path(entry.pw_dir)
    if not home.is_dir():
        home.mkdir(parents=True, mode=0o755)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    return entry


def ensure_docker_socket_group(socket_path: Path = DOCKER_SOCKET) -> None:
    """The docker group must be able to use the socket (Debian's default; fixed if not)."""
    if not socket_path.exists():
        pytest.fail(f"{socket_path} does not exist: is dockerd running? (scripts/setup.sh)")
    st = socket_path.stat()
    gid = grp.getgrnam("docker").gr_gid
    if st.st_gid != gid:
        os.chown(socket_path, -1, gid)
    if (st.st_mode & 0o060) != 0o060:
        os.chmod(socket_path, stat.S_IMODE(st.st_mode) | 0o060)


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, capture_output=True,
    )


def _wait_for_banner(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd did not answer on port {port}:\n{log.read_text()}")
        time.sleep(0.05)


def start_sshd(
    user: str = DEFAULT_USER, *, identity_from: Path | None = None, extra_config: str = "",
    docker_socket: Path = DOCKER_SOCKET,
) -> tuple[SSHHost, subprocess.Popen[bytes]]:
    """Start sshd for `user` on a free port; return the host and the sshd process.

    identity_from reuses another host's client key (one ssh.identity_file for a fleet);
    extra_config adds sshd_config lines (e.g. SetEnv DOCKER_HOST=... for a second engine).
    """
    if not Path(SSHD).exists() or not shutil.which("ssh-keygen"):
        pytest.fail("openssh-server is not installed; run scripts/setup.sh")
    entry = ensure_user(user)
    ensure_docker_socket_group(docker_socket)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir

    directory = Path(tempfile.mkdtemp(prefix="pssshd-"))
    # sshd reads AuthorizedKeysFile as the login user: the folder must be searchable.
    directory.chmod(0o711)
    host_key = directory / "ssh_host_ed25519_key"
    identity = directory / "id_ed25519"
    _keygen(host_key, "plainsail-test-host")
    if identity_from is None:
        _keygen(identity, "plainsail-test-client")
    else:
        shutil.copy2(identity_from, identity)
        shutil.copy2(f"{identity_from}.pub", f"{identity}.pub")
    authorized = directory / "authorized_keys"
    authorized.write_text((directory / "id_ed25519.pub").read_text())
    authorized.chmod(0o644)

    port = free_port()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(
        f"[127.0.0.1]:{port} {(directory / 'ssh_host_ed25519_key.pub').read_text()}"
    )
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {host_key}\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        # The key files live in a temp folder under the world-writable /tmp.
        "StrictModes no\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "PermitRootLogin no\n"
        f"AllowUsers {user}\n"
        "PrintMotd no\n"
        "PrintLastLog no\n"
        # Room for multiplexed connections (ControlMaster) and parallel tests.
        "MaxSessions 64\n"
        "MaxStartups 64:30:128\n"
        "Subsystem sftp internal-sftp\n"
        "LogLevel VERBOSE\n"
        + extra_config
    )
    log = directory / "sshd.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_banner(port, proc, log)
    except BaseException:
        stop_sshd(proc, directory)
        raise
    host = SSHHost(
        host=f"ssh://{user}@127.0.0.1:{port}", hostname="127.0.0.1", port=port, user=user,
        home=Path(entry.pw_dir), identity_file=identity, known_hosts=known_hosts,
        directory=directory,
    )
    return host, proc


def stop_sshd(proc: subprocess.Popen[bytes], directory: Path) -> None:
    """Stop the listening sshd (idempotent) and remove its files."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def ssh_host() -> Iterator[SSHHost]:
    """A real SSH host on 127.0.0.1, as the unprivileged docker-group user psdeploy."""
    host, proc = start_sshd()
    try:
        yield host
    finally:
        stop_sshd(proc, host.directory)
