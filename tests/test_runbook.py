"""docs/runbook.md, run for real: every command of its code blocks, in the runbook's order,
against a real deploy of the example app (real sshd, Docker Engine, registry, PostgreSQL),
each followed by a check of what the runbook says that step does.

The situation the runbook is written for is set up first: three good versions deployed
(v1, v2, then "slow", which answers after 3 s), then a broken one ("crash") that failed its
gate and was restored. `<TAG>` in the runbook is v1. Before `plainsail lock status` a
deployer is SIGKILLed mid-switch, which is what the runbook's `recover` is for; before the
`git commit -am` of step 7 the fix is made in the working tree.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.deploy_env import COSIGN_PASSWORD, DeployDir
from tests.support.gitrepo import git
from tests.support.notes_app import BASE_IMAGE

RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "runbook.md"
FIXED_VERSION = "6-fixed"


def runbook_commands() -> list[str]:
    """Every command line of the runbook's ```sh blocks, comments dropped, in order."""
    blocks = re.findall(r"```sh\n(.*?)```", RUNBOOK.read_text(), re.S)
    return [shlex.join(shlex.split(line, comments=True)) for block in blocks
            for line in block.splitlines() if line.strip()]


@dataclass
class Runbook:
    d: DeployDir
    tags: dict[str, str]
    killed_pid: int = 0
    seen: dict[str, object] = field(default_factory=dict)

    def version(self) -> str:
        status, body = self.d.get()
        assert status == 200, (status, body)
        return str(json.loads(body)["version"])

    def container(self, name: str) -> str:
        return f"{self.d.service}-{self.tags[name]}"


def _history(rb: Runbook, r: object) -> None:
    lines = [line for line in r.out.splitlines() if line.strip()]  # type: ignore[attr-defined]
    t = rb.tags
    # Newest first; the failed attempt says why it failed.
    order = [next(i for i, line in enumerate(lines) if t[n] in line and "rollback" not in line)
             for n in ("crash", "slow", "v2", "v1")]
    assert order == sorted(order), lines
    crash = lines[order[0]]
    assert "failed-health-restored" in crash, crash


def _status_before(rb: Runbook, r: object) -> None:
    out = r.out  # type: ignore[attr-defined]
    assert rb.tags["slow"] in out and "healthy" in out, out
    # The retained previous versions, the rollback targets that start without a pull.
    assert rb.tags["v2"] in out, out


def _rollback(rb: Runbook, r: object) -> None:
    t = rb.tags
    assert f"rollback: {t['slow']} -> {t['v2']}" in r.out, r.out  # type: ignore[attr-defined]
    assert rb.version() == "2"
    rec = rb.d.host_records()[-1]
    assert rec["kind"] == "rollback" and rec["outcome"] == "succeeded"
    assert "migration" not in rec and rec["skip_migrations"] is True


def _rollback_to(rb: Runbook, r: object) -> None:
    assert rb.version() == "1"
    rec = rb.d.host_records()[-1]
    assert rec["kind"] == "rollback" and rec["rollback_to"] == rb.tags["v1"], rec


def _status_after(rb: Runbook, r: object) -> None:
    out = r.out  # type: ignore[attr-defined]
    line = next(line for line in out.splitlines() if rb.tags["v1"] in line)
    assert "health: healthy" in out, out
    assert rb.tags["slow"] not in line, line
    doc = json.loads(rb.d.run("status", "--json").out)  # type: ignore[attr-defined]
    host = doc["hosts"][0]
    assert host["running"]["tag"] == rb.tags["v1"] and host["health"] == "healthy", host


def _history_json(rb: Runbook, r: object) -> None:
    attempts = json.loads(r.out)  # type: ignore[attr-defined]
    failed = next(a for a in attempts if a["tag"] == rb.tags["crash"])
    assert failed["outcome"] == "failed-health-restored", failed
    # It keeps the last health responses and the new container's log tail.
    text = json.dumps(failed)
    assert "refusing to start: this build is broken" in text, text
    assert [a["kind"] for a in attempts[:2]] == ["rollback", "rollback"], attempts[:2]


def _logs(rb: Runbook, r: object) -> None:
    out = r.out  # type: ignore[attr-defined]
    assert rb.container("v1") in out, out
    assert rb.d.db.password not in out + r.err  # type: ignore[attr-defined]


def _lock_status(rb: Runbook, r: object) -> None:
    out = r.out  # type: ignore[attr-defined]
    assert "INTERRUPTED" in out and str(rb.killed_pid) in out, out


def _recover(rb: Runbook, r: object) -> None:
    assert "RECOVERED" in r.out, r.out  # type: ignore[attr-defined]
    assert rb.version() == "1"
    outcomes = [rec["outcome"] for rec in rb.d.host_records()]
    assert outcomes[-2:] == ["interrupted", "recovered"], outcomes
    lock = rb.d.run("lock", "status")
    assert lock.out.strip().endswith("unlocked"), lock.text  # type: ignore[attr-defined]


def _git_commit(rb: Runbook, r: object) -> None:
    head = git(rb.d.path, "log", "-1", "--format=%s")
    assert head.strip() == "Fix the root cause", head


def _build(rb: Runbook, r: object) -> None:
    sha = git(rb.d.path, "rev-parse", "HEAD").strip()
    records = list((rb.d.path / ".plainsail" / "builds").glob("*.json"))
    built = [json.loads(p.read_text()) for p in records]
    fixed = [b for b in built if sha.startswith(b["tag"])]
    assert len(fixed) == 1 and fixed[0]["digest"].startswith("sha256:"), built
    rb.seen["fixed"], rb.seen["digest"] = fixed[0]["tag"], fixed[0]["digest"]


