"""The fault matrix against a real sshd and a real Docker Engine: for each Docker step of
a deploy, the command fails, it hangs beyond its timeout (`timeouts.command`,
`timeouts.pull` and `migrate.timeout` shortened to a few seconds), the SSH connection drops
(the host side of the connection is killed), or the deployer receives SIGTERM or SIGKILL
while the command runs. Each cell
checks a defined outcome, its exit code, the records, the lock, and that the last good
version serves (after `plainsail recover` for SIGKILL) unless the outcome says it does not.

Faults are injected on the host by a `docker` wrapper first on the SSH user's PATH (set by
this test's own sshd with SetEnv): it reads one "<kind>[:<n>] <scope> <command prefix>"
line from a control file (kind: fail, drop, hang or pauseSECONDS), fires once on the n-th
(default first) matching command, and runs the real docker otherwise. docs/reliability.md
shows the tables these tests produce.

The proxy's rows deploy behind a real Caddy on the same host, under steady load from
`hey` through the proxy, and every cell also checks that no request failed. The proxy's
own steps run no Docker command of the service: `route` and `drain` are reached through
the proxy's state lookup (`docker container inspect` of the proxy container), which the
deploy runs in preflight, in proxy-boot, in route, in check-through and in drain, in that
order.
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
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from plainsail.hosts.addresses import parse_host
from plainsail.hosts.executor import SSHExecutor, SSHOptions
from plainsail.proxy import argv as pargv
from tests.support.deploy_env import DeployDir, NotesBuilds, cleanup_deploy_dir, make_deploy_dir
from tests.support.proxy_env import ProxyApps, ProxyService, proxy_service, start_load
from tests.support.services import free_port
from tests.support.sshd import SSHHost, start_sshd, stop_sshd
from tests.test_proxy_integration import ProxyHost

pytestmark = pytest.mark.integration

WRAPPER = """#!/bin/sh
ctl={dir}/fault
echo "$(date +%T.%N) [$(cat "$ctl" 2>&1)] docker $*" >> {dir}/trace
if [ -s "$ctl" ]; then
  IFS= read -r line < "$ctl"
  kind=${{line%% *}}; rest=${{line#* }}; service=${{rest%% *}}; match=${{rest#* }}
  nth=1; case "$kind" in *:*) nth=${{kind#*:}}; kind=${{kind%%:*}} ;; esac
  case "docker $*" in
    "$match"*"$service"*)
      seen=$(( $(cat {dir}/seen 2>/dev/null || echo 0) + 1 ))
      echo "$seen" > {dir}/seen
      if [ "$seen" -ge "$nth" ]; then
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
          pause*)
            # `paused` lasts until the command itself has finished on the host, so that
            # tests can wait for it instead of sleeping a guessed time.
            touch {dir}/paused; sleep "${{kind#pause}}"
            /usr/bin/docker "$@"; rc=$?; rm -f {dir}/paused; exit $rc ;;
          hang) echo $$ > {dir}/hung; exec sleep 60 ;;
        esac
      fi ;;
  esac
fi
exec /usr/bin/docker "$@"
"""

# step -> the command prefix the wrapper matches, and the version deployed over v1
STEPS = {
    "survey (docker ps)": ("docker ps", "v2"),
    "pull": ("docker pull", "v2"),
    "backup": ("docker run --user", "v2"),  # the pg_dump container (backup.before set)
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
    # Not under pytest's numbered temp folders: another pytest run on the machine may
    # remove those, or make the user's folder there 0700 again, while this module runs,
    # and the host would then run the real docker.
    bindir = Path(tempfile.mkdtemp(prefix="psfault-", dir="/tmp"))
    bindir.chmod(0o777)
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


def _deploy_proc(d: DeployDir, version: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "plainsail", "deploy", d.builds.ref(version), "--json"],
        cwd=d.path, env={**os.environ, **d.env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def signal_when_paused(proc: subprocess.Popen[str], bindir: Path, fault: str) -> None:
    """Wait until the wrapper paused the faulted command, then signal the deployer."""
    deadline = time.monotonic() + 120
    while not (bindir / "paused").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            _, err = proc.communicate()
            trace = (bindir / "trace").read_text().splitlines()[-12:]
            raise AssertionError(f"the step was never reached: {err}\n" + "\n".join(trace))
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM if fault == "SIGTERM" else signal.SIGKILL)


def wait_until_unpaused(bindir: Path, limit: float = 30) -> None:
    """Wait until a command the wrapper paused has run to its end on the host."""
    deadline = time.monotonic() + limit
    while (bindir / "paused").exists():
        assert time.monotonic() < deadline, "the paused command did not finish on the host"
        time.sleep(0.05)


def poll_get(d: DeployDir, expect: str, limit: float = 10) -> tuple[int, str]:
    """The service's answer once it carries `expect` (or the last one after `limit`)."""
    deadline = time.monotonic() + limit
    status, body = d.get()
    while not (status == 200 and expect in body) and time.monotonic() < deadline:
        time.sleep(0.05)
        status, body = d.get()
    return status, body


