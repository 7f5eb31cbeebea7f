"""plainsail init: what it writes, what it detects, what it refuses, and that what it
writes passes plainsail config check, plainsail audit and zizmor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from plainsail.audit import audit
from plainsail.cli import main
from plainsail.config import model as configlib
from tests.support.gitrepo import git

CHECKOUT = "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683  # v4.2.2"
SETUP_PYTHON = "actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065  # v5.6.0"
UPLOAD = "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02  # v4.6.2"
SHA = "0123456789abcdef0123456789abcdef01234567"


def make_repo(root: Path, *, expose: str | None = "9000", sql: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(
        "FROM python:3.12-slim\n" + (f"EXPOSE {expose}\n" if expose else "") + 'CMD ["app"]\n')
    if sql:
        (root / "migrations").mkdir()
        (root / "migrations" / "0001_notes.sql").write_text(
            "CREATE TABLE notes (id bigint PRIMARY KEY);\n")
    (root / ".gitignore").write_text("node_modules/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def run_init(repo: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    monkeypatch.chdir(repo)
    return main(["init", "--image", "registry.example.com/acme/notes",
                 "--host", "ssh://deploy@app1.example.com", *extra])


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    return make_repo(tmp_path / "notes")


def test_writes_a_config_that_passes_config_check(repo: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_init(repo, monkeypatch, "--host", "app2") == 0
    cfg = configlib.load(repo / "plainsail.yml", env={})
    assert cfg.service == "notes"
    assert cfg.image == "registry.example.com/acme/notes"
    assert cfg.hosts == ["ssh://deploy@app1.example.com", "app2"]
    assert cfg.app.port == 9000  # from EXPOSE
    assert cfg.migrate is not None and cfg.migrate.command == ["plainsail", "migrate"]
    assert (cfg.signing.key, cfg.signing.public_key) == ("cosign.key", "cosign.pub")
    assert cfg.health.path == "/health"
    assert main(["config", "check", "-c", str(repo / "plainsail.yml")]) == 0


def test_flags_win_over_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "svc", expose=None, sql=False)
    assert run_init(repo, monkeypatch, "--service", "billing", "--port", "7000",
                    "--health-path", "/ready", "--migrate-command",
                    "alembic upgrade head") == 0
    cfg = configlib.load(repo / "plainsail.yml", env={})
    assert (cfg.service, cfg.app.port, cfg.health.path) == ("billing", 7000, "/ready")
    assert cfg.migrate is not None and cfg.migrate.command == ["alembic", "upgrade", "head"]


def test_no_migrations_folder_means_no_migrate(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "svc", expose=None, sql=False)
    assert run_init(repo, monkeypatch) == 0
    cfg = configlib.load(repo / "plainsail.yml", env={})
    assert cfg.migrate is None and cfg.app.port == 8080
    assert "name: lint the migrations" not in (repo / ".github/workflows/deploy.yml").read_text()


def test_django_migrations_get_manage_py(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "shop", sql=False)
    (repo / "manage.py").write_text("")
    (repo / "orders" / "migrations").mkdir(parents=True)
    (repo / "orders" / "migrations" / "0001_initial.py").write_text("")
    assert run_init(repo, monkeypatch) == 0
    cfg = configlib.load(repo / "plainsail.yml", env={})
    assert cfg.migrate is not None
    assert cfg.migrate.command == ["python", "manage.py", "migrate", "--noinput"]


def test_workflow_follows_the_seed(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_init(repo, monkeypatch) == 0
    text = (repo / ".github/workflows/deploy.yml").read_text()
    wf = yaml.safe_load(text)
    assert wf[True] == {"push": {"branches": ["main"]}}  # YAML 1.1 reads `on` as True
    assert wf["permissions"] == {}
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    assert build["permissions"] == {"contents": "read"}
    assert set(build["outputs"]) == {"image-tag", "image-digest"}
    checkout = build["steps"][0]
    assert checkout["with"]["fetch-depth"] == 0
    assert checkout["with"]["persist-credentials"] is False
    runs = "\n".join(s.get("run", "") for s in build["steps"])
    assert "plainsail build" in runs and 'plainsail sign "$TAG" --key "$key"' in runs
    assert 'plainsail lint migrations migrations --since "$BEFORE"' in runs
    assert deploy["needs"] == "build"
    assert deploy["environment"] == "production"
    assert deploy["concurrency"]["cancel-in-progress"] is False
    assert deploy["permissions"] == {"contents": "read"}
    deploy_runs = "\n".join(s.get("run", "") for s in deploy["steps"])
    assert 'plainsail deploy "$TAG@$DIGEST"' in deploy_runs
    assert '[ -z "${!name}" ]' in deploy_runs  # empty SSH secrets stop the job
    env = next(s["env"] for s in deploy["steps"] if "plainsail deploy" in s.get("run", ""))
    assert env["TAG"] == "${{ needs.build.outputs.image-tag }}"
    assert env["DIGEST"] == "${{ needs.build.outputs.image-digest }}"
    upload = deploy["steps"][-1]
    assert upload["if"] == "${{ always() }}" and "deploy-record.json" in upload["with"]["path"]
    for pinned in (CHECKOUT, SETUP_PYTHON, UPLOAD):
        assert f"uses: {pinned}" in text
    used = {s["uses"].split("@")[0] for j in wf["jobs"].values() for s in j["steps"]
            if "uses" in s}
    assert used == {"actions/checkout", "actions/setup-python", "actions/upload-artifact"}
    assert "python -m pip install 'plainsail[lint] @ git+https://github.com/plainsail/" \
           "plainsail@v0.1.0'" in text


def test_generated_repository_audits_clean(repo: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_init(repo, monkeypatch) == 0
    report = audit(repo / ".github/workflows/deploy.yml")
    assert report.findings == []
    whole = audit(repo)
    assert [f.rule for f in whole.findings] == ["unpinned-base-image"]  # a warning
    assert whole.exit_code == 0
    assert main(["audit", str(repo)]) == 0


def test_action_install_needs_a_commit_sha(repo: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert run_init(repo, monkeypatch, "--install", "action", "--plainsail-ref", "main") == 2
    assert "full 40-character commit SHA" in capsys.readouterr().err
    assert not (repo / "plainsail.yml").exists()
    assert run_init(repo, monkeypatch, "--install", "action", "--plainsail-ref", SHA,
                    "--plainsail-repo", "acme/plainsail") == 0
    text = (repo / ".github/workflows/deploy.yml").read_text()
    assert text.count(f"uses: acme/plainsail@{SHA}") == 2
    assert "pip install" not in text
    assert audit(repo / ".github/workflows/deploy.yml").findings == []


def test_refuses_to_clobber_and_writes_nothing(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "plainsail.yml").write_text("service: mine\n")
    gitignore = (repo / ".gitignore").read_text()
    assert run_init(repo, monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "plainsail.yml" in err and "--force" in err
    assert (repo / "plainsail.yml").read_text() == "service: mine\n"
    assert (repo / ".gitignore").read_text() == gitignore
    assert not (repo / ".github").exists()
    assert not (repo / ".dockerignore").exists()


def test_refuses_an_existing_workflow(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / ".github/workflows").mkdir(parents=True)
    (repo / ".github/workflows/deploy.yml").write_text("name: mine\n")
    assert run_init(repo, monkeypatch) == 2
    assert (repo / ".github/workflows/deploy.yml").read_text() == "name: mine\n"
    assert run_init(repo, monkeypatch, "--force") == 0
    assert "plainsail deploy" in (repo / ".github/workflows/deploy.yml").read_text()


def test_idempotent_with_force(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_init(repo, monkeypatch) == 0
    first = {p: (repo / p).read_text() for p in
             ("plainsail.yml", ".github/workflows/deploy.yml", ".gitignore", ".dockerignore")}
    assert run_init(repo, monkeypatch, "--force") == 0
    again = {p: (repo / p).read_text() for p in first}
    assert again == first
    lines = first[".gitignore"].splitlines()
    assert lines[0] == "node_modules/"
    assert lines.count("cosign.key") == 1 and lines.count(".plainsail/") == 1
    assert first[".dockerignore"].splitlines().count("cosign.key") == 1


def test_ignore_entries_already_present_are_not_repeated(repo: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / ".gitignore").write_text("cosign.key\n.plainsail\n")  # no newline issues either
    (repo / ".dockerignore").write_text(".git")
    assert run_init(repo, monkeypatch) == 0
    assert (repo / ".gitignore").read_text() == "cosign.key\n.plainsail\n"
    assert (repo / ".dockerignore").read_text().splitlines()[:1] == [".git"]
    assert "cosign.key" in (repo / ".dockerignore").read_text().splitlines()


def test_keys_made_when_cosign_password_is_set(repo: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from plainsail.secret import Secret
    from plainsail.supply.keys import load_private_key

    monkeypatch.setenv("COSIGN_PASSWORD", "correct horse")
    assert run_init(repo, monkeypatch) == 0
    key = repo / "cosign.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (repo / "cosign.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    load_private_key(key, Secret("correct horse"))
    out = capsys.readouterr().out
    assert "correct horse" not in out
    before = key.read_bytes()
    assert run_init(repo, monkeypatch, "--force") == 0
    assert key.read_bytes() == before  # kept, never overwritten
    assert "kept the existing" in capsys.readouterr().out


def test_no_keys_without_cosign_password(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert run_init(repo, monkeypatch) == 0
    assert not (repo / "cosign.key").exists()
    out = capsys.readouterr().out
    assert "plainsail keygen" in out
    for secret in ("COSIGN_PRIVATE_KEY", "COSIGN_PASSWORD", "REGISTRY_USER",
                   "REGISTRY_PASSWORD", "SSH_PRIVATE_KEY", "SSH_KNOWN_HOSTS"):
        assert secret in out
    assert "environment `production`" in out


def test_json_result(repo: Path, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:
    assert run_init(repo, monkeypatch, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["written"] == ["plainsail.yml", ".github/workflows/deploy.yml"]
    assert data["port"] == 9000 and data["migrations"] == "migrations"


@pytest.mark.parametrize(("args", "needle"), [
    (["--host", "ftp://x"], "only ssh://"),
    (["--image", "registry.example.com/a/b:latest"], "contains a tag"),
    (["--service", "Bad_Name"], "--service"),
    (["--health-path", "health"], "--health-path"),
    (["--port", "70000"], "--port"),
])
def test_bad_flags_are_one_line_usage_errors(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str],
                                             args: list[str], needle: str) -> None:
    assert run_init(repo, monkeypatch, *args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err
    assert not (repo / "plainsail.yml").exists()


def test_needs_a_host_a_dockerfile_and_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / "svc")
    monkeypatch.chdir(repo)
    assert main(["init", "--image", "registry.example.com/a/b"]) == 2
    assert "--host" in capsys.readouterr().err
    (repo / "Dockerfile").unlink()
    assert run_init(repo, monkeypatch) == 2
    assert "no Dockerfile" in capsys.readouterr().err
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "Dockerfile").write_text("FROM scratch\n")
    assert run_init(plain, monkeypatch) == 1
    assert "git" in capsys.readouterr().err
    assert not (plain / "plainsail.yml").exists()


def _zizmor() -> str:
    exe = shutil.which("zizmor") or str(Path(__file__).resolve().parents[1] / ".venv/bin/zizmor")
    if not Path(exe).exists():
        pytest.fail("zizmor is not installed: pip install -e '.[dev]' (scripts/setup.sh)")
    return exe


@pytest.mark.integration
@pytest.mark.parametrize("install", [[], ["--install", "action", "--plainsail-ref", SHA]])
def test_generated_workflow_is_zizmor_clean(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                            install: list[str]) -> None:
    assert run_init(repo, monkeypatch, *install) == 0
    proc = subprocess.run([_zizmor(), "--offline", "--format", "json",
                           str(repo / ".github/workflows/deploy.yml")],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == []


@pytest.mark.integration
def test_action_yml_is_zizmor_clean() -> None:
    action = Path(__file__).resolve().parents[1] / "action.yml"
    proc = subprocess.run([_zizmor(), "--offline", "--format", "json", str(action)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == []


def test_action_yml_installs_its_own_commit() -> None:
    action = yaml.safe_load((Path(__file__).resolve().parents[1] / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    for name, spec in action["inputs"].items():
        assert spec["description"], name
    steps = action["runs"]["steps"]
    assert steps[0]["env"]["ACTION_PATH"] == "${{ github.action_path }}"
    assert 'pip install --disable-pip-version-check "$spec"' in steps[0]["run"]
    for step in steps:  # inputs reach scripts through env, never spliced into code
        assert "${{" not in step["run"]
    assert steps[1]["if"] == "${{ inputs.command != '' }}"


# ---------------------------------------------------------------- links out of the repository


@pytest.mark.parametrize("link", ["plainsail.yml", ".github", ".gitignore", ".dockerignore",
                                  "cosign.key"])
def test_refuses_to_write_through_a_link_out_of_the_repository(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link: str) -> None:
    """A link (dangling, or to a file or folder outside) is refused before anything is
    written, through the real command."""
    from tests.support.cli import plainsail

    repo = make_repo(tmp_path / "notes")
    outside = tmp_path / "outside"
    outside.mkdir()
    if link == ".github":
        (repo / link).symlink_to(outside)
    elif link == ".gitignore":
        (outside / "victim").write_text("keep me\n")
        (repo / link).unlink()
        (repo / link).symlink_to(outside / "victim")
    else:
        (repo / link).symlink_to(outside / "made-by-init")  # dangling
    before = sorted(p.name for p in repo.iterdir())
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    result = plainsail("init", "--image", "registry.example.com/acme/notes", "--host",
                       "ssh://deploy@app1.example.com", cwd=repo, timeout=60)
    assert result.code == 2, result.text
    assert result.err.strip() == (
        f"error: {link} is a symbolic link to {os.readlink(repo / link)!r}, which points "
        f"{'outside the repository' if link in ('.github', '.gitignore') else 'at nothing'}; "
        "plainsail init writes only inside the repository: remove the link (or make it a "
        "file) and run init again. Nothing was written")
    assert sorted(p.name for p in repo.iterdir()) == before
    assert sorted(p.name for p in outside.iterdir()) == (
        ["victim"] if link == ".gitignore" else [])
    if link == ".gitignore":
        assert (outside / "victim").read_text() == "keep me\n"


def test_a_link_inside_the_repository_is_followed(repo: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / ".dockerignore").symlink_to(".gitignore")
    assert run_init(repo, monkeypatch) == 0
    assert (repo / ".dockerignore").is_symlink()
    assert "cosign.key" in (repo / ".gitignore").read_text()


def test_keygen_refuses_links_out_of_the_repository(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """keygen appends to .gitignore and .dockerignore as init does: never through a link
    out of the repository, and never onto a key path that is a (dangling) link."""
    from tests.support.cli import plainsail

    repo = make_repo(tmp_path / "notes")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep me\n")
    (repo / ".gitignore").unlink()
    (repo / ".gitignore").symlink_to(outside / "victim")
    env = {"COSIGN_PASSWORD": "pw"}
    result = plainsail("keygen", cwd=repo, env=env, timeout=60)
    assert result.code == 2 and "plainsail keygen writes only inside the repository" in \
        result.err
    assert (outside / "victim").read_text() == "keep me\n"
    assert not (repo / "cosign.key").exists() and not (repo / ".dockerignore").exists()
    (repo / ".gitignore").unlink()
    (repo / "cosign.key").symlink_to(outside / "stolen.key")
    result = plainsail("keygen", cwd=repo, env=env, timeout=60)
    assert result.code == 1 and "cosign.key already exists" in result.err
    assert not (outside / "stolen.key").exists()
