"""Benchmarks for deploy, restore, rollback and CLI start-up (issues 5 and 6).

Everything runs against real services this script starts and removes again: a local
registry, an sshd on loopback logging in as the unprivileged docker-group user psdeploy,
a PostgreSQL database, and the example app (examples/notes-api) built, pushed and signed
in three versions: v1, v2 and one whose /health can never pass (it needs schema 0009).

Figures, each the median of --runs runs (default 3):

1. `plainsail deploy TAG@DIGEST` to one host over SSH, end to end (a subprocess, timed
   from its start to its exit). Runs alternate v2/v1 so each one is a real switch; with
   `retain: 0` the old container and its image are pruned, so every pull downloads the
   new version's own layer from the registry.
2. (a) The same Docker work typed by hand over ONE multiplexed SSH connection (OpenSSH
   ControlMaster, opened inside the timed window): docker pull by digest, docker run --rm
   of the migration container, docker stop old, docker run -d new with the flags plainsail
   uses, then /health polled every 0.1 s through a port forwarded on that connection until
   it answers 200 with `"database": "ok"`. The old container and image are removed
   untimed afterwards, so the next pull is as real as plainsail's.
3. (b) A faithful script of the seed's steps: a new SSH connection per step (scp of the env
   file, pull by tag, migration container, stop old, run new without --init, curl /health
   on the host every 5 s, remove the old container), like a naive scripts/deploy.sh.
4. From a failed health verdict to the old version answering healthy again: the failing
   version is deployed with `on_failure: restore`. The verdict is the moment plainsail
   prints its "UNHEALTHY" line (stdout is read live and time-stamped); the old version's
   first healthy answer comes from a thread polling /health directly every 10 ms. Shown
   next to it, from the host's deploy record: the `restore` step plus the restored
   version's health gate (a lower bound: it leaves out the log tail, stop and removal of
   the failed container that come before the restore).
5. Rollback: from the start of `plainsail rollback` to the old version's first healthy
   answer (the same 10 ms poller), for the fast path (`retain: 2`: the retained container
   is started again) and the pull path (`retain: 0`: container and image were pruned),
   each next to a normal `plainsail deploy` of the same image under the same settings.
   The commands' end-to-end times are shown too.
6. CLI start-up: `plainsail --help`, median of 10.

The app, the registry, the deployer and the "host" share one machine, so the figures
measure plainsail's own overhead; a real network adds the same latency to every method.

Usage: .venv/bin/python bench/deploy_bench.py [--runs N] [--health-interval 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plainsail.hosts import docker  # noqa: E402
from tests.support.cli import plainsail  # noqa: E402
from tests.support.deploy_env import (  # noqa: E402
    COSIGN_PASSWORD,
    VARIANTS,
    Built,
    DeployDir,
    NotesBuilds,
    cleanup_deploy_dir,
    make_deploy_dir,
)
from tests.support.gitrepo import git  # noqa: E402
from tests.support.notes_app import build_plainsail_wheel, copy_example  # noqa: E402
from tests.support.services import Registry, free_port, start_registry, stop  # noqa: E402
from tests.support.sshd import SSHHost, start_sshd, stop_sshd  # noqa: E402

UNHEALTHY = "unhealthy"
BUILD_VARIANTS: dict[str, dict[str, str]] = {
    "v1": VARIANTS["v1"],
    "v2": VARIANTS["v2"],
    UNHEALTHY: {"notes_api/version.py": 'APP_VERSION = "9-unhealthy"\nREQUIRED_SCHEMA = "0009"\n'},
}
APP_VERSIONS = {"v1": "1", "v2": "2", UNHEALTHY: "9-unhealthy"}
CLI = [str(Path(sys.executable).with_name("plainsail"))]
if not Path(CLI[0]).exists():
    CLI = [sys.executable, "-m", "plainsail"]


def log(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def cli_env(d: DeployDir) -> dict[str, str]:
    env = {**os.environ, **d.env}
    env.pop("GITHUB_ACTIONS", None)
    return env


# ---------------------------------------------------------------- set-up


def build_versions(root: Path, registry: Registry) -> NotesBuilds:
    """The example app in each version: one commit each, built, pushed and signed."""
    wheel = build_plainsail_wheel(root / "wheel")
    repo = copy_example(root / "app", wheel)
    image = registry.repo(f"bench/notes-{uuid.uuid4().hex[:8]}")
    (repo / "plainsail.yml").write_text(
        f"service: notes-bench-build\nimage: {image}\n"
        "build:\n  args:\n    BASE_IMAGE: plainsail-base:bookworm\n"
        "signing:\n  key: cosign.key\n  public_key: cosign.pub\n")
    (repo / ".gitignore").write_text(".plainsail/\ncosign.key\ncosign.pub\n__pycache__/\n")
    env = {"COSIGN_PASSWORD": COSIGN_PASSWORD}
    git(repo, "init", "-q", "-b", "main")
    _check(plainsail("keygen", cwd=repo, env=env), "keygen")
    versions: dict[str, Built] = {}
    for name, changes in BUILD_VARIANTS.items():
        if versions:
            git(repo, "checkout", "-q", "-B", name, "main")
        for rel, text in changes.items():
            (repo / rel).write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "--allow-empty", "-m", name)
        b = plainsail("build", "--json", cwd=repo, env=env)
        _check(b, f"build {name}")
        rec = json.loads(b.out)
        _check(plainsail("sign", rec["tag"], cwd=repo, env=env), f"sign {name}")
        versions[name] = Built(rec["tag"], rec["digest"])
        git(repo, "checkout", "-q", "main")
        log(f"built and signed {name}: {rec['tag']}@{rec['digest'][:19]}...")
    # The host is this machine's Docker engine: drop the build's own tags so that hosts
    # really pull from the registry.
    remove_images(image)
    return NotesBuilds(repo, image, repo / "cosign.pub", repo / "cosign.key", versions,
                       registry)


def _check(res: Any, what: str) -> None:
    if res.code != 0:
        raise RuntimeError(f"{what} failed:\n{res.text}")


def remove_images(repo: str) -> None:
    ids = subprocess.run(["docker", "image", "ls", "-q", "--no-trunc", repo],
                         capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "image", "rm", "-f", *sorted(set(ids))],
                       capture_output=True)


def assert_not_on_host(d: DeployDir, version: str) -> None:
    """The version's image is not on the host, so the timed pull downloads it."""
    ref = f"{d.builds.image}@{d.builds.versions[version].digest}"
    if subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0:
        raise RuntimeError(f"{ref} is already on the host: the pull would not be real")


