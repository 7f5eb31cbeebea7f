"""Benchmarks for the per-host proxy (issue 10): its overhead, and failed requests while a
service's route switches under load.

Everything runs against real services this script starts and removes again: a local
registry (the proxy image must be pinned by digest), an sshd on loopback logging in as the
unprivileged docker-group user psdeploy (plainsail reaches the proxy's admin API through
that SSH connection, as in production), Debian's Caddy in its container (the local image
scripts/setup.sh builds), and a tiny Python app (the local base image) in two containers
on the proxy's network. Load comes from Debian's `hey`.

Figures:

1. Overhead: requests/s and p50/p99 latency for --requests requests at --concurrency,
   (a) straight to the app container's address, (b) through the proxy's container address
   (Caddy only), (c) through the proxy's published port on 127.0.0.1 (Caddy plus Docker's
   port publishing), which is what users reach.
2. Switch under load: --switch-requests requests through the proxy while the route
   switches from one container to the other --switches times; after each switch plainsail
   waits for the old container to drain (the proxy's in-flight count) and stops it, then
   starts it again for the next switch. Failed requests (anything but 200, and transport
   errors) are counted; the goal is 0. Also shown: each switch's duration and drain wait.
   With --no-keepalive every request opens a new connection, which is what a switch's
   configuration load costs most (docs/proxy.md, "What a switch costs a client").

The load generator, the proxy and the apps share one machine (2 cores here), so absolute
figures are low; the comparison between (a), (b) and (c) is the point.

Usage: .venv/bin/python bench/proxy_bench.py [--requests 10000] [--concurrency 8]
       [--switch-requests 20000] [--switches 3] [--no-keepalive]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plainsail import proxy  # noqa: E402
from plainsail.config import model as configlib  # noqa: E402
from plainsail.hosts.addresses import parse_host  # noqa: E402
from plainsail.hosts.executor import SSHExecutor, SSHOptions  # noqa: E402
from plainsail.proxy import argv as pargv  # noqa: E402
from tests.support.services import free_port, start_registry, stop  # noqa: E402
from tests.support.sshd import start_sshd, stop_sshd  # noqa: E402

CADDY_IMAGE = os.environ.get("PLAINSAIL_CADDY_IMAGE", "plainsail-caddy:bookworm")
BASE_IMAGE = os.environ.get("PLAINSAIL_BASE_IMAGE", "plainsail-base:bookworm")
APP_CODE = r"""
import http.server, os
NAME = os.environ["NAME"].encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes
    def do_GET(self):
        body = NAME + b"\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8000), H).serve_forever()
