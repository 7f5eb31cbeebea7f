"""The schema gate through the fake host: every verdict (passed, refused, allowed, skipped
and each reason), deploys and rollbacks, stop-start and proxy mode, the dry run, the
records and the notification. Git is real: each test makes a small repository whose
commits are the versions the fake hosts run."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from plainsail.deploy import notify, schemagate
from plainsail.deploy.outcomes import ABORTED, RECOVERED, SUCCEEDED, exit_code
from plainsail.deploy.plan import Request, Target
from plainsail.deploy.run import Deploy
from plainsail.errors import PlainsailError
from plainsail.hosts.containers import REVISION_LABEL
from plainsail.lint.catalog import _COMPAT, COMPATIBILITY, RULES
from tests.test_engine import IMAGE, PROXY, Bench

pytestmark = pytest.mark.skipif(not schemagate.lint_available(),
                                reason="the lint extra (pglast) is not installed")

INIT = "CREATE TABLE notes (id bigint PRIMARY KEY, title text, body text);\n"
DROP = "-- plainsail: allow missing-lock-timeout run by plainsail migrate\n" \
       "ALTER TABLE notes DROP COLUMN title;\n"
ADDITIVE = ("-- plainsail: allow missing-lock-timeout run by plainsail migrate\n"
            "ALTER TABLE notes ADD COLUMN tags text[] NOT NULL DEFAULT '{}';\n"
            "CREATE INDEX notes_tags ON notes (tags);\n")  # a locking hazard, not a break
ACCEPTED = ("-- plainsail: allow missing-lock-timeout run by plainsail migrate\n"
            "-- plainsail: allow drop-column no version has read body since 2024\n"
            "ALTER TABLE notes DROP COLUMN body;\n")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


class GateBench:
    """A git repository holding plainsail.yml and migrations/, fake hosts, and versions
    made of its commits (tag = short SHA, the image's revision label = the commit)."""

    def __init__(self, tmp: Path, extra: str = "", proxy: bool = False) -> None:
        self.b = Bench(tmp, extra=(PROXY if proxy else "") + extra)
        self.proxy = None
        if proxy:
            from tests.support.fakehost import FakeProxy

            self.proxy = FakeProxy()
            for f in self.b.fakes:
                f.networks.add("plainsail")
        self.repo = tmp
        git(tmp, "init", "-q", "-b", "main")
        git(tmp, "config", "user.email", "t@example.com")
        git(tmp, "config", "user.name", "t")
        (tmp / ".gitignore").write_text(".plainsail/\n")
        (tmp / "migrations").mkdir()
        self.versions: dict[str, Target] = {}

    def commit(self, name: str, files: dict[str, str], label: bool = True) -> Target:
        for rel, text in files.items():
            path = self.repo / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "--allow-empty", "-m", name)
        sha = git(self.repo, "rev-parse", "HEAD")
        digest = "sha256:" + (f"{len(self.versions) + 1:02d}" * 32)
        t = Target(IMAGE, sha[:8], digest, True)
        self.versions[name] = t
        if label:
            for f in self.b.fakes:
                f.image_labels[digest] = {REVISION_LABEL: sha}
        return t

    @property
    def fake(self) -> Any:
        return self.b.fake

    def run(self, target: Target, *, kind: str = "deploy", allow: bool = False,
            dry_run: bool = False, environ: dict[str, str] | None = None,
            allow_shallow: bool = False,
            ) -> tuple[dict[str, Any], PlainsailError | None]:
        req = Request(ref=f"{target.tag}@{target.digest}", kind=kind, force=kind != "deploy",
                      skip_migrations=kind != "deploy", dry_run=dry_run,
                      allow_breaking_migrations=allow, allow_shallow_clone=allow_shallow,
                      rollback_from="x" if kind == "rollback" else None)
        d = Deploy(self.b.cfg, req, self.b.lines.append,
                   environ={**self.b.env, **(environ or {})},
                   executors={f.host.name: f.executor() for f in self.b.fakes},
                   resolve=lambda cfg, r: target, proxy=self.proxy)
        try:
            return d.run(), None
        except PlainsailError as exc:
            assert exc.record is not None
            return exc.record, exc

    def running(self) -> list[str]:
        return self.b.running_tags()


@pytest.fixture(autouse=True)
def _no_lint_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAINSAIL_LINT_CACHE", "off")


@pytest.fixture
def gb(tmp_path: Path) -> GateBench:
    return GateBench(tmp_path)