def cell(d: DeployDir, bindir: Path, step: str, fault: str, backup: str = "",
         **config: str) -> str:
    """`backup`: the config's backup block (its timeout is shortened too)."""
    prefix, version = STEPS[step]
    d.config(**config, extra=backup)
    assert d.run("deploy", d.builds.ref("v1")).code == 0  # type: ignore[attr-defined]
    if fault == "timeout":
        d.config(**config, migrate_timeout=f"{LIMIT}s",
                 extra=(backup + f"  timeout: {LIMIT}s\n" if backup else "")
                 + f"timeouts:\n  command: {LIMIT}s\n  pull: {LIMIT}s\n")
    (bindir / "paused").unlink(missing_ok=True)
    (bindir / "hung").unlink(missing_ok=True)
    (bindir / "seen").unlink(missing_ok=True)
    kind = {"fail": "fail", "drop": "drop", "timeout": "hang"}.get(fault, "pause6")
    # Only this cell's commands (its service's name, or for a pull the digest it pulls)
    # take the fault.
    scope = d.builds.versions[version].digest if prefix == "docker pull" else d.service
    (bindir / "fault").write_text(f"{kind} {scope} {prefix}\n")
    proc = _deploy_proc(d, version)
    if kind == "pause6":
        signal_when_paused(proc, bindir, fault)
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
        wait_until_unpaused(bindir)
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
    status, body = poll_get(d, f'"version": "{version_now}"')
    assert status == 200 and f'"version": "{version_now}"' in body, (label, status, body)
    if backup:
        assert_no_unfinished_backup(d)
    return label


def assert_no_unfinished_backup(d: DeployDir) -> None:
    """On the host: no backup container, and every dump has its description (only whole
    backups are there: `backup list` shows exactly those)."""
    assert d.ssh is not None
    left = d.host_run("docker", "ps", "-aq", "--filter", "label=dev.plainsail.role=backup",
                      "--filter", f"label=dev.plainsail.service={d.service}").stdout
    assert not left.strip(), "a backup container is left"
    files = d.host_run("ls", "-A", f"{d.ssh.home}/.plainsail/{d.service}/backups").stdout.split()
    assert not [f for f in files if f.startswith(".")], files
    dumps = {f.removesuffix(".dump") for f in files if f.endswith(".dump")}
    assert dumps == {f.removesuffix(".json") for f in files if f.endswith(".json")}, files
    listed = json.loads(d.run("backup", "list", "--json").out)["backups"]  # type: ignore[attr-defined]
    assert sorted(b["id"] for b in listed) == sorted(dumps)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("step", list(STEPS))
def test_real_fault_matrix(fault_host: tuple[SSHHost, Path], notes_builds: NotesBuilds,
                           tmp_path: Path, step: str, fault: str,
                           request: pytest.FixtureRequest) -> None:
    host, bindir = fault_host
    d = make_deploy_dir(tmp_path / "deploy", notes_builds, host)
    # Backing up before migrations, the backup's row only (with no migration folder known,
    # every deploy that migrates backs up: v1's, then v2's).
    backup = (f"backup:\n  before: migrations\n  keep: 3\n  image: "
              f"{request.getfixturevalue('pgclient_image')}\n" if step == "backup" else "")
    try:
        # Pruning happens only when there is something beyond `retain` to remove.
        RESULTS[(step, fault)] = cell(d, bindir, step, fault, backup, attempts="20",
                                      interval="250ms", retain="0" if "prune" in step else "2")
    finally:
        cleanup_deploy_dir(d)


# ---------------------------------------------------------------- behind the proxy

