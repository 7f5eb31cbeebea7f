"""Temporary git repositories holding a tiny buildable service (busybox on scratch)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BUSYBOX = Path("/bin/busybox")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Test Builder", "-c", "user.email=t@example.com", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout.strip()


@dataclass
class ServiceRepo:
    path: Path
    image: str

    @property
    def config(self) -> Path:
        return self.path / "plainsail.yml"

    def commit(self, message: str = "change") -> str:
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "-m", message)
        return git(self.path, "rev-parse", "HEAD")

    def write(self, name: str, text: str) -> None:
        (self.path / name).write_text(text)


def make_service_repo(root: Path, registry_host: str, extra_config: str = "") -> ServiceRepo:
    if not BUSYBOX.exists():
        pytest.fail("busybox-static is not installed; run scripts/setup.sh")
    root.mkdir(parents=True, exist_ok=True)
    image = f"{registry_host}/t/svc-{uuid.uuid4().hex[:10]}"
    shutil.copy(BUSYBOX, root / "busybox")
    (root / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\nARG GREETING=hi\n"
        'RUN ["/bin/busybox", "sh", "-c", "echo $GREETING > /greeting"]\n'
        'CMD ["/bin/busybox", "cat", "/greeting"]\n'
    )
    (root / "plainsail.yml").write_text(
        f"service: svc\nimage: {image}\nbuild:\n  args:\n    GREETING: hello\n" + extra_config
    )
    (root / ".gitignore").write_text(".plainsail/\n")
    git(root, "init", "-q", "-b", "main")
    repo = ServiceRepo(root, image)
    repo.commit("initial")
    return repo


@pytest.fixture
def service_repo(tmp_path: Path, registry) -> Iterator[ServiceRepo]:  # type: ignore[no-untyped-def]
    repo = make_service_repo(tmp_path / "svc", registry.host)
    yield repo
    remove_local_images(repo.image)


def remove_local_images(repository: str) -> None:
    out = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    if out:
        subprocess.run(["docker", "image", "rm", "--force", *out], capture_output=True, check=False)
