"""A client for the proxy's admin API, which listens on a unix socket on the host only.

How it is reached, and why: the socket lives in the host's proxy state folder
(`<host_dir>/_proxy/admin.sock`), never on a TCP port, so no container and nothing on the
network can reach it. For a remote host, plainsail asks the SSH connection it already holds
(OpenSSH ControlMaster) to forward a unix socket on this machine, in a private 0700
temporary folder, to that socket on the host (`ssh -O forward -L LOCAL:REMOTE`, OpenSSH's
stream-local forwarding). The host needs nothing beyond sshd, a shell and Docker: no curl,
no Python, no extra port; sshd opens the socket as the SSH user, who owns it because the
proxy runs with that user's uid. A TCP forward on 127.0.0.1 was not chosen, since any local
user could reach the admin API through it. For `hosts: [local]` the socket is used directly.

Each request is logged (method and path) at debug level so an operator can replay it:
`curl --unix-socket ~/.plainsail/_proxy/admin.sock http://plainsail-proxy/PATH`.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from typing import Any

from plainsail.errors import PlainsailError
from plainsail.hosts.executor import Executor, SSHExecutor
from plainsail.proxy.caddyconf import ADMIN_ORIGIN

log = logging.getLogger("plainsail.run")


class ProxyError(PlainsailError):
    """The proxy is missing, unreachable, configured differently, or refused a change."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__(ADMIN_ORIGIN, timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def forward_argv(ex: SSHExecutor, action: str, local: str, remote: str) -> list[str]:
    """`ssh -O forward|cancel -L LOCAL:REMOTE` on the executor's shared connection."""
    return [*ex.ssh_argv()[:-1], "-O", action, "-L", f"{local}:{remote}", ex.host.destination]


class Admin:
    """One session with a host's admin API; use as a context manager.

    `socket_path` is the socket's absolute path on the host.
    """

    def __init__(self, ex: Executor, socket_path: str, timeout: float = 30.0) -> None:
        self.ex = ex
        self.remote = socket_path
        self.timeout = timeout
        self._dir: str | None = None
        self._local: str | None = None

    # -- connection
    def __enter__(self) -> Admin:
        if isinstance(self.ex, SSHExecutor):
            self._forward(self.ex)
        else:
            self._local = self.remote
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _forward(self, ex: SSHExecutor) -> None:
        base = ex.ssh_argv()
        check = subprocess.run([*base[:-1], "-O", "check", ex.host.destination],
                               capture_output=True, timeout=10, check=False)
        if check.returncode != 0:
            ex.run(["true"], timeout=30, what="connect")
        self._dir = tempfile.mkdtemp(prefix="psp-", dir=_socket_dir())
        self._local = os.path.join(self._dir, "admin.sock")
        argv = forward_argv(ex, "forward", self._local, self.remote)
        log.debug("[%s] $ %s", ex.host.name, shlex.join(argv))
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode != 0:
            self.close()
            raise ProxyError(
                f"{ex.host.name}: cannot forward the proxy's admin socket over SSH: "
                f"{proc.stderr.strip() or 'no output'} (is AllowStreamLocalForwarding on in "
                "the host's sshd_config?)")

    def close(self) -> None:
        if self._dir is not None and isinstance(self.ex, SSHExecutor) and self._local:
            subprocess.run(forward_argv(self.ex, "cancel", self._local, self.remote),
                           capture_output=True, timeout=10, check=False)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = self._local = None

    # -- requests
    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """(status, parsed JSON or text). Transport failures raise ProxyError."""
        if self._local is None:
            raise RuntimeError("Admin used outside its with block")
        log.debug("[%s] proxy admin: %s %s", self.ex.host.name, method, path)
        conn = _UnixConnection(self._local, self.timeout)
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ProxyError(
                f"{self.ex.host.name}: the proxy's admin API does not answer at "
                f"{self.remote} ({type(exc).__name__}: {exc or 'connection closed'}); check "
                "it with plainsail proxy status, start it with plainsail proxy boot") from exc
        finally:
            conn.close()
        text = raw.decode("utf-8", errors="replace")
        try:
            parsed: Any = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = text
        return resp.status, parsed

    def call(self, method: str, path: str, body: Any = None, what: str = "",
             headers: dict[str, str] | None = None) -> Any:
        """A request that must succeed (2xx); otherwise ProxyError with Caddy's message."""
        status, data = self.request(method, path, body, headers)
        if not 200 <= status < 300:
            detail = data.get("error") if isinstance(data, dict) else data
            raise ProxyError(f"{self.ex.host.name}: the proxy refused to "
                             f"{what or method + ' ' + path}: {status} "
                             f"{str(detail or '').strip()[:300]}")
        return data

    def config(self) -> dict[str, Any]:
        data = self.call("GET", "/config/", what="read its configuration")
        if not isinstance(data, dict):
            raise ProxyError(f"{self.ex.host.name}: the proxy has no configuration; run "
                             "plainsail proxy boot")
        return data

    def load(self, config: dict[str, Any]) -> None:
        """Replace the whole configuration (Caddy applies it gracefully, or not at all)."""
        self.call("POST", "/load", config, what="load the new configuration")

    def upstream_counts(self) -> dict[str, int]:
        """In-flight requests per upstream address (`GET /reverse_proxy/upstreams`)."""
        data = self.call("GET", "/reverse_proxy/upstreams", what="report its upstreams")
        counts: dict[str, int] = {}
        for entry in data or []:
            address = str(entry.get("address", ""))
            counts[address] = counts.get(address, 0) + int(entry.get("num_requests", 0))
        return counts


def _socket_dir() -> str:
    # Unix socket paths are limited to about 100 bytes: keep the folder short.
    for d in (os.environ.get("XDG_RUNTIME_DIR"), "/tmp"):
        if d and os.path.isdir(d) and os.access(d, os.W_OK):
            return d
    return tempfile.gettempdir()