# step -> (command prefix, which matching command takes the fault); the scope is the
# service's name, or the proxy container's for its state lookups
PROXY_STEPS = {
    "start-new": ("docker run --detach", 1),
    "gate": ("docker inspect --format", 1),  # the gate looks up the new container
    "route": ("docker container inspect", 3),
    "drain": ("docker container inspect", 5),  # the 4th is check-through's
}
PROXY_FAULTS = ["fail", "SIGTERM", "SIGKILL"]
PROXY_RESULTS: dict[tuple[str, str], str] = {}
PBEGIN, PEND = "<!-- proxy-matrix:begin -->", "<!-- proxy-matrix:end -->"


@pytest.fixture(scope="module")
def fault_proxy(fault_host: tuple[SSHHost, Path], caddy_image: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyHost]:
    """A proxy of its own (own host folder, network and ports) on the fault host."""
    host, _ = fault_host
    tag = uuid.uuid4().hex[:8]
    ex = SSHExecutor(parse_host(host.host), SSHOptions(
        identity_file=str(host.identity_file), known_hosts=str(host.known_hosts)))
    ph = ProxyHost(host, ex, caddy_image, f"~/.psfm-{tag}", f"psfm-{tag}", free_port(),
                   free_port(), tmp_path_factory.mktemp("fault-proxy"))
    try:
        yield ph
    finally:
        host.run(["docker", "rm", "-f", pargv.container_name(ph.host_dir)])
        host.run(["docker", "network", "rm", ph.network])
        host.run(["rm", "-rf", f"{host.home}/.psfm-{tag}"])
        ex.close()


def proxy_cell(s: ProxyService, bindir: Path, step: str, fault: str) -> str:
    prefix, nth = PROXY_STEPS[step]
    assert s.run("deploy", s.ref("v1"))["outcome"] == "succeeded"
    assert s.ph.get_until(s.host_name, "v1")[0] == 200
    (bindir / "paused").unlink(missing_ok=True)
    (bindir / "seen").unlink(missing_ok=True)
    version = "v2"
    if (step, fault) == ("gate", "fail"):
        version = "broken"  # the gate's own failure: the new version never gets healthy
    else:
        kind = "fail" if fault == "fail" else "pause2"  # time enough to send the signal
        scope = pargv.container_name(s.ph.host_dir) if step in ("route", "drain") else \
            s.service
        (bindir / "fault").write_text(f"{kind}:{nth} {scope} {prefix}\n")
    load = start_load(s.ph.http_port, s.host_name, 120)
    try:
        proc = s.start("deploy", s.ref(version))
        if fault != "fail":
            signal_when_paused(proc, bindir, fault)
        if fault == "SIGKILL":
            proc.wait(timeout=60)
            assert proc.returncode == -signal.SIGKILL
            wait_until_unpaused(bindir)
            doc = s.run("recover")
            assert doc["outcome"] == "recovered", doc
            outcomes = [rec["outcome"] for rec in s.records()]
            assert outcomes[-2:] == ["interrupted", "recovered"], outcomes
            label, serving = "recover: recovered (exit 0)", "v1"
        else:
            code, doc, text = s.finish(proc)
            outcome = doc["outcome"]
            expected_code = {"succeeded": 0, "interrupted": 130}.get(outcome, 1)
            assert code == expected_code, (outcome, code, text)
            rec = s.records()[-1]
            assert rec["id"] == doc["id"] and rec["outcome"] == outcome
            if fault == "fail" and version == "v2":  # the fault hit the step it names
                failed = [st["name"] for st in rec["steps"] if not st["ok"]]
                assert failed[:1] == [step] or (step == "route" and outcome == "succeeded"
                                                and "booting it again" in text), (failed, text)
            label = f"{outcome} (exit {code})"
            serving = "v2" if outcome == "succeeded" else "v1"
        (bindir / "fault").write_text("")
        assert s.lock_free()
        assert s.ph.get_until(s.host_name, serving)[1].strip() == serving, label
        running = [c for c in s.containers() if c.endswith(" running")]
        assert len(running) == 1, (label, s.containers())
    finally:
        (bindir / "fault").write_text("")
        load.stop()
    # Every switch is a configuration load of Caddy; one keep-alive connection closed by
    # it is allowed (proxy_env.CLOSES_ALLOWED; docs/reliability.md says so under the table).
    load.assert_no_failure()
    return label + "; no request failed"


