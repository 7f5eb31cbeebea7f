"""The demo's proxy chapter: a tiny app behind Caddy on this machine, an upgrade and a
failed deploy while Debian's `hey` keeps requests coming, and the count of requests that
failed (the headline: none). Used by `plainsail.demo`; needs what scripts/setup.sh
prepares (the local Caddy image, `hey`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plainsail.config import model as configlib
from plainsail.deploy.plan import Request
from plainsail.deploy.report import render_summary
from plainsail.deploy.run import Deploy
from plainsail.proxy import argv as pargv
from plainsail.secret import Secret
from plainsail.supply.build import run_build
from plainsail.supply.keys import generate
from plainsail.supply.signing import sign_image

CADDY_IMAGE = os.environ.get("PLAINSAIL_CADDY_IMAGE", "plainsail-caddy:bookworm")
LOAD_WORKERS = 8

# The app: its version on every answer; /health answers 503 when HEALTHY is 0.
SERVER = r'''import http.server, os
VERSION = open("/app/version.txt").read().strip()
HEALTHY = os.environ.get("HEALTHY", "1") != "0" and not VERSION.endswith("broken")
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        bad = self.path == "/health" and not HEALTHY
        body = ("hello from version %s\n" % VERSION).encode()
        self.send_response(503 if bad else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8000), H).serve_forever()
'''

DOCKERFILE = """ARG BASE_IMAGE=plainsail-base:bookworm
FROM ${BASE_IMAGE}
COPY server.py version.txt /app/
CMD ["python3", "/app/server.py"]
"""


@dataclass
class LoadResult:
    requests: int
    failed: int
    codes: dict[str, int]

    def line(self) -> str:
        shown = ", ".join(f"{n} x {code}" for code, n in sorted(self.codes.items()))
        return f"{self.requests} requests, {self.failed} failed ({shown or 'no answer'})"


def hey_result(output: str) -> LoadResult:
    """Counts from hey's report: answers per status code, and errors (no answer)."""
    codes = {m[0]: int(m[1]) for m in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}
    errors = output.split("Error distribution:", 1)[1] if "Error distribution:" in output \
        else ""
    no_answer = sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]\s", errors, re.M))
    answered = sum(codes.values())
    failed = sum(n for code, n in codes.items() if code != "200") + no_answer
    return LoadResult(answered + no_answer, failed, codes)


