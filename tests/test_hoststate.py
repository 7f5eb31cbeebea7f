"""Host state faults are named for what they are, against a real sshd as an unprivileged
user: a folder it cannot write is not a lock, an env path that is a directory is not
written into (and no temporary file with secrets stays behind), a failed history append
says why."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from plainsail.errors import LockError, PlainsailError
from plainsail.hosts import state as hoststate
from plainsail.hosts.addresses import parse_host
from plainsail.hosts.executor import SSHExecutor, SSHOptions
from tests.support.sshd import SSHHost

pytestmark = pytest.mark.integration

SECRET = f"s3cr3t-{uuid.uuid4().hex}"


@pytest.fixture
def ex(ssh_host: SSHHost) -> Iterator[SSHExecutor]:
    with SSHExecutor(parse_host(ssh_host.host), SSHOptions(
            identity_file=str(ssh_host.identity_file), known_hosts=str(ssh_host.known_hosts),
            options={"GlobalKnownHostsFile": "/dev/null"})) as executor:
        assert isinstance(executor, SSHExecutor)
        yield executor


@pytest.fixture
def host_dir(ssh_host: SSHHost) -> Iterator[str]:
    """A host_dir of its own in the SSH user's home."""
    path = f"{ssh_host.home}/.ps-test-{uuid.uuid4().hex[:8]}"
    yield path
    ssh_host.run(["sh", "-c", 'chmod -R u+rwx "$1"; rm -rf "$1"', "sh", path])