@pytest.mark.parametrize("fault", PROXY_FAULTS)
@pytest.mark.parametrize("step", list(PROXY_STEPS))
def test_proxy_fault_matrix(fault_host: tuple[SSHHost, Path], fault_proxy: ProxyHost,
                            proxy_apps: ProxyApps, tmp_path: Path, step: str,
                            fault: str) -> None:
    _, bindir = fault_host
    s = proxy_service(fault_proxy, proxy_apps, tmp_path, "pfm")
    s.attempts = 12  # a failing gate gives up after 3 s
    s.write_config()
    try:
        PROXY_RESULTS[(step, fault)] = proxy_cell(s, bindir, step, fault)
    finally:
        # A command paused on the host runs on after the deployer was signalled (a
        # `docker run` then creates its container late): let it finish before cleaning up.
        wait_until_unpaused(bindir)
        s.remove()


def render() -> str:
    rows = ["| step | " + " | ".join(FAULTS) + " |", "|---" * (len(FAULTS) + 1) + "|"]
    for step in STEPS:
        rows.append(f"| {step} | " + " | ".join(RESULTS[(step, f)] for f in FAULTS) + " |")
    return "\n".join(rows)


def render_proxy() -> str:
    rows = ["| step | " + " | ".join(PROXY_FAULTS) + " |",
            "|---" * (len(PROXY_FAULTS) + 1) + "|"]
    for step in PROXY_STEPS:
        rows.append(f"| {step} | " + " | ".join(PROXY_RESULTS[(step, f)]
                                                for f in PROXY_FAULTS) + " |")
    return "\n".join(rows)


def test_reliability_doc_shows_the_real_matrix() -> None:
    """Runs after the cells (file order); regenerate with PLAINSAIL_UPDATE_DOCS=1."""
    if len(RESULTS) < len(STEPS) * len(FAULTS) or \
            len(PROXY_RESULTS) < len(PROXY_STEPS) * len(PROXY_FAULTS):
        pytest.skip("only a part of the matrix ran")
    text = DOC.read_text()
    fresh = text
    for (begin, end_mark), table in (((BEGIN, END), render()),
                                     ((PBEGIN, PEND), render_proxy())):
        start, end = fresh.index(begin) + len(begin), fresh.index(end_mark)
        fresh = fresh[:start] + "\n" + table + "\n" + fresh[end:]
    if os.environ.get("PLAINSAIL_UPDATE_DOCS") == "1" and text != fresh:
        DOC.write_text(fresh)
        text = fresh
    assert text == fresh, "docs/reliability.md is out of date: PLAINSAIL_UPDATE_DOCS=1 pytest"


# ---------------------------------------------------------------- faults beyond the steps
# Rows for faults that are no failing command: a full disk right after the switch, the SSH
# connection dropping during the health gate, a webhook that trickles its answer. Each
# deploys v1, then the fault, and checks a defined outcome, the records, the lock and the
# version that serves.


def _run_deploy(d: DeployDir, version: str, timeout: float = 300) -> tuple[dict[str, object],
                                                                           int, str]:
    proc = _deploy_proc(d, version)
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in out + err, out + err
    return json.loads(out), proc.returncode, err


def test_row_full_disk_after_the_switch(fault_host: tuple[SSHHost, Path],
                                        notes_builds: NotesBuilds, tmp_path: Path) -> None:
    """host_dir on a small file system that fills up while the new container starts: the
    switch completes, the record cannot be stored on the host (said as a full disk), the
    local record keeps it and names the host, the lock is released, v2 serves."""
    host, bindir = fault_host
    mount = Path(tempfile.mkdtemp(prefix="psdisk-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0755", "tmpfs", str(mount)],
                   check=True)
    d = make_deploy_dir(tmp_path / "deploy", notes_builds, host)
    try:
        subprocess.run(["chown", host.user, str(mount)], check=True)
        extra = f"host_dir: {mount}\n"
        d.config(extra=extra)
        assert d.run("deploy", d.builds.ref("v1")).code == 0  # type: ignore[attr-defined]
        (bindir / "paused").unlink(missing_ok=True)
        (bindir / "seen").unlink(missing_ok=True)
        (bindir / "fault").write_text(f"pause3 {d.service} docker run --detach\n")
        proc = _deploy_proc(d, "v2")
        deadline = time.monotonic() + 120
        while not (bindir / "paused").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        with (mount / "filler").open("wb") as f, contextlib.suppress(OSError):
            f.write(b"x" * 1024 * 1024)
        out, err = proc.communicate(timeout=300)
        (bindir / "fault").write_text("")
        assert "Traceback" not in out + err, out + err
        doc = json.loads(out)
        assert doc["outcome"] == "succeeded" and proc.returncode == 0, (doc, err)
        assert "the host's disk (or the SSH user's quota) is full" in err, err
        local = json.loads((d.path / ".plainsail" / "history.jsonl").read_text()
                           .splitlines()[-1])
        assert local["outcome"] == "succeeded" and local["unrecorded_hosts"]
        assert d.run("lock", "status").out.strip().endswith("unlocked")  # type: ignore[attr-defined]
        status, body = poll_get(d, '"version": "2"')
        assert status == 200 and '"version": "2"' in body
    finally:
        (bindir / "fault").write_text("")
        cleanup_deploy_dir(d)
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)


