"""The fault matrix against a real sshd and a real Docker Engine: for each Docker step of
a deploy, the command fails, it hangs beyond its timeout (`timeouts.command`,
`timeouts.pull` and `migrate.timeout` shortened to a few seconds), the SSH connection drops
(the host side of the connection is killed), or the deployer receives SIGTERM or SIGKILL
while the command runs. Each cell
checks a defined outcome, its exit code, the records, the lock, and that the last good
version serves (after `plainsail recover` for SIGKILL) unless the outcome says it does not.

Faults are injected on the host by a `docker` wrapper first on the SSH user's PATH (set by
this test's own sshd with SetEnv): it reads one "<kind> <command prefix>" line from a
control file, fires once on the first matching command, and runs the real docker
otherwise. docs/reliability.md shows the table these tests produce.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.deploy_env import DeployDir, NotesBuilds, cleanup_deploy_dir, make_deploy_dir
from tests.support.sshd import SSHHost, start_sshd, stop_sshd

pytestmark = pytest.mark.integration

WRAPPER = """#!/bin/sh
ctl={dir}/fault
echo "$(date +%T.%N) [$(cat "$ctl" 2>&1)] docker $*" >> {dir}/trace
if [ -s "$ctl" ]; then
  IFS= read -r line < "$ctl"
  kind=${{line%% *}}; rest=${{line#* }}; service=${{rest%% *}}; match=${{rest#* }}
  case "docker $*" in
    "$match"*"$service"*)
      : > "$ctl"
      case "$kind" in
        fail) echo "injected failure in: docker $*" >&2; exit 1 ;;
        drop)
          # This command's connection only (the sshd process it runs under), not every
          # connection of the user: other tests may be using the same SSH user.
          p=$PPID
          while [ "$p" -gt 1 ] && [ "$(cat /proc/$p/comm)" != sshd ]; do
            p=$(awk '{{print $4}}' /proc/$p/stat)
          done
          kill -9 "$p"; sleep 5; exit 255 ;;
        pause) touch {dir}/paused; sleep 6 ;;
        hang) echo $$ > {dir}/hung; exec sleep 60 ;;
      esac ;;
  esac