def test_the_compatibility_rules_are_those_that_break_the_previous_version() -> None:
    assert {r.id for r in RULES.values() if r.why.startswith(_COMPAT)} == COMPATIBILITY
    assert "index-without-concurrently" not in COMPATIBILITY


def test_first_deploy_skips_the_gate_because_nothing_runs(gb: GateBench) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    s, _ = gb.run(v1)
    assert s["outcome"] == SUCCEEDED
    assert s["schema_gate"] == {"ran": False, "verdict": "skipped",
                                "reason": "nothing runs yet, so no version can be broken",
                                "allow_breaking_migrations": False}
    assert "warning: schema gate skipped: nothing runs yet, so no version can be broken" \
        in gb.b.lines


def test_a_dropped_column_refuses_the_deploy_and_changes_nothing(gb: GateBench) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    v2 = gb.commit("v2", {"migrations/0002_drop_title.sql": DROP})
    assert gb.run(v1)[0]["outcome"] == SUCCEEDED
    before = len(gb.fake.log)
    s, exc = gb.run(v2)
    assert exc is not None and s["outcome"] == ABORTED and exit_code(s) == 1
    line = str(exc)
    assert "\n" not in line
    assert "migrations/0002_drop_title.sql:2 drop-column" in line
    assert "--allow-breaking-migrations" in line and v1.tag in line
    # Nothing changed: no lock, no pull, no container; only the survey ran.
    assert gb.running() == [v1.tag] and not gb.fake.locked("api")
    assert all(a[:2] != ["docker", "pull"] for a in gb.fake.log[before:])
    assert len(gb.fake.history("api")) == 1
    gate = s["schema_gate"]
    assert gate["ran"] is True and gate["verdict"] == "refused" and s["preflight"] is True
    assert gate["files"] == ["migrations/0002_drop_title.sql"]
    assert gate["old"] == [{"tag": v1.tag, "revision": git(gb.repo, "rev-parse", "HEAD~1")}]
    assert gate["new"][0]["tag"] == v2.tag
    assert [(f["file"], f["line"], f["rule"]) for f in gate["findings"]] == [
        ("migrations/0002_drop_title.sql", 2, "drop-column")]
    assert gb.b.local_records()[-1]["schema_gate"]["verdict"] == "refused"
    assert any("[schema-gate] migrations/0002_drop_title.sql:2: drop-column" in x
               for x in gb.b.lines)


def test_the_flag_lets_it_through_and_the_record_and_notification_name_it(
        gb: GateBench) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    v2 = gb.commit("v2", {"migrations/0002_drop_title.sql": DROP})
    gb.run(v1)
    s, exc = gb.run(v2, allow=True)
    assert exc is None and s["outcome"] == SUCCEEDED, s
    assert gb.running() == [v2.tag]
    rec = gb.fake.history("api")[-1]
    assert rec["allow_breaking_migrations"] is True
    assert rec["schema_gate"]["verdict"] == "allowed"
    assert rec["schema_gate"]["findings"][0]["rule"] == "drop-column"
    assert any(line.startswith("warning: ") and "going ahead because of "
               "--allow-breaking-migrations" in line for line in gb.b.lines)
    text = notify.message(s)["text"]
    assert "--allow-breaking-migrations" in text
    assert "migrations/0002_drop_title.sql:2 drop-column" in text and v1.tag in text


def test_additive_migrations_and_locking_hazards_pass(gb: GateBench) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    v2 = gb.commit("v2", {"migrations/0002_tags.sql": ADDITIVE})
    gb.run(v1)
    s, exc = gb.run(v2)
    assert exc is None and s["outcome"] == SUCCEEDED
    gate = s["schema_gate"]
    assert gate["verdict"] == "passed" and gate["findings"] == []
    assert gate["files"] == ["migrations/0002_tags.sql"]
    assert any("schema gate passed: 1 migration file(s)" in x for x in gb.b.lines)


def test_a_finding_accepted_with_an_allow_comment_passes_and_is_recorded(gb: GateBench) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    v2 = gb.commit("v2", {"migrations/0002_drop_body.sql": ACCEPTED})
    gb.run(v1)
    s, exc = gb.run(v2)
    assert exc is None and s["schema_gate"]["verdict"] == "passed"
    assert s["schema_gate"]["accepted"] == [{
        "file": "migrations/0002_drop_body.sql", "line": 3, "rule": "drop-column",
        "message": s["schema_gate"]["accepted"][0]["message"],
        "accepted": "no version has read body since 2024"}]


