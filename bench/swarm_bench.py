"""Wall time of an upgrade of 3 replicas over a 3-node Docker Swarm by `plainsail deploy`,
against a bare `docker service update --image` of the same change; requests failed during
each; and the wall time of a failed upgrade (a version failing its gate) until the old
digest serves again.

The Swarm is real (scripts/swarm.sh: three Docker Engines in network namespaces, one
manager, two workers; the ones this script brought up it takes down again); the app is a
busybox httpd image in three versions (tests/support/swarm_env.py), pushed to a local
registry every node reaches on its own 127.0.0.1. The service: 3 replicas, update
parallelism 1, stop-first, one secret, one migration, behind plainsail's proxy: the global
Caddy service `<service>-proxy` (the local image plainsail-caddy:bookworm, pushed to the
registry) publishing one port on every node; the app tasks publish nothing.

plainsail's time is the whole command over SSH to the manager: preflight (manager, nodes,
spec), lock and env file, pull on the manager, the migration, the secret, the update,
waiting for it, the deep gate on every task, the record. The bare update runs
`docker service update --image repo@digest` with the CLI's default progress wait (it returns
once the service converged and Swarm's 5 s monitor passed), against the manager's engine
directly (no SSH). Both alternate v1/v2 after a warm-up that put both images on every node.

Load: one client sends GET /health round-robin to the three nodes' proxy ports, about 100
per second, each bounded by 1 s; a failed request is a refused or reset connection, a
timeout or a non-200 answer. The bare update runs behind the same proxy (created by the
first deploy), so both see the same entry point.

Usage (as root): .venv/bin/python bench/swarm_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.nshosts import NSHost, parse  # noqa: E402
from tests.support.proxy_env import CADDY_IMAGE  # noqa: E402
from tests.support.services import remove_repo_images, start_registry, stop  # noqa: E402
from tests.support.swarm_env import (  # noqa: E402
    SCRIPT,
    SwarmCluster,
    build_swarm_app,
    pristine,
    swarm_config,
)

PLAINSAIL = ROOT / ".venv" / "bin" / "plainsail"
PORT = 18531
SECRET = "postgresql://app:bench-secret@db/app"


def swarm_sh(*args: str) -> str:
    return subprocess.run(["bash", str(SCRIPT), *args], check=True, capture_output=True,
                          text=True, timeout=300).stdout


class Load:
    """GET /health round-robin on every node's port until stopped; counts answers."""

    def __init__(self, nodes: list[NSHost]) -> None:
        self.urls = [f"http://{n.hostname}:{PORT}/health" for n in nodes]
        self.ok = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            url = self.urls[i % len(self.urls)]
            i += 1
            try:
                with urllib.request.urlopen(url, timeout=1) as a:  # noqa: S310
                    a.read()
                    if a.status == 200:
                        self.ok += 1
                    else:
                        self.failed += 1
            except (OSError, http.client.HTTPException):
                self.failed += 1
            time.sleep(0.01)

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join()
        return self.ok, self.failed


def push_caddy(repo: str) -> str:
    """The local Caddy image in the bench's registry: REPOSITORY:TAG@DIGEST."""
    subprocess.run(["docker", "tag", CADDY_IMAGE, f"{repo}:2"], check=True)
    subprocess.run(["docker", "push", "-q", f"{repo}:2"], check=True, capture_output=True)
    digests = json.loads(subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", f"{repo}:2"],
        check=True, capture_output=True, text=True).stdout)
    return f"{repo}:2@" + next(d for d in digests if d.startswith(repo + "@")).split("@")[1]


