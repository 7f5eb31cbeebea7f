"""What the deploy, rollback and demo tests share: the example app built in several
versions (real commits, real builds, signed with a real key, in a real registry), and a
per-test deploy folder that points one uniquely named service at the SSH test host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.cli import plainsail
from tests.support.gitrepo import git
from tests.support.notes_app import (
    BASE_IMAGE,
    PG_HOST,
    PG_PORT,
    Database,
    copy_example,
    create_database,
    drop_database,
    psql,
)
from tests.support.services import Registry, free_port, remove_repo_images
from tests.support.sshd import SSHHost

COSIGN_PASSWORD = "test-passphrase"

# name -> how the version differs from the example app (each is one commit)
VARIANTS: dict[str, dict[str, str]] = {
    "v1": {},
    "v2": {"notes_api/version.py": 'APP_VERSION = "2"\nREQUIRED_SCHEMA = "0002"\n'},
    "bad-migration": {
        "notes_api/version.py": 'APP_VERSION = "3-bad-migration"\nREQUIRED_SCHEMA = "0003"\n',
        "migrations/0003_tags_index.sql": (
            "CREATE TABLE audit_log (id bigserial PRIMARY KEY, note_id bigint);\n"
            "ALTER TABLE notes ADD COLUMN archived boolean NOT NULL DEFAULT false;\n"
            "INSERT INTO audit_log (note_id) VALUES (1);\n"
            "CREATE INDEX audit_note ON audit_log (note_id);\n"
            "ALTER TABLE notes ADD COLUMN archived boolean;\n"  # fails: column exists
            "CREATE TABLE never_1 (id int);\nCREATE TABLE never_2 (id int);\n"
            "CREATE TABLE never_3 (id int);\nCREATE TABLE never_4 (id int);\n"
            "CREATE TABLE never_5 (id int);\n"
        ),
    },
    "crash": {"notes_api/version.py": 'APP_VERSION = "4-crash"\nREQUIRED_SCHEMA = "0002"\n'
              'raise SystemExit("refusing to start: this build is broken")\n'},
    "slow": {"notes_api/version.py": 'APP_VERSION = "5-slow"\nREQUIRED_SCHEMA = "0002"\n'
             "import time\ntime.sleep(3)\n"},
    # A migration that breaks version 1 (it still selects tags): the schema gate's case.
    "drop-column": {
        "notes_api/version.py": 'APP_VERSION = "6-drop-column"\nREQUIRED_SCHEMA = "0003"\n',
        "migrations/0003_drop_tags.sql": (
            "-- plainsail: allow missing-lock-timeout plainsail migrate sets lock_timeout\n"
            "ALTER TABLE notes DROP COLUMN tags;\n"),
    },
}


@dataclass
class Built:
    tag: str
    digest: str


@dataclass
class NotesBuilds:
    repo: Path
    image: str
    public_key: Path
    private_key: Path
    versions: dict[str, Built]
    registry: Registry

    def ref(self, name: str) -> str:
        b = self.versions[name]
        return f"{b.tag}@{b.digest}"


def _base_config(image: str, registry: Registry) -> str:
    return (f"service: notes-build\nimage: {image}\n"
            f"build:\n  args:\n    BASE_IMAGE: {BASE_IMAGE}\n"
            "signing:\n  key: cosign.key\n  public_key: cosign.pub\n")


@pytest.fixture(scope="session")
def notes_builds(tmp_path_factory: pytest.TempPathFactory, registry: Registry,
                 plainsail_wheel: Path) -> Iterator[NotesBuilds]:
    """Every variant built, pushed and signed once per session."""
    root = tmp_path_factory.mktemp("notes-builds")
    repo = copy_example(root / "app", plainsail_wheel)
    image = registry.repo(f"t/notes-{uuid.uuid4().hex[:8]}")
    (repo / "plainsail.yml").write_text(_base_config(image, registry))
    (repo / ".gitignore").write_text(".plainsail/\ncosign.key\ncosign.pub\n__pycache__/\n")
    env = {"COSIGN_PASSWORD": COSIGN_PASSWORD}
    git(repo, "init", "-q", "-b", "main")
    r = plainsail("keygen", cwd=repo, env=env)
    assert r.code == 0, r.text
    versions: dict[str, Built] = {}
    for name, changes in VARIANTS.items():
        git(repo, "checkout", "-q", "-B", name, "main") if versions else None
        for rel, text in changes.items():
            (repo / rel).write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "--allow-empty", "-m", name)
        b = plainsail("build", "--json", cwd=repo, env=env)
        assert b.code == 0, b.text
        rec = json.loads(b.out)
        s = plainsail("sign", rec["tag"], cwd=repo, env=env)
        assert s.code == 0, s.text
        versions[name] = Built(rec["tag"], rec["digest"])
        git(repo, "checkout", "-q", "main")
    yield NotesBuilds(repo, image, repo / "cosign.pub", repo / "cosign.key", versions, registry)
    remove_repo_images(image)


# ---------------------------------------------------------------- webhook receiver


@dataclass
class Webhook:
    url: str
    bodies: list[str] = field(default_factory=list)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            hook.bodies.append(self.rfile.read(length).decode())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_port}/hooks/T0KEN-{uuid.uuid4().hex[:6]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- a deploy folder


@dataclass
class DeployDir:
    path: Path
    service: str
    port: int
    db: AppDatabase
    builds: NotesBuilds
    ssh: SSHHost | None
    env: dict[str, str]

    def config(self, **overrides: str) -> None:
        host = self.ssh.host if self.ssh else "local"
        ssh = (f"ssh:\n  identity_file: {self.ssh.identity_file}\n"
               f"  known_hosts: {self.ssh.known_hosts}\n") if self.ssh else ""
        values = {
            "on_failure": "restore", "retain": "2", "attempts": "20", "interval": "250ms",
            "notify": "", "extra": "", "migrate_timeout": "60s",
        }
        values.update(overrides)
        text = (
            f"service: {self.service}\nimage: {self.builds.image}\n"
            f"signing:\n  public_key: {self.builds.public_key}\n"
            f"hosts: ['{host}']\n{ssh}"
            f"app:\n  port: {self.port}\n  env:\n    PORT: '{self.port}'\n"
            "  secrets: [DATABASE_URL]\n  network: host\n  stop_timeout: 5s\n"
            "migrate:\n  command: [plainsail, migrate]\n"
            f"  timeout: {values['migrate_timeout']}\n"
            "health:\n  path: /health\n  body_contains: '\"database\": \"ok\"'\n"
            f"  attempts: {values['attempts']}\n  interval: {values['interval']}\n"
            f"  timeout: 2s\non_failure: {values['on_failure']}\nretain: {values['retain']}\n"
            f"{values['notify']}{values['extra']}"
        )
        (self.path / "plainsail.yml").write_text(text)

    def run(self, *args: str, env: dict[str, str] | None = None) -> object:
        return plainsail(*args, cwd=self.path, env={**self.env, **(env or {})})

    def kill_mid_switch(self, version: str) -> int:
        """Start a deploy of `version` and SIGKILL it once the new container is starting
        (the state a lost laptop or a cancelled CI job leaves); its pid."""
        import signal
        import sys

        proc = subprocess.Popen(
            [sys.executable, "-m", "plainsail", "deploy", self.builds.ref(version)],
            cwd=self.path, env={**os.environ, **self.env}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "start-new: ok" in line:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, "".join(seen)
        return proc.pid

    def get(self, path: str = "/health") -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def host_run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        if self.ssh:
            return self.ssh.run(list(argv))
        return subprocess.run(list(argv), capture_output=True, text=True)

    def containers(self) -> list[str]:
        out = self.host_run("docker", "ps", "-a", "--filter",
                            f"label=dev.plainsail.service={self.service}",
                            "--format", "{{.Names}} {{.State}}").stdout
        return sorted(line for line in out.splitlines() if line.strip())

    def host_records(self) -> list[dict[str, object]]:
        home = self.ssh.home if self.ssh else os.path.expanduser("~")
        res = self.host_run("cat", f"{home}/.plainsail/{self.service}/history.jsonl")
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


@dataclass
class AppDatabase:
    """A test database owned by its own role with a random password, so tests can search
    every output for that password."""

    db: Database
    role: str
    password: str

    @property
    def name(self) -> str:
        return self.db.name

    @property
    def url(self) -> str:
        return self.url_with(password=self.password)

    def url_with(self, *, password: str) -> str:
        return f"postgresql://{self.role}:{password}@{PG_HOST}:{PG_PORT}/{self.db.name}"

    def query(self, sql: str) -> str:
        return self.db.query(sql)


def create_app_database() -> AppDatabase:
    db = create_database("ps_deploy")
    role, password = f"ps_r_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    psql(db.name, "-c", f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    psql(db.name, "-c", f"ALTER DATABASE {db.name} OWNER TO {role}")
    return AppDatabase(db, role, password)


def drop_app_database(adb: AppDatabase) -> None:
    drop_database(adb.db)
    psql("postgres", "-c", f"DROP ROLE IF EXISTS {adb.role}", check=False)


def make_deploy_dir(root: Path, builds: NotesBuilds, ssh: SSHHost | None) -> DeployDir:
    root.mkdir(parents=True, exist_ok=True)
    service = f"notes-{uuid.uuid4().hex[:8]}"
    db = create_app_database()
    d = DeployDir(root, service, free_port(), db, builds, ssh, {"DATABASE_URL": db.url})
    d.config()
    return d


def cleanup_deploy_dir(d: DeployDir) -> None:
    names = [line.split()[0] for line in d.containers() if line.strip()]
    if names:
        d.host_run("docker", "rm", "-f", *names)
    migr = d.host_run("docker", "ps", "-aq", "--filter",
                      f"label=dev.plainsail.service={d.service}").stdout.split()
    if migr:
        d.host_run("docker", "rm", "-f", *migr)
    home = d.ssh.home if d.ssh else os.path.expanduser("~")
    d.host_run("rm", "-rf", f"{home}/.plainsail/{d.service}")
    drop_app_database(d.db)
    shutil.rmtree(d.path, ignore_errors=True)


@pytest.fixture
def deploy_dir(tmp_path: Path, notes_builds: NotesBuilds, ssh_host: SSHHost) -> Iterator[DeployDir]:
    d = make_deploy_dir(tmp_path / "deploy", notes_builds, ssh_host)
    yield d
    cleanup_deploy_dir(d)


@pytest.fixture
def local_deploy_dir(tmp_path: Path, notes_builds: NotesBuilds) -> Iterator[DeployDir]:
    d = make_deploy_dir(tmp_path / "deploy", notes_builds, None)
    yield d
    cleanup_deploy_dir(d)
