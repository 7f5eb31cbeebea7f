"""`plainsail demo`: the whole pipeline on the example app, on this machine, narrated.

It needs what scripts/setup.sh prepares: a Docker Engine, PostgreSQL on 127.0.0.1:5432
with a login that may create databases ($PLAINSAIL_DEMO_PG, default the `plainsail` role
set-up makes), Debian's docker-registry, and the local base image. It makes a throwaway
workspace (a git repository holding the example app), a registry of its own on a free port,
a database and role of its own, and removes all of it at the end unless --keep.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plainsail.config import model as configlib
from plainsail.demo_proxy import ProxyChapter
from plainsail.deploy.plan import Request
from plainsail.deploy.report import render_summary
from plainsail.deploy.rollback import rollback
from plainsail.deploy.run import Deploy
from plainsail.errors import PlainsailError
from plainsail.secret import Secret
from plainsail.supply.build import run_build
from plainsail.supply.keys import generate
from plainsail.supply.signing import sign_image

ADMIN_URL = os.environ.get("PLAINSAIL_DEMO_PG",
                           "postgresql://plainsail:plainsail@127.0.0.1:5432/postgres")
BASE_IMAGE = os.environ.get("PLAINSAIL_BASE_IMAGE", "plainsail-base:bookworm")
SOURCE_ROOT = Path(__file__).resolve().parents[2]


class DemoError(PlainsailError):
    pass


def example_dir() -> Path:
    env = os.environ.get("PLAINSAIL_EXAMPLE_DIR")
    path = Path(env) if env else SOURCE_ROOT / "examples" / "notes-api"
    if not (path / "Dockerfile").is_file():
        raise DemoError(
            "the demo needs the example app (examples/notes-api); run it from a plainsail "
            "checkout (see the README), or set PLAINSAIL_EXAMPLE_DIR"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Workspace:
    root: Path
    app: Path
    service: str
    port: int
    registry_port: int
    db_name: str
    db_role: str
    db_password: str
    passphrase: Secret
    registry_proc: subprocess.Popen[bytes] | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    proxy: ProxyChapter | None = None

    @property
    def database_url(self) -> str:
        return (f"postgresql://{self.db_role}:{self.db_password}@127.0.0.1:5432/"
                f"{self.db_name}")

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"


class Demo:
    def __init__(self, keep: bool = False, workdir: str | None = None,
                 out: Callable[[str], None] = lambda line: None) -> None:
        self.keep = keep
        self.workdir = workdir
        self.out = out  # each narrated line (the CLI passes plainsail.output.say)
        self.step_no = 0

    # -- narration
    def chapter(self, title: str) -> None:
        self.step_no += 1
        self.out("")
        self.out(f"=== {self.step_no}. {title}")

    def say(self, text: str) -> None:
        self.out(f"    {text}")

    def show_health(self, ws: Workspace) -> str:
        try:
            with urllib.request.urlopen(ws.health_url, timeout=3) as resp:
                body = resp.read().decode()
                status = resp.status
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode()
        except OSError as exc:
            status, body = 0, str(exc)
        self.say(f"GET /health -> {status} {body.strip()}")
        return str(body)

    # -- the story
    def run(self) -> int:
        ws = self._prepare()
        ok = False
        try:
            ok = self._story(ws)
        finally:
            if self.keep:
                self._explain_keep(ws)
            else:
                self._cleanup(ws)
        return 0 if ok else 1

    def _story(self, ws: Workspace) -> bool:
        cfg = configlib.load(ws.app / "plainsail.yml")
        self.chapter("Version 1: build (tagged with the git SHA), sign, deploy")
        v1 = self._release(ws, cfg, None, "v1")
        if v1["outcome"] != "succeeded":
            self.say("version 1 did not deploy; the demo cannot go on")
            return False
        self.show_health(ws)

        self.chapter("A version whose migration fails half-way: the deploy aborts")
        self.say("0003 adds a column, then fails on its second statement. The whole file "
                 "rolls back; the running v1 is never touched.")
        self._release(ws, cfg, {
            "migrations/0003_add_archived.sql":
                "ALTER TABLE notes ADD COLUMN archived boolean NOT NULL DEFAULT false;\n"
                "ALTER TABLE notes ADD COLUMN archived boolean;\n",
            "notes_api/version.py": 'APP_VERSION = "3-bad-migration"\nREQUIRED_SCHEMA = "0003"\n',
        }, "a migration that fails")
        self.show_health(ws)
        self._git(ws, "revert", "--no-edit", "HEAD")

        self.chapter("A version whose health check fails: restored to v1")
        self.say("This build needs schema 0009, which no migration creates, so its deep "
                 "/health answers 503. The gate fails and v1 is started again.")
        self._release(ws, cfg, {
            "notes_api/version.py": 'APP_VERSION = "4-unhealthy"\nREQUIRED_SCHEMA = "0009"\n',
        }, "a version that fails its health gate")
        self.show_health(ws)
        self._git(ws, "revert", "--no-edit", "HEAD")

        self.chapter("A good version 2")
        v2 = self._release(ws, cfg, {
            "notes_api/version.py": 'APP_VERSION = "2"\nREQUIRED_SCHEMA = "0002"\n',
        }, "version 2")
        self.show_health(ws)
        if v2["outcome"] != "succeeded":
            return False

        self.chapter("Roll back to v1 (plainsail rollback): no migration, no pull")
        summary = rollback(cfg, report=self.say,
                           environ={**os.environ, "DATABASE_URL": ws.database_url})
        self.out(_indent(render_summary(summary)))
        self.show_health(ws)

        self.chapter("What happened (plainsail history) and what runs now (plainsail status)")
        self._cli(ws, "history")
        self._cli(ws, "status")
        if summary["outcome"] != "succeeded":
            return False

        self.chapter("Behind the proxy: an upgrade and a failed deploy under load")
        assert ws.proxy is not None
        return ws.proxy.run(free_port)

    def _release(self, ws: Workspace, cfg: configlib.Config, changes: dict[str, str] | None,
                 label: str) -> dict[str, Any]:
        if changes:
            for rel, text in changes.items():
                (ws.app / rel).write_text(text)
            self._git(ws, "add", "-A")
            self._git(ws, "commit", "-q", "-m", label)
        record = run_build(cfg)
        self.say(f"built {record.image}:{record.tag} ({record.digest[:19]}...)")
        signed = sign_image(cfg, record.tag, record.digest, passphrase=ws.passphrase)
        self.say(f"signed {signed.digest[:19]}... with cosign.key")
        environ = {**os.environ, "DATABASE_URL": ws.database_url}
        summary = Deploy(cfg, Request(ref=f"{record.tag}@{record.digest}"), self.say,
                         environ=environ).run()
        self.out(_indent(render_summary(summary)))
        return summary

    # -- set-up and clean-up
    def _prepare(self) -> Workspace:
        for tool in ("docker", "docker-registry", "git"):
            if not shutil.which(tool):
                raise DemoError(f"{tool} is not installed; run scripts/setup.sh first")
        if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True
                          ).returncode != 0:
            raise DemoError(f"the base image {BASE_IMAGE} is missing; run scripts/setup.sh")
        root = Path(self.workdir) if self.workdir else Path(
            tempfile.mkdtemp(prefix="plainsail-demo-"))
        root.mkdir(parents=True, exist_ok=True)
        suffix = uuid.uuid4().hex[:6]
        ws = Workspace(
            root=root, app=root / "notes-api", service=f"notes-demo-{suffix}",
            port=free_port(), registry_port=free_port(), db_name=f"notes_demo_{suffix}",
            db_role=f"notes_demo_{suffix}", db_password=uuid.uuid4().hex,
            passphrase=Secret(uuid.uuid4().hex),
        )
        ws.proxy = ProxyChapter(root, ws.registry_port, BASE_IMAGE, ws.passphrase, self.say,
                                self.out, lambda repo, args: self._git_in(repo, *args))
        self.chapter("Set-up: a throwaway workspace, registry and database")
        self.say(f"workspace: {root}")
        try:
            self._start_registry(ws)
            self._create_database(ws)
            self._copy_app(ws)
        except BaseException:
            self._cleanup(ws)
            raise
        return ws

    def _start_registry(self, ws: Workspace) -> None:
        reg = ws.root / "registry"
        reg.mkdir()
        (reg / "config.yml").write_text(
            f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {reg}/data\nhttp:\n  addr: 127.0.0.1:{ws.registry_port}\n")
        ws.registry_proc = subprocess.Popen(
            ["docker-registry", "serve", str(reg / "config.yml")],
            stdout=subprocess.DEVNULL, stderr=open(reg / "log", "wb"),  # noqa: SIM115
            start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{ws.registry_port}/v2/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise DemoError(f"the demo registry did not start; see {reg / 'log'}"
                                    ) from None
                time.sleep(0.1)
        self.say(f"registry: 127.0.0.1:{ws.registry_port} (docker-registry)")

    def _create_database(self, ws: Workspace) -> None:
        try:
            import psycopg
        except ImportError:
            raise DemoError("the demo needs psycopg: pip install 'plainsail[postgres]'") from None
        try:
            with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"CREATE ROLE {ws.db_role} LOGIN PASSWORD '{ws.db_password}'")
                conn.execute(f"CREATE DATABASE {ws.db_name} OWNER {ws.db_role}")
        except psycopg.Error as exc:
            raise DemoError(
                f"cannot create the demo database ({str(exc).strip().splitlines()[0]}); is "
                "PostgreSQL running (scripts/setup.sh), or set PLAINSAIL_DEMO_PG to an admin URL"
            ) from None
        self.say(f"database: {ws.db_name} on 127.0.0.1:5432, owned by its own role")

    def _copy_app(self, ws: Workspace) -> None:
        shutil.copytree(example_dir(), ws.app, ignore=shutil.ignore_patterns(
            "__pycache__", "wheels", "cosign.key", "cosign.pub", ".plainsail"))
        wheels = ws.app / "wheels"
        wheels.mkdir()
        res = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
             "-w", str(wheels), str(SOURCE_ROOT)], capture_output=True, text=True)
        if res.returncode != 0:
            raise DemoError("building plainsail's wheel for the app image failed: "
                            f"{(res.stderr or res.stdout).strip().splitlines()[-1:]}")
        (ws.app / "plainsail.yml").write_text(
            f"service: {ws.service}\nimage: 127.0.0.1:{ws.registry_port}/demo/notes-api\n"
            f"build:\n  args:\n    BASE_IMAGE: {BASE_IMAGE}\n"
            "signing:\n  key: cosign.key\n  public_key: cosign.pub\n"
            "hosts: [local]\n"
            f"app:\n  port: {ws.port}\n  env:\n    PORT: '{ws.port}'\n    LOG_LEVEL: info\n"
            "  secrets: [DATABASE_URL]\n  network: host\n  stop_timeout: 5s\n"
            "migrate:\n  command: [plainsail, migrate]\n  timeout: 1m\n"
            "health:\n  path: /health\n  body_contains: '\"database\": \"ok\"'\n"
            "  attempts: 12\n  interval: 250ms\n  timeout: 2s\n"
            "on_failure: restore\nretain: 3\n")
        (ws.app / ".gitignore").write_text("wheels/\ncosign.key\n.plainsail/\n__pycache__/\n")
        self._git(ws, "init", "-q", "-b", "main")
        generate(str(ws.app / "cosign"), ws.passphrase)
        self._git(ws, "add", "-A")
        self._git(ws, "commit", "-q", "-m", "notes-api v1")
        self.say(f"app: examples/notes-api as a git repository; keys: cosign.key/cosign.pub; "
                 f"it will listen on 127.0.0.1:{ws.port}")

    def _git(self, ws: Workspace, *args: str) -> None:
        self._git_in(ws.app, *args)

    def _git_in(self, repo: Path, *args: str) -> None:
        subprocess.run(["git", "-c", "user.name=plainsail demo", "-c",
                        "user.email=demo@plainsail.invalid", *args],
                       cwd=repo, check=True, capture_output=True)

    def _cli(self, ws: Workspace, *args: str) -> None:
        self.say(f"$ plainsail {' '.join(args)}")
        res = subprocess.run([sys.executable, "-m", "plainsail", *args], cwd=ws.app,
                             capture_output=True, text=True,
                             env={**os.environ, "DATABASE_URL": ws.database_url})
        for line in (res.stdout + res.stderr).splitlines():
            self.say(line)

    def _containers(self, ws: Workspace) -> list[str]:
        res = subprocess.run(["docker", "ps", "-aq", "--filter",
                              f"label=dev.plainsail.service={ws.service}"],
                             capture_output=True, text=True)
        return res.stdout.split()

    def _cleanup(self, ws: Workspace) -> None:
        self.chapter("Clean-up")
        ids = self._containers(ws)
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        if ws.proxy is not None:
            ws.proxy.cleanup()
        subprocess.run(["docker", "image", "rm", "-f", *self._images(ws)], capture_output=True)
        if ws.registry_proc:
            ws.registry_proc.terminate()
            ws.registry_proc.wait(10)
        try:
            import psycopg

            with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {ws.db_name} WITH (FORCE)")
                conn.execute(f"DROP ROLE IF EXISTS {ws.db_role}")
        except Exception as exc:  # noqa: BLE001 - clean-up reports, never hides the story
            self.say(f"could not drop the demo database {ws.db_name}: {exc}")
        state = Path(os.path.expanduser("~/.plainsail")) / ws.service
        shutil.rmtree(state, ignore_errors=True)
        if not self.workdir:
            shutil.rmtree(ws.root, ignore_errors=True)
        self.say("removed the demo's containers, images, registry, database and workspace")

    def _images(self, ws: Workspace) -> list[str]:
        res = subprocess.run(["docker", "image", "ls", "-q",
                              f"127.0.0.1:{ws.registry_port}/demo/notes-api"],
                             capture_output=True, text=True)
        return sorted(set(res.stdout.split())) or ["--"]

    def _explain_keep(self, ws: Workspace) -> None:
        self.chapter("Left running (--keep)")
        self.say(f"the app answers on {ws.health_url}")
        env_file = ws.app / ".plainsail" / "demo.env"
        env_file.parent.mkdir(exist_ok=True)
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"DATABASE_URL={ws.database_url}\n")
        self.say(f"workspace: {ws.app}; to run plainsail status / history / rollback there:")
        self.say(f"  cd {ws.app} && set -a && . .plainsail/demo.env && set +a")
        pid = ws.registry_proc.pid if ws.registry_proc else "?"
        self.say(f"the demo registry keeps running (pid {pid}); to remove everything:")
        self.say(f"  kill {pid}")
        self.say(f"  docker rm -f $(docker ps -aq --filter label=dev.plainsail.service="
                 f"{ws.service})")
        self.say(f"  su postgres -c \"psql -c 'DROP DATABASE {ws.db_name} WITH (FORCE)' -c "
                 f"'DROP ROLE {ws.db_role}'\"")
        self.say(f"  docker image rm $(docker image ls -q 127.0.0.1:{ws.registry_port}/demo/"
                 "notes-api)")
        self.say(f"  rm -rf {ws.root} ~/.plainsail/{ws.service}")


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
