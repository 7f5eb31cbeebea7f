"""Pure logic: host parsing, tag rules, references, durations, credential stripping, argv."""

from __future__ import annotations

import pytest

from plainsail.config.durations import parse_duration
from plainsail.hosts import docker
from plainsail.hosts.addresses import parse_host
from plainsail.hosts.executor import Result, SSHExecutor, SSHOptions, write_file_argv
from plainsail.secret import Secret, redact
from plainsail.supply.git import strip_credentials
from plainsail.supply.images import ImageRef, mutable_tag_problem, split_ref


def test_hosts() -> None:
    h = parse_host("ssh://deploy@app1.example.com:2222")
    assert (h.user, h.hostname, h.port, h.destination) == (
        "deploy", "app1.example.com", 2222, "deploy@app1.example.com")
    assert parse_host("local").is_local
    assert parse_host("web-1").destination == "web-1"
    for bad in ("http://x", "ssh://u:pw@h", "a b", "ssh://h/path"):
        with pytest.raises(ValueError):
            parse_host(bad)


@pytest.mark.parametrize("tag", ["a3f1b2c3", "a3f1b2c", "a3f1b2c3-dirty-k2j4h5g6"])
def test_sha_tags_accepted(tag: str) -> None:
    assert mutable_tag_problem(tag) is None


@pytest.mark.parametrize("tag", ["latest", "stable", "v1.2.3", "main", "abc"])
def test_mutable_tags_refused(tag: str) -> None:
    problem = mutable_tag_problem(tag)
    assert problem and "rollback and audit impossible" in problem


def test_refs() -> None:
    d = "sha256:" + "a" * 64
    assert split_ref("a3f1b2c3") == ("a3f1b2c3", None)
    assert split_ref(f"a3f1b2c3@{d}") == ("a3f1b2c3", d)
    assert split_ref(d) == (None, d)
    with pytest.raises(ValueError):
        split_ref("a3f1b2c3@sha256:short")
    with pytest.raises(ValueError):
        split_ref("reg.example.com/x:tag")
    ref = ImageRef("127.0.0.1:5000/acme/api", "a3f1b2c3", d)
    assert (ref.registry, ref.path, ref.pinned) == (
        "127.0.0.1:5000", "acme/api", f"127.0.0.1:5000/acme/api@{d}")
    assert ImageRef("nginx").path == "library/nginx"


def test_durations() -> None:
    assert parse_duration("10s") == 10 and parse_duration("5m") == 300
    assert parse_duration("500ms") == 0.5 and parse_duration("1h30m") == 5400
    assert parse_duration(3) == 3.0
    for bad in ("5 parsecs", "-1", "s", ""):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.mark.parametrize(
    "url, clean",
    [("https://user:tok3n@github.com/acme/api.git", "https://github.com/acme/api"),
     ("git@github.com:acme/api.git", "https://github.com/acme/api"),
     ("ssh://git@gitlab.example.com:2222/acme/api.git", "https://gitlab.example.com/acme/api"),
     ("https://github.com/acme/api", "https://github.com/acme/api"),
     ("/srv/git/api", "/srv/git/api")],
)
def test_strip_credentials(url: str, clean: str) -> None:
    assert strip_credentials(url) == clean


def test_secret_wrapper() -> None:
    s = Secret("hunter22")
    assert str(s) == "***" and "hunter22" not in repr(s) and f"{s}" == "***"
    assert redact("pw=hunter22 ok", [s]) == "pw=*** ok"


def test_build_argv() -> None:
    argv = docker.build(".", "Dockerfile", "r/x:abc1234", {"a": "1"}, {"B": "2"})
    assert argv == ["docker", "build", "--force-rm", "--file", "Dockerfile", "--tag", "r/x:abc1234",
                    "--label", "a=1", "--build-arg", "B=2", "."]


def test_pull_only_by_digest() -> None:
    assert docker.pull("r/x@sha256:" + "0" * 64)[-1].endswith("0" * 64)
    with pytest.raises(ValueError):
        docker.pull("r/x:latest")


