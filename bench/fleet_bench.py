"""Wall time of a deploy to 1, 4 and 8 hosts, every host at once (rollout defaults) and one
host at a time (rollout.max_parallel: 1, how plainsail deployed before fleet rollouts), and
the time from a failure in batch 2 until every host serves the old version again.

The hosts are real: network namespaces, each with its own sshd and Docker Engine, reached
only over SSH (scripts/hosts.sh brings them up; the ones this script brought up it removes
again). The app is a busybox httpd image in two versions, pushed to a local registry each
host reaches on its own 127.0.0.1. Mode: stop-start (no proxy). Each deploy runs the whole
sequence: survey, lock and env file, pull, one migration, stop, start, health gate, prune,
records.

Figures: median wall time of --runs deploys (alternating v2/v1, after a warm-up deploy that
pulls both images), per host count and mode, and the ratio to one host. Then, on the largest
host count with rollout {canary: 1, batch: 50%}: a host of batch 2 fails its gate; the time
from its UNHEALTHY line until the command ended, every switched host back on v1 (checked).

Usage (as root): .venv/bin/python bench/fleet_bench.py [--hosts 1,4,8] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.multihost import DOCKERFILE, START  # noqa: E402
from tests.support.nshosts import NSHost, hosts_env, parse  # noqa: E402
from tests.support.services import start_registry, stop  # noqa: E402

HOSTS_SH = ROOT / "scripts" / "hosts.sh"
PLAINSAIL = ROOT / ".venv" / "bin" / "plainsail"


def sh(*args: str) -> str:
    return subprocess.run(["bash", str(HOSTS_SH), *args], check=True, capture_output=True,
                          text=True).stdout


def build(registry: str, work: Path) -> tuple[str, dict[str, str]]:
    """The app image in versions 1 and 2, pushed; (image, version -> TAG@DIGEST)."""
    shutil.copy("/bin/busybox", work / "busybox")
    (work / "Dockerfile").write_text(DOCKERFILE)
    (work / "start.sh").write_text(START)
    image = f"{registry}/bench/fleet-{uuid.uuid4().hex[:6]}"
    refs = {}
    for n in ("1", "2"):
        tag = uuid.uuid4().hex[:8]
        subprocess.run(["docker", "build", "-q", "--build-arg", f"VERSION={n}", "-t",
                        f"{image}:{tag}", str(work)], check=True, capture_output=True)
        subprocess.run(["docker", "push", "-q", f"{image}:{tag}"], check=True,
                       capture_output=True)
        digest = subprocess.run(["docker", "image", "inspect", "--format",
                                 "{{index .RepoDigests 0}}", f"{image}:{tag}"], check=True,
                                capture_output=True, text=True).stdout.strip().split("@")[1]
        refs[n] = f"{tag}@{digest}"
    return image, refs


class Service:
    def __init__(self, work: Path, image: str, hosts: list[NSHost], extra: str = "") -> None:
        self.name = f"fleet-{uuid.uuid4().hex[:6]}"
        self.dir = work / self.name
        self.dir.mkdir()
        self.hosts = hosts
        self.volume = f"{self.name}-flag"
        (self.dir / "plainsail.yml").write_text(
            f"service: {self.name}\nimage: {image}\nsigning:\n  verify: false\n"
            "hosts:\n" + "".join(f"  - {h.host}\n" for h in hosts)
            + f"ssh:\n  identity_file: {hosts[0].identity_file}\n"
            f"  known_hosts: {hosts[0].known_hosts}\n"
            f"app:\n  port: 8080\n  volumes: ['{self.volume}:/flag']\n  stop_timeout: 2s\n"
            "migrate:\n  command: [/bin/busybox, echo, migrated]\n"
            "health:\n  body_contains: '\"database\": \"ok\"'\n  attempts: 20\n"
            "  interval: 250ms\nretain: 2\n" + extra)

    def deploy(self, ref: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        start = time.monotonic()
        res = subprocess.run([str(PLAINSAIL), "deploy", ref], cwd=self.dir,
                             capture_output=True, text=True)
        return time.monotonic() - start, res

    def version_on(self, host: NSHost) -> str:
        names = host.docker("ps", "--filter", f"label=dev.plainsail.service={self.name}",
                            "--format", "{{.Names}}").stdout.split()
        if len(names) != 1:
            return f"{len(names)} containers"
        got = host.docker("exec", names[0], "/bin/busybox", "wget", "-qO-",
                          "http://127.0.0.1:8080/health")
        return str(json.loads(got.stdout).get("version", "unhealthy")) if got.returncode == 0 \
            else "no answer"

    def clean(self) -> None:
        for h in self.hosts:
            ids = h.docker("ps", "-aq", "--filter",
                           f"label=dev.plainsail.service={self.name}").stdout.split()
            if ids:
                h.docker("rm", "-f", *ids)
            h.docker("volume", "rm", "-f", self.volume)
            h.run(["rm", "-rf", f"{h.home}/.plainsail/{self.name}"])


def timed(svc: Service, refs: dict[str, str], runs: int) -> float:
    for v in ("2", "1"):  # warm-up: both images on every host
        _, res = svc.deploy(refs[v])
        if res.returncode != 0:
            raise SystemExit(f"warm-up deploy failed:\n{res.stdout}\n{res.stderr}")
    times = []
    for i in range(runs):
        seconds, res = svc.deploy(refs["2" if i % 2 == 0 else "1"])
        if res.returncode != 0:
            raise SystemExit(f"deploy failed:\n{res.stdout}\n{res.stderr}")
        times.append(seconds)
    return statistics.median(times)


def failure(work: Path, image: str, refs: dict[str, str], hosts: list[NSHost]) -> str:
    svc = Service(work, image, hosts, "rollout:\n  canary: 1\n  batch: 50%\n")
    try:
        _, res = svc.deploy(refs["1"])
        assert res.returncode == 0, res.stdout + res.stderr
        bad = hosts[2]  # in batch 2 (host 1 is the canary)
        bad.docker("run", "--rm", "-v", f"{svc.volume}:/flag",
                   f"{image}@{refs['1'].split('@')[1]}", "/bin/busybox", "touch", "/flag/fail-2")
        start = time.monotonic()
        proc = subprocess.Popen([str(PLAINSAIL), "deploy", refs["2"]], cwd=svc.dir,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        failed_at = None
        for line in proc.stdout:
            if failed_at is None and "UNHEALTHY" in line:
                failed_at = time.monotonic()
        proc.wait()
        end = time.monotonic()
        versions = [svc.version_on(h) for h in hosts]
        ok = all(v == "1" for v in versions)
        after = end - failed_at if failed_at else float("nan")
        return (f"batch-2 failure on {len(hosts)} hosts: deploy ended after {end - start:.1f}s "
                f"(exit {proc.returncode}); from the failed gate until every host serves v1 "
                f"again: {after:.1f}s; all on v1: {ok} ({', '.join(versions)})")
    finally:
        svc.clean()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", default="1,4,8")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    counts = [int(n) for n in args.hosts.split(",")]
    most = max(counts)
    was_up = len(sh("list").splitlines())
    listing = sh("up", str(max(most, was_up)))
    reg, reg_proc = start_registry()
    port = reg.host.rsplit(":", 1)[1]
    sh("forward", port)
    env = hosts_env()
    hosts = parse(listing, env, Path(env["PLAINSAIL_HOSTS_KEY"]).parent)[:most]
    work = Path(tempfile.mkdtemp(prefix="fleetbench-"))
    try:
        image, refs = build(reg.host, work)
        rows: dict[tuple[int, str], float] = {}
        for n in counts:
            for mode, extra in (("at once", ""), ("one at a time",
                                                  "rollout:\n  max_parallel: 1\n")):
                svc = Service(work, image, hosts[:n], extra)
                try:
                    rows[n, mode] = timed(svc, refs, args.runs)
                finally:
                    svc.clean()
                print(f"{n} host(s), {mode}: {rows[n, mode]:.2f}s", flush=True)
        print("\nmedian wall time of a deploy (stop-start), and the ratio to 1 host:")
        print("| hosts | at once | ratio | one at a time | ratio |")
        print("|---|---|---|---|---|")
        for n in counts:
            a, s = rows[n, "at once"], rows[n, "one at a time"]
            a1, s1 = rows[counts[0], "at once"], rows[counts[0], "one at a time"]
            print(f"| {n} | {a:.2f}s | {a / a1:.2f}x | {s:.2f}s | {s / s1:.2f}x |")
        if most >= 3:
            print("\n" + failure(work, image, refs, hosts[:most]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        sh("unforward", port)
        stop(reg_proc, reg.root)
        if was_up < most:
            if was_up == 0:
                sh("down")
            else:
                print(f"(hosts {was_up + 1}..{most} were brought up and left: "
                      "scripts/hosts.sh down removes all)")


if __name__ == "__main__":
    main()
