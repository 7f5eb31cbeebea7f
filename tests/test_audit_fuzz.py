"""Property test: no workflow GitHub would accept makes `plainsail audit` raise.

Workflows are generated as data (triggers, jobs with needs/outputs/env/environment, steps
that run shell or use the actions the audit knows, with script inputs, local composite
actions and reusable workflows that may be missing or call themselves), their shell built
from the commands and constructs the model reads (substitutions, pipes, heredocs, ssh,
quotes left open), then written as YAML. Each must give a Report. Derandomized, so every
run sees the same examples.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plainsail.audit import Report, audit
from plainsail.audit.actions import ACTIONS

WORDS = ["docker", "run", "-d", "pull", "push", "build", "--push", "-t", "compose", "up",
         "--build", "--wait", "kubectl", "rollout", "status", "restart", "set", "image",
         "helm", "upgrade", "--atomic", "curl", "-fsS", "https://app/health", "ssh",
         "deploy@host", "alembic", "upgrade", "head", "migrate", "cosign", "sign",
         "ghcr.io/a/b:latest", "a/b:${{ github.sha }}", "${{ needs.build.outputs.tag }}",
         "$TAG", "${TAG}", "|| true", "&&", "|", ";", "$(", ")", "`", "'", '"', "<<EOF",
         "EOF", "\\", "if", "then", "fi", "for", "do", "done", "sh", "-c", "set", "-e",
         "TAG=$(git rev-parse HEAD)", "#", "{", "}", "((", "[[", "]]", "-f", "x.yml"]
shell = st.lists(st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join),
                 max_size=6).map("\n".join)
scalar = st.one_of(shell, st.text(max_size=20), st.booleans(), st.integers(), st.none())
ACTION_NAMES = sorted(ACTIONS) + ["./.github/actions/deploy", "./.github/workflows/wf.yml",
                                  "./missing", "docker://alpine"]


@st.composite
def steps(draw: Any) -> dict[str, Any]:
    if draw(st.booleans()):
        step: dict[str, Any] = {"run": draw(shell)}
        if draw(st.booleans()):
            step["shell"] = draw(st.sampled_from(["bash", "sh", "pwsh", "python"]))
    else:
        name = draw(st.sampled_from(ACTION_NAMES))
        ref = draw(st.sampled_from(["@v1", "@v6", "@main", "", "@v1.2.3"]))
        step = {"uses": name + ("" if name.startswith(("./", "docker://")) else ref)}
        keys = ["script", "command", "SCRIPT_AFTER", "args", "tags", "push", "image",
                "images", "url", "repository", "script_stop", "ref", "outputs"]
        step["with"] = draw(st.dictionaries(st.sampled_from(keys), scalar, max_size=4))
    if draw(st.booleans()):
        step["id"] = draw(st.sampled_from(["build", "meta", "push"]))
    if draw(st.booleans()):
        step["env"] = draw(st.dictionaries(st.sampled_from(["TAG", "IMAGE", "AWS_ACCESS_KEY_ID"]),
                                           scalar, max_size=2))
    return step


@st.composite
def workflows(draw: Any) -> dict[str, Any]:
    trigger = draw(st.sampled_from(["push", "pull_request_target", "workflow_run",
                                    "workflow_dispatch", "workflow_call"]))
    on: Any = draw(st.sampled_from([trigger, [trigger, "push"], {trigger: None},
                                    {trigger: {"branches": ["main"]}}]))
    jobs: dict[str, Any] = {}
    for i in range(draw(st.integers(1, 3))):
        job: dict[str, Any] = {"runs-on": "ubuntu-latest"}
        if draw(st.booleans()) and i:
            job["uses"] = draw(st.sampled_from(["./.github/workflows/wf.yml", "./nope.yml"]))
        else:
            job["steps"] = draw(st.lists(steps(), min_size=1, max_size=4))
        if i and draw(st.booleans()):
            job["needs"] = draw(st.sampled_from([f"j{i - 1}", [f"j{i - 1}"], "nope"]))
        if draw(st.booleans()):
            job["environment"] = draw(st.sampled_from(["production", None, {"name": "x"}]))
        if draw(st.booleans()):
            job["outputs"] = {"tag": draw(st.sampled_from(
                ["${{ steps.build.outputs.tag }}", "${{ needs.j0.outputs.tag }}", "x"]))}
        jobs[draw(st.sampled_from(["deploy", "build", "release", "j"])) + str(i)] = job
    return {"name": "fuzz", "on": on, "jobs": jobs}


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(workflows(), workflows(), st.lists(steps(), max_size=3))
def test_audit_never_raises_on_a_workflow(wf: dict[str, Any], called: dict[str, Any],
                                          composite: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        wf_dir = root / ".github" / "workflows"
        wf_dir.mkdir(parents=True)
        (wf_dir / "main.yml").write_text(yaml.safe_dump(wf, sort_keys=False))
        (wf_dir / "wf.yml").write_text(yaml.safe_dump(called, sort_keys=False))
        action = root / ".github" / "actions" / "deploy" / "action.yml"
        action.parent.mkdir(parents=True)
        action.write_text(yaml.safe_dump({"name": "d", "runs": {
            "using": "composite", "steps": composite + [{"uses": "./.github/actions/deploy"}]}}))
        report = audit(root)
        assert isinstance(report, Report)
        assert all(f.line >= 1 and f.message for f in report.findings)


TEXT_FORMS = [
    # anchors and aliases (GitHub accepts them), a merge key, flow style, CRLF, a BOM,
    # block scalars of every chomping kind, tabs and unicode in scripts
    "jobs:\n  deploy:\n    runs-on: ubuntu-latest\n    steps:\n      - &s\n        run: {script}\n"
    "      - *s\n",
    "x-env: &env\n  TAG: ${{{{ github.sha }}}}\njobs:\n  deploy:\n    runs-on: x\n    env:\n"
    "      <<: *env\n    steps:\n      - run: |-\n          {script}\n",
    "jobs: {{deploy: {{runs-on: x, steps: [{{run: '{script}'}}]}}}}\n",
    "\ufeffjobs:\r\n  deploy:\r\n    runs-on: x\r\n    steps:\r\n      - run: >+\r\n"
    "          {script}\r\n",
    "jobs:\n  deploy:\n    runs-on: x\n    steps:\n      - uses: appleboy/ssh-action@v1\n"
    "        with:\n          script: |2\n             {script}\n",
]


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.sampled_from(TEXT_FORMS), shell, st.sampled_from(["push", "[push, pull_request]",
                                                            "{workflow_run: {workflows: [b]}}"]))
def test_audit_never_raises_on_yaml_forms(form: str, script: str, trigger: str) -> None:
    one_line = script.replace("\n", " ; ").replace("'", "''")
    body = form.format(script=one_line or "true")
    bom = "\ufeff" if body.startswith("\ufeff") else ""
    text = f"{bom}on: {trigger}\n" + body.removeprefix("\ufeff")
    try:
        yaml.safe_load(text)
    except yaml.YAMLError:
        return  # not YAML GitHub would accept either
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / ".github" / "workflows").mkdir(parents=True)
        (root / ".github" / "workflows" / "w.yml").write_text(text, encoding="utf-8")
        report = audit(root)
        assert isinstance(report, Report)
