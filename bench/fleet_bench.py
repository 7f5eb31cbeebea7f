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
pulls both images), per host count and mode, and the ratio to one host. Then where the time
of a deploy "at once" goes, per host count: for each step of the plan the slowest host's
seconds (median over the runs; the hosts wait for each other between phases), and what is
not in any step (starting the program, verifying the image, connecting, the schema gate).
And what the machine spent on a deploy "at once" (median over the runs): remote commands
per host (plainsail's own `-v` log, one line per command or port forward), and CPU
seconds: plainsail with its SSH clients (connection masters included), the hosts' sshd
with everything their sessions ran (shells, the docker CLI), and the hosts' Docker Engines
(dockerd, containerd, the shims). Their sum over the machine's cores is the least wall
time that work can take here, however well it overlaps.
Then, on the largest host count with rollout {canary: 1, batch: 50%}: a host of batch 2
fails its gate; the time from its UNHEALTHY line until the command ended, every switched
host back on v1 (checked).

With --proxy every host runs the service behind its own Caddy (a `proxy:` block; the
local plainsail-caddy image, pushed to the registry) and each timed deploy, and the
failure, run under load: Debian's `hey` on every host's proxy (4 workers, at most 50
requests per second each, stopped when the deploy ends); the figures add how many requests
were answered and how many failed.

Usage (as root): .venv/bin/python bench/fleet_bench.py [--hosts 1,4,8] [--runs 3] [--proxy]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import resource
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
from tests.support.proxy_env import CADDY_IMAGE, Load, start_load  # noqa: E402
from tests.support.services import remove_repo_images, start_registry, stop  # noqa: E402

HOSTS_SH = ROOT / "scripts" / "hosts.sh"
CLK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
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


PROXY_PORT = 28080


def push_caddy(registry: str) -> str:
    """The local Caddy image in the registry: REPOSITORY:TAG@DIGEST (proxy.image)."""
    ref = f"{registry}/bench/caddy-{uuid.uuid4().hex[:6]}:2"
    subprocess.run(["docker", "tag", CADDY_IMAGE, ref], check=True, capture_output=True)
    subprocess.run(["docker", "push", "-q", ref], check=True, capture_output=True)
    digest = subprocess.run(["docker", "image", "inspect", "--format",
                             "{{index .RepoDigests 0}}", ref], check=True,
                            capture_output=True, text=True).stdout.strip().split("@")[1]
    return f"{ref}@{digest}"


class Service:
    def __init__(self, work: Path, image: str, hosts: list[NSHost], extra: str = "",
                 caddy: str = "") -> None:
        self.name = f"fleet-{uuid.uuid4().hex[:6]}"
        self.caddy = caddy
        if caddy:
            extra += (f"proxy:\n  host: {self.name}.test\n  image: {caddy}\n  tls: off\n"
                      f"  http_port: {PROXY_PORT}\n  https_port: {PROXY_PORT + 1}\n"
                      f"  network: {self.name}-net\n  drain: 3s\n")
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

    def last_steps(self) -> dict[str, float]:
        """The last attempt's steps: each step's seconds on its slowest host."""
        lines = (self.dir / ".plainsail" / "history.jsonl").read_text().splitlines()
        slowest: dict[str, float] = {}
        for host in json.loads(lines[-1])["per_host"]:
            for st in host["steps"]:
                name = "gate" if st["name"].startswith("health:") else st["name"]
                slowest[name] = max(slowest.get(name, 0.0), st["seconds"])
        return slowest

    def deploy(self, ref: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        start = time.monotonic()
        res = subprocess.run([str(PLAINSAIL), "-v", "deploy", ref], cwd=self.dir,
                             capture_output=True, text=True)
        return time.monotonic() - start, res

    def commands(self, res: subprocess.CompletedProcess[str]) -> dict[str, int]:
        """Remote commands (and port forwards) per host, from the `-v` log."""
        counts = {h.host: 0 for h in self.hosts}  # plainsail names a host as hosts: does
        for m in re.finditer(r"^\[([^\]]+)\] \$ ", res.stderr, re.M):
            if m[1] in counts:
                counts[m[1]] += 1
        return counts

    def load(self) -> list[Load]:
        """hey on every host's proxy (none without one), bounded to 120 s and 200/s."""
        if not self.caddy:
            return []
        return [start_load(PROXY_PORT, f"{self.name}.test", 120, 4, "/health",
                           address=h.hostname, rate=50) for h in self.hosts]

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
            if self.caddy:
                ids += h.docker("ps", "-aq", "--filter",
                                f"network={self.name}-net").stdout.split()
            if ids:
                h.docker("rm", "-f", *ids)
            if self.caddy:
                h.docker("network", "rm", f"{self.name}-net")
            h.docker("volume", "rm", "-f", self.volume)
            h.run(["rm", "-rf", f"{h.home}/.plainsail/{self.name}"])


class Tally:
    """Requests answered and failed under the loads of a mode."""

    def __init__(self) -> None:
        self.answered = self.failed = 0

    def add(self, loads: list[Load]) -> None:
        for ld in loads:
            codes, errors = ld.stop()
            self.answered += sum(codes.values())
            self.failed += sum(n for c, n in codes.items() if c != "200")
            # hey's error section: one "[COUNT]\tERROR" line per kind of error
            self.failed += sum(int(m) for m in re.findall(r"^\s*\[(\d+)\]", errors, re.M))

    def __str__(self) -> str:
        return f"{self.answered} answered, {self.failed} failed" if self.answered else ""


Steps = dict[str, list[float]]


def _seconds(pid: str) -> tuple[str, float]:
    """A process's name and its CPU seconds, with those of its children it waited for."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return text[text.index("(") + 1:text.rindex(")")], sum(
        int(x) for x in fields[11:15]) / CLK


def host_cpu(hosts: list[NSHost]) -> dict[str, float]:
    """CPU seconds so far of the hosts' processes: "sshd" (the SSH server and what its
    sessions ran: shells, the docker CLI) and "engine" (dockerd, containerd, the shims)."""
    spaces = {os.stat(f"/var/run/netns/{h.name}").st_ino for h in hosts}
    out = {"sshd": 0.0, "engine": 0.0}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if os.stat(p / "ns" / "net").st_ino not in spaces:
                continue
            name, sec = _seconds(p.name)
        except (OSError, ValueError, IndexError):
            continue
        out["sshd" if name.startswith("sshd") else "engine"] += sec
    return out


def own_cpu() -> float:
    """CPU seconds of this script's finished descendants (plainsail and its SSH clients:
    the connection masters, daemonized, come back here as orphans and are reaped)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Spent:
    """Per run of a deploy: remote commands per host and CPU seconds by kind."""

    def __init__(self) -> None:
        self.commands: list[int] = []  # the busiest host's, per run
        self.cpu: dict[str, list[float]] = {}
        self.wall: list[float] = []

    def add(self, commands: dict[str, int], cpu: dict[str, float], wall: float) -> None:
        self.commands.append(max(commands.values()))
        for k, v in cpu.items():
            self.cpu.setdefault(k, []).append(v)
        self.cpu.setdefault("total", []).append(sum(cpu.values()))
        self.wall.append(wall)

    def row(self, n: int) -> str:
        med = {k: statistics.median(v) for k, v in self.cpu.items()}
        return (f"| {n} | {statistics.median(self.wall):.2f}s | "
                f"{statistics.median(self.commands):.0f} | "
                f"{med['plainsail']:.2f} | {med['sshd']:.2f} | {med['engine']:.2f} | "
                f"{med['total']:.2f} | {med['total'] / CORES:.2f}s |")


