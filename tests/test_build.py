"""`plainsail build` against a real Docker Engine and a real registry."""

from __future__ import annotations

import json
from pathlib import Path

from plainsail.supply.images import ImageRef
from plainsail.supply.registry import RegistryClient
from tests.support.cli import plainsail
from tests.support.gitrepo import ServiceRepo, git, make_service_repo, remove_local_images
from tests.support.services import Registry, free_port

OCI = "org.opencontainers.image"


def client_for(reg: Registry) -> RegistryClient:
    from plainsail.secret import Secret

    pw = Secret(reg.password) if reg.password else None
    return RegistryClient(reg.host, reg.username, pw)


def test_build_pushes_short_sha_with_labels(service_repo: ServiceRepo, registry: Registry,
                                             tmp_path: Path) -> None:
    sha = git(service_repo.path, "rev-parse", "HEAD")
    git(service_repo.path, "remote", "add", "origin", "https://bob:t0ken@git.example.com/acme/svc.git")
    gh_out, gh_env = tmp_path / "gh_output", tmp_path / "gh_env"
    r = plainsail("build", cwd=service_repo.path,
                  env={"GITHUB_OUTPUT": str(gh_out), "GITHUB_ENV": str(gh_env)})
    assert r.code == 0, r.text
    tag = sha[:8]
    assert f"tag:    {tag}" in r.out
    client = client_for(registry)
    ref = ImageRef(service_repo.image, tag)
    digest = client.resolve(ref)
    assert digest and f"digest: {digest}" in r.out
    labels = client.image_config(ref)["config"]["Labels"]
    assert labels[f"{OCI}.revision"] == sha
    assert labels[f"{OCI}.source"] == "https://git.example.com/acme/svc"
    assert labels[f"{OCI}.version"] == tag
    assert labels[f"{OCI}.title"] == "svc"
    assert labels[f"{OCI}.created"].endswith("Z")
    assert client.tags(ref) == [tag]  # no latest, nothing else
    record = json.loads((service_repo.path / ".plainsail/builds" / f"{tag}.json").read_text())
    assert record["digest"] == digest and record["git_sha"] == sha
    assert gh_out.read_text() == f"image-tag={tag}\nimage-digest={digest}\n"
    assert gh_env.read_text() == f"IMAGE_TAG={tag}\n"
    assert "t0ken" not in r.text and "t0ken" not in json.dumps(record)
    assert f"[build] built {service_repo.image}:{tag} in " in r.out
    assert f"[push] pushed {service_repo.image}:{tag} (" in r.out


def test_second_build_of_same_commit_reuses_digest(service_repo: ServiceRepo,
                                                   registry: Registry) -> None:
    first = plainsail("build", "--json", cwd=service_repo.path)
    assert first.code == 0, first.text
    remove_local_images(service_repo.image)
    second = plainsail("build", "--json", cwd=service_repo.path)
    assert second.code == 0, second.text
    a, b = json.loads(first.out), json.loads(second.out)
    assert a["digest"] == b["digest"] and b["reused"] is True and a["reused"] is False
    assert "already exists" in second.err


def test_tag_length_and_git_describe(service_repo: ServiceRepo) -> None:
    service_repo.write("plainsail.yml", service_repo.config.read_text() + "  tag_length: 12\n")
    sha = service_repo.commit("longer tags")
    git(service_repo.path, "tag", "v1.4.0")
    r = plainsail("build", "--json", cwd=service_repo.path)
    assert r.code == 0, r.text
    rec = json.loads(r.out)
    assert rec["tag"] == sha[:12]
    assert rec["labels"][f"{OCI}.version"] == "v1.4.0"


def test_dirty_tree_refused_and_nothing_pushed(service_repo: ServiceRepo,
                                               registry: Registry) -> None:
    service_repo.write("app.txt", "uncommitted\n")
    r = plainsail("build", cwd=service_repo.path)
    assert r.code == 1 and "uncommitted changes (app.txt)" in r.err and "--allow-dirty" in r.err
    assert client_for(registry).tags(ImageRef(service_repo.image)) == []


def test_allow_dirty_tag_shape(service_repo: ServiceRepo, registry: Registry) -> None:
    sha = git(service_repo.path, "rev-parse", "HEAD")
    service_repo.write("app.txt", "uncommitted\n")
    r = plainsail("build", "--allow-dirty", "--json", cwd=service_repo.path)
    assert r.code == 0, r.text
    tag = json.loads(r.out)["tag"]
    import re

    assert re.fullmatch(sha[:8] + r"-dirty-[0-9a-z]{8}", tag)
    assert "dirty work tree" in r.err
    assert client_for(registry).tags(ImageRef(service_repo.image)) == [tag]


