"""The audit's model of a workflow: the shell parser's commands (substitutions, chains,
pipes, heredocs, remote scripts) and the table of well-known actions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from plainsail.audit import actions, audit
from plainsail.audit.shell import Command, commands_of


def cmds(script: str, first_line: int = 1) -> list[Command]:
    return commands_of(list(enumerate(script.splitlines(), start=first_line)))


def names(script: str) -> list[str]:
    return [c.text() for c in cmds(script)]


def test_commands_inside_substitutions_chains_and_pipes() -> None:
    got = cmds('TAG=$(git rev-parse --short HEAD) && docker push "a:$TAG" | tee log\n'
               'docker ps -q --filter name=api || true\n', first_line=7)
    git = next(c for c in got if c.name == "git")
    push = next(c for c in got if c.argv[:2] == ["docker", "push"])
    assert git.substituted and git.captured == "TAG" and git.line == 7
    assert push.argv == ["docker", "push", "a:$TAG"]
    assert push.before == "&&" and push.after == "|" and push.piped_to == "tee"
    last = got[-2]
    assert last.argv[:2] == ["docker", "ps"] and last.after == "||" and last.line == 8


def test_heredoc_and_quoted_argument_to_ssh_run_remotely() -> None:
    got = cmds("ssh deploy@host << 'EOF'\n"
               "  cd /srv/app\n"
               "  docker compose pull && docker compose up -d\n"
               "EOF\n"
               "ssh -i key -p 22 deploy@host \"docker run -d app:latest; echo done\"\n")
    remote = [(c.line, c.text()) for c in got if c.remote]
    assert remote == [(2, "cd /srv/app"), (3, "docker compose pull"),
                      (3, "docker compose up -d"), (5, "docker run -d app:latest"),
                      (5, "echo done")]
    assert not any(c.remote for c in got if c.name == "ssh")


def test_shell_c_wrappers_and_expressions_kept_whole() -> None:
    got = names("sudo -E bash -c 'docker pull ${{ env.IMAGE }}:${{ github.sha }}'\n"
                "timeout 60 env FOO=1 curl -fsS https://x/health\n")
    assert "docker pull ${{ env.IMAGE }}:${{ github.sha }}" in got
    assert "curl -fsS https://x/health" in got


def test_conditions_and_tests_are_commands() -> None:
    got = cmds('LIVE=$(curl -fsS https://app/version)\n'
               'if [ "$LIVE" != "$EXPECTED" ]; then exit 1; fi\n'
               'while ! curl -f http://localhost/ready; do sleep 2; done\n')
    test = next(c for c in got if c.name == "test")
    assert test.argv == ["test", "$LIVE", "!=", "$EXPECTED"] and test.condition
    loop = next(c for c in got if c.name == "curl" and c.line == 3)
    assert loop.condition and not next(c for c in got if c.name == "exit").condition


def test_unreadable_shell_still_yields_what_it_can() -> None:
    got = names("docker run -d a:1 )) fi done {{ <<\n'unterminated\n")
    assert got and got[0].startswith("docker run -d a:1")


def test_build_push_action_pushes_by_default_only_in_v1() -> None:
    assert actions.pushes("docker/build-push-action@v1", {})
    assert actions.pushes("docker/build-push-action@v1.1.0", {"push": ""})
    assert not actions.pushes("docker/build-push-action@v1", {"push": "false"})
    assert not actions.pushes("docker/build-push-action@v6", {})
    assert actions.pushes("docker/build-push-action@v6",
                          {"push": "${{ github.event_name != 'pull_request' }}"})
    assert actions.pushes("elgohr/Publish-Docker-Github-Action@v5", {})


def test_action_table_names_script_inputs() -> None:
    spec = actions.spec_of("appleboy/ssh-action@v1.0.3")
    assert spec is not None and spec.kind == actions.SSH and "script" in spec.scripts
    spec = actions.spec_of("easingthemes/ssh-deploy@main")
    assert spec is not None and "SCRIPT_AFTER" in spec.scripts
    assert actions.spec_of("./.github/actions/deploy") is None
    assert actions.spec_of("acme/unknown-thing@v1") is None


def _repo(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


SSH_DEPLOY = """\
on:
  workflow_dispatch:
    inputs: {tag: {required: true}}