def _sign(rb: Runbook, r: object) -> None:
    assert f"Signed {rb.d.builds.image}@{rb.seen['digest']}" in r.out, r.text  # type: ignore[attr-defined]
    v = rb.d.run("verify", str(rb.seen["fixed"]))
    assert v.code == 0, v.text  # type: ignore[attr-defined]


def _deploy(rb: Runbook, r: object) -> None:
    assert rb.version() == FIXED_VERSION
    rec = rb.d.host_records()[-1]
    assert rec["tag"] == rb.seen["fixed"] and rec["outcome"] == "succeeded", rec


def _drill_asks(rb: Runbook, r: object) -> None:
    assert "--yes" in r.err, r.text  # type: ignore[attr-defined]
    assert rb.version() == FIXED_VERSION
    assert rb.d.host_records()[-1]["tag"] == rb.seen["fixed"]  # it did nothing


def _drill(rb: Runbook, r: object) -> None:
    recs = rb.d.host_records()[-2:]
    assert [(x["kind"], x["outcome"]) for x in recs] == [
        ("rollback", "succeeded"), ("deploy", "succeeded")], recs
    assert recs[0]["drill"] and recs[0]["drill"] == recs[1]["drill"]
    assert recs[0]["tag"] == rb.tags["v1"] and recs[1]["tag"] == rb.seen["fixed"]
    assert rb.version() == FIXED_VERSION


Check = Callable[[Runbook, object], None]
# The runbook's commands in its order, with the exit code each should end with and the
# check of what the runbook promises. The test fails when the runbook and this list differ.
SCRIPT: list[tuple[str, int, Check]] = [
    ("plainsail history", 0, _history),
    ("plainsail status", 0, _status_before),
    ("plainsail rollback", 0, _rollback),
    ("plainsail rollback --to '<TAG>'", 0, _rollback_to),
    ("plainsail status", 0, _status_after),
    ("plainsail history --json", 0, _history_json),
    ("plainsail logs --tail 200", 0, _logs),
    ("plainsail lock status", 0, _lock_status),
    ("plainsail recover", 0, _recover),
    ("git commit -am 'Fix the root cause'", 0, _git_commit),
    ("plainsail build", 0, _build),
    ("plainsail sign", 0, _sign),
    ("plainsail deploy", 0, _deploy),
    ("plainsail drill", 2, _drill_asks),
    ("plainsail drill --yes", 0, _drill),
]


def test_the_script_is_the_runbook() -> None:
    assert [line for line, _, _ in SCRIPT] == runbook_commands()


def _make_app_checkout(d: DeployDir) -> None:
    """The deploy folder becomes a checkout of the example app, as the runbook assumes:
    plainsail.yml at its root, the signing key beside it, build records under .plainsail."""
    repo = d.builds.repo
    (d.path / "plainsail.yml").unlink()
    git(d.path, "init", "-q", "-b", "main")
    git(d.path, "pull", "-q", str(repo), "main")
    for key in ("cosign.key", "cosign.pub"):
        (d.path / key).write_bytes((repo / key).read_bytes())
    d.config(extra=f"build:\n  args:\n    BASE_IMAGE: {BASE_IMAGE}\n")
    text = (d.path / "plainsail.yml").read_text()
    (d.path / "plainsail.yml").write_text(
        text.replace("signing:\n", "signing:\n  key: cosign.key\n", 1))
    git(d.path, "add", "plainsail.yml")
    git(d.path, "commit", "-q", "-m", "Deploy settings")


def test_runbook_runs_for_real(deploy_dir: DeployDir) -> None:
    d = deploy_dir
    _make_app_checkout(d)
    d.env["COSIGN_PASSWORD"] = COSIGN_PASSWORD
    tags = {n: b.tag for n, b in d.builds.versions.items()}
    for name in ("v1", "v2", "slow"):
        r = d.run("deploy", d.builds.ref(name))
        assert r.code == 0, r.text  # type: ignore[attr-defined]
    crash = d.run("deploy", d.builds.ref("crash"))
    assert crash.code == 1 and "FAILED, RESTORED" in crash.out, crash.text  # type: ignore[attr-defined]
    rb = Runbook(d, tags)
    assert rb.version() == "5-slow"

    for line, code, check in SCRIPT:
        argv = [a.replace("<TAG>", tags["v1"]) for a in shlex.split(line)]
        if line == "plainsail lock status":
            # What the rest of step 5 is for: a deployer killed mid-switch.
            rb.killed_pid = d.kill_mid_switch("slow")
        if argv[0] == "git":
            version = d.path / "notes_api" / "version.py"
            version.write_text(version.read_text().replace(
                'APP_VERSION = "1"', f'APP_VERSION = "{FIXED_VERSION}"'))
            who = {"GIT_AUTHOR_NAME": "Runbook Reader", "GIT_AUTHOR_EMAIL": "r@example.com",
                   "GIT_COMMITTER_NAME": "Runbook Reader",
                   "GIT_COMMITTER_EMAIL": "r@example.com"}
            p = subprocess.run(argv, cwd=d.path, capture_output=True, text=True,
                               env={**os.environ, **who})
            assert p.returncode == code, (line, p.stdout, p.stderr)
            check(rb, p)
            continue
        r = d.run(*argv[1:])
        assert r.code == code, (line, r.text)  # type: ignore[attr-defined]
        assert "Traceback" not in r.text  # type: ignore[attr-defined]
        check(rb, r)
