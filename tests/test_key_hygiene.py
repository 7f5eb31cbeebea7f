"""Keys stay out of images and commits; the source label; plain-HTTP registries on request.
Pure logic, temporary git repositories, no Docker."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from plainsail.cli import main
from plainsail.config import model as configlib
from plainsail.errors import BuildError, ConfigError
from plainsail.secret import Secret
from plainsail.supply import build, dockerignore, keys
from plainsail.supply.registry import RegistryClient, insecure_warning


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "svc"
    path.mkdir()
    git(path, "init", "-q")
    (path / "Dockerfile").write_text("FROM scratch\nCOPY . .\n")
    (path / "plainsail.yml").write_text(
        "service: svc\nimage: registry.example.com/acme/svc\n"
        "signing:\n  key: cosign.key\n  public_key: cosign.pub\n")
    git(path, "add", ".")
    git(path, "commit", "-qm", "init")
    return path


def write_key(path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(keys.encrypt_private_key(key, Secret("pw")))


# ---------------------------------------------------------------- keygen


def test_keygen_adds_ignore_entries(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    monkeypatch.chdir(repo)
    (repo / ".gitignore").write_text("__pycache__/")  # no final newline
    assert main(["keygen"]) == 0
    assert (repo / ".dockerignore").read_text() == "cosign.key\n.plainsail/\n"
    assert (repo / ".gitignore").read_text() == "__pycache__/\ncosign.key\n.plainsail/\n"
    assert "Updated" in capsys.readouterr().out
    (repo / "cosign.key").rename(repo / "old.key")
    (repo / "cosign.pub").unlink()
    assert main(["keygen"]) == 0  # already listed: nothing added twice
    assert (repo / ".dockerignore").read_text() == "cosign.key\n.plainsail/\n"
    assert (repo / ".gitignore").read_text().count("cosign.key") == 1


def test_keygen_in_a_subfolder_lists_the_path_from_the_top(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    (repo / "keys").mkdir()
    monkeypatch.chdir(repo / "keys")
    (repo / ".dockerignore").write_text("**/*.key\n")
    assert main(["keygen", "--output-key-prefix", "release"]) == 0
    assert (repo / ".dockerignore").read_text() == "**/*.key\n.plainsail/\n"
    assert "keys/release.key\n" in (repo / ".gitignore").read_text()


def test_keygen_says_what_to_commit_with_paths_from_the_repository(
        repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import re
    import shlex

    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    (repo / "keys").mkdir()
    monkeypatch.chdir(repo / "keys")
    assert main(["keygen", "--output-key-prefix", "release"]) == 0
    out = capsys.readouterr().out
    assert str(repo) not in out and str(repo.resolve()) not in out, out
    assert "Private key written to keys/release.key" in out
    assert "Updated .gitignore (added keys/release.key, .plainsail/)" in out
    assert "Next: commit .dockerignore, .gitignore, keys/release.pub" in out
    # The advice, pasted where keygen ran, leaves a clean work tree (the next build's need).
    m = re.search(r"\((git add [^)]*) && git commit\)", out)
    assert m, out
    subprocess.run(shlex.split(m.group(1)), cwd=repo / "keys", check=True)
    git(repo, "commit", "-qm", "signing key")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, check=True,
                            capture_output=True, text=True).stdout
    assert status == "", status


def test_keygen_refusal_touches_no_ignore_file(repo: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    monkeypatch.chdir(repo)
    (repo / "cosign.key").write_text("x")
    assert main(["keygen"]) == 1
    assert not (repo / ".dockerignore").exists() and not (repo / ".gitignore").exists()


# ---------------------------------------------------------------- build refuses a key


def test_build_refuses_a_private_key_in_the_context(repo: Path) -> None:
    write_key(repo / "cosign.key")
    (repo / ".gitignore").write_text("cosign.key\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-qm", "ignore")
    cfg = configlib.load(str(repo / "plainsail.yml"))
    with pytest.raises(BuildError, match="private signing key cosign.key is inside the build "
                       "context and .dockerignore does not exclude it"):
        build.plan(cfg)
    (repo / ".dockerignore").write_text("cosign.key\n")
    git(repo, "add", ".dockerignore")
    git(repo, "commit", "-qm", "dockerignore")
    assert build.plan(cfg).ref.tag


def test_build_finds_keys_by_content_and_honours_exceptions(repo: Path) -> None:
    write_key(repo / "release.key")
    (repo / ".gitignore").write_text("*.key\n.dockerignore\n")
    (repo / ".dockerignore").write_text("*.key\n!release.key\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-qm", "ignore")
    cfg = configlib.load(str(repo / "plainsail.yml"))
    with pytest.raises(BuildError, match="release.key"):
        build.plan(cfg)
    (repo / "Dockerfile.dockerignore").write_text("*\n")  # BuildKit: wins over .dockerignore
    (repo / ".gitignore").write_text("*.key\n.dockerignore\nDockerfile.dockerignore\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-qm", "ignore2")
    assert build.plan(cfg).ref.tag


@pytest.mark.parametrize(("patterns", "path", "out"), [
    ("cosign.key", "cosign.key", True),
    ("/cosign.key", "cosign.key", True),
    ("cosign.key", "sub/cosign.key", False),
    ("*.key", "cosign.key", True),
    ("*.key", "sub/cosign.key", False),
    ("**/*.key", "sub/deep/cosign.key", True),
    ("**/*.key", "cosign.key", True),
    ("sub", "sub/cosign.key", True),
    ("sub/\n!sub/cosign.key", "sub/cosign.key", False),
    ("*\n!cosign.key", "cosign.key", False),
    ("# cosign.key", "cosign.key", False),
    ("cosign.ke?", "cosign.key", True),
    ("cosign.[jk]ey", "cosign.key", True),
    ("./cosign.key", "cosign.key", True),
])
def test_dockerignore_rules(patterns: str, path: str, out: bool) -> None:
    assert dockerignore.excluded(dockerignore.parse(patterns), path) is out


# ---------------------------------------------------------------- source label


def test_source_label_falls_back_to_github_actions(repo: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = configlib.load(str(repo / "plainsail.yml"))
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    assert f"{build.OCI}.source" not in build.plan(cfg).labels
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/svc")
    assert build.plan(cfg).labels[f"{build.OCI}.source"] == "https://github.com/acme/svc"


def test_build_warns_without_source_label(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from plainsail.supply.buildrecords import BuildRecord

    def fake_build(cfg: configlib.Config, **kwargs: object) -> BuildRecord:
        return BuildRecord(image=cfg.image, tag="0123abcd", digest="sha256:" + "a" * 64,
                           git_sha="0123abcd" * 5, created="now", builder="b",
                           labels={f"{build.OCI}.revision": "x"})

    monkeypatch.setattr("plainsail.commands.build.run_build", fake_build)
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    monkeypatch.delenv("GITHUB_ENV", raising=False)
    assert main(["build", "-c", str(repo / "plainsail.yml")]) == 0
    err = capsys.readouterr().err
    assert "no org.opencontainers.image.source label" in err and "build.source" in err


# ---------------------------------------------------------------- registry.insecure


def cfg_with(tmp_path: Path, text: str) -> configlib.Config:
    (tmp_path / "plainsail.yml").write_text(text)
    return configlib.load(str(tmp_path / "plainsail.yml"))


def test_insecure_registry_is_plain_http_with_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cfg_with(tmp_path, "service: svc\nimage: registry.lan:5000/acme/svc\n"
                   "registry:\n  insecure: true\n")
    assert cfg.registry is not None and cfg.registry.insecure and not cfg.registry.username
    with RegistryClient.for_config(cfg) as client:
        assert client.base_url == "http://registry.lan:5000"
    assert capsys.readouterr() == ("", "")  # the library tells its caller, not the terminal
    said = insecure_warning(cfg)
    assert said and said.startswith("registry.insecure is true: talking to registry.lan:5000")
    assert main(["verify", "--config", str(tmp_path / "plainsail.yml"), "v1"]) != 0
    assert "warning: registry.insecure is true" in capsys.readouterr().err


def test_registry_without_insecure_stays_https(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = cfg_with(tmp_path, "service: svc\nimage: registry.lan:5000/acme/svc\n")
    with RegistryClient.for_config(cfg) as client:
        assert client.base_url == "https://registry.lan:5000"
    assert "insecure" not in capsys.readouterr().err


def test_insecure_must_be_a_boolean_and_auth_still_needs_both(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="registry.insecure: expected true or false"):
        cfg_with(tmp_path, "service: s\nimage: r.lan/a/s\nregistry:\n  insecure: maybe\n")
    with pytest.raises(ConfigError, match="password missing"):
        cfg_with(tmp_path, "service: s\nimage: r.lan/a/s\nregistry:\n  insecure: true\n"
                 "  username: u\n")


# ---------------------------------------------------------------- signing config


@pytest.mark.parametrize(("block", "problem"), [
    ("  repositories: [registry.example.com/acme/*, registry.example.com/x/y]\n", None),
    ("  repositories: ['*']\n", "not a valid image repository"),
    ("  repositories: ['registry.example.com/a/b:tag']\n", "contains a tag"),
    ("  keyless: {issuer: i, identity: x, trusted_root: r.json}\n", None),
    ("  keyless: {issuer: i, identity_regexp: 'x.*', trusted_root: r.json}\n", None),
    ("  keyless: {issuer: i, trusted_root: r.json}\n", "exactly one of identity"),
    ("  keyless: {issuer: i, identity: a, identity_regexp: b, trusted_root: r}\n",
     "exactly one of identity"),
    ("  keyless: {issuer: i, identity_regexp: '(', trusted_root: r.json}\n",
     "not a valid regular expression"),
    ("  keyless: {identity: x, trusted_root: r.json}\n", "signing.keyless.issuer"),
    ("  keyless: {issuer: i, identity: x}\n", "signing.keyless.trusted_root"),
    ("  keyless: {issuer: i, identity: x, trusted_root: r, subject: y}\n", "unknown key"),
])
def test_signing_config(tmp_path: Path, block: str, problem: str | None) -> None:
    text = "service: s\nimage: r.lan/a/s\nsigning:\n" + block
    if problem is None:
        cfg = cfg_with(tmp_path, text)
        assert cfg.signing.repositories or cfg.signing.keyless
        return
    with pytest.raises(ConfigError, match=problem.replace("*", r"\*")):
        cfg_with(tmp_path, text)