jobs:
  deploy:
    runs-on: ubuntu-latest
    environment: production
    steps:
      - uses: appleboy/ssh-action@v1.0.3
        with:
          host: app.example.com
          script_stop: true
          script: |
            cd /srv/api
            docker compose -f deploy/compose.prod.yml up -d --wait
"""


def test_capitalised_migrations_folder_is_found(tmp_path: Path) -> None:
    root = _repo(tmp_path, {".github/workflows/deploy.yml": SSH_DEPLOY,
                            "src/Api/Migrations/20240101_Init.cs": "// EF Core\n",
                            "deploy/compose.prod.yml": "services: {api: {image: 'a@sha256:0'}}"})
    rules = {f.rule for f in audit(root).findings}
    assert "migrations-not-gated" in rules


def test_compose_file_named_by_the_deploy_is_read(tmp_path: Path) -> None:
    root = _repo(tmp_path, {".github/workflows/deploy.yml": SSH_DEPLOY,
                            "deploy/compose.prod.yml":
                                "services:\n  api:\n    image: ghcr.io/acme/api:latest\n"
                                "  worker:\n    build: .\n"})
    got = {(f.rule, f.line) for f in audit(root).findings}
    assert ("mutable-tag-deploy", 15) in got
    assert ("no-tag-handoff", 5) in got  # the worker is built on the host


def test_workflow_in_a_subfolder_gets_a_note(tmp_path: Path) -> None:
    root = _repo(tmp_path, {".github/workflows/old/deploy.yml": SSH_DEPLOY})
    report = audit(root)
    assert report.files == [] and report.exit_code == 0
    assert any("old/deploy.yml: in a subfolder of .github/workflows" in n
               for n in report.notes)


def test_django_app_migrations_three_levels_down_are_found(tmp_path: Path) -> None:
    root = _repo(tmp_path, {".github/workflows/deploy.yml": SSH_DEPLOY,
                            "site/apps/orders/migrations/0001_initial.py": "# Django\n",
                            "deploy/compose.prod.yml": "services: {api: {image: 'a@sha256:0'}}"})
    assert "migrations-not-gated" in {f.rule for f in audit(root).findings}


def test_compose_service_with_an_image_is_pulled_not_rebuilt(tmp_path: Path) -> None:
    compose = ("services:\n  api:\n    image: ghcr.io/acme/api@sha256:0\n    build: .\n")
    root = _repo(tmp_path, {".github/workflows/deploy.yml": SSH_DEPLOY,
                            "deploy/compose.prod.yml": compose})
    assert "no-tag-handoff" not in {f.rule for f in audit(root).findings}
    rebuilt = SSH_DEPLOY.replace("up -d --wait", "up -d --build --wait")
    root2 = _repo(tmp_path / "b", {".github/workflows/deploy.yml": rebuilt,
                                   "deploy/compose.prod.yml": compose})
    assert "no-tag-handoff" in {f.rule for f in audit(root2).findings}


def test_without_the_parser_audit_says_so_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from plainsail.audit import shell
    from plainsail.cli import main

    root = _repo(tmp_path, {".github/workflows/deploy.yml": SSH_DEPLOY})
    monkeypatch.setitem(sys.modules, "tree_sitter_bash", None)  # as if not installed
    shell._parser.cache_clear()
    try:
        assert main(["audit", str(root)]) == 1
    finally:
        shell._parser.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: plainsail audit reads shell scripts with tree-sitter, which is not "
                   "installed: pip install 'plainsail[audit]'"]
