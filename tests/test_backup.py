"""Backups for real: the example app deployed over the real sshd, its database on the
real PostgreSQL, backed up by Debian's pg_dump in a container on the host."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from plainsail.proxy import argv as pargv
from tests.support.backup_env import BridgedPostgres
from tests.support.cli import plainsail
from tests.support.deploy_env import (
    DeployDir,
    NotesBuilds,
    create_app_database,
    drop_app_database,
)
from tests.support.services import free_port
from tests.support.sshd import SSHHost


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


def test_backups_listed_downloaded_restored_and_drilled(deploy_dir: DeployDir,
                                                        pgclient_image: str,
                                                        tmp_path: Path) -> None:
    d = deploy_dir
    d.config(extra=backup_config(pgclient_image))
    env = gate_env(d)
    assert d.run("deploy", d.builds.ref("v1"), env=env).code == 0
    d.db.query("INSERT INTO notes (text, tags) VALUES ('kept', '{a,b}'), ('also', '{c}')")
    drop = d.run("deploy", d.builds.ref("drop-column"), "--allow-breaking-migrations",
                 env=env)
    assert drop.code == 0, drop.text
    taken = d.host_records()[-1]["backup"]

    listed = d.run("backup", "list", "--json")
    assert listed.code == 0, listed.text
    backups = json.loads(listed.out)["backups"]
    assert [b["id"] for b in backups][-1] == taken["id"]
    newest = backups[-1]
    assert newest["sha256"] == taken["sha256"] and newest["size"] == taken["size"]
    assert newest["deploy_id"] == d.host_records()[-1]["id"]
    assert newest["created"].endswith("Z") and "T" in newest["created"]

    # The data the migration dropped is back in a new database; the app is left alone.
    restored = f"ps_restored_{d.service[-8:]}"
    d.db.query(f"ALTER ROLE {d.db.role} CREATEDB")
    try:
        r = d.run("backup", "restore", taken["id"], "--into", restored, "--json")
        assert r.code == 0, r.text
        assert json.loads(r.out)["outcome"] == "restored"
        tags = subprocess.run(
            ["psql", "-X", "-At", "-h", "127.0.0.1", "-U", "plainsail", "-d", restored, "-c",
             "SELECT string_agg(array_to_string(tags, ','), ';' ORDER BY id) FROM notes"],
            capture_output=True, text=True, env={"PGPASSWORD": "plainsail"}).stdout.strip()
        assert tags == "a,b;c"
        assert '"version": "6-drop-column"' in d.get()[1]
        # A database that exists is refused, and left as it was.
        again = d.run("backup", "restore", taken["id"], "--into", restored)
        assert again.code == 1 and "already exists" in again.err, again.text
        assert len([line for line in again.err.splitlines() if line.strip()]) == 1
    finally:
        d.db.query(f"DROP DATABASE IF EXISTS {restored}")

    drill = d.run("drill", "--backup", "--json")
    assert drill.code == 0, drill.text
    result = json.loads(drill.out)
    assert result["outcome"] == "succeeded" and result["differences"] == {}
    assert result["backup"]["id"] == taken["id"] and result["seconds"] > 0
    assert d.host_records()[-1]["kind"] == "backup-drill"
    scratch = d.db.query(f"SELECT count(*) FROM pg_database WHERE datname = "
                         f"'{result['scratch_database']}'")
    assert scratch == "0"

    out = tmp_path / "copy.dump"
    dl = d.run("backup", "download", taken["id"], "--output", str(out))
    assert dl.code == 0, dl.text
    assert out.stat().st_mode & 0o777 == 0o600 and out.stat().st_size == taken["size"]

    # An altered backup is refused before anything is restored.
    d.host_run("sh", "-c", f"printf x >> {taken['file']}")
    bad = d.run("backup", "restore", taken["id"], "--into", restored)
    assert bad.code == 1 and "altered" in bad.err, bad.text
    assert d.db.query(f"SELECT count(*) FROM pg_database WHERE datname = '{restored}'") == "0"
    drilled = d.run("drill", "--backup")
    assert drilled.code == 1 and "altered" in drilled.out, drilled.text
    dl2 = d.run("backup", "download", taken["id"], "--output", str(tmp_path / "again.dump"))
    assert dl2.code == 1 and "altered" in dl2.err and not (tmp_path / "again.dump").exists()
    everything = listed.text + r.text + drill.text + bad.text + drilled.text
    assert d.db.password not in everything


def test_restore_in_place_stops_restores_and_starts_the_app(deploy_dir: DeployDir,
                                                           pgclient_image: str) -> None:
    d = deploy_dir
    d.config(extra=backup_config(pgclient_image, before="never"))
    assert d.run("deploy", d.builds.ref("v2")).code == 0
    d.db.query("INSERT INTO notes (text) VALUES ('before')")
    made = d.run("backup", "create", "--json")
    assert made.code == 0, made.text
    bid = json.loads(made.out)["id"]
    d.db.query("INSERT INTO notes (text) VALUES ('after')")
    refused = d.run("backup", "restore", bid, "--in-place")
    assert refused.code == 2 and "--yes" in refused.err
    r = d.run("backup", "restore", bid, "--in-place", "--yes", "--json")
    assert r.code == 0, r.text
    result = json.loads(r.out)
    assert result["outcome"] == "restored" and "the app runs again" in result["reason"]
    assert d.db.query("SELECT string_agg(text, ',' ORDER BY id) FROM notes") == "before"
    assert d.get()[0] == 200, "the app serves again"
    assert d.host_records()[-1]["kind"] == "backup-restore"
    assert not d.host_run("test", "-d", f"{d.ssh.home if d.ssh else ''}/.plainsail/"
                          f"{d.service}/lock").returncode == 0
    assert d.db.password not in made.text + r.text


def test_restore_in_place_behind_the_proxy(ssh_host: SSHHost, notes_builds: NotesBuilds,
                                           caddy_image: str, pgclient_image: str,
                                           pg_on_bridge: BridgedPostgres,
                                           tmp_path: Path) -> None:
    """The example app behind a real Caddy on its own bridge network, its database reached
    the way a real host reaches it (host.docker.internal, the host's gateway). The restore
    puts the service in maintenance (503, never a failed connection), replaces the
    database and turns maintenance off: the same container serves the backup's data. A
    restore that fails midway rolls back: the database as it was, the app serving."""
    tag = uuid.uuid4().hex[:8]
    service, site = f"notes-{tag}", f"notes-{tag}.test"
    host_dir, network = f"~/.psbk-{tag}", f"psbk-{tag}"
    http_port = free_port()
    db = create_app_database()
    url = (f"postgresql://{db.role}:{db.password}@{pg_on_bridge.host}:{pg_on_bridge.port}/"
           f"{db.name}")
    (tmp_path / "plainsail.yml").write_text(
        f"service: {service}\nimage: {notes_builds.image}\n"
        f"signing:\n  public_key: {notes_builds.public_key}\n"
        f"hosts: ['{ssh_host.host}']\nhost_dir: {host_dir}\n"
        f"ssh:\n  identity_file: {ssh_host.identity_file}\n"
        f"  known_hosts: {ssh_host.known_hosts}\n"
        "app:\n  port: 8000\n  env:\n    PORT: '8000'\n  secrets: [DATABASE_URL]\n"
        f"  add_hosts: ['{pg_on_bridge.add_host}']\n  stop_timeout: 5s\n"
        "migrate:\n  command: [plainsail, migrate]\n  timeout: 60s\n"
        "health:\n  path: /health\n  body_contains: '\"database\": \"ok\"'\n"
        "  attempts: 40\n  interval: 250ms\n  timeout: 2s\n"
        f"proxy:\n  host: {site}\n  image: {caddy_image}\n  tls: off\n"
        f"  http_port: {http_port}\n  https_port: {free_port()}\n  network: {network}\n"
        "  drain: 2s\n" + backup_config(pgclient_image, before="never"))
    env = {"DATABASE_URL": url, "GITHUB_ACTIONS": ""}

    def run(*args: str) -> Any:
        return plainsail(*args, cwd=tmp_path, env=env)

    def get(path: str) -> tuple[int, str, str]:
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        try:
            conn.request("GET", path, headers={"Host": site})
            r = conn.getresponse()
            return r.status, r.getheader("Retry-After") or "", r.read().decode()
        finally:
            conn.close()

    def texts() -> list[str]:
        status, _, body = get("/notes")
        assert status == 200, body
        return [n["text"] for n in json.loads(body)["notes"]]

    home = f"{ssh_host.home}/{host_dir[2:]}"
    try:
        deployed = run("deploy", notes_builds.ref("v2"))
        assert deployed.code == 0, deployed.text
        db.query("INSERT INTO notes (text) VALUES ('before')")
        made = run("backup", "create", "--json")
        assert made.code == 0, made.text
        bid = json.loads(made.out)["id"]
        db.query("INSERT INTO notes (text) VALUES ('after')")
        assert sorted(texts()) == ["after", "before"]
        app = ssh_host.run(["docker", "ps", "-q", "--filter",
                            f"label=dev.plainsail.service={service}",
                            "--filter", "label=dev.plainsail.role=app"]).stdout.split()
        assert len(app) == 1

        # What a client sees meanwhile: the app's answers, or maintenance; never an error.
        seen: list[tuple[int, str]] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                try:
                    status, retry, _ = get("/health")
                except OSError as exc:
                    status, retry = 0, str(exc)
                seen.append((status, retry))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            r = run("backup", "restore", bid, "--in-place", "--yes", "--json")
        finally:
            stop.set()
            watcher.join(timeout=10)
        assert r.code == 0, r.text
        result = json.loads(r.out)
        assert result["outcome"] == "restored" and result["maintenance"] is True, result
        assert "maintenance is off again" in result["reason"]
        assert texts() == ["before"], "the same app serves the backup's data"
        assert {s for s, _ in seen} <= {200, 503}, seen
        assert any(s == 503 and retry for s, retry in seen), "never in maintenance"
        assert seen[-1][0] == 200
        still = ssh_host.run(["docker", "ps", "-q", "--filter",
                              f"label=dev.plainsail.service={service}",
                              "--filter", "label=dev.plainsail.role=app"]).stdout.split()
        assert still == app, "behind the proxy the app is not stopped"

        # A restore that fails midway (an object made since depends on a table the backup
        # replaces) rolls back: the database as it was, maintenance off, the app serving.
        db.query("INSERT INTO notes (text) VALUES ('later')")
        db.query(f"CREATE VIEW note_texts AS SELECT text FROM notes; "
                 f"ALTER VIEW note_texts OWNER TO {db.role}")
        failed = run("backup", "restore", bid, "--in-place", "--yes", "--json")
        assert failed.code == 1, failed.text
        doc = json.loads(failed.out)
        assert doc["outcome"] == "restore-failed", doc
        assert "left as it was" in doc["reason"] and "maintenance is off" in doc["reason"]
        assert sorted(texts()) == ["before", "later"]
        assert get("/health")[0] == 200
        lock = run("lock", "status")
        assert lock.out.strip().endswith("unlocked"), lock.text
        records = [json.loads(line) for line in ssh_host.run(
            ["cat", f"{home}/{service}/history.jsonl"]).stdout.splitlines() if line.strip()]
        assert [x["outcome"] for x in records if x.get("kind") == "backup-restore"] == [
            "restored", "restore-failed"]
        everything = deployed.text + made.text + r.text + failed.text + json.dumps(records)
        assert db.password not in everything

        # Killed outright once maintenance is on: the lock (kind restore) stays and so
        # does maintenance; recover turns it off and the app serves again.
        db.query("DROP VIEW note_texts")
        proc = subprocess.Popen([sys.executable, "-m", "plainsail", "backup", "restore", bid,
                                 "--in-place", "--yes"], cwd=tmp_path,
                                env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while get("/health")[0] != 503:
            assert proc.poll() is None and time.monotonic() < deadline, "never in maintenance"
            time.sleep(0.01)
        proc.kill()
        proc.wait(timeout=30)
        assert "INTERRUPTED" in run("lock", "status").out
        assert get("/health")[0] == 503
        rec = run("recover")
        assert rec.code == 0, rec.text
        assert "maintenance is off again" in rec.text, rec.text
        assert get("/health")[0] == 200
        # The restore's container went on or was removed: the backup's data, or as it was.
        assert sorted(texts()) in (["before"], ["before", "later"])
        assert run("lock", "status").out.strip().endswith("unlocked")
    finally:
        ids = ssh_host.run(["docker", "ps", "-aq", "--filter",
                            f"label=dev.plainsail.service={service}"]).stdout.split()
        if ids:
            ssh_host.run(["docker", "rm", "-f", *ids])
        ssh_host.run(["docker", "rm", "-f", pargv.container_name(host_dir)])
        ssh_host.run(["docker", "network", "rm", network])
        ssh_host.run(["rm", "-rf", home])
        drop_app_database(db)