def test_row_ssh_drop_during_the_gate(fault_host: tuple[SSHHost, Path],
                                      notes_builds: NotesBuilds, tmp_path: Path) -> None:
    """A version that takes 3 s to listen fails its first health attempts; the container
    check after one of them loses the SSH connection. The gate goes on over a new
    connection and passes: succeeded, never 'the container is missing'."""
    host, bindir = fault_host
    d = make_deploy_dir(tmp_path / "deploy", notes_builds, host)
    try:
        assert d.run("deploy", d.builds.ref("v1")).code == 0  # type: ignore[attr-defined]
        (bindir / "seen").unlink(missing_ok=True)
        (bindir / "fault").write_text(f"drop {d.service} docker container inspect\n")
        doc, code, err = _run_deploy(d, "slow")
        dropped = not (bindir / "fault").read_text().strip()
        (bindir / "fault").write_text("")
        assert dropped, "the gate never checked the container"
        assert doc["outcome"] == "succeeded" and code == 0, (doc, err)
        assert "missing" not in json.dumps(doc)
        assert d.run("lock", "status").out.strip().endswith("unlocked")  # type: ignore[attr-defined]
        status, body = poll_get(d, '"version": "5-slow"')
        assert status == 200, body
    finally:
        (bindir / "fault").write_text("")
        cleanup_deploy_dir(d)


def test_row_trickling_webhook(fault_host: tuple[SSHHost, Path], notes_builds: NotesBuilds,
                               tmp_path: Path) -> None:
    """A webhook that answers a byte every 2 s: the deploy ends within the notifications'
    deadline after its record and unlock; SIGTERM during the notifying ends it at once."""
    import socket
    import threading

    host, _ = fault_host
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100:
                if stop.is_set():
                    return
                conn.sendall(bytes([byte]))
                time.sleep(2)

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    d = make_deploy_dir(tmp_path / "deploy", notes_builds, host)
    try:
        port = srv.getsockname()[1]
        d.config(notify=f"notify:\n  - webhook: http://127.0.0.1:{port}/hook\n")
        start = time.monotonic()
        doc, code, err = _run_deploy(d, "v1")
        assert doc["outcome"] == "succeeded" and code == 0, (doc, err)
        assert "did not answer within" in err, err
        took_plain = time.monotonic() - start

        proc = _deploy_proc(d, "v2")
        assert proc.stdout is not None and proc.stderr is not None
        while True:  # the record is written and the lock released before notifying
            records = d.host_records()
            if records and records[-1].get("tag") == d.builds.versions["v2"].tag:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.5)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - signalled < 3, err
        assert json.loads(out)["outcome"] == "succeeded", err
        assert d.run("lock", "status").out.strip().endswith("unlocked")  # type: ignore[attr-defined]
        assert took_plain < 60
    finally:
        stop.set()
        srv.close()
        cleanup_deploy_dir(d)


TRICKLE_HEALTH = (
    "import os, socket, threading, time\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('', int(os.environ['PORT']))); s.listen(16)\n"
    "def answer(c):\n"
    "    try:\n"
    "        c.recv(65536)\n"
    "        for b in b'HTTP/1.1 200 OK\\r\\nContent-Length: 1000\\r\\n\\r\\n' + b'x' * 1000:\n"
    "            c.sendall(bytes([b])); time.sleep(1)\n"
    "    except OSError:\n"
    "        pass\n"
    "while True:\n"
    "    c, _ = s.accept(); threading.Thread(target=answer, args=(c,), daemon=True).start()\n"
)


