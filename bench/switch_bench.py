"""Side by side: what users see during an upgrade, a rollback and a failed deploy, behind
the proxy (issue 10) vs the stop-start mode vs the seed's plain script; and the upgrade's
wall time, proxy vs stop-start.

Everything runs against real services this script starts and removes again: a local
registry, an sshd on loopback logging in as the unprivileged docker-group user psdeploy
(every mode reaches the host over SSH), Debian's Caddy in its container (the local image
scripts/setup.sh builds), and one small Python API in three builds (v1, v2, and "broken",
which answers 500 to every request, as a version with a wrong database URL would). Its
boot takes 0.3 s. Load comes from Debian's `hey` at a fixed rate (--rate requests/s,
spread over --concurrency workers), so every mode is offered the same traffic.

Modes, on the same app and host:

- proxy: `plainsail deploy` / `rollback` with a `proxy:` block; load through the proxy's
  published port with the service's host name.
- stop-start: `plainsail deploy` / `rollback` without a proxy (the seed's sequence: stop
  the old container, start the new one, gate it; restore on a failed gate), the app
  published on a port; load on that port.
- seed script: the seed article's steps as a shell script would run them, one new SSH
  connection per step: docker pull, docker stop OLD, docker run -d -p PORT:8000 NEW (no
  --init: the article names no flags), then its health loop (curl every INTERVAL s, at
  most MAX_ATTEMPTS), then docker rm OLD. Rollback is the same script with the previous
  tag. The article's loop is 30 attempts 5 s apart; here it is --seed-attempts attempts
  1 s apart, so that a failed deploy ends in seconds: the article leaves the service in
  that failed state for a human, who runs the script with the previous tag; the figures
  count that rollback as if it started at once.

Scenarios (each under load: it starts 1 s before the command and lasts at least 1.5 times
the time --requests take at the offered rate, and at least 2 s after the command ends):

1. upgrade v1 -> v2;  2. rollback v2 -> v1;  3. failed deploy of "broken" over v1.

Figures per mode and scenario: requests sent, failed (anything but 200, or a transport
error), p50/p99 latency of the answers, and the command's wall time. Then the upgrade wall
time (no load), median of --runs deploys alternating v2/v1, proxy vs stop-start.

Usage: .venv/bin/python bench/switch_bench.py [--requests 10000] [--rate 1000]
       [--concurrency 10] [--runs 5] [--seed-attempts 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plainsail.proxy import argv as pargv  # noqa: E402
from tests.support.services import free_port, start_registry, stop  # noqa: E402
from tests.support.sshd import SSHHost, start_sshd, stop_sshd  # noqa: E402

CADDY_IMAGE = os.environ.get("PLAINSAIL_CADDY_IMAGE", "plainsail-caddy:bookworm")
BASE_IMAGE = os.environ.get("PLAINSAIL_BASE_IMAGE", "plainsail-base:bookworm")
LABEL = "dev.plainsail.bench=switch"
APP = r"""
import http.server, os, time
NAME = os.environ["NAME"]
time.sleep(0.3)  # the boot
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        body = ("%s\n" % NAME).encode()
        self.send_response(500 if NAME == "broken" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8000), H).serve_forever()
