"""registry.mode host without Docker or SSH: the config rules, the plan's steps and argv
lists, and a failure before the switch ending the deploy as aborted, nothing changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plainsail.config import model as configlib
from plainsail.deploy import hostregistry
from plainsail.deploy.outcomes import ABORTED
from plainsail.deploy.plan import Target, host_plan
from plainsail.errors import ConfigError
from plainsail.hosts.state import LockInfo, Paths
from plainsail.supply.registrycopy import CopyStats
from tests.test_engine import V1, Bench

DIGEST = "sha256:" + "ab" * 32
PINNED = "registry:2@sha256:" + "cd" * 32


def parse(text: str) -> configlib.Config:
    return configlib.parse(text, Path("/x/plainsail.yml"), {})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.problems


def host_mode(extra: str = "", image: str = "acme/api") -> configlib.Config:
    return parse(f"service: api\nimage: {image}\nregistry:\n  mode: host\n{extra}"
                 "hosts: ['ssh://deploy@web-1']\nsigning:\n  public_key: cosign.pub\n")


def test_host_mode_config_defaults_and_values() -> None:
    cfg = host_mode()
    assert cfg.host_mode and cfg.registry is not None
    assert cfg.registry.port == 5000 and cfg.registry.image is None
    cfg = host_mode(f"  port: 5111\n  image: '{PINNED}'\n")
    assert cfg.registry is not None and (cfg.registry.port, cfg.registry.image) == (5111, PINNED)
    assert not parse("service: api\nimage: r.example.com/acme/api\n").host_mode


@pytest.mark.parametrize(("text", "needle"), [
    ("image: r.example.com/acme/api\nregistry: {mode: host}\n",
     "image: with registry.mode host the image travels without a registry: give the "
     "repository without a registry host (acme/api)"),
    ("image: localhost:5000/api\nregistry: {mode: host}\n", "without a registry host (api)"),
    ("image: acme/api\nregistry: {mode: host, username: u, password: p}\n",
     "registry.username: is not used with mode: host"),
    ("image: acme/api\nregistry: {mode: host, insecure: true}\n",
     "registry.insecure: is not used with mode: host"),
    ("image: acme/api\nregistry: {port: 5001}\n",
     "registry.port: is used only with mode: host"),
    ("image: r.example.com/acme/api\nregistry: {username: u, password: p, image: "
     f"'{PINNED}'}}\n", "registry.image: is used only with mode: host"),
    ("image: acme/api\nregistry: {mode: host, image: 'registry:2'}\n",
     "registry.image: 'registry:2' is not an image pinned by digest"),
    ("image: acme/api\nregistry: {mode: host, port: 70000}\n", "registry.port: 70000"),
    ("image: acme/api\nregistry: {mode: hots}\n", "registry.mode: 'hots' is not one of"),
    ("image: acme/api\nregistry: {mode: host, prot: 1}\n", "did you mean port?"),
])
def test_host_mode_config_problems(text: str, needle: str) -> None:
    found = problems("service: api\n" + text)
    assert any(needle in p for p in found), found


def test_hosts_pull_from_their_own_loopback_registry() -> None:
    assert hostregistry.pull_repository(host_mode()) == "127.0.0.1:5000/acme/api"
    assert hostregistry.pull_repository(host_mode(image="api")) == "127.0.0.1:5000/library/api"
    plain = parse("service: api\nimage: r.example.com/acme/api\n")
    assert hostregistry.pull_repository(plain) == "r.example.com/acme/api"


def test_start_argv_passes_every_value_as_a_parameter() -> None:
    cfg = host_mode(f"  port: 5111\n  image: '{PINNED}'\n")
    argv = hostregistry.start_argv(cfg, "/home/deploy/.plainsail/api")
    assert argv[:4] == ["sh", "-c", hostregistry.START_SCRIPT, "sh"]
    folder, port, image, name, service, config = argv[4:]
    assert (folder, port, image, name, service) == (
        "/home/deploy/.plainsail/api/registry", "5111", PINNED, "api-registry", "api")
    assert "addr: 127.0.0.1:5111\n" in config  # loopback only
    assert "rootdirectory: /home/deploy/.plainsail/api/registry/data\n" in config
    assert "5111" not in hostregistry.START_SCRIPT and "/home" not in hostregistry.START_SCRIPT
    assert '--publish "127.0.0.1:$port:5000"' in hostregistry.START_SCRIPT


def _plan(cfg: configlib.Config, **kw: object) -> list[str]:
    target = Target(hostregistry.pull_repository(cfg), "a3f1b2c3", DIGEST, True)
    lock = LockInfo("id-1", "me", "m", 1, "now", "a3f1b2c3", "local", "deploy")
    plan = host_plan(cfg, target, "20260101T000000Z-abcdef", "fp",
                     Paths("/home/deploy/.plainsail/api"), [], None, None, lock,
                     unchanged=False, migrate_here=False, **kw)  # type: ignore[arg-type]
    pull = plan.step("pull")
    assert pull is not None and pull.argv == [
        "docker", "pull", "--quiet", f"127.0.0.1:5000/acme/api@{DIGEST}"]
    start = plan.step("start-new")
    assert start is not None and start.argv and start.argv[-1] == (
        f"127.0.0.1:5000/acme/api@{DIGEST}")
    send = plan.step("send")
    assert send is not None and send.timeout == 900.0 and "forwarded over SSH" in send.what
    return [s.name for s in plan.steps]


def test_the_plan_starts_the_registry_and_sends_the_image_before_the_pull() -> None:
    assert _plan(host_mode()) == ["lock+env", "host-registry", "send", "verify-host", "pull",
                                  "start-new", "gate", "record", "unlock"]
    unverified = parse("service: api\nimage: acme/api\nregistry: {mode: host}\n"
                       "signing: {verify: false}\n")
    assert "verify-host" not in _plan(unverified)


def test_a_host_without_a_registry_aborts_before_anything_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.test_engine as engine

    monkeypatch.setattr(engine, "IMAGE", "acme/api")
    b = Bench(tmp_path, extra="registry: {mode: host}\n")
    v1 = Target(hostregistry.pull_repository(b.cfg), V1.tag, V1.digest, True)
    monkeypatch.setitem(engine.TARGETS, V1.tag, v1)
    s = b.deploy(v1)
    assert s["outcome"] == ABORTED, s
    assert "has no docker-registry; install it there" in s["reason"]
    assert "nothing was switched" in s["reason"]
    assert b.fake.running() == [] and not b.fake.images  # nothing pulled, nothing started
    assert not b.fake.locked("api")
    steps = [st["name"] for st in b.fake.history("api")[-1]["steps"]]
    assert steps == ["lock+env", "host-registry"]


def test_copy_summary() -> None:
    assert CopyStats(2, 3 * 1024 * 1024, 4, 3, True).summary() == (
        "2 blob(s) sent (3.0 MiB), 4 already there, 3 manifest(s), signature included")
    assert CopyStats().summary().endswith("0 B), 0 already there, 0 manifest(s), "
                                          "no signature found")


def test_the_port_check_accepts_only_the_registrys_own_listener(tmp_path: Path) -> None:
    """OURS_SCRIPT on this machine: the registry's password is printed only when what
    listens on the port is the registry process named in its folder (binary form), or
    root's (the container form); nothing listening is refused unless Docker forwards the
    port of our running container without a listener."""
    import socket
    import subprocess
    import sys

    (tmp_path / "auth").mkdir()
    (tmp_path / "auth" / "password").write_text("pw\n")

    def check(port: int) -> tuple[int, str]:
        res = subprocess.run(["sh", "-c", hostregistry.OURS_SCRIPT, "sh", str(tmp_path),
                              str(port), "no-such-container-xyz"],
                             capture_output=True, text=True)
        return res.returncode, res.stdout.strip()

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        unused = free.getsockname()[1]
    assert check(unused)[0] == hostregistry.NOTHING
    # A process of ours that listens, named in the folder: the registry (binary form).
    proc = subprocess.Popen([sys.executable, "-c",
                             "import socket,sys,time; s=socket.socket(); "
                             "s.bind(('127.0.0.1',0)); s.listen(); "
                             "print(s.getsockname()[1], flush=True); time.sleep(30)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        (tmp_path / "pid").write_text(f"{proc.pid}\n")
        assert check(port) == (0, "pw")
        # Another process holds the port: not ours, whoever runs it.
        other = subprocess.Popen(["sleep", "30"])
        (tmp_path / "pid").write_text(f"{other.pid}\n")
        try:
            assert check(port)[0] == hostregistry.NOT_OURS
        finally:
            other.kill()
            other.wait()
        # No registry process (the container form): root's listener (Docker's proxy).
        (tmp_path / "pid").unlink()
        expected = (0, "pw") if os.geteuid() == 0 else (hostregistry.NOT_OURS, "")
        assert check(port)[0] == expected[0]
    finally:
        proc.kill()
        proc.wait()