def test_row_slow_health(fault_host: tuple[SSHHost, Path], notes_builds: NotesBuilds,
                         tmp_path: Path) -> None:
    """A version whose /health answers a byte a second: each attempt ends at
    health.timeout (2 s), the gate within attempts x (timeout + interval) plus its container
    checks, and the previous version is restored."""
    host, _ = fault_host
    d = make_deploy_dir(tmp_path / "deploy", notes_builds, host)
    try:
        d.config(attempts="16")  # v1 starts within 4 s even under load
        assert d.run("deploy", d.builds.ref("v1")).code == 0  # type: ignore[attr-defined]
        d.config(attempts="3")
        # v2's image with a command that serves /health a byte a second (app.command)
        command = json.dumps(["python3", "-c", TRICKLE_HEALTH])
        text = (d.path / "plainsail.yml").read_text().replace(
            "  network: host\n", f"  network: host\n  command: {command}\n")
        (d.path / "plainsail.yml").write_text(text)
        doc, code, err = _run_deploy(d, "v2")
        assert doc["outcome"] == "failed-health-restored" and code == 1, (doc, err)
        gate = next(s for s in d.host_records()[-1]["steps"]  # type: ignore[union-attr]
                    if str(s["name"]).startswith("health:") and not s["ok"])
        assert float(gate["seconds"]) < 3 * (2 + 0.25) + 3, gate
        assert "timed out" in str(doc["reason"]), doc["reason"]
        status, body = poll_get(d, '"version": "1"')
        assert status == 200 and '"version": "1"' in body
    finally:
        cleanup_deploy_dir(d)