def plainsail(work: Path, *args: str) -> tuple[float, dict[str, object]]:
    start = time.monotonic()
    res = subprocess.run([str(PLAINSAIL), *args, "--json"], cwd=work, capture_output=True,
                         text=True, env={"DATABASE_URL": SECRET, "PATH": "/usr/bin:/bin"},
                         timeout=600, check=False)
    took = time.monotonic() - start
    try:
        rec = json.loads(res.stdout)
    except ValueError:
        sys.exit(f"plainsail {' '.join(args)} printed no record: {res.stderr[-2000:]}")
    return took, rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="timed upgrades of each kind")
    opts = ap.parse_args()
    was_up = len(swarm_sh("list").splitlines()) >= 3
    listing = swarm_sh("up")
    registry, proc = start_registry()
    port = registry.host.rsplit(":", 1)[1]
    swarm_sh("forward", port)
    env = dict(line.split("=", 1) for line in swarm_sh("env").splitlines() if "=" in line)
    cluster = SwarmCluster(parse(listing, env, Path(env["PLAINSAIL_HOSTS_KEY"]).parent)[:3])
    work = Path(tempfile.mkdtemp(prefix="psswbench-"))
    caddy = registry.repo(f"bench/caddy-{uuid.uuid4().hex[:6]}")
    app_repo = registry.repo(f"bench/swarm-{uuid.uuid4().hex[:6]}")
    try:
        pristine(cluster)
        image, versions = build_swarm_app(app_repo, work)
        service = f"psbench{uuid.uuid4().hex[:6]}"
        (work / "plainsail.yml").write_text(swarm_config(
            service, image, cluster.manager, PORT, "DATABASE_URL",
            "[/bin/busybox, echo, migrated]", proxy_image=push_caddy(caddy)))
        ref = {n: f"{t}@{d}" for n, (t, d) in versions.items()}
        first, rec = plainsail(work, "deploy", ref["v1"])
        assert rec["outcome"] == "succeeded", rec
        print(f"first deploy on a pristine 3-node Swarm (pulls on every node, creates the "
              f"proxy): {first:.1f}s")
        for name in ("v2", "v1"):  # warm-up: both images on every node
            _, rec = plainsail(work, "deploy", ref[name])
            assert rec["outcome"] == "succeeded", rec
        ours: list[float] = []
        last_steps: list[dict[str, float]] = []
        ours_failed = ours_ok = 0
        for i in range(opts.runs):
            load = Load(cluster.nodes)
            took, rec = plainsail(work, "deploy", ref["v2" if i % 2 == 0 else "v1"])
            ok, failed = load.stop()
            assert rec["outcome"] == "succeeded", rec
            ours.append(took)
            last_steps = list(rec["steps"])  # type: ignore[call-overload]
            ours_ok, ours_failed = ours_ok + ok, ours_failed + failed
        # The failed upgrade: v3 answers 404 on /health; the old digest serves again.
        load = Load(cluster.nodes)
        bad_took, rec = plainsail(work, "deploy", ref["v3"])
        bad_ok, bad_failed = load.stop()
        assert rec["outcome"] == "failed-health-restored", rec
        bare: list[float] = []
        bare_failed = bare_ok = 0
        current = str(rec["previous_digest"])
        for _ in range(opts.runs):
            digest = versions["v1"][1] if current == versions["v2"][1] else versions["v2"][1]
            load = Load(cluster.nodes)
            start = time.monotonic()
            res = cluster.docker("service", "update", "--quiet", "--no-resolve-image",
                                 "--image", f"{image}@{digest}", service, timeout=600)
            took = time.monotonic() - start
            ok, failed = load.stop()
            assert res.returncode == 0, res.stderr
            bare.append(took)
            bare_ok, bare_failed = bare_ok + ok, bare_failed + failed
            current = digest
        mine, theirs = statistics.median(ours), statistics.median(bare)
        print(f"upgrade of 3 replicas over 3 nodes (parallelism 1, stop-first, behind the "
              f"proxy), median of {opts.runs}:")
        print(f"  plainsail deploy:               {mine:6.1f}s  (runs: "
              + ", ".join(f"{x:.1f}" for x in ours) + f"); requests {ours_ok} ok, "
              f"{ours_failed} failed")
        print(f"  bare docker service update:     {theirs:6.1f}s  (runs: "
              + ", ".join(f"{x:.1f}" for x in bare) + f"); requests {bare_ok} ok, "
              f"{bare_failed} failed")
        print(f"  ratio plainsail / bare:         {mine / theirs:6.2f}x  (goal: at most 1.3x)")
        print(f"failed upgrade (v3 answers 404 on /health) until the old digest serves again: "
              f"{bad_took:.1f}s; requests {bad_ok} ok, {bad_failed} failed")
        print("plainsail's steps in its last upgrade: " + ", ".join(
            f"{s['name']} {s['seconds']:.1f}s" for s in last_steps))
    finally:
        remove_repo_images(caddy, app_repo)
        pristine(cluster)
        swarm_sh("unforward", port)
        stop(proc, registry.root)
        if not was_up:
            swarm_sh("down")


if __name__ == "__main__":
    main()
