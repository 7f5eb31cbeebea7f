"""Benchmark: `plainsail audit` on a repository with 20 workflows (target: under 0.3 s).

The repository is built from the test fixtures (tests/data/workflows: SSH scripts,
heredocs, kubectl/helm, build-and-push actions, reusable workflows), the first 20 by name,
plus a Dockerfile, a compose file and a composite action. Two figures: the in-process
`audit()` call (best and median of --rounds, after one warm-up that loads the parser), and
the whole `plainsail audit` process as CI runs it (interpreter start and imports included),
as wall time and as CPU time (user + system), which a busy machine does not inflate.

Usage: python bench/audit_bench.py [--workflows 20] [--rounds 15]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from plainsail.audit import audit

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "data" / "workflows"


def build_repo(root: Path, count: int) -> None:
    wf_dir = root / ".github" / "workflows"
    wf_dir.mkdir(parents=True)
    sources = sorted(FIXTURES.glob("*/*.yml"))
    for i in range(count):
        src = sources[i % len(sources)]
        shutil.copy(src, wf_dir / f"{i:02d}-{src.parent.name}-{src.name}")
    (root / "Dockerfile").write_text("FROM python:3.12-slim\nCOPY . /app\n")
    (root / "compose.yaml").write_text("services:\n  api:\n    image: ghcr.io/a/api:1\n")
    action = root / ".github" / "actions" / "deploy" / "action.yml"
    action.parent.mkdir(parents=True)
    action.write_text("runs:\n  using: composite\n  steps:\n    - shell: bash\n"
                      "      run: ssh h \"docker compose up -d --wait\"\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workflows", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_repo(root, args.workflows)
        audit(root)  # warm-up: imports, the parser's grammar
        times = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            report = audit(root)
            times.append(time.perf_counter() - t0)
        procs, cpus = [], []
        for _ in range(max(3, args.rounds // 3)):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "plainsail", "audit", str(root)],
                           capture_output=True, check=False)
            procs.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    print(f"workflows: {args.workflows}, files read: {len(report.files)}, "
          f"findings: {len(report.findings)}")
    print(f"audit() in process: best {min(times):.3f} s, median "
          f"{statistics.median(times):.3f} s (target < 0.3 s)")
    print(f"plainsail audit process: best {min(procs):.3f} s, median "
          f"{statistics.median(procs):.3f} s wall; CPU (user+sys) best {min(cpus):.3f} s, "
          f"median {statistics.median(cpus):.3f} s")


if __name__ == "__main__":
    main()