def timed(svc: Service, refs: dict[str, str], runs: int, tally: Tally,
          steps: Steps | None = None, spent: Spent | None = None) -> float:
    for v in ("2", "1"):  # warm-up: both images on every host
        _, res = svc.deploy(refs[v])
        if res.returncode != 0:
            raise SystemExit(f"warm-up deploy failed:\n{res.stdout}\n{res.stderr}")
    times = []
    for i in range(runs):
        loads = svc.load()
        before, mine = host_cpu(svc.hosts), own_cpu()
        seconds, res = svc.deploy(refs["2" if i % 2 == 0 else "1"])
        after, mine = host_cpu(svc.hosts), own_cpu() - mine
        tally.add(loads)
        if spent is not None:
            spent.add(svc.commands(res), {"plainsail": mine, **{
                k: after[k] - before[k] for k in after}}, seconds)
        if res.returncode != 0:
            raise SystemExit(f"deploy failed:\n{res.stdout}\n{res.stderr}")
        times.append(seconds)
        if steps is not None:
            slowest = svc.last_steps()
            for name, sec in slowest.items():
                steps.setdefault(name, []).append(sec)
            steps.setdefault("(outside the steps)", []).append(seconds - sum(slowest.values()))
    return statistics.median(times)


def failure(work: Path, image: str, refs: dict[str, str], hosts: list[NSHost],
            caddy: str) -> str:
    svc = Service(work, image, hosts, "rollout:\n  canary: 1\n  batch: 50%\n", caddy)
    tally = Tally()
    try:
        _, res = svc.deploy(refs["1"])
        assert res.returncode == 0, res.stdout + res.stderr
        bad = hosts[2]  # in batch 2 (host 1 is the canary)
        bad.docker("run", "--rm", "-v", f"{svc.volume}:/flag",
                   f"{image}@{refs['1'].split('@')[1]}", "/bin/busybox", "touch", "/flag/fail-2")
        loads = svc.load()
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
        tally.add(loads)
        versions = [svc.version_on(h) for h in hosts]
        ok = all(v == "1" for v in versions)
        after = end - failed_at if failed_at else float("nan")
        return (f"batch-2 failure on {len(hosts)} hosts: deploy ended after {end - start:.1f}s "
                f"(exit {proc.returncode}); from the failed gate until every host serves v1 "
                f"again: {after:.1f}s; all on v1: {ok} ({', '.join(versions)})"
                + (f"; under load: {tally}" if caddy else ""))
    finally:
        svc.clean()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", default="1,4,8")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--proxy", action="store_true", help="behind a proxy, under load")
    args = ap.parse_args()
    counts = [int(n) for n in args.hosts.split(",")]
    # Orphaned descendants (SSH connection masters) come back to this process, whose
    # CPU time then counts (own_cpu).
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    most = max(counts)
    was_up = len(sh("list").splitlines())
    listing = sh("up", str(max(most, was_up)))
    reg, reg_proc = start_registry()
    port = reg.host.rsplit(":", 1)[1]
    sh("forward", port)
    env = hosts_env()
    hosts = parse(listing, env, Path(env["PLAINSAIL_HOSTS_KEY"]).parent)[:most]
    work = Path(tempfile.mkdtemp(prefix="fleetbench-"))
    image = caddy = ""
    try:
        image, refs = build(reg.host, work)
        caddy = push_caddy(reg.host) if args.proxy else ""
        rows: dict[tuple[int, str], float] = {}
        tallies: dict[tuple[int, str], Tally] = {}
        where: dict[int, Steps] = {}
        spent: dict[int, Spent] = {}
        for n in counts:
            for mode, extra in (("at once", ""), ("one at a time",
                                                  "rollout:\n  max_parallel: 1\n")):
                svc = Service(work, image, hosts[:n], extra, caddy)
                tallies[n, mode] = Tally()
                try:
                    rows[n, mode] = timed(svc, refs, args.runs, tallies[n, mode],
                                          where.setdefault(n, {}) if mode == "at once"
                                          else None,
                                          spent.setdefault(n, Spent()) if mode == "at once"
                                          else None)
                finally:
                    svc.clean()
                print(f"{n} host(s), {mode}: {rows[n, mode]:.2f}s {tallies[n, mode]}",
                      flush=True)
        kind = "behind the proxy, under load" if caddy else "stop-start"
        print(f"\nmedian wall time of a deploy ({kind}), and the ratio to 1 host:")
        print("| hosts | at once | ratio | one at a time | ratio |")
        print("|---|---|---|---|---|")
        for n in counts:
            a, s = rows[n, "at once"], rows[n, "one at a time"]
            a1, s1 = rows[counts[0], "at once"], rows[counts[0], "one at a time"]
            print(f"| {n} | {a:.2f}s | {a / a1:.2f}x | {s:.2f}s | {s / s1:.2f}x |")
        print("\nwhere the time goes (at once): each step on its slowest host, median s")
        print("| step | " + " | ".join(f"{n} host(s)" for n in counts) + " |")
        print("|---|" + "---|" * len(counts))
        names = list(dict.fromkeys(k for n in counts for k in where[n]))
        for name in names:
            print(f"| {name} | " + " | ".join(
                f"{statistics.median(where[n][name]):.2f}" if name in where[n] else "-"
                for n in counts) + " |")
        print(f"\nwhat a deploy (at once) spent, median: remote commands on the busiest host; "
              f"CPU seconds; their sum over {CORES} cores")
        print("| hosts | wall | commands/host | plainsail+ssh | hosts' sshd+CLI | engines | "
              "CPU total | total/cores |")
        print("|---|---|---|---|---|---|---|---|")
        for n in counts:
            print(spent[n].row(n))
        if most >= 3:
            print("\n" + failure(work, image, refs, hosts[:most], caddy))
    finally:
        remove_repo_images(*(r.split("@")[0].rsplit(":", 1)[0] if "@" in r else r
                             for r in (image, caddy) if r))
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