"""
CLI = [sys.executable, "-m", "plainsail"]


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=check).stdout


def log(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


@dataclass
class Figures:
    sent: int
    failed: int
    p50_ms: float
    p99_ms: float
    seconds: float  # the command's wall time
    outcome: str


def parse_hey(out: str) -> tuple[int, int, float, float]:
    codes = {m[0]: int(m[1]) for m in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors = sum(int(n) for n in re.findall(r"\[(\d+)\]\t", out.split(
        "Error distribution:", 1)[1])) if "Error distribution:" in out else 0
    p50 = re.search(r"50%+ in ([\d.]+) secs", out)
    p99 = re.search(r"99%+ in ([\d.]+) secs", out)
    sent = sum(codes.values()) + errors
    return (sent, sent - codes.get("200", 0), float(p50[1]) * 1000 if p50 else float("nan"),
            float(p99[1]) * 1000 if p99 else float("nan"))


def under_load(url: str, host: str | None, args: argparse.Namespace,
               action: Callable[[], str]) -> Figures:
    """Run `action` while hey sends --rate requests/s; at least --requests in all."""
    per_worker = max(1, args.rate // args.concurrency)
    proc = subprocess.Popen(
        ["hey", "-z", "600s", "-c", str(args.concurrency), "-q", str(per_worker), "-t", "10",
         *(["-host", host] if host else []), url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    start = time.monotonic()
    time.sleep(1.0)
    t0 = time.monotonic()
    outcome = action()
    seconds = time.monotonic() - t0
    # Enough time for --requests at the offered rate with a margin (workers waiting on a
    # connection that fails send fewer), and at least 2 s after the command.
    need = args.requests / (per_worker * args.concurrency) * 1.5
    time.sleep(max(2.0, need - (time.monotonic() - start)))
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    sent, failed, p50, p99 = parse_hey(out)
    return Figures(sent, failed, p50, p99, seconds, outcome)


# ---------------------------------------------------------------- the modes


class PlainsailMode:
    """`plainsail` with or without a proxy: block, in its own folder and service."""

    def __init__(self, name: str, folder: Path, config: str, url: str, host: str | None):
        self.name, self.folder, self.url, self.host = name, folder, url, host
        folder.mkdir(parents=True)
        (folder / "plainsail.yml").write_text(config)

    def cli(self, *args: str) -> tuple[str, float]:
        t0 = time.monotonic()
        proc = subprocess.run([*CLI, *args, "--json"], cwd=self.folder, capture_output=True,
                              text=True, env={**os.environ, "GITHUB_ACTIONS": ""})
        seconds = time.monotonic() - t0
        try:
            outcome = str(json.loads(proc.stdout)["outcome"])
        except (ValueError, KeyError):
            raise SystemExit(f"{self.name}: plainsail {' '.join(args)} failed: "
                             f"{proc.stderr.strip()[-800:]}") from None
        return outcome, seconds

    def deploy(self, ref: str) -> str:
        return self.cli("deploy", ref)[0]

    def rollback(self) -> str:
        return self.cli("rollback")[0]


class SeedScript:
    """The seed's steps, one new SSH connection each, as a scripts/deploy.sh would."""

    name = "seed script"

    def __init__(self, ssh: SSHHost, image: str, port: int, attempts: int) -> None:
        self.ssh, self.image, self.port, self.attempts = ssh, image, port, attempts
        self.url, self.host = f"http://127.0.0.1:{port}/", None
        self.current: str | None = None
        self.history: list[str] = []

    def step(self, argv: list[str]) -> str:
        res = self.ssh.run(argv, timeout=120)
        if res.returncode != 0:
            raise SystemExit(f"seed script: {' '.join(argv[:3])} failed: {res.stderr.strip()}")
        return res.stdout

    def deploy(self, ref: str) -> str:
        tag = ref.split("@")[0]
        name = f"psbench-seed-{tag}-{uuid.uuid4().hex[:4]}"
        self.step(["docker", "pull", "-q", f"{self.image}:{tag}"])
        if self.current:
            self.step(["docker", "stop", self.current])
        self.step(["docker", "run", "-d", "--name", name, "--label", LABEL,
                   "-p", f"{self.port}:8000", f"{self.image}:{tag}"])
        old, self.current = self.current, name
        self.history.append(tag)
        for _ in range(self.attempts):
            code = self.ssh.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                 f"http://localhost:{self.port}/health"]).stdout.strip()
            if code == "200":
                if old:
                    self.step(["docker", "rm", old])
                return "healthy"
            time.sleep(1)
        return "failed (the old container is stopped)"

    def rollback(self) -> str:
        previous = self.history[-2]
        return self.deploy(next(r for r in REFS.values() if r.startswith(previous)))

    def failed_then_rollback(self, ref: str) -> str:
        first = self.deploy(ref)
        return f"{first}; then the rollback: {self.rollback()}"


REFS: dict[str, str] = {}