def service_containers(service: str) -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={docker.LABEL_SERVICE}={service}"],
        capture_output=True, text=True).stdout.split()


def host_dir(d: DeployDir) -> Path:
    assert d.ssh
    return d.ssh.home / ".plainsail" / d.service


def reset(d: DeployDir) -> None:
    """No container, image or host state of the service: the next step starts clean."""
    ids = service_containers(d.service)
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    shutil.rmtree(host_dir(d), ignore_errors=True)
    remove_images(d.builds.image)


# ---------------------------------------------------------------- /health from the bench


def probe(port: int, timeout: float = 1.0) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


def healthy(status: int, body: dict[str, Any], version: str | None = None) -> bool:
    return (status == 200 and body.get("database") == "ok"
            and (version is None or body.get("version") == version))


class Poller:
    """Polls /health every `every` seconds in a thread; remembers (time, status, version)."""

    def __init__(self, port: int, every: float = 0.01) -> None:
        self.port, self.every = port, every
        self.samples: list[tuple[float, int, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            status, body = probe(self.port, timeout=0.5)
            self.samples.append((time.monotonic(), status, body))
            self._stop.wait(self.every)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def first_healthy(self, after: float, version: str) -> float | None:
        for t, status, body in self.samples:
            if t >= after and healthy(status, body, version):
                return t
        return None

    def wait_healthy(self, after: float, version: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = self.first_healthy(after, version)
            if t is not None:
                return t
            time.sleep(0.02)
        return self.first_healthy(after, version)


# ---------------------------------------------------------------- plainsail runs


@dataclass
class CliRun:
    code: int
    seconds: float
    lines: list[tuple[float, str]]  # (monotonic time, line) of stdout and stderr
    start: float

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def run_cli(d: DeployDir, *args: str, timeout: float = 300) -> CliRun:
    """Run plainsail in the deploy folder; stdout and stderr read live and time-stamped."""
    lines: list[tuple[float, str]] = []
    start = time.monotonic()
    proc = subprocess.Popen([*CLI, *args], cwd=d.path, env=cli_env(d),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.monotonic(), line.rstrip("\n")))
    code = proc.wait(timeout)
    return CliRun(code, time.monotonic() - start, lines, start)


def ps_deploy(d: DeployDir, version: str, expect: int = 0) -> CliRun:
    r = run_cli(d, "deploy", d.builds.ref(version))
    if r.code != expect:
        raise RuntimeError(f"plainsail deploy {version}: exit {r.code}, expected {expect}:\n"
                           f"{r.text}")
    return r


def last_record(d: DeployDir) -> dict[str, Any]:
    path = host_dir(d) / "history.jsonl"
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return dict(json.loads(lines[-1]))


def configure(d: DeployDir, *, retain: int, interval: float, attempts: int) -> None:
    d.config(retain=str(retain), interval=f"{round(interval * 1000)}ms",
             attempts=str(attempts), on_failure="restore")


# ---------------------------------------------------------------- 1. plainsail deploy


def bench_plainsail(d: DeployDir, runs: int,
                    interval: float) -> tuple[list[float], dict[str, float]]:
    reset(d)
    configure(d, retain=0, interval=interval, attempts=100)
    ps_deploy(d, "v1")  # warm-up, untimed: something to switch from
    times: list[float] = []
    steps: dict[str, list[float]] = {}
    for i in range(runs):
        version = "v2" if i % 2 == 0 else "v1"
        assert_not_on_host(d, version)
        r = ps_deploy(d, version)
        rec = last_record(d)
        assert rec["outcome"] == "succeeded", rec
        times.append(r.seconds)
        for s in rec.get("steps", []):
            name = "health" if s["name"].startswith("health:") else s["name"]
            steps.setdefault(name, []).append(s["seconds"])
        steps.setdefault("(record total)", []).append(rec["seconds"])
        log(f"plainsail deploy {version}: {r.seconds:.2f}s")
    return times, {k: median(v) for k, v in steps.items()}


def round_trips(d: DeployDir) -> int:
    """Commands a deploy runs on the host (each one SSH round trip), from `--verbose`."""
    running_v1 = last_record(d)["tag"] == d.builds.versions["v1"].tag
    other = "v2" if running_v1 else "v1"
    r = run_cli(d, "--verbose", "deploy", d.builds.ref(other))
    if r.code != 0:
        raise RuntimeError(r.text)
    return sum(1 for _, line in r.lines if "] $ " in line)


# ---------------------------------------------------------------- 2. (a) by hand, one connection


class Multiplexed:
    """ssh commands over one OpenSSH master connection, with a port forwarded to the app."""

    def __init__(self, host: SSHHost, app_port: int) -> None:
        self.host = host
        self.control_dir = tempfile.mkdtemp(prefix="psbm-", dir="/tmp")
        self.local_port = free_port()
        self.app_port = app_port

    def argv(self, command: Sequence[str]) -> list[str]:
        return self.host.argv(command, options=[
            "ControlMaster=auto", f"ControlPath={self.control_dir}/%C", "ControlPersist=60",
            f"LocalForward=127.0.0.1:{self.local_port} 127.0.0.1:{self.app_port}",
        ])

    def run(self, command: Sequence[str], input: str | None = None) -> str:  # noqa: A002
        res = subprocess.run(self.argv(command), input=input, capture_output=True, text=True,
                             timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{command[:3]} failed: {res.stderr.strip()}")
        return res.stdout

    def close(self) -> None:
        argv = self.argv([])  # ssh OPTIONS user@host --
        subprocess.run([*argv[:-2], "-O", "exit", argv[-2]], capture_output=True, timeout=10)
        shutil.rmtree(self.control_dir, ignore_errors=True)


def by_hand_argvs(d: DeployDir, version: str, env_file: str) -> tuple[list[str], list[str],
                                                                        list[str]]:
    b = d.builds.versions[version]
    pinned = f"{d.builds.image}@{b.digest}"
    labels = {docker.LABEL_SERVICE: d.service, docker.LABEL_ROLE: "app",
              docker.LABEL_TAG: b.tag, docker.LABEL_DIGEST: b.digest}
    migrate = docker.run_args(
        name=f"{d.service}-migrate-{uuid.uuid4().hex[:6]}", image=pinned, env_file=env_file,
        labels={docker.LABEL_SERVICE: d.service, docker.LABEL_ROLE: "migrate"},
        network="host", init=True, detach=False, remove=True, command=["plainsail", "migrate"])
    run = docker.run_args(name=f"{d.service}-{b.tag}", image=pinned, env_file=env_file,
                          labels=labels, network="host", init=True, stop_timeout=5,
                          restart="unless-stopped")
    return docker.pull(pinned), migrate, run


def env_content(d: DeployDir) -> str:
    return f"PORT={d.port}\nDATABASE_URL={d.db.url}\n"


def bench_by_hand(d: DeployDir, runs: int) -> list[float]:
    assert d.ssh
    reset(d)
    env_file = str(host_dir(d) / "by-hand.env")
    d.ssh.run(["sh", "-c", 'umask 077 && mkdir -p "$(dirname "$1")" && cat > "$1"', "sh",
               env_file], input=env_content(d), check=True)

    def deploy(version: str, old: str | None) -> float:
        pull, migrate, run = by_hand_argvs(d, version, env_file)
        mux = Multiplexed(d.ssh, d.port)  # type: ignore[arg-type]
        start = time.monotonic()
        try:
            mux.run(pull)
            mux.run(migrate)
            if old:
                mux.run(docker.stop(old, 5))
            mux.run(run)
            deadline = start + 60
            while True:
                status, body = probe(mux.local_port, timeout=2)
                if healthy(status, body, APP_VERSIONS[version]):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"by hand: {version} never became healthy")
                time.sleep(0.1)
            return time.monotonic() - start
        finally:
            mux.close()

    current = None
    times: list[float] = []
    for i in range(runs + 1):  # the first one is the untimed warm-up
        version = ("v1", "v2")[i % 2]
        b = d.builds.versions[version]
        assert_not_on_host(d, version)
        seconds = deploy(version, current)
        name = f"{d.service}-{b.tag}"
        if current:
            _remove_old(d, current)
        current = name
        if i:
            times.append(seconds)
            log(f"by hand (one connection) {version}: {seconds:.2f}s")
    return times


def _remove_old(d: DeployDir, container: str) -> None:
    """Untimed: the old container and its image go, so the next pull is a real one."""
    image = subprocess.run(["docker", "inspect", "--format", "{{.Config.Image}}", container],
                           capture_output=True, text=True).stdout.strip()
    subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    if image:
        subprocess.run(["docker", "image", "rm", image], capture_output=True)


# ---------------------------------------------------------------- 3. (b) the seed's script


def bench_seed_script(d: DeployDir, runs: int) -> tuple[list[float], list[int]]:
    """The seed's sequence as a naive shell script would run it: one new SSH connection
    per command, the health loop of the seed (curl every 5 s, up to 30 attempts)."""
    assert d.ssh
    ssh = d.ssh
    reset(d)
    home_env = str(host_dir(d) / "seed.env")
    local_env = d.path / "seed.env"
    local_env.write_text(env_content(d))
    local_env.chmod(0o600)
    ssh.run(["mkdir", "-p", str(host_dir(d))], check=True)
    scp = ["scp", "-q", "-F", "/dev/null", "-i", str(ssh.identity_file),
           "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={ssh.known_hosts}",
           "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
           "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-P", str(ssh.port),
           str(local_env), f"{ssh.user}@{ssh.hostname}:{home_env}"]
    curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
            f"http://localhost:{d.port}/health"]
    label = ["--label", f"{docker.LABEL_SERVICE}={d.service}"]

    def step(command: list[str]) -> str:
        res = ssh.run(command, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"seed script: {command[:3]} failed: {res.stderr.strip()}")
        return res.stdout

    def deploy(version: str, old: str | None) -> tuple[float, int]:
        b = d.builds.versions[version]
        image = f"{d.builds.image}:{b.tag}"
        name = f"{d.service}-seed-{b.tag}"
        start = time.monotonic()
        subprocess.run(scp, check=True, timeout=60)                      # 2. SSH/SCP
        step(["docker", "pull", image])                                  # 3. pull
        step(["docker", "run", "--rm", "--env-file", home_env, "--network", "host",
              *label, image, "plainsail", "migrate"])                    # 4.-5. migrate
        if old:
            step(["docker", "stop", old])                                # 6. stop old
        step(["docker", "run", "-d", "--name", name, "--env-file", home_env,
              "--network", "host", *label, image])                       # 7. start new
        attempts = 0
        for attempt in range(1, 31):                                     # 8. health loop
            attempts = attempt
            if ssh.run(curl, timeout=30).stdout.strip() == "200":
                break
            time.sleep(5)
        else:
            raise RuntimeError(f"seed script: {version} failed its health check")
        if old:
            step(["docker", "rm", old])                                  # 9. clean up
        return time.monotonic() - start, attempts

    current: str | None = None
    current_image: str | None = None
    times: list[float] = []
    attempts: list[int] = []
    for i in range(runs + 1):
        version = ("v1", "v2")[i % 2]
        b = d.builds.versions[version]
        assert_not_on_host(d, version)
        seconds, n = deploy(version, current)
        if current_image:  # untimed: the next pull of this version is a real one
            subprocess.run(["docker", "image", "rm", current_image], capture_output=True)
        current = f"{d.service}-seed-{b.tag}"
        current_image = f"{d.builds.image}:{b.tag}"
        if i:
            times.append(seconds)
            attempts.append(n)
            log(f"seed script {version}: {seconds:.2f}s ({n} curl attempt(s))")
    return times, attempts


# ---------------------------------------------------------------- 4. failed verdict -> old


def bench_restore(d: DeployDir, runs: int, interval: float) -> tuple[list[float], list[float],
                                                                       list[float]]:
    reset(d)
    configure(d, retain=2, interval=interval, attempts=15)
    ps_deploy(d, "v1")
    polled: list[float] = []
    from_record: list[float] = []
    whole: list[float] = []
    for _ in range(runs):
        with Poller(d.port) as poller:
            r = ps_deploy(d, UNHEALTHY, expect=1)
            verdict = next((t for t, line in r.lines if "UNHEALTHY" in line), None)
            if verdict is None:
                raise RuntimeError(f"no UNHEALTHY line in the deploy output:\n{r.text}")
            back = poller.wait_healthy(verdict, APP_VERSIONS["v1"], timeout=30)
        rec = last_record(d)
        if rec["outcome"] != "failed-health-restored" or back is None:
            raise RuntimeError(f"expected a restore: {rec['outcome']}: {rec.get('reason')}")
        steps = rec["steps"]
        failed_at = next(i for i, s in enumerate(steps)
                         if s["name"].startswith("health:") and not s["ok"])
        from_record.append(sum(s["seconds"] for s in steps[failed_at + 1:]))
        polled.append(back - verdict)
        whole.append(r.seconds)
        log(f"failed verdict -> v1 healthy: {back - verdict:.2f}s (record: "
            f"{from_record[-1]:.2f}s; the whole failed deploy {r.seconds:.1f}s)")
    return polled, from_record, whole


# ---------------------------------------------------------------- 5. rollback


@dataclass
class Timed:
    to_healthy: list[float]
    command: list[float]


def timed_until_healthy(d: DeployDir, args: Sequence[str], version: str,
                        check: Callable[[dict[str, Any]], None]) -> tuple[float, float]:
    with Poller(d.port) as poller:
        start = time.monotonic()
        r = run_cli(d, *args)
        if r.code != 0:
            raise RuntimeError(f"plainsail {' '.join(args)}: exit {r.code}:\n{r.text}")
        back = poller.wait_healthy(start, APP_VERSIONS[version], timeout=10)
    if back is None:
        raise RuntimeError(f"{version} never answered healthy after {args}")
    check(last_record(d))
    return back - start, r.seconds


def bench_rollback(d: DeployDir, runs: int, interval: float, retain: int) -> tuple[Timed, Timed]:
    reset(d)
    configure(d, retain=retain, interval=interval, attempts=100)
    ps_deploy(d, "v1")
    ps_deploy(d, "v2")
    fast = retain > 0

    def is_rollback(rec: dict[str, Any]) -> None:
        assert rec["kind"] == "rollback" and rec["outcome"] == "succeeded", rec
        assert rec["reused_container"] is fast, rec["steps"]
        pulled = any(s["name"] == "pull" for s in rec["steps"])
        assert pulled is not fast, rec["steps"]

    def is_deploy(rec: dict[str, Any]) -> None:
        assert rec["kind"] == "deploy" and rec["outcome"] == "succeeded", rec

    rb, dep = Timed([], []), Timed([], [])
    for _ in range(runs):
        if not fast:
            assert_not_on_host(d, "v1")
        a, b = timed_until_healthy(d, ["rollback"], "v1", is_rollback)  # v2 -> v1
        rb.to_healthy.append(a)
        rb.command.append(b)
        ps_deploy(d, "v2")
        if not fast:
            assert_not_on_host(d, "v1")
        a2, b2 = timed_until_healthy(d, ["deploy", d.builds.ref("v1")], "v1", is_deploy)
        dep.to_healthy.append(a2)
        dep.command.append(b2)
        ps_deploy(d, "v2")
        log(f"retain {retain}: rollback -> healthy {a:.2f}s (command {b:.2f}s); "
            f"deploy of v1 -> healthy {a2:.2f}s (command {b2:.2f}s)")
    return rb, dep


# ---------------------------------------------------------------- 6. CLI start-up


def bench_help(n: int = 10) -> list[float]:
    subprocess.run([*CLI, "--help"], capture_output=True, check=True)  # warm the page cache
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run([*CLI, "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------- the table


def row(what: str, seconds: float, target: str = "", verdict: str = "") -> str:
    return f"| {what} | {seconds:.2f} | {target} | {verdict} |"


def ok(flag: bool) -> str:
    return "met" if flag else "NOT met"


def app_boot(d: DeployDir) -> float:
    """Median time from `docker start` of a stopped app container to its first 200."""
    name = f"{d.service}-boot"
    b = d.builds.versions["v1"]
    reset(d)
    assert d.ssh
    env_file = str(host_dir(d) / "boot.env")
    d.ssh.run(["sh", "-c", 'umask 077 && mkdir -p "$(dirname "$1")" && cat > "$1"', "sh",
               env_file], input=env_content(d), check=True)
    subprocess.run(["docker", "pull", "-q", f"{d.builds.image}@{b.digest}"],
                   capture_output=True, check=True)
    argv = docker.create_args(name=name, image=f"{d.builds.image}@{b.digest}",
                              env_file=env_file, labels={docker.LABEL_SERVICE: d.service},
                              network="host", init=True, stop_timeout=5)
    subprocess.run(argv, capture_output=True, check=True)
    times = []
    for _ in range(5):
        start = time.monotonic()
        subprocess.run(["docker", "start", name], capture_output=True, check=True)
        started = time.monotonic()
        while not healthy(*probe(d.port, 0.5)):
            time.sleep(0.01)
            if time.monotonic() - started > 30:
                raise RuntimeError("the app did not boot")
        times.append(time.monotonic() - start)
        subprocess.run(["docker", "stop", name], capture_output=True, check=True)
    return median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (median; default 3)")
    ap.add_argument("--health-interval", type=float, default=0.1,
                    help="plainsail's health.interval in seconds (default 0.1, as by hand)")
    ap.add_argument("--only-deploy", action="store_true",
                    help="only figure 1 (plainsail deploy) and the SSH round trips per deploy")
    args = ap.parse_args()
    runs, interval = args.runs, args.health_interval

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    if os.geteuid() != 0:
        print("run as root: the SSH host's user psdeploy is created and its files removed",
              file=sys.stderr)
        return 2

    results: dict[str, Any] = {}
    with services() as d:
        log(f"service {d.service} on {d.ssh.host if d.ssh else 'local'}, app port {d.port}")
        results["help"] = bench_help()
        results["plainsail"] = bench_plainsail(d, runs, interval)
        results["round_trips"] = round_trips(d)
        if args.only_deploy:
            times, steps = results["plainsail"]
            print(f"\nplainsail deploy, one host over SSH, median of {runs}: "
                  f"{median(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)}); "
                  f"commands on the host per deploy: {results['round_trips']}; steps: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
            return 0
        results["boot"] = app_boot(d)  # needs the schema the first deploy migrated
        results["by_hand"] = bench_by_hand(d, runs)
        results["seed"] = bench_seed_script(d, runs)
        results["restore"] = bench_restore(d, runs, interval)
        results["rb_fast"] = bench_rollback(d, runs, interval, retain=2)
        results["rb_pull"] = bench_rollback(d, runs, interval, retain=0)
    print_table(results, runs, interval)
    return 0


def print_table(r: dict[str, Any], runs: int, interval: float) -> None:
    ps_times, steps = r["plainsail"]
    ps, a = median(ps_times), median(r["by_hand"])
    seed_times, seed_attempts = r["seed"]
    b = median(seed_times)
    polled, from_record, whole = r["restore"]
    boot = r["boot"]
    (fast_rb, fast_dep), (pull_rb, pull_dep) = r["rb_fast"], r["rb_pull"]
    helpt = median(r["help"])
    rb_fast = median(fast_rb.to_healthy)
    print()
    print(f"plainsail deploy benchmark: one host over SSH (loopback), median of {runs} run(s);"
          f" health.interval {interval:g}s")
    print()
    print("| figure | seconds | target | |")
    print("|---|---|---|---|")
    print(row("1. `plainsail deploy TAG@DIGEST`, end to end (retain 0: real pull)", ps,
              f"<= (a) + 1 s = {a + 1:.2f}; < (b)", ok(ps <= a + 1 and ps < b)))
    print(row("2. (a) by hand over one multiplexed SSH connection, 0.1 s health poll", a))
    print(row("3. (b) the seed's script: new SSH per step, curl every 5 s "
              f"(curl attempts: {', '.join(map(str, seed_attempts))})", b))
    print(row("   plainsail minus (a)", ps - a, "<= 1.00", ok(ps - a <= 1)))
    print(row("4. failed health verdict -> old version healthy (10 ms poller)", median(polled),
              "< 3", ok(median(polled) < 3)))
    print(row("   the same from the record: restore step + restored gate (lower bound)",
              median(from_record)))
    print(row("   the whole failed deploy, end to end", median(whole)))
    print(row("5. `plainsail rollback`, fast path (retained container) -> healthy", rb_fast,
              f"< 2 + boot = {2 + boot:.2f}", ok(rb_fast < 2 + boot)))
    print(row("   same, command end to end", median(fast_rb.command)))
    print(row("   `plainsail deploy` of the same image (retain 2, image present) -> healthy",
              median(fast_dep.to_healthy)))
    print(row("   same, command end to end", median(fast_dep.command)))
    print(row("   `plainsail rollback`, pull path (retain 0: pruned) -> healthy",
              median(pull_rb.to_healthy)))
    print(row("   same, command end to end", median(pull_rb.command)))
    print(row("   `plainsail deploy` of the same image (retain 0, pulled) -> healthy",
              median(pull_dep.to_healthy)))
    print(row("   same, command end to end", median(pull_dep.command)))
    print(row("   app boot: `docker start` -> first healthy answer (median of 5)", boot))
    print(row("6. `plainsail --help` (median of 10)", helpt, "< 0.30", ok(helpt < 0.3)))
    print(f"Commands run on the host per deploy (each one SSH round trip): {r['round_trips']}")
    print()
    print("plainsail deploy, median seconds per step from the host records:",
          ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
    print("Rollback/deploy '-> healthy' is measured from the command's start to the first "
          "200 with the old version and \"database\": \"ok\", polled every 10 ms from the "
          "bench; figure 4 from plainsail's printed UNHEALTHY line to that first answer.")


# ---------------------------------------------------------------- services


@contextmanager
def services() -> Iterator[DeployDir]:
    """Registry, sshd, builds, database and deploy folder; all removed at the end."""
    work = Path(tempfile.mkdtemp(prefix="psbench-"))
    started: list[Callable[[], None]] = []
    d: DeployDir | None = None
    try:
        reg, reg_proc = start_registry()
        started.append(lambda: stop(reg_proc, reg.root))
        ssh, sshd_proc = start_sshd()
        started.append(lambda: stop_sshd(sshd_proc, ssh.directory))
        log(f"registry {reg.host}, sshd {ssh.host}; building v1, v2 and {UNHEALTHY}")
        builds = build_versions(work / "builds", reg)
        started.append(lambda: remove_images(builds.image))
        d = make_deploy_dir(work / "deploy", builds, ssh)
        yield d
    finally:
        log("cleaning up")
        if d is not None:
            for cid in service_containers(d.service):
                subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
            try:
                cleanup_deploy_dir(d)  # containers, host dir, database, deploy folder
            except Exception as exc:  # noqa: BLE001 - clean up the rest regardless
                print(f"clean-up of the deploy folder failed: {exc}", file=sys.stderr)
            shutil.rmtree(host_dir(d), ignore_errors=True)
        for undo in reversed(started):
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - clean up the rest regardless
                print(f"clean-up step failed: {exc}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
        if d is not None:
            left = service_containers(d.service)
            images = subprocess.run(["docker", "image", "ls", "-q", d.builds.image],
                                    capture_output=True, text=True).stdout.split()
            if left or images or host_dir(d).exists():
                print(f"clean-up incomplete: containers {left}, images {images}, "
                      f"{host_dir(d)} exists: {host_dir(d).exists()}", file=sys.stderr)
            else:
                log(f"clean: no container, image, host state or database of {d.service} left")


if __name__ == "__main__":
    sys.exit(main())