def test_run_argv() -> None:
    argv = docker.run_args(
        name="api-a3f1b2c3", image="r/x@sha256:" + "1" * 64, env_file="/h/env",
        labels={docker.LABEL_SERVICE: "api"}, network="bridge", publish=(80, 8080),
        volumes=["data:/data"], init=True, stop_timeout=10, restart="unless-stopped",
    )
    assert argv[:5] == ["docker", "run", "--detach", "--name", "api-a3f1b2c3"]
    assert "--init" in argv and argv[argv.index("--publish") + 1] == "80:8080"
    assert argv[argv.index("--restart") + 1] == "unless-stopped"
    assert argv[-1].startswith("r/x@sha256:")


def test_ssh_wrap_quotes_one_string() -> None:
    ex = SSHExecutor(parse_host("ssh://deploy@h:2200"),
                     SSHOptions(known_hosts="/k", identity_file="/i"))
    wrapped = ex.wrap(["echo", "a b", "$(reboot)"])
    assert wrapped[-1] == "echo 'a b' '$(reboot)'"
    assert wrapped[-2] == "--" and wrapped[-3] == "deploy@h"
    assert "-p" in wrapped and "BatchMode=yes" in wrapped
    assert not any(a.startswith("StrictHostKeyChecking") for a in wrapped)
    ex.close()


def test_write_file_argv_keeps_path_out_of_the_script() -> None:
    argv = write_file_argv("/tmp/x; rm -rf /")
    assert argv[:2] == ["sh", "-c"] and argv[4] == "/tmp/x; rm -rf /"
    assert "rm -rf" not in argv[2]


def test_common_options_before_or_after_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from plainsail.cli import build_parser

    monkeypatch.delenv("PLAINSAIL_CONFIG", raising=False)
    p = build_parser()
    assert p.parse_args(["-c", "a.yml", "status"]).config == "a.yml"
    assert p.parse_args(["status", "-c", "b.yml"]).config == "b.yml"
    assert p.parse_args(["status"]).config is None
    assert p.parse_args(["-v", "status"]).verbose is True
    assert p.parse_args(["status"]).verbose is False


DOCKER_RUN_FAILED = ("docker: Error response from daemon: network web not found\n\n"
                     "Run 'docker run --help' for more information\n")


@pytest.mark.parametrize("hint", ["Run 'docker run --help' for more information",
                                  "See 'docker run --help'."])
def test_a_failed_command_is_summed_up_by_its_error_not_its_help_hint(hint: str) -> None:
    from plainsail.hosts.addresses import parse_host
    from plainsail.hosts.executor import LocalExecutor, Result, error_line

    text = DOCKER_RUN_FAILED.replace("Run 'docker run --help' for more information", hint)
    assert error_line(text) == "docker: Error response from daemon: network web not found"
    ex = LocalExecutor(parse_host("local"))
    err = ex.failure(Result(["docker", "run"], 125, "", text, 0.1), "docker run")
    assert str(err).endswith("exit code 125: docker: Error response from daemon: network web "
                             "not found"), str(err)
    assert "help" not in str(err)


def test_an_exit_255_after_the_connection_worked_says_it_dropped() -> None:
    """OpenSSH's exit 255 with nothing on stderr: on a host that never answered it is a
    connect failure; once a command got through, the connection dropped (the host or the
    network went away), not a key or address to check."""
    ex = SSHExecutor(parse_host("ssh://deploy@10.0.0.1"), SSHOptions())
    dropped = Result(["docker", "pull", "x"], 255, "", "", 0.1)
    assert "cannot connect over SSH" in str(ex.failure(dropped, "docker pull"))
    ex.connected = True
    said = str(ex.failure(dropped, "docker pull"))
    assert said.startswith(f"{ex.host.name}: the SSH connection dropped during docker pull")
    assert "known_hosts" not in said