@pytest.fixture
def readonly_dir() -> Iterator[Path]:
    """A folder the SSH user can enter but not write (owned by another user)."""
    path = Path(tempfile.mkdtemp(prefix="ps-ro-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _info() -> hoststate.LockInfo:
    return hoststate.LockInfo(deploy_id="d-1", holder="tester@here", machine="elsewhere",
                              pid=1, started="2024-01-01T00:00:00Z", tag="a3f1b2c3",
                              origin="test")


def _files(ssh_host: SSHHost, root: str) -> list[str]:
    res = ssh_host.run(["find", root, "-mindepth", "1"])
    return sorted(line[len(root) + 1:] for line in res.stdout.splitlines())


def test_lock_in_a_folder_that_is_not_writable(ex: SSHExecutor, readonly_dir: Path) -> None:
    paths = hoststate.Paths(f"{readonly_dir}/svc")
    with pytest.raises(PlainsailError) as err:
        hoststate.acquire(ex, paths, _info())
    msg = str(err.value)
    assert not isinstance(err.value, LockError), msg
    assert "not writable" in msg and paths.root in msg and "Permission denied" in msg, msg
    assert "holder" not in msg


def test_lock_is_taken_and_a_held_lock_names_its_holder(ex: SSHExecutor, host_dir: str) -> None:
    paths = hoststate.Paths(f"{host_dir}/svc")
    hoststate.acquire(ex, paths, _info())
    holder = hoststate.read_lock(ex, paths)
    assert isinstance(holder, hoststate.LockInfo) and holder.deploy_id == "d-1"
    with pytest.raises(LockError, match="another deploy holds the lock: tester@here"):
        hoststate.acquire(ex, paths, _info())
    assert hoststate.release(ex, paths, "d-1")


def test_env_file_is_written_whole_and_private(ex: SSHExecutor, ssh_host: SSHHost,
                                               host_dir: str) -> None:
    paths = hoststate.Paths(f"{host_dir}/svc")
    hoststate.write_env(ex, paths, {"TOKEN": SECRET})
    assert ssh_host.run(["stat", "-c", "%a", paths.env]).stdout.strip() == "600"
    assert ssh_host.run(["cat", paths.env]).stdout == f"TOKEN={SECRET}\n"
    assert _files(ssh_host, host_dir) == ["svc", "svc/env"]


def test_env_path_that_is_a_directory(ex: SSHExecutor, ssh_host: SSHHost,
                                      host_dir: str) -> None:
    paths = hoststate.Paths(f"{host_dir}/svc")
    assert ssh_host.run(["mkdir", "-p", paths.env]).returncode == 0
    with pytest.raises(PlainsailError) as err:
        hoststate.write_env(ex, paths, {"TOKEN": SECRET})
    assert str(err.value) == (f"{ex.host.name}: cannot write the env file: {paths.env} is a "
                              "directory; remove it and retry")
    assert _files(ssh_host, host_dir) == ["svc", "svc/env"], "a temporary file was left"
    grep = ssh_host.run(["grep", "-r", SECRET, host_dir])
    assert grep.returncode == 1, "the secret was left on disk"


def test_env_file_in_a_folder_that_is_not_writable(ex: SSHExecutor,
                                                   readonly_dir: Path) -> None:
    paths = hoststate.Paths(str(readonly_dir))
    with pytest.raises(PlainsailError) as err:
        hoststate.write_env(ex, paths, {"TOKEN": SECRET})
    assert f"cannot write the env file {paths.env}" in str(err.value)
    assert "Permission denied" in str(err.value)
    assert list(readonly_dir.iterdir()) == []


def test_history_append_that_fails_says_why(ex: SSHExecutor, ssh_host: SSHHost,
                                            host_dir: str, readonly_dir: Path) -> None:
    paths = hoststate.Paths(f"{host_dir}/svc")
    hoststate.append_history(ex, paths, {"id": "d-1", "outcome": "succeeded"})
    assert hoststate.read_history(ex, paths, print) == [{"id": "d-1", "outcome": "succeeded"}]

    ssh_host.run(["sh", "-c", 'rm -f "$1" && mkdir "$1"', "sh", paths.history])
    with pytest.raises(PlainsailError) as err:
        hoststate.append_history(ex, paths, {"id": "d-2"})
    assert str(err.value) == (f"{ex.host.name}: cannot append the deploy record to "
                              f"{paths.history}: {paths.history} is a directory; remove it")

    ro = hoststate.Paths(str(readonly_dir))
    with pytest.raises(PlainsailError) as err:
        hoststate.append_history(ex, ro, {"id": "d-3"})
    msg = str(err.value)
    assert msg.startswith(f"{ex.host.name}: cannot append the deploy record to {ro.history}: ")
    assert "Permission denied" in msg and "make it a file the SSH user can write" in msg


def test_a_torn_history_line_never_swallows_the_next_record(
        ex: SSHExecutor, ssh_host: SSHHost, host_dir: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A write cut short (a full disk) leaves a line without its line break; the next
    record is appended on a line of its own, and the damaged line is reported to the
    caller (never written to the terminal)."""
    paths = hoststate.Paths(f"{host_dir}/svc")
    hoststate.append_history(ex, paths, {"id": "d-1", "outcome": "succeeded"})
    ssh_host.run(["sh", "-c", 'printf \'{"id": "d-2", "outco\' >> "$1"', "sh", paths.history])
    hoststate.append_history(ex, paths, {"id": "d-3", "outcome": "succeeded"})
    told: list[str] = []
    records = hoststate.read_history(ex, paths, told.append)
    assert [r["id"] for r in records] == ["d-1", "d-3"] and records.damaged == [2]
    assert told == [f"{ex.host.name}: {paths.history}: 1 line(s) of the deploy history cannot "
                    "be read (line 2); they were skipped, and a record may be missing"]
    assert capsys.readouterr() == ("", "")


@pytest.fixture
def full_dir(ssh_host: SSHHost) -> Iterator[Path]:
    """A folder of the SSH user on a tiny file system that is full (no blocks, no inodes)."""
    import subprocess

    path = Path(tempfile.mkdtemp(prefix="ps-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k,nr_inodes=3,mode=0755", "tmpfs",
                    str(path)], check=True)
    try:
        subprocess.run(["chown", ssh_host.user, str(path)], check=True)
        (path / "svc").mkdir()
        subprocess.run(["chown", ssh_host.user, str(path / "svc")], check=True)
        with (path / "filler").open("wb") as f, contextlib.suppress(OSError):
            f.write(b"x" * 64 * 1024)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        shutil.rmtree(path, ignore_errors=True)


def test_a_full_disk_is_reported_as_a_full_disk(ex: SSHExecutor, full_dir: Path) -> None:
    paths = hoststate.Paths(str(full_dir / "svc"))
    errors = []
    for act in (lambda: hoststate.write_env(ex, paths, {"TOKEN": SECRET}),
                lambda: hoststate.append_history(ex, paths, {"id": "d-1"}),
                lambda: hoststate.acquire(ex, paths, _info())):
        with pytest.raises(PlainsailError) as err:
            act()
        errors.append(str(err.value))
    for e in errors:
        assert "No space left on device" in e and "disk (or the SSH user's quota) is full" in e
        assert "writable" not in e and "permissions" not in e and SECRET not in e


@pytest.fixture
def others_dir() -> Iterator[Path]:
    """A folder made by another user (nobody), writable by everyone."""
    import subprocess

    path = Path(tempfile.mkdtemp(prefix="ps-others-"))
    path.chmod(0o777)
    subprocess.run(["chown", "nobody", str(path)], check=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_host_dir_another_user_controls_is_refused(ex: SSHExecutor, others_dir: Path,
                                                     ssh_host: SSHHost, host_dir: str) -> None:
    """host_dir in a folder another user owns (or may write) receives no secret; in the SSH
    user's own folder, a symbolic link planted at the env file's place is replaced, never
    followed, and the folder is made 0700."""
    with pytest.raises(PlainsailError) as err:
        hoststate.lock_and_write_env(ex, hoststate.Paths(str(others_dir / "svc")), _info(),
                                     {"TOKEN": SECRET})
    assert f"{others_dir} belongs to user id" in str(err.value)
    assert "not writable by group or others" in str(err.value)
    assert list(others_dir.iterdir()) == []
    ssh_host.run(["sh", "-c", 'umask 022; mkdir -p "$1" && chmod 777 "$1"', "sh", host_dir])
    paths = hoststate.Paths(f"{host_dir}/svc")
    with pytest.raises(PlainsailError, match="may be written by other users .mode 777."):
        hoststate.acquire(ex, paths, _info())
    ssh_host.run(["chmod", "755", host_dir])
    ssh_host.run(["sh", "-c", 'mkdir -p "$1/svc" && ln -s /tmp/planted-elsewhere "$1/svc/env"',
                  "sh", host_dir])
    hoststate.lock_and_write_env(ex, paths, _info(), {"TOKEN": SECRET})
    out = ssh_host.run(["sh", "-c", 'stat -c "%F %a" "$1/svc/env"; '
                        'ls -a "$1/svc"; test -e /tmp/planted-elsewhere && echo followed',
                        "sh", host_dir]).stdout
    assert "regular file 600" in out and "followed" not in out, out
    assert ".tmp." not in out
