"""Backups for real: the example app deployed over the real sshd, its database on the
real PostgreSQL, backed up by Debian's pg_dump in a container on the host."""

from __future__ import annotations

import json
import subprocess

from tests.support.deploy_env import DeployDir


def backup_config(image: str, before: str = "destructive", keep: int = 3) -> str:
    return f"backup:\n  before: {before}\n  keep: {keep}\n  image: {image}\n"


def why_line(out: str) -> str:
    """The one line that says why an attempt ended as it did."""
    lines = [line for line in out.splitlines() if line.strip().startswith("why:")]
    assert len(lines) == 1, out
    return lines[0]


def gate_env(d: DeployDir) -> dict[str, str]:
    return {"PLAINSAIL_MIGRATIONS": str(d.builds.repo / "migrations")}


def test_a_destructive_migration_is_backed_up_first(deploy_dir: DeployDir,
                                                    pgclient_image: str) -> None:
    d = deploy_dir
    d.config(extra=backup_config(pgclient_image))
    env = gate_env(d)
    first = d.run("deploy", d.builds.ref("v1"), env=env)
    assert first.code == 0, first.text
    # Nothing ran before: what is pending is unknown, so the first deploy backs up.
    assert "backup: ok" in first.out + first.err
    d.db.query("INSERT INTO notes (text, tags) VALUES ('kept', '{a,b}'), ('also', '{c}')")
    plain = d.run("deploy", d.builds.ref("v2"), env=env)
    assert plain.code == 0, plain.text
    # No migration file is new in v2: no backup step, no cost.
    assert "backup" not in plain.out + plain.err
    assert "backup" not in d.host_records()[-1]

    drop = d.run("deploy", d.builds.ref("drop-column"), "--allow-breaking-migrations",
                 env=env)
    assert drop.code == 0, drop.text
    rec = d.host_records()[-1]
    names = [s["name"] for s in rec["steps"]]
    assert names.index("backup") < names.index("migrate")
    b = rec["backup"]
    assert b["ok"] and "drop-column" in b["reason"]
    assert b["tables"]["public.notes"] == 2
    assert b["size"] > 0 and len(b["sha256"]) == 64 and b["seconds"] > 0
    assert d.ssh is not None
    stat = d.host_run("stat", "-c", "%a %s", b["file"]).stdout.split()
    assert stat == ["600", str(b["size"])]
    sha = d.host_run("sha256sum", b["file"]).stdout.split()[0]
    assert sha == b["sha256"]
    folder = b["file"].rsplit("/", 1)[0]
    assert d.host_run("stat", "-c", "%a", folder).stdout.strip() == "700"
    # The database URL is in no output, record or command.
    everything = first.text + plain.text + drop.text + json.dumps(d.host_records())
    everything += (d.path / ".plainsail" / "history.jsonl").read_text()
    assert d.db.password not in everything
    assert d.db.query("SELECT count(*) FROM information_schema.columns WHERE "
                      "table_name = 'notes' AND column_name = 'tags'") == "0"
    leftovers = d.host_run("docker", "ps", "-aq", "--filter", "label=dev.plainsail.role=backup",
                           "--filter", f"label=dev.plainsail.service={d.service}").stdout
    assert leftovers.strip() == ""


def test_a_full_disk_stops_the_deploy_before_migrations(deploy_dir: DeployDir,
                                                        pgclient_image: str) -> None:
    d = deploy_dir
    assert d.ssh is not None
    small = d.ssh.home / f"small-{d.service}"  # where the SSH user can reach it
    small.mkdir()
    owner = small.parent.stat()  # the SSH user's, 0700: a host_dir no one else controls
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=512k,mode=0700,uid={owner.st_uid},"
                    f"gid={owner.st_gid}", "tmpfs", str(small)], check=True)
    try:
        d.config(extra=backup_config(pgclient_image, before="migrations")
                 + f"host_dir: {small}\n")
        # More data than the host_dir can hold (random text does not compress).
        d.db.query("CREATE TABLE big AS SELECT g, md5(random()::text) || md5(random()::text) "
                   "AS filler FROM generate_series(1, 40000) g")
        d.db.query(f"ALTER TABLE big OWNER TO {d.db.role}")
        r = d.run("deploy", d.builds.ref("v1"), env=gate_env(d))
        assert r.code == 1, r.text
        why = why_line(r.out)
        assert "backup failed" in why and "migrations did not run" in why, r.text
        assert "disk is full" in why, why
        assert d.db.password not in r.text
        # Nothing changed: no migration ran, no app container, no partial file.
        assert d.db.query("SELECT to_regclass('plainsail_migrations') IS NULL") == "t"
        assert d.containers() == []
        left = subprocess.run(["find", str(small), "-name", "*.partial", "-o", "-name",
                               "*.dump", "-o", "-name", "*.counts"], capture_output=True,
                              text=True).stdout
        assert left.strip() == ""
        rec = json.loads((d.path / ".plainsail" / "history.jsonl").read_text()
                         .splitlines()[-1])
        assert rec["outcome"] == "aborted" and rec["backup"]["ok"] is False
    finally:
        subprocess.run(["umount", str(small)], check=False)
        small.rmdir()


def test_a_wrong_image_or_an_unreachable_database_aborts_in_one_line(
        deploy_dir: DeployDir, pgclient_image: str) -> None:
    d = deploy_dir
    repo, _, digest = pgclient_image.partition("@")
    missing = repo.rsplit(":", 1)[0] + "-missing:15@" + digest
    d.config(extra=backup_config(missing, before="migrations"))
    r = d.run("deploy", d.builds.ref("v1"), env=gate_env(d))
    assert r.code == 1, r.text
    assert "backup failed" in why_line(r.out), r.text
    assert "not found" in why_line(r.out) or "manifest unknown" in why_line(r.out), r.text
    assert d.containers() == []

    d.config(extra=backup_config(pgclient_image, before="migrations"))
    unreachable = d.db.url.replace(":5432/", ":1/")
    r = d.run("deploy", d.builds.ref("v1"), env={**gate_env(d), "DATABASE_URL": unreachable})
    assert r.code == 1, r.text
    assert "backup failed" in why_line(r.out), r.text
    assert "connection to server" in why_line(r.out), r.text
    assert d.db.password not in r.text
    assert d.containers() == []