def build(registry_repo: str, tmp: Path) -> None:
    for i, name in enumerate(("v1", "v2", "broken")):
        ctx = tmp / f"app-{name}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\nENV NAME={name}\nCMD {json.dumps(['python3', '-c', APP])}\n")
        tag = f"{i + 1:x}" * 8
        sh("docker", "build", "-q", "-t", f"{registry_repo}:{tag}", str(ctx))
        sh("docker", "push", "-q", f"{registry_repo}:{tag}")
        digests = json.loads(sh("docker", "image", "inspect", "--format",
                                "{{json .RepoDigests}}", f"{registry_repo}:{tag}"))
        REFS[name] = f"{tag}@" + next(d for d in digests
                                      if d.startswith(registry_repo + "@")).split("@", 1)[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed-attempts", type=int, default=5)
    args = ap.parse_args()
    if not shutil.which("hey"):
        print("hey is not installed; run scripts/setup.sh", file=sys.stderr)
        return 1
    tag = uuid.uuid4().hex[:8]
    registry, reg_proc = start_registry()
    ssh, ssh_proc = start_sshd()
    tmp = Path(tempfile.mkdtemp(prefix="psswitch-"))
    host_dir, network = f"~/.psswitch-{tag}", f"psswitch-{tag}"
    repo = registry.repo(f"bench/app-{tag}")
    caddy_repo = registry.repo(f"bench/caddy-{tag}")
    services = [f"swp-{tag}", f"sws-{tag}"]
    try:
        log("building the app and pushing it with Caddy to the local registry")
        build(repo, tmp)
        sh("docker", "tag", CADDY_IMAGE, f"{caddy_repo}:2")
        sh("docker", "push", "-q", f"{caddy_repo}:2")
        digests = json.loads(sh("docker", "image", "inspect", "--format",
                                "{{json .RepoDigests}}", f"{caddy_repo}:2"))
        caddy = f"{caddy_repo}:2@" + next(d for d in digests
                                          if d.startswith(caddy_repo)).split("@")[1]
        common = (f"image: {repo}\nsigning: {{verify: false}}\nhosts: ['{ssh.host}']\n"
                  f"host_dir: {host_dir}\nssh:\n  identity_file: {ssh.identity_file}\n"
                  f"  known_hosts: {ssh.known_hosts}\n"
                  "health:\n  path: /health\n  attempts: 10\n  interval: 250ms\nretain: 2\n")
        http_port, app_port, seed_port = free_port(), free_port(), free_port()
        proxy = PlainsailMode(
            "proxy", tmp / "proxy",
            f"service: {services[0]}\n{common}app:\n  port: 8000\n  stop_timeout: 5s\n"
            f"proxy:\n  host: app.test\n  image: {caddy}\n  tls: off\n"
            f"  http_port: {http_port}\n  https_port: {free_port()}\n"
            f"  network: {network}\n  drain: 10s\n",
            f"http://127.0.0.1:{http_port}/", "app.test")
        stopstart = PlainsailMode(
            "stop-start", tmp / "stopstart",
            f"service: {services[1]}\n{common}app:\n  port: 8000\n  stop_timeout: 5s\n"
            f"  publish: {app_port}\n",
            f"http://127.0.0.1:{app_port}/", None)
        seed = SeedScript(ssh, repo, seed_port, args.seed_attempts)

        results: dict[str, dict[str, Figures]] = {}
        for mode in (proxy, stopstart, seed):
            log(f"{mode.name}: v1, then upgrade, rollback and a failed deploy under load")
            mode.deploy(REFS["v1"])
            time.sleep(1)
            r: dict[str, Figures] = {}
            r["upgrade"] = under_load(mode.url, mode.host, args,
                                      lambda m=mode: m.deploy(REFS["v2"]))
            time.sleep(1)
            r["rollback"] = under_load(mode.url, mode.host, args,
                                       lambda m=mode: m.rollback())
            time.sleep(1)
            if isinstance(mode, SeedScript):
                r["failed deploy"] = under_load(
                    mode.url, mode.host, args,
                    lambda m=mode: m.failed_then_rollback(REFS["broken"]))
            else:
                r["failed deploy"] = under_load(mode.url, mode.host, args,
                                                lambda m=mode: m.deploy(REFS["broken"]))
            results[mode.name] = r
            for k, f in r.items():
                log(f"{mode.name} {k}: {f}")

        log(f"upgrade wall time, {args.runs} runs each (no load)")
        walls: dict[str, list[float]] = {}
        for mode in (proxy, stopstart):
            walls[mode.name] = []
            for i in range(args.runs):
                version = ("v2", "v1")[i % 2]
                outcome, seconds = mode.cli("deploy", REFS[version])
                if outcome != "succeeded":
                    raise SystemExit(f"{mode.name}: deploy of {version}: {outcome}")
                walls[mode.name].append(seconds)

        print(f"\n1. Under load: {args.rate} requests/s offered by hey ({args.concurrency} "
              f"workers), at least {args.requests} requests per row")
        print(f"   {'scenario':15} {'mode':11} {'sent':>7} {'failed':>7} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'command s':>10}  outcome")
        for scenario in ("upgrade", "rollback", "failed deploy"):
            for name, r in results.items():
                f = r[scenario]
                short = "  (fewer than --requests)" if f.sent < args.requests else ""
                print(f"   {scenario:15} {name:11} {f.sent:7d} {f.failed:7d} {f.p50_ms:8.1f} "
                      f"{f.p99_ms:8.1f} {f.seconds:10.2f}  {f.outcome}{short}")
        print(f"\n2. Upgrade wall time, one host, median of {args.runs} (no load):")
        for name, xs in walls.items():
            print(f"   {name:11} {statistics.median(xs):.2f} s   "
                  f"(runs: {', '.join(f'{x:.2f}' for x in xs)})")
        diff = statistics.median(walls["proxy"]) - statistics.median(walls["stop-start"])
        print(f"   proxy - stop-start: {diff:+.2f} s (goal: at most +0.50 s)")
        failed_proxy = sum(f.failed for f in results["proxy"].values())
        return 0 if failed_proxy == 0 else 1
    finally:
        for svc in services:
            ids = sh("docker", "ps", "-aq", "--filter", f"label=dev.plainsail.service={svc}",
                     check=False).split()
            if ids:
                sh("docker", "rm", "-f", *ids, check=False)
        ids = sh("docker", "ps", "-aq", "--filter", f"label={LABEL}", check=False).split()
        if ids:
            sh("docker", "rm", "-f", *ids, check=False)
        sh("docker", "rm", "-f", pargv.container_name(host_dir), check=False)
        sh("docker", "network", "rm", network, check=False)
        ssh.run(["rm", "-rf", f"{ssh.home}/{host_dir[2:]}"])
        for ref in REFS.values():
            sh("docker", "image", "rm", f"{repo}:{ref.split('@')[0]}", check=False)
        sh("docker", "image", "rm", f"{caddy_repo}:2", check=False)
        stop_sshd(ssh_proc, ssh.directory)
        stop(reg_proc, registry.root)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