def test_only_files_new_since_the_running_revision_are_checked(gb: GateBench) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT,
                          "migrations/0002_drop_title.sql": DROP})  # already applied
    v2 = gb.commit("v2", {"migrations/0003_tags.sql": ADDITIVE})
    gb.run(v1)
    s, exc = gb.run(v2)
    assert exc is None and s["schema_gate"]["files"] == ["migrations/0003_tags.sql"]
    # Redeploying what runs checks nothing new.
    s, exc = gb.run(v2)
    assert exc is None and s["outcome"] == "unchanged"
    assert s["schema_gate"]["verdict"] == "passed" and s["schema_gate"]["files"] == []


def test_the_gate_holds_behind_the_proxy_too(tmp_path: Path) -> None:
    gb = GateBench(tmp_path, proxy=True)
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    v2 = gb.commit("v2", {"migrations/0002_drop_title.sql": DROP})
    assert gb.run(v1)[0]["outcome"] == SUCCEEDED
    assert gb.proxy is not None
    calls = list(gb.proxy.calls)
    s, exc = gb.run(v2)
    assert exc is not None and s["outcome"] == ABORTED and "drop-column" in str(exc)
    assert gb.proxy.calls == calls  # the proxy was not touched
    assert gb.running() == [v1.tag]
    s, exc = gb.run(v2, allow=True)
    assert exc is None and s["outcome"] == SUCCEEDED
    assert s["schema_gate"]["verdict"] == "allowed"


def test_the_dry_run_shows_the_verdict(gb: GateBench) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    v2 = gb.commit("v2", {"migrations/0002_tags.sql": ADDITIVE})
    v3 = gb.commit("v3", {"migrations/0003_drop_title.sql": DROP})
    gb.run(v1)
    s, exc = gb.run(v2, dry_run=True)
    assert exc is None and s["outcome"] == "dry-run"
    shown = "\n".join(gb.b.lines)
    assert "schema gate passed: 1 migration file(s) (migrations/0002_tags.sql)" in shown
    assert shown.index("schema gate passed") < shown.index("would run:")
    s, exc = gb.run(v3, dry_run=True)
    assert exc is not None and "drop-column" in str(exc) and s["outcome"] == ABORTED
    gb.b.lines.clear()
    s, exc = gb.run(v3, dry_run=True, allow=True)
    assert exc is None
    assert any("going ahead because of --allow-breaking-migrations" in x for x in gb.b.lines)
    assert gb.running() == [v1.tag]


def test_a_rollback_past_a_breaking_migration_is_refused_unless_allowed(gb: GateBench) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    v2 = gb.commit("v2", {"migrations/0002_drop_title.sql": DROP})
    gb.run(v1)
    assert gb.run(v2, allow=True)[0]["outcome"] == SUCCEEDED
    s, exc = gb.run(v1, kind="rollback")
    assert exc is not None and s["outcome"] == ABORTED
    line = str(exc)
    assert "migrations/0002_drop_title.sql:2 drop-column" in line
    assert f"was applied after {v1.tag} and breaks it" in line
    assert "--allow-breaking-migrations" in line
    assert gb.running() == [v2.tag]
    gate = s["schema_gate"]
    assert gate["kind"] == "rollback" and gate["old"][0]["tag"] == v1.tag
    assert gate["new"][0]["tag"] == v2.tag
    s, exc = gb.run(v1, kind="rollback", allow=True)
    assert exc is None and s["outcome"] == SUCCEEDED and gb.running() == [v1.tag]
    assert s["schema_gate"]["verdict"] == "allowed"


def test_a_rollback_past_additive_migrations_passes(gb: GateBench) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    v2 = gb.commit("v2", {"migrations/0002_tags.sql": ADDITIVE})
    gb.run(v1)
    gb.run(v2)
    s, exc = gb.run(v1, kind="rollback")
    assert exc is None and s["outcome"] == SUCCEEDED
    assert s["schema_gate"]["verdict"] == "passed"
    assert s["schema_gate"]["files"] == ["migrations/0002_tags.sql"]


def test_the_tag_names_the_commit_when_the_image_has_no_revision_label(gb: GateBench) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT}, label=False)
    v2 = gb.commit("v2", {"migrations/0002_drop_title.sql": DROP}, label=False)
    gb.run(v1)
    s, exc = gb.run(v2)
    assert exc is not None and s["schema_gate"]["verdict"] == "refused"


def _skip_reason(s: dict[str, Any]) -> str:
    gate = s["schema_gate"]
    assert gate["ran"] is False and gate["verdict"] == "skipped"
    return str(gate["reason"])