"""


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=check).stdout


def hey(url: str, requests: int, concurrency: int, host: str | None = None) -> dict[str, float]:
    out = subprocess.run(
        ["hey", "-n", str(requests), "-c", str(concurrency), "-t", "10",
         *(["-host", host] if host else []), url],
        capture_output=True, text=True, check=True).stdout
    return parse_hey(out)


def parse_hey(out: str) -> dict[str, float]:
    codes = {m[0]: int(m[1]) for m in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors = sum(int(n) for n in re.findall(r"\[(\d+)\]\t", out.split(
        "Error distribution:", 1)[1])) if "Error distribution:" in out else 0
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50%+ in ([\d.]+) secs", out)
    p99 = re.search(r"99%+ in ([\d.]+) secs", out)
    return {"ok": codes.get("200", 0), "failed": sum(codes.values()) - codes.get("200", 0)
            + errors, "rps": float(rps[1]) if rps else 0.0,
            "p50_ms": float(p50[1]) * 1000 if p50 else 0.0,
            "p99_ms": float(p99[1]) * 1000 if p99 else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--switch-requests", type=int, default=20000)
    ap.add_argument("--switches", type=int, default=3)
    ap.add_argument("--no-keepalive", action="store_true",
                    help="in the switch load, a new connection for every request")
    args = ap.parse_args()
    if not shutil.which("hey"):
        print("hey is not installed; run scripts/setup.sh", file=sys.stderr)
        return 1

    tag = uuid.uuid4().hex[:8]
    registry, reg_proc = start_registry()
    ssh, ssh_proc = start_sshd()
    tmp = Path(tempfile.mkdtemp(prefix="psbench-"))
    ex = SSHExecutor(parse_host(ssh.host), SSHOptions(identity_file=str(ssh.identity_file),
                                                      known_hosts=str(ssh.known_hosts)))
    host_dir, network = f"~/.psbench-{tag}", f"psbench-{tag}"
    apps = [f"psbench-{tag}-a", f"psbench-{tag}-b"]
    repo = registry.repo(f"bench/caddy-{tag}")
    try:
        sh("docker", "tag", CADDY_IMAGE, f"{repo}:2")
        sh("docker", "push", "-q", f"{repo}:2")
        digests = json.loads(sh("docker", "image", "inspect", "--format",
                                "{{json .RepoDigests}}", f"{repo}:2"))
        image = f"{repo}:2@" + next(d for d in digests if d.startswith(repo)).split("@")[1]
        http_port = free_port()
        cfg_file = tmp / "plainsail.yml"
        cfg_file.write_text(
            f"service: bench-{tag}\nimage: registry.example.com/bench\nhosts: ['{ssh.host}']\n"
            f"host_dir: {host_dir}\nssh:\n  identity_file: {ssh.identity_file}\n"
            f"  known_hosts: {ssh.known_hosts}\napp:\n  port: 8000\nhealth:\n  path: /\n"
            f"proxy:\n  host: bench.test\n  image: {image}\n  tls: off\n"
            f"  http_port: {http_port}\n  https_port: {free_port()}\n  network: {network}\n"
            "  drain: 10s\n")
        cfg = configlib.load(cfg_file)
        booted = proxy.ensure_booted(ex, cfg)
        print(f"proxy booted in {booted.seconds:.2f}s ({booted.action}); Caddy "
              f"{sh('docker', 'run', '--rm', CADDY_IMAGE, 'caddy', 'version').split()[0]}")
        for name in apps:
            sh("docker", "run", "--detach", "--init", "--name", name, "--network", network,
               "--env", f"NAME={name}", BASE_IMAGE, "python3", "-c", APP_CODE)
        proxy.route_to(ex, cfg, apps[0])
        ip = sh("docker", "inspect", "--format",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", apps[0]).strip()
        proxy_ip = sh("docker", "inspect", "--format",
                      "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                      pargv.container_name(host_dir)).strip()
        deadline = time.monotonic() + 15
        while hey(f"http://127.0.0.1:{http_port}/", 10, 1, "bench.test")["ok"] < 10:
            if time.monotonic() > deadline:
                raise SystemExit("the app does not answer through the proxy")
            time.sleep(0.2)

        print(f"\n1. Overhead: {args.requests} requests, concurrency {args.concurrency}")
        print(f"   {'path':44} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7}")
        for label, url, host in (
                ("(a) app container, direct", f"http://{ip}:8000/", None),
                ("(b) through Caddy (its container address)", f"http://{proxy_ip}:{http_port}/",
                 "bench.test"),
                ("(c) through the published port 127.0.0.1", f"http://127.0.0.1:{http_port}/",
                 "bench.test")):
            hey(url, 500, args.concurrency, host)  # warm-up
            r = hey(url, args.requests, args.concurrency, host)
            print(f"   {label:44} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                  f"{int(r['failed']):7d}")

        print(f"\n2. Switch under load: {args.switch_requests} requests through the proxy, "
              f"{args.switches} switches (drain, stop the old, start it again), "
              f"{'a new connection per request' if args.no_keepalive else 'keep-alive'}")
        result: dict[str, Any] = {}

        def load() -> None:
            out = subprocess.run(
                ["hey", "-n", str(args.switch_requests), "-c", str(args.concurrency),
                 "-t", "10", *(["-disable-keepalive"] if args.no_keepalive else []),
                 "-host", "bench.test", f"http://127.0.0.1:{http_port}/"],
                capture_output=True, text=True, check=True).stdout
            result.update(parse_hey(out))
            result["raw"] = out

        t = threading.Thread(target=load)
        t.start()
        switch_s, drain_s, in_flight = [], [], []
        current = 0
        time.sleep(0.5)
        for _ in range(args.switches):
            if not t.is_alive():
                break
            nxt = 1 - current
            sw = proxy.route_to(ex, cfg, apps[nxt])
            switch_s.append(sw.seconds)
            in_flight.append(sw.in_flight)
            drained, waited = proxy.drain(ex, cfg, apps[current])
            drain_s.append(waited)
            sh("docker", "stop", "-t", "5", apps[current])
            sh("docker", "start", apps[current])
            current = nxt
            time.sleep(0.5)
        t.join()
        done = len(switch_s)
        print(f"   answers 200: {int(result['ok'])}, failed: {int(result['failed'])}   "
              f"(req/s {result['rps']:.0f}, p50 {result['p50_ms']:.2f} ms, "
              f"p99 {result['p99_ms']:.2f} ms)")
        if done:
            print(f"   switches done during the load: {done}; switch (route_to) median "
                  f"{statistics.median(switch_s) * 1000:.0f} ms; drain wait median "
                  f"{statistics.median(drain_s) * 1000:.0f} ms; in flight at the switch: "
                  f"{in_flight}")
        if result.get("failed"):
            print(str(result["raw"]))
        return 0 if not result.get("failed") and done == args.switches else 1
    finally:
        sh("docker", "rm", "-f", pargv.container_name(host_dir), *apps, check=False)
        sh("docker", "network", "rm", network, check=False)
        ssh.run(["rm", "-rf", f"{ssh.home}/{host_dir[2:]}"])
        ex.close()
        sh("docker", "image", "rm", f"{repo}:2", check=False)
        stop_sshd(ssh_proc, ssh.directory)
        stop(reg_proc, registry.root)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
