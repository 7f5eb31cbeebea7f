"""plainsail honours the user's OpenSSH configuration: ssh.options and ssh_config settings
are not overridden, and a refused host key is explained with the command that trusts it.

OpenSSH reads ~/.ssh/config from the passwd entry's home, not $HOME, so these tests never
touch a real ~/.ssh: an `ssh` placed first on PATH runs the real one with `-F FILE`, which
OpenSSH then reads as the user's configuration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from plainsail.errors import RemoteError
from plainsail.hosts.addresses import parse_host
from plainsail.hosts.executor import Result, SSHExecutor, SSHOptions
from tests.support.sshd import SSHHost, _keygen

UseConfig = Callable[[str], Path]


@pytest.fixture
def ssh_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> UseConfig:
    """Make every `ssh` run by plainsail read the given text as the user's ssh_config."""
    real = shutil.which("ssh")
    if real is None:
        pytest.fail("the OpenSSH client is not installed; run scripts/setup.sh")
    shim = tmp_path / "bin"
    shim.mkdir()
    config = tmp_path / "ssh_config"
    (shim / "ssh").write_text(f'#!/bin/sh\nexec {real} -F "{config}" "$@"\n')
    (shim / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")

    def use(text: str) -> Path:
        config.write_text(text)
        return config

    use("")
    return use


def _value(argv: list[str], option: str) -> list[str]:
    """Every value given for an -o option, in order."""
    return [argv[i + 1].split("=", 1)[1] for i, a in enumerate(argv[:-1])
            if a == "-o" and argv[i + 1].lower().startswith(option.lower() + "=")]


def _argv(options: dict[str, str] | None = None, host: str = "ssh://deploy@web-1:2222"
          ) -> list[str]:
    ex = SSHExecutor(parse_host(host), SSHOptions(options=options or {}))
    try:
        return ex.ssh_argv()
    finally:
        ex.close()


def test_no_strict_host_key_checking_is_forced(ssh_config: UseConfig) -> None:
    argv = _argv()
    assert _value(argv, "StrictHostKeyChecking") == []
    assert _value(argv, "BatchMode") == ["yes"]
    assert _value(argv, "ControlMaster") == ["auto"]


def test_user_ssh_options_come_before_plainsails_own(ssh_config: UseConfig) -> None:
    argv = _argv({"StrictHostKeyChecking": "accept-new", "ConnectTimeout": "3",
                  "ServerAliveInterval": "5"})
    # OpenSSH keeps the first value given, so the user's must be the first (and only) one.
    assert _value(argv, "StrictHostKeyChecking") == ["accept-new"]
    assert _value(argv, "ConnectTimeout") == ["3"]
    assert _value(argv, "ServerAliveInterval") == ["5"]
    assert argv.index("StrictHostKeyChecking=accept-new") < argv.index("BatchMode=yes")


def test_ssh_config_values_are_not_overridden(ssh_config: UseConfig) -> None:
    ssh_config("Host web-1\n  ConnectTimeout 3\n  ServerAliveInterval 7\n")
    argv = _argv()
    assert _value(argv, "ConnectTimeout") == []
    assert _value(argv, "ServerAliveInterval") == []


def test_defaults_apply_where_ssh_config_is_silent(ssh_config: UseConfig) -> None:
    ssh_config("Host elsewhere\n  ConnectTimeout 3\n")
    argv = _argv()
    assert _value(argv, "ConnectTimeout") == ["10"]
    assert _value(argv, "ServerAliveInterval") == ["15"]


def _failure(stderr: str, options: SSHOptions | None = None) -> str:
    ex = SSHExecutor(parse_host("ssh://deploy@web-1:2222"), options or SSHOptions())
    try:
        res = Result(argv=["true"], returncode=255, stdout="", stderr=stderr, seconds=0.1)
        return str(ex.failure(res))
    finally:
        ex.close()


def test_unknown_host_key_message_says_how_to_trust_it(ssh_config: UseConfig) -> None:
    msg = _failure("No ED25519 host key is known for [web-1]:2222 and you have requested "
                   "strict checking.\r\nHost key verification failed.\r\n")
    assert msg == ("ssh://deploy@web-1:2222: the host key of web-1:2222 is not known; check "
                   "it and add it with: ssh-keyscan -p 2222 web-1 >> ~/.ssh/known_hosts "
                   "(or set ssh.known_hosts)"), msg
    msg = _failure("Host key verification failed.\r\n", SSHOptions(known_hosts="/etc/kh x"))
    assert msg.endswith("ssh-keyscan -p 2222 web-1 >> '/etc/kh x'"), msg


def test_changed_host_key_message(ssh_config: UseConfig) -> None:
    msg = _failure(
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
        "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
        "Host key for [web-1]:2222 has changed and you have requested strict checking.\n"
        "Host key verification failed.\n")
    assert "host key of web-1:2222 has CHANGED" in msg
    assert "ssh-keygen -R '[web-1]:2222' -f ~/.ssh/known_hosts" in msg


def test_other_ssh_failures_keep_the_generic_message(ssh_config: UseConfig) -> None:
    msg = _failure("ssh: connect to host web-1 port 2222: Connection refused\r\n")
    assert "cannot connect over SSH (ssh: connect to host web-1 port 2222: Connection " \
           "refused)" in msg


# ---------------------------------------------------------------- against a real sshd


def _executor(host: SSHHost, known_hosts: Path, **options: str) -> SSHExecutor:
    return SSHExecutor(parse_host(host.host), SSHOptions(
        identity_file=str(host.identity_file), known_hosts=str(known_hosts),
        options={"GlobalKnownHostsFile": "/dev/null", **options}))


@pytest.mark.integration
def test_unknown_host_key_is_refused_with_the_hint(ssh_host: SSHHost, ssh_config: UseConfig,
                                                   tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    with _executor(ssh_host, known) as ex, pytest.raises(RemoteError) as err:
        ex.run(["true"])
    assert str(err.value) == (
        f"{ssh_host.host}: the host key of 127.0.0.1:{ssh_host.port} is not known; check it "
        f"and add it with: ssh-keyscan -p {ssh_host.port} 127.0.0.1 >> {known}")
    assert known.read_text() == "", "an unknown host key was trusted"
    # The suggested command does what it says.
    scan = subprocess.run(["ssh-keyscan", "-p", str(ssh_host.port), "127.0.0.1"],
                          capture_output=True, text=True, timeout=30)
    known.write_text(scan.stdout)
    with _executor(ssh_host, known) as ex:
        assert ex.run(["id", "-un"]).stdout.strip() == ssh_host.user


@pytest.mark.integration
def test_changed_host_key_is_refused(ssh_host: SSHHost, ssh_config: UseConfig,
                                     tmp_path: Path) -> None:
    _keygen(tmp_path / "other", "not-the-test-host")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{ssh_host.port} {(tmp_path / 'other.pub').read_text()}")
    with _executor(ssh_host, known, StrictHostKeyChecking="accept-new") as ex, \
            pytest.raises(RemoteError) as err:
        ex.run(["true"])
    assert f"the host key of 127.0.0.1:{ssh_host.port} has CHANGED" in str(err.value)


@pytest.mark.integration
def test_accept_new_in_ssh_options_is_honoured(ssh_host: SSHHost, ssh_config: UseConfig,
                                               tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    with _executor(ssh_host, known, StrictHostKeyChecking="accept-new") as ex:
        assert ex.run(["id", "-un"]).stdout.strip() == ssh_host.user
    assert f"[127.0.0.1]:{ssh_host.port} ssh-ed25519 " in known.read_text()


@pytest.mark.integration
def test_accept_new_in_ssh_config_is_honoured(ssh_host: SSHHost, ssh_config: UseConfig,
                                              tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    ssh_config("Host 127.0.0.1\n  StrictHostKeyChecking accept-new\n")
    with _executor(ssh_host, known) as ex:
        assert ex.run(["id", "-un"]).stdout.strip() == ssh_host.user
    assert f"[127.0.0.1]:{ssh_host.port} ssh-ed25519 " in known.read_text()