def start_paused(d: DeployDir, bindir: Path, at: str, *args: str) -> subprocess.Popen[str]:
    """`plainsail ARGS --json` with the first host command of this service starting with
    `at` paused 6 s on the host."""
    (bindir / "paused").unlink(missing_ok=True)
    (bindir / "seen").unlink(missing_ok=True)
    (bindir / "fault").write_text(f"pause6 {d.service} {at}\n")
    return subprocess.Popen([sys.executable, "-m", "plainsail", *args, "--json"], cwd=d.path,
                            env={**os.environ, **d.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def sigterm_ends_interrupted(d: DeployDir, bindir: Path, proc: subprocess.Popen[str]) -> None:
    """SIGTERM while the paused command runs: `interrupted`, exit 130, the lock free, and
    the paused command done on the host."""
    signal_when_paused(proc, bindir, "SIGTERM")
    out, err = proc.communicate(timeout=120)
    (bindir / "fault").write_text("")
    assert "Traceback" not in out + err, out + err
    doc = json.loads(out)
    assert proc.returncode == 130 and doc["outcome"] == "interrupted", (doc, err)
    assert d.run("lock", "status").out.strip().endswith("unlocked")  # type: ignore[attr-defined]
    wait_until_unpaused(bindir)


def test_row_backup_create_sigterm_and_sigkill(fault_host: tuple[SSHHost, Path],
                                               notes_builds: NotesBuilds, pgclient_image: str,
                                               tmp_path: Path) -> None:
    """`backup create` signalled while pg_dump runs on the host. SIGTERM: `interrupted`
    (exit 130), recorded, the lock released, nothing of the backup left. SIGKILL: the lock
    stays (INTERRUPTED); `recover` removes what the backup left under it, records the
    attempt and releases the lock; the app, never touched, serves throughout."""
    host, bindir = fault_host
    d = make_deploy_dir(tmp_path / "deploy", notes_builds, host)

    try:
        d.config(extra=f"backup:\n  before: never\n  keep: 3\n  image: {pgclient_image}\n")
        assert d.run("deploy", d.builds.ref("v1")).code == 0  # type: ignore[attr-defined]
        whole = d.run("backup", "create", "--json")  # type: ignore[attr-defined]
        assert whole.code == 0, whole.text

        sigterm_ends_interrupted(d, bindir, start_paused(d, bindir, "docker run --user",
                                                         "backup", "create"))
        assert_no_unfinished_backup(d)
        records = d.host_records()
        assert [(r.get("kind"), r["outcome"]) for r in records][-1] == ("backup-create",
                                                                        "interrupted")

        proc = start_paused(d, bindir, "docker run --user", "backup", "create")
        signal_when_paused(proc, bindir, "SIGKILL")
        proc.wait(timeout=60)
        (bindir / "fault").write_text("")
        assert proc.returncode == -signal.SIGKILL
        wait_until_unpaused(bindir)  # the dump went on without its deployer, and finished
        lock = d.run("lock", "status").out  # type: ignore[attr-defined]
        assert "INTERRUPTED" in lock, lock
        r = d.run("recover")  # type: ignore[attr-defined]
        assert r.code == 0, r.text
        assert "removed what the interrupted backup left" in r.text, r.text
        assert d.run("lock", "status").out.strip().endswith("unlocked")  # type: ignore[attr-defined]
        assert_no_unfinished_backup(d)
        outcomes = [(r.get("kind"), r["outcome"]) for r in d.host_records()]
        assert outcomes[-2:] == [("backup", "interrupted"), ("recover", "recovered")], outcomes
        listed = json.loads(d.run("backup", "list", "--json").out)["backups"]  # type: ignore[attr-defined]
        assert [b["id"] for b in listed] == [json.loads(whole.out)["id"]]  # type: ignore[attr-defined]
        status, body = poll_get(d, '"version": "1"')
        assert status == 200 and '"version": "1"' in body
    finally:
        (bindir / "fault").write_text("")
        cleanup_deploy_dir(d)


def test_row_restore_in_place_sigterm_and_sigkill(fault_host: tuple[SSHHost, Path],
                                                  notes_builds: NotesBuilds,
                                                  pgclient_image: str,
                                                  tmp_path: Path) -> None:
    """`backup restore --in-place` signalled. SIGTERM while the app is being stopped:
    `interrupted` (exit 130), the database as it was, the app serving, the lock free.
    SIGKILL while the restore's container is about to start: the lock (kind restore) stays
    with the app stopped; `recover` removes the restore's container, puts the last good
    version back and releases the lock."""
    host, bindir = fault_host
    d = make_deploy_dir(tmp_path / "deploy", notes_builds, host)

    try:
        d.config(extra=f"backup:\n  before: never\n  keep: 3\n  image: {pgclient_image}\n")
        assert d.run("deploy", d.builds.ref("v1")).code == 0  # type: ignore[attr-defined]
        d.db.query("INSERT INTO notes (text) VALUES ('before')")
        made = d.run("backup", "create", "--json")  # type: ignore[attr-defined]
        assert made.code == 0, made.text
        bid = json.loads(made.out)["id"]  # type: ignore[attr-defined]
        d.db.query("INSERT INTO notes (text) VALUES ('after')")

        restore = ("backup", "restore", bid, "--in-place", "--yes")
        sigterm_ends_interrupted(d, bindir, start_paused(d, bindir, "docker stop", *restore))
        assert d.db.query("SELECT string_agg(text, ',' ORDER BY id) FROM notes") == \
            "before,after"
        status, body = poll_get(d, '"version": "1"')
        assert status == 200 and '"version": "1"' in body, body

        proc = start_paused(d, bindir, "docker run --user", *restore)
        signal_when_paused(proc, bindir, "SIGKILL")
        proc.wait(timeout=60)
        (bindir / "fault").write_text("")
        assert proc.returncode == -signal.SIGKILL
        assert "INTERRUPTED" in d.run("lock", "status").out  # type: ignore[attr-defined]
        r = d.run("recover")  # type: ignore[attr-defined]
        assert r.code == 0, r.text
        wait_until_unpaused(bindir)
        assert d.run("lock", "status").out.strip().endswith("unlocked")  # type: ignore[attr-defined]
        outcomes = [(x.get("kind"), x["outcome"]) for x in d.host_records()]
        assert outcomes[-2:] == [("restore", "interrupted"), ("recover", "recovered")], outcomes
        left = d.host_run("docker", "ps", "-aq", "--filter", "label=dev.plainsail.role=backup",
                          "--filter", f"label=dev.plainsail.service={d.service}").stdout
        assert not left.strip()
        status, body = poll_get(d, '"version": "1"')
        assert status == 200 and '"version": "1"' in body, body
        # The restore never ran whole: its container was removed before it started (the
        # paused `docker run` then found it gone or was cut), or it ran in one transaction.
        assert d.db.query("SELECT string_agg(text, ',' ORDER BY id) FROM notes") in (
            "before,after", "before")
    finally:
        (bindir / "fault").write_text("")
        cleanup_deploy_dir(d)