def test_skipped_when_the_lint_extra_is_missing(gb: GateBench,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    v2 = gb.commit("v2", {"migrations/0002_drop_title.sql": DROP})
    gb.run(v1)
    monkeypatch.setattr(schemagate, "lint_available", lambda: False)
    s, exc = gb.run(v2)
    assert exc is None and s["outcome"] == SUCCEEDED
    assert "lint extra is not installed" in _skip_reason(s)


def test_skipped_without_a_migrations_folder(gb: GateBench, tmp_path: Path) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    v2 = gb.commit("v2", {"migrations/0002_drop_title.sql": DROP})
    gb.run(v1)
    s, exc = gb.run(v2, environ={"PLAINSAIL_MIGRATIONS": str(tmp_path / "nowhere")})
    assert exc is None and s["outcome"] == SUCCEEDED
    assert f"no migrations folder {tmp_path / 'nowhere'}" in _skip_reason(s)


def test_skipped_outside_a_git_repository(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_drop.sql").write_text(DROP)
    from tests.test_engine import V1, V2

    assert b.deploy(V1)["outcome"] == SUCCEEDED
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED
    assert "is not inside a git repository" in _skip_reason(s)


def test_skipped_when_the_running_revision_is_unknown_to_git(gb: GateBench) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    v2 = gb.commit("v2", {"migrations/0002_drop_title.sql": DROP})
    gb.fake.image_labels[v1.digest] = {REVISION_LABEL: "f" * 40}
    unknown = Target(IMAGE, "0badc0de", v1.digest, True)
    gb.run(unknown)
    s, exc = gb.run(v2)
    assert exc is None and s["outcome"] == SUCCEEDED
    reason = _skip_reason(s)
    assert "the revision of 0badc0de" in reason and "unknown to git" in reason
    assert "fetch-depth: 0" in reason


def _shallow_checkout(gb: GateBench, dest: Path) -> dict[str, str]:
    """A clone of the repository's newest commit only, as actions/checkout makes by
    default; the gate reads the migrations there."""
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{gb.repo}", str(dest)],
                   check=True, capture_output=True)
    return {"PLAINSAIL_MIGRATIONS": str(dest / "migrations")}


def test_a_gate_skipped_in_a_shallow_clone_only_warns_outside_ci(
        gb: GateBench, tmp_path_factory: pytest.TempPathFactory) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    v2 = gb.commit("v2", {"migrations/0002_drop_title.sql": DROP})
    gb.run(v1)
    env = _shallow_checkout(gb, tmp_path_factory.mktemp("shallow") / "clone")
    s, exc = gb.run(v2, environ={**env, "CI": "false"})
    assert exc is None and s["outcome"] == SUCCEEDED
    assert "is a shallow clone" in _skip_reason(s) and s["schema_gate"]["shallow_clone"]


def test_a_gate_skipped_in_a_shallow_clone_stops_the_deploy_in_ci_unless_allowed(
        gb: GateBench, tmp_path_factory: pytest.TempPathFactory) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    v2 = gb.commit("v2", {"migrations/0002_drop_title.sql": DROP})
    gb.run(v1)
    env = {**_shallow_checkout(gb, tmp_path_factory.mktemp("shallow") / "clone"),
           "CI": "true"}
    before = len(gb.fake.log)
    s, exc = gb.run(v2, environ=env)
    assert isinstance(exc, schemagate.SchemaGateError) and s["outcome"] == ABORTED
    assert exit_code(s) == 1
    assert "fetch-depth: 0" in str(exc) and "--allow-shallow-clone" in str(exc)
    assert "shallow clone" in str(exc)
    assert not [c for c in gb.fake.log[before:] if "pull" in c or "run" in c]
    assert gb.running() == [v1.tag]
    s, exc = gb.run(v2, environ=env, allow_shallow=True)
    assert exc is None and s["outcome"] == SUCCEEDED and s["allow_shallow_clone"] is True


def test_a_recovery_is_not_gated(gb: GateBench) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.sql": INIT})
    gb.run(v1)
    s, exc = gb.run(v1, kind="recover")
    assert exc is None and s["outcome"] == RECOVERED
    assert "not gated" in _skip_reason(s)


def test_skipped_when_the_migrations_at_a_revision_cannot_be_read(gb: GateBench) -> None:
    v1 = gb.commit("v1", {"migrations/0001_init.up.sql": INIT})
    v2 = gb.commit("v2", {"migrations/V2__drop_title.sql": DROP})  # golang-migrate + flyway
    gb.run(v1)
    s, exc = gb.run(v2)
    assert exc is None and s["outcome"] == SUCCEEDED
    reason = _skip_reason(s)
    assert reason.startswith("the migrations could not be read from git")
    assert "mixes migration layouts" in reason