def test_latest_or_any_chosen_tag_refused(service_repo: ServiceRepo, registry: Registry) -> None:
    for tag in ("latest", "stable"):
        r = plainsail("build", "--tag", tag, cwd=service_repo.path)
        assert r.code == 2 and "rollback and audit impossible" in r.err
    assert client_for(registry).tags(ImageRef(service_repo.image)) == []


def test_registry_down(tmp_path: Path) -> None:
    repo = make_service_repo(tmp_path / "svc", f"127.0.0.1:{free_port()}")
    r = plainsail("build", cwd=repo.path)
    assert r.code == 1 and "cannot reach registry" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_wrong_password_and_no_secret_in_output(tmp_path: Path, auth_registry: Registry) -> None:
    extra = "registry:\n  username: ci\n  password: ${REG_PW}\n"
    repo = make_service_repo(tmp_path / "svc", auth_registry.host, extra)
    bad = plainsail("build", cwd=repo.path, env={"REG_PW": "wrong-pass-xyz"})
    assert bad.code == 1 and "ci" in bad.err and "wrong-pass-xyz" not in bad.text
    good = plainsail("build", "--verbose", cwd=repo.path,
                     env={"REG_PW": auth_registry.password or ""})
    try:
        assert good.code == 0, good.text
        assert auth_registry.password not in good.text
        assert client_for(auth_registry).tags(ImageRef(repo.image)) == [
            git(repo.path, "rev-parse", "HEAD")[:8]]
    finally:
        remove_local_images(repo.image)


def test_missing_dockerfile(service_repo: ServiceRepo, registry: Registry) -> None:
    (service_repo.path / "Dockerfile").unlink()
    service_repo.commit("remove Dockerfile")
    r = plainsail("build", cwd=service_repo.path)
    assert r.code == 1 and "no Dockerfile" in r.err
    assert client_for(registry).tags(ImageRef(service_repo.image)) == []


def test_failing_docker_build(service_repo: ServiceRepo, registry: Registry) -> None:
    import subprocess

    def leftovers() -> list[str]:
        # Only this build's: other tests on the machine start and remove containers too.
        out = subprocess.run(["docker", "ps", "-a", "--no-trunc", "--format", "{{.Command}}"],
                             capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if "missing header foo.h" in line]

    service_repo.write("Dockerfile", 'FROM scratch\nCOPY busybox /bin/busybox\n'
                       'RUN ["/bin/busybox", "sh", "-c", "echo compiling a; echo compiling b; '
                       'echo error: missing header foo.h >&2; exit 2"]\n')
    service_repo.commit("broken")
    r = plainsail("build", cwd=service_repo.path)
    assert r.code == 1 and "docker build failed" in r.err and "nothing was pushed" in r.err
    # The failing step, its telling line, and its last lines, where the person looks.
    (first,) = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert "at step 3/" in first and ': RUN ["/bin/busybox"' in first
    assert "(exit 2): error: missing header foo.h; nothing was pushed" in first
    # The step's stdout and stderr are two streams that Docker reads side by side: each
    # keeps its own order, not always the other's.
    evidence = [line for line in r.err.splitlines() if line.startswith("  | ")]
    out_lines = [line for line in evidence if line.startswith("  | compiling")]
    assert out_lines == ["  | compiling a", "  | compiling b"], r.err
    assert "  | error: missing header foo.h" in evidence, r.err
    # Progress, one line per step (not a terminal).
    assert "[build] step 1/" in r.out and ": FROM scratch" in r.out and "[build] step 3/" in r.out
    assert leftovers() == []  # no intermediate container left behind
    assert client_for(registry).tags(ImageRef(service_repo.image)) == []


def test_not_a_git_repository(tmp_path: Path, registry: Registry) -> None:
    (tmp_path / "plainsail.yml").write_text(f"service: svc\nimage: {registry.host}/t/nogit\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    r = plainsail("build", cwd=tmp_path)
    assert r.code == 1 and "not inside a git repository" in r.err


def test_malformed_config(service_repo: ServiceRepo, registry: Registry) -> None:
    service_repo.write("plainsail.yml", f"service: svc\nimage: {service_repo.image}:latest\n")
    service_repo.commit("bad config")
    r = plainsail("build", cwd=service_repo.path)
    assert r.code == 1 and "line 2: image:" in r.err and "contains a tag" in r.err
    assert client_for(registry).tags(ImageRef(service_repo.image)) == []