class ProxyChapter:
    """Set-up, story and clean-up of the proxy chapter, in the demo's workspace."""

    def __init__(self, root: Path, registry_port: int, base_image: str, passphrase: Secret,
                 say: Callable[[str], None], out: Callable[[str], None],
                 git: Callable[[Path, tuple[str, ...]], None]) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.app = root / "hello"
        self.service = f"hello-demo-{suffix}"
        self.host_name = f"{self.service}.localhost"
        self.host_dir = str(root / "host")
        self.network = f"psdemo-{suffix}"
        self.registry_port = registry_port
        self.base_image = base_image
        self.passphrase = passphrase
        self.say, self.out, self._git = say, out, git
        self.http_port = 0

    # -- the story
    def run(self, free_port: Callable[[], int]) -> bool:
        if not shutil.which("hey"):
            self.say("hey is not installed (scripts/setup.sh installs it); skipping this part")
            return True
        self.http_port = free_port()
        caddy = self._caddy_image()
        self._write_app(caddy, free_port())
        cfg = configlib.load(self.app / "plainsail.yml")
        self.say(f"the proxy: Caddy on 127.0.0.1:{self.http_port}, routing {self.host_name} "
                 "to the app's containers on their own Docker network")
        first = self._release(cfg, "1")
        if first["outcome"] != "succeeded":
            return False
        self.say(f"GET / through the proxy -> {self._get()}")
        self.say(f"an upgrade to version 2 while hey sends requests ({LOAD_WORKERS} at a "
                 "time): the proxy switches to the new container once it is healthy, then "
                 "drains the old one")
        upgrade, load = self._release_under_load(cfg, "2")
        self.say(f"upgrade under load: {load.line()}")
        self.say("a version whose health check fails, under load: it never gets traffic, "
                 "its container is removed, version 2 keeps serving")
        broken, load2 = self._release_under_load(cfg, "3-broken")
        self.say(f"failed deploy under load: {load2.line()}")
        self.say(f"GET / through the proxy -> {self._get()}")
        return bool(upgrade["outcome"] == "succeeded" and broken["outcome"] != "succeeded")

    def _release(self, cfg: configlib.Config, version: str,
                 during: Callable[[], None] | None = None) -> dict[str, Any]:
        (self.app / "version.txt").write_text(version + "\n")
        self._git(self.app, ("add", "-A"))
        self._git(self.app, ("commit", "-q", "-m", f"version {version}"))
        record = run_build(cfg)
        sign_image(cfg, record.tag, record.digest, passphrase=self.passphrase)
        self.say(f"built and signed version {version}: {record.image}:{record.tag}")
        if during:
            during()
        summary = Deploy(cfg, Request(ref=f"{record.tag}@{record.digest}"), self.say).run()
        self.out("\n".join(f"    {line}" for line in render_summary(summary).splitlines()))
        return summary

    def _release_under_load(self, cfg: configlib.Config,
                            version: str) -> tuple[dict[str, Any], LoadResult]:
        procs: list[subprocess.Popen[str]] = []

        def start() -> None:
            procs.append(subprocess.Popen(
                ["hey", "-z", "300s", "-c", str(LOAD_WORKERS), "-t", "10", "-host",
                 self.host_name, f"http://127.0.0.1:{self.http_port}/"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            time.sleep(1.0)  # requests already flowing when the deploy starts

        try:
            summary = self._release(cfg, version, during=start)
            time.sleep(1.0)  # and still flowing after it ended
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)  # hey prints its report and stops
        output = procs[0].communicate(timeout=60)[0] if procs else ""
        return summary, hey_result(output)

    def _get(self) -> str:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/",
                                     headers={"Host": self.host_name})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return f"{resp.status} {resp.read().decode().strip()}"
        except OSError as exc:
            return f"no answer ({exc})"

    # -- set-up and clean-up
    def _caddy_image(self) -> str:
        """The local Caddy image, pushed to the demo's registry: proxy.image needs a
        digest."""
        repo = f"127.0.0.1:{self.registry_port}/demo/caddy"
        for argv in (["docker", "tag", CADDY_IMAGE, f"{repo}:2"],
                     ["docker", "push", "-q", f"{repo}:2"]):
            res = subprocess.run(argv, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"{' '.join(argv[:2])} of the Caddy image failed: "
                                   f"{(res.stderr or res.stdout).strip()[-200:]}; run "
                                   "scripts/setup.sh")
        found = subprocess.run(["docker", "image", "inspect", "--format",
                                "{{json .RepoDigests}}", f"{repo}:2"],
                               capture_output=True, text=True).stdout
        digest = next(d for d in json.loads(found or "[]") if d.startswith(repo + "@"))
        return f"{repo}:2@{digest.split('@', 1)[1]}"

    def _write_app(self, caddy: str, https_port: int) -> None:
        self.app.mkdir(parents=True)
        (self.app / "server.py").write_text(SERVER)
        (self.app / "Dockerfile").write_text(DOCKERFILE)
        (self.app / ".gitignore").write_text("cosign.key\n.plainsail/\n")
        (self.app / ".dockerignore").write_text("cosign.key\n.plainsail/\n")
        (self.app / "plainsail.yml").write_text(
            f"service: {self.service}\n"
            f"image: 127.0.0.1:{self.registry_port}/demo/hello\n"
            f"build:\n  args:\n    BASE_IMAGE: {self.base_image}\n"
            "signing:\n  key: cosign.key\n  public_key: cosign.pub\n"
            f"hosts: [local]\nhost_dir: {self.host_dir}\n"
            "app:\n  port: 8000\n  stop_timeout: 2s\n"
            "health:\n  path: /health\n  attempts: 8\n  interval: 250ms\n  timeout: 2s\n"
            f"proxy:\n  host: {self.host_name}\n  image: {caddy}\n  tls: off\n"
            f"  http_port: {self.http_port}\n  https_port: {https_port}\n"
            f"  network: {self.network}\n  drain: 2s\n")
        self._git(self.app, ("init", "-q", "-b", "main"))
        generate(str(self.app / "cosign"), self.passphrase)

    def cleanup(self) -> None:
        ids = subprocess.run(["docker", "ps", "-aq", "--filter",
                              f"label=dev.plainsail.service={self.service}"],
                             capture_output=True, text=True).stdout.split()
        subprocess.run(["docker", "rm", "-f", pargv.container_name(self.host_dir), *ids],
                       capture_output=True)
        subprocess.run(["docker", "network", "rm", self.network], capture_output=True)
        images = subprocess.run(
            ["docker", "image", "ls", "-q", f"127.0.0.1:{self.registry_port}/demo/hello"],
            capture_output=True, text=True).stdout.split()
        subprocess.run(["docker", "image", "rm", "-f", *sorted(set(images)),
                        f"127.0.0.1:{self.registry_port}/demo/caddy:2"], capture_output=True)
        shutil.rmtree(self.host_dir, ignore_errors=True)