fi
exec /usr/bin/docker "$@"
"""

# step -> the command prefix the wrapper matches, and the version deployed over v1
STEPS = {
    "survey (docker ps)": ("docker ps", "v2"),
    "pull": ("docker pull", "v2"),
    "migrate": ("docker run --rm", "v2"),
    "stop-old": ("docker stop", "v2"),
    "start-new": ("docker run --detach", "v2"),
    "restore (docker start)": ("docker start", "crash"),
    "prune (docker rm)": ("docker rm", "v2"),
}
FAULTS = ["fail", "timeout", "drop", "SIGTERM", "SIGKILL"]
LIMIT = 5  # seconds: every host command's timeout in the `timeout` column
RESULTS: dict[tuple[str, str], str] = {}
DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
BEGIN, END = "<!-- real-matrix:begin -->", "<!-- real-matrix:end -->"


@pytest.fixture(scope="module")
def fault_host() -> Iterator[tuple[SSHHost, Path]]:
    # Not under pytest's numbered temp folders: another pytest run of the same user may
    # remove those while this module runs, and the host would then run the real docker.
    bindir = Path(tempfile.mkdtemp(prefix="plainsail-faultbin-"))
    bindir.chmod(0o777)
    for parent in bindir.parents:  # the SSH user must reach the wrapper
        if str(parent).startswith(("/tmp", tempfile_root())):
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
    wrapper = bindir / "docker"
    wrapper.write_text(WRAPPER.format(dir=bindir))
    wrapper.chmod(0o755)
    (bindir / "fault").write_text("")
    (bindir / "fault").chmod(0o666)
    host, proc = start_sshd(extra_config=f"SetEnv PATH={bindir}:/usr/local/bin:/usr/bin:/bin\n")
    try:
        yield host, bindir
    finally:
        stop_sshd(proc, host.directory)
        shutil.rmtree(bindir, ignore_errors=True)


def tempfile_root() -> str:
    return tempfile.gettempdir()


def _deploy_proc(d: DeployDir, version: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "plainsail", "deploy", d.builds.ref(version), "--json"],
        cwd=d.path, env={**os.environ, **d.env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def cell(d: DeployDir, bindir: Path, step: str, fault: str, **config: str) -> str:
    prefix, version = STEPS[step]
    d.config(**config)
    assert d.run("deploy", d.builds.ref("v1")).code == 0  # type: ignore[attr-defined]
    if fault == "timeout":
        d.config(**config, migrate_timeout=f"{LIMIT}s",
                 extra=f"timeouts:\n  command: {LIMIT}s\n  pull: {LIMIT}s\n")
    (bindir / "paused").unlink(missing_ok=True)
    (bindir / "hung").unlink(missing_ok=True)
    kind = {"fail": "fail", "drop": "drop", "timeout": "hang"}.get(fault, "pause")
    # Only this cell's commands (its service's name, or for a pull the digest it pulls)
    # take the fault.
    scope = d.builds.versions[version].digest if prefix == "docker pull" else d.service
    (bindir / "fault").write_text(f"{kind} {scope} {prefix}\n")
    proc = _deploy_proc(d, version)
    if kind == "pause":
        deadline = time.monotonic() + 120
        while not (bindir / "paused").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                out, err = proc.communicate()
                trace = (bindir / "trace").read_text().splitlines()[-12:]
                raise AssertionError(f"the step was never reached: {err}\n"
                                     + "\n".join(trace))
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM if fault == "SIGTERM" else signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    (bindir / "fault").write_text("")
    if kind == "hang":
        hung = bindir / "hung"
        trace = "\n".join((bindir / "trace").read_text().splitlines()[-12:])
        assert hung.exists(), f"the step was never reached: {out} {err}\n{trace}"
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(hung.read_text()), signal.SIGKILL)  # the hanging command, if alive
    assert "Traceback" not in out + err, out + err
    lock = d.run("lock", "status").out  # type: ignore[attr-defined]
    if fault == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
        time.sleep(7)  # the paused command finishes on the host
        r = d.run("recover")
        if r.code == 2:  # type: ignore[attr-defined]
            # Killed before it took the lock: nothing changed, nothing to recover.
            assert "nothing to recover" in r.err and lock.strip().endswith("unlocked")  # type: ignore[attr-defined]
            label = "killed before the lock: nothing changed"
        else:
            assert "INTERRUPTED" in lock, lock
            assert r.code == 0, r.text  # type: ignore[attr-defined]
            outcomes = [rec["outcome"] for rec in d.host_records()]
            assert outcomes[-2:] == ["interrupted", "recovered"], outcomes
            label = "recover: recovered (exit 0)"
        version_now = "1"
    else:
        doc = json.loads(out)  # one JSON object, whatever happened
        outcome, code = doc["outcome"], proc.returncode
        expected_code = {"succeeded": 0, "interrupted": 130}.get(outcome, 1)
        assert code == expected_code, (outcome, code, err)
        local = (d.path / ".plainsail" / "history.jsonl").read_text().splitlines()
        assert json.loads(local[-1])["outcome"] == outcome
        if not doc.get("preflight"):
            assert d.host_records()[-1]["id"] == doc["id"]
        assert lock.strip().endswith("unlocked"), lock
        label = f"{outcome} (exit {code})" + (", in preflight" if doc.get("preflight") else "")
        if fault == "timeout":
            # The step's own limit, named: `docker stop` gets app.stop_timeout (5s) more.
            limit = LIMIT + 5 if step == "stop-old" else LIMIT
            said = out + err
            assert f"within {limit}s" in said or f"timed out after {limit}s" in said, said
        if outcome == "restore-failed":
            assert "DOWN" in doc["reason"], doc["reason"]
            assert d.get()[0] != 200, "restore-failed, yet the service answers"
            return label
        version_now = "2" if outcome == "succeeded" else "1"
    time.sleep(0.5)
    status, body = d.get()
    assert status == 200 and f'"version": "{version_now}"' in body, (label, status, body)
    return label


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("step", list(STEPS))
def test_real_fault_matrix(fault_host: tuple[SSHHost, Path], notes_builds: NotesBuilds,
                           tmp_path: Path, step: str, fault: str) -> None:
    host, bindir = fault_host
    d = make_deploy_dir(tmp_path / "deploy", notes_builds, host)
    try:
        # Pruning happens only when there is something beyond `retain` to remove.
        RESULTS[(step, fault)] = cell(d, bindir, step, fault, attempts="20",
                                      interval="250ms", retain="0" if "prune" in step else "2")
    finally:
        cleanup_deploy_dir(d)


def render() -> str:
    rows = ["| step | " + " | ".join(FAULTS) + " |", "|---" * (len(FAULTS) + 1) + "|"]
    for step in STEPS:
        rows.append(f"| {step} | " + " | ".join(RESULTS[(step, f)] for f in FAULTS) + " |")
    return "\n".join(rows)


def test_reliability_doc_shows_the_real_matrix() -> None:
    """Runs after the cells (file order); regenerate with PLAINSAIL_UPDATE_DOCS=1."""
    if len(RESULTS) < len(STEPS) * len(FAULTS):
        pytest.skip("only a part of the matrix ran")
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    fresh = text[:start] + "\n" + render() + "\n" + text[end:]
    if os.environ.get("PLAINSAIL_UPDATE_DOCS") == "1" and text != fresh:
        DOC.write_text(fresh)
        text = fresh
    assert text == fresh, "docs/reliability.md is out of date: PLAINSAIL_UPDATE_DOCS=1 pytest"
