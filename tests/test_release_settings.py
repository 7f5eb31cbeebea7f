"""A release is its image *and* its settings, for real (sshd, Docker Engine, PostgreSQL):
a rotated secret is deployed even when the image is the same, and a rollback runs the
target with the settings it ran with (secrets with today's values)."""

from __future__ import annotations

import json
import uuid

from tests.support.deploy_env import DeployDir
from tests.support.notes_app import psql


def container_env(d: DeployDir) -> list[str]:
    """The environment of the service's running app container."""
    ids = d.host_run("docker", "ps", "-q", "--filter",
                     f"label=dev.plainsail.service={d.service}", "--filter",
                     "label=dev.plainsail.role=app").stdout.split()
    assert len(ids) == 1, ids
    out = d.host_run("docker", "inspect", "--format", "{{json .Config.Env}}", ids[0]).stdout
    env: list[str] = json.loads(out)
    return env


def everything_written(d: DeployDir, *outputs: str) -> str:
    return ("".join(outputs) + json.dumps(d.host_records())
            + (d.path / ".plainsail" / "history.jsonl").read_text())


def test_a_rotated_database_password_is_deployed_for_the_same_image(
        deploy_dir: DeployDir) -> None:
    d = deploy_dir
    v1 = d.builds.ref("v1")
    assert d.run("deploy", v1).code == 0
    rotated = f"rotated-{uuid.uuid4().hex}"
    psql(d.db.name, "-c", f"ALTER ROLE {d.db.role} PASSWORD '{rotated}'")
    assert d.get()[0] == 503  # the running container still has the old password
    new_url = d.db.url_with(password=rotated)
    r = d.run("deploy", v1, "--json", env={"DATABASE_URL": new_url})
    doc = json.loads(r.out)
    assert r.code == 0 and doc["outcome"] == "succeeded", r.text
    assert "settings changed: DATABASE_URL (secret)" in doc["reason"]
    assert "settings changed since" in r.err and "DATABASE_URL (secret)" in r.err
    status, body = d.get()
    assert status == 200 and '"database": "ok"' in body
    assert f"DATABASE_URL={new_url}" in container_env(d)
    # The same image and settings again: nothing to do.
    again = d.run("deploy", v1, "--json", env={"DATABASE_URL": new_url})
    assert json.loads(again.out)["outcome"] == "unchanged", again.text
    written = everything_written(d, r.text, again.text)
    assert rotated not in written and d.db.password not in written


def test_rollback_runs_the_target_with_the_settings_it_ran_with(
        deploy_dir: DeployDir) -> None:
    d = deploy_dir
    d.config(extra="")
    text = (d.path / "plainsail.yml").read_text()
    (d.path / "plainsail.yml").write_text(text.replace("  env:\n", "  env:\n    FLAVOUR: calm\n"))
    assert d.run("deploy", d.builds.ref("v1")).code == 0
    # The bad release is a config change that its health gate does not catch.
    (d.path / "plainsail.yml").write_text(text.replace("  env:\n", "  env:\n    FLAVOUR: wild\n"))
    assert d.run("deploy", d.builds.ref("v2")).code == 0
    rotated = f"rotated-{uuid.uuid4().hex}"
    psql(d.db.name, "-c", f"ALTER ROLE {d.db.role} PASSWORD '{rotated}'")
    new_url = d.db.url_with(password=rotated)
    r = d.run("rollback", "--json", env={"DATABASE_URL": new_url})
    doc = json.loads(r.out)
    assert r.code == 0 and doc["outcome"] == "succeeded", r.text
    v1 = d.builds.versions["v1"].tag
    said = doc["settings_from"]
    assert said.startswith(f"{v1} runs with the app settings it ran with"), said
    assert "differ from today's in: FLAVOUR; secrets keep today's values" in said
    assert said in r.err
    env = container_env(d)
    assert "FLAVOUR=calm" in env and f"DATABASE_URL={new_url}" in env
    assert '"version": "1"' in d.get()[1] and d.get()[0] == 200
    rec = d.host_records()[-1]
    assert rec["settings"]["env"]["FLAVOUR"] == "calm"
    assert rec["settings"]["secrets"] == ["DATABASE_URL"]
    written = everything_written(d, r.text)
    assert rotated not in written and d.db.password not in written
