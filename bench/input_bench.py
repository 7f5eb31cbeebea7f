"""Time and memory of hostile inputs: each must end (refused or read) in time linear in its
size, within the documented caps (docs/configuration.md, "Input limits").

Cases: `audit` on a Dockerfile of about 3.7 MB made of line continuations (and the same at
half and double size, to show the time grows linearly); `audit` on a 12-line YAML alias
bomb; `config check` and `audit` on a 50 MB plainsail.yml; a trusted root of 300 MB, a
`.sig` manifest nested 1,000 deep and a `command` secret source that prints without end.
Each case runs in a fresh process, so the peak memory printed is that case's own.

Run: python bench/input_bench.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _dockerfile(root: Path, mb: float) -> list[str]:
    line = "RUN echo some words to make the line long enough \\\n"
    n = int(mb * 1024 * 1024 / len(line))
    (root / "Dockerfile").write_text("FROM python:3.12\n" + line * n + "  true\n")
    return ["audit", str(root / "Dockerfile")]


def _bomb(root: Path) -> list[str]:
    text = "on: push\n" + "".join(
        f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}" if i else "lol"] * 9) + "]\n"
        for i in range(10)) + "jobs:\n  a:\n    runs-on: x\n    steps: *x9\n"
    wf = root / ".github" / "workflows"
    wf.mkdir(parents=True)
    (wf / "bomb.yml").write_text(text)
    return ["audit", str(root)]


def _big_config(root: Path, command: str) -> list[str]:
    line = "# " + "x" * 98 + "\n"
    (root / "plainsail.yml").write_text("service: api\n" + line * (50 * 1024 * 1024 // 100))
    path = str(root / "plainsail.yml")
    return ["config", "check", "--config", path] if command == "config" else ["audit", path]


def peak_mib() -> int:
    """This process's peak resident memory (VmHWM starts afresh at exec, ru_maxrss not)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return -1


def run_cli(args: list[str]) -> tuple[float, int, int]:
    """(seconds, exit code, peak memory in MiB) of `plainsail ARGS` in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--cli", *args], capture_output=True,
                          text=True, timeout=600)
    seconds = time.perf_counter() - t0
    return seconds, proc.returncode, int(proc.stderr.strip().splitlines()[-1])


def cli(args: list[str]) -> None:
    from plainsail.cli import main as plainsail

    code = plainsail(args)
    print(peak_mib(), file=sys.stderr)
    sys.exit(code)


def in_process(name: str) -> None:
    """Cases measured without the CLI: the trusted root and a deep `.sig` manifest."""
    from plainsail.config.secretsources import CommandSource, SecretSourceError, fetch
    from plainsail.errors import SigningKeyError
    from plainsail.supply import keyless, signatures

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if name == "trusted-root-300MB":
            path = Path(tmp) / "root.json"
            with path.open("wb") as f:
                f.truncate(300 * 1024 * 1024)
            try:
                keyless.load_trusted_root(path)
            except SigningKeyError as exc:
                result = str(exc).split(" is ", 1)[1][:40]
        elif name == "endless-secret-command":
            endless = "import sys\nwhile True: sys.stdout.write('x' * 65536)"
            try:
                fetch(CommandSource((sys.executable, "-c", endless)), "TOKEN")
            except SecretSourceError as exc:
                result = str(exc).split("` ", 1)[1]
        else:
            try:
                signatures.read_manifest(b'{"layers":' + b"[" * 1000 + b"]" * 1000 + b"}")
            except signatures.PayloadError as exc:
                result = str(exc)
        seconds = time.perf_counter() - t0
    print(f"{name:28} {seconds:8.3f} s  {peak_mib():6d} MiB  {result}")


def main() -> None:
    print(f"{'case':28} {'time':>10}  {'peak RSS':>10}  exit / result")
    for mb in (1.85, 3.7, 7.4):
        with tempfile.TemporaryDirectory() as tmp:
            s, code, rss = run_cli(_dockerfile(Path(tmp), mb))
            print(f"{f'audit Dockerfile {mb} MB':28} {s:8.2f} s  {rss:6d} MiB  {code}")
    with tempfile.TemporaryDirectory() as tmp:
        s, code, rss = run_cli(_bomb(Path(tmp)))
        print(f"{'audit alias bomb (12 lines)':28} {s:8.2f} s  {rss:6d} MiB  {code}")
    for command in ("config", "audit"):
        with tempfile.TemporaryDirectory() as tmp:
            s, code, rss = run_cli(_big_config(Path(tmp), command))
            print(f"{f'{command} on 50 MB plainsail.yml':28} {s:8.2f} s  {rss:6d} MiB  {code}")
    for name in ("trusted-root-300MB", "sig-manifest-1000-deep", "endless-secret-command"):
        subprocess.run([sys.executable, __file__, "--case", name], check=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--case"]:
        in_process(sys.argv[2])
    elif sys.argv[1:2] == ["--cli"]:
        cli(sys.argv[2:])
    else:
        main()
