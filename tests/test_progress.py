"""Progress of long steps: the reporter interface, its two renderers (one updating line on
a terminal, one line per event elsewhere), streamed command output, and a failed build's
evidence. No Docker: the build's real run is in tests/test_build.py."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from plainsail import output
from plainsail.errors import RemoteError
from plainsail.hosts.addresses import Host
from plainsail.hosts.executor import LocalExecutor
from plainsail.progress import Recording
from plainsail.secret import Secret
from plainsail.supply.build import BuildSteps, build_failure


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_mode_prints_one_line_per_event_and_redacts() -> None:
    Secret("tok-123456789")
    out = io.StringIO()
    p = output.LineProgress(out)
    p.update("build", "step 1/3: FROM scratch")
    p.update("build", "step 1/3: FROM scratch")  # a repeat says nothing new
    p.update("gate web-1", "attempt 1/5: answered 503 tok-123456789")
    p.done("build", "built in 2.0s")
    p.done("gate web-1")
    assert out.getvalue().splitlines() == [
        "[build] step 1/3: FROM scratch", "[gate web-1] attempt 1/5: answered 503 ***",
        "[build] built in 2.0s"]


def test_terminal_mode_rewrites_one_line_and_other_output_clears_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    tty = Tty()
    monkeypatch.setattr(sys, "stdout", tty)
    p = output.LiveProgress(tty)
    p.MIN_INTERVAL = 0.0
    p.update("pull web-1", "2 layer(s)")
    p.update("pull web-2", "1 layer(s)")
    assert tty.getvalue().endswith("\r\x1b[K[pull web-1] 2 layer(s)  [pull web-2] 1 layer(s)")
    assert "\n" not in tty.getvalue()
    output.say("[web-1] lock: ok")  # clears the live line first
    assert tty.getvalue().endswith("\r\x1b[K[web-1] lock: ok\n")
    p.done("pull web-1", "pulled")
    assert tty.getvalue().endswith("[pull web-1] pulled\n\r\x1b[K[pull web-2] 1 layer(s)")
    p.done("pull web-2")
    assert tty.getvalue().endswith("\r\x1b[K")


def test_the_renderer_follows_the_terminal_and_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", Tty())
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    assert isinstance(output.progress(), output.LiveProgress)
    monkeypatch.setenv("CI", "true")
    assert isinstance(output.progress(), output.LineProgress)
    monkeypatch.delenv("CI")
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert isinstance(output.progress(), output.LineProgress)


def test_streamed_output_arrives_line_by_line_in_order(tmp_path: Path) -> None:
    ex = LocalExecutor(Host("local"))
    seen: list[str] = []
    res = ex.run(["sh", "-c", "echo one; echo two >&2; printf 'three\\rfour'; echo"],
                 on_line=seen.append)
    assert seen == ["one", "two", "three", "four"]
    assert res.ok and "two" in res.stdout and res.stderr == ""
    with pytest.raises(RemoteError) as info:
        ex.run(["sh", "-c", "echo started; sleep 5"], timeout=0.5, on_line=seen.append,
               what="slow")
    assert "did not finish within 0.5s" in str(info.value) and "started" in seen
    with pytest.raises(RemoteError) as info:
        ex.run(["sh", "-c", "echo oops >&2; exit 3"], on_line=seen.append)
    assert info.value.returncode == 3 and "oops" in str(info.value)


LEGACY = """Sending build context to Docker daemon  3.072kB
Step 1/4 : FROM scratch
 --->
Step 2/4 : COPY busybox /bin/busybox
 ---> 1f2e3d4c5b6a
Step 3/4 : RUN make
 ---> Running in 0a1b2c3d4e5f
cc -o app main.c
main.c:1:10: fatal error: foo.h: No such file or directory
make: *** [app] Error 1 (token tok-123456789)
The command '/bin/sh -c make' returned a non-zero code: 2""".splitlines()

BUILDKIT = """#1 [internal] load build definition from Dockerfile
#5 [1/3] FROM docker.io/library/python:3.12
#6 [2/3] COPY . .
#7 [3/3] RUN pip install .
#7 0.51 ERROR: Could not find a version that satisfies the requirement nope
#7 ERROR: process "/bin/sh -c pip install ." did not complete successfully: exit code: 1"""


@pytest.mark.parametrize("lines,step,telling", [
    (LEGACY, "3/4: RUN make", "make: *** [app] Error 1 (token ***)"),
    (BUILDKIT.splitlines(), "3/3: RUN pip install .",
     '#7 ERROR: process "/bin/sh -c pip install ." did not complete successfully: exit '
     'code: 1'),
])
def test_a_failed_build_names_its_step_and_shows_its_last_lines(
        lines: list[str], step: str, telling: str) -> None:
    secret = Secret("tok-123456789")
    rec = Recording()
    steps = BuildSteps(rec)
    for line in lines:
        steps(line)
    assert rec.texts("build")[-1] == f"step {step}"
    err = build_failure(RemoteError("x", returncode=2, output_tail="\n".join(lines)), steps,
                        [secret])
    first, *evidence = str(err).splitlines()
    assert first.startswith(f"docker build failed at step {step} (exit 2): ")
    assert first.endswith("; nothing was pushed")
    assert telling in first
    assert evidence and all(line.startswith("  | ") for line in evidence)
    assert "tok-123456789" not in str(err)
    if lines is LEGACY:
        assert evidence[-2:] == ["  | make: *** [app] Error 1 (token ***)",
                                 "  | The command '/bin/sh -c make' returned a non-zero code: 2"]


def test_a_deploy_reports_its_pull_and_health_gate_as_they_go(tmp_path: Path) -> None:
    from plainsail.deploy.plan import Request
    from plainsail.deploy.run import Deploy
    from tests.test_engine import TARGETS, V1, Bench

    b = Bench(tmp_path)
    answers = iter([False])
    b.fake.healthy = lambda c: next(answers, True)
    rec = Recording()
    s = Deploy(b.cfg, Request(ref=f"{V1.tag}@{V1.digest}"), b.lines.append,
               environ=dict(b.env), executors={b.fake.host.name: b.fake.executor()},
               resolve=lambda cfg, r: TARGETS[V1.tag], progress=rec).run()
    assert s["outcome"] == "succeeded"
    pull, gate = f"pull {b.fake.host.name}", f"gate {b.fake.host.name}"
    assert rec.texts(pull) == [f"pulling {V1.tag}", f"pulling {V1.tag}: 1 layer(s) done",
                               f"pulling {V1.tag}: 2 layer(s) done", ""]
    assert [t.split(" (")[0] for t in rec.texts(gate)] == [
        "waiting for /health: attempt 1/2, answered 500",
        "waiting for /health: attempt 2/2, answered 200", ""]
    assert ("done", gate, "") in rec.events and ("done", pull, "") in rec.events


# ---------------------------------------------------------------- the deploy's reporter


def test_in_ci_one_line_per_host_event() -> None:
    out = io.StringIO()
    r = output.EventLines(out)
    r.step("web-1", "pull")  # the start of a step is the live view's, not a line
    r.update("pull web-1", "pulling v2")
    r.update("pull web-1", "pulling v2")
    r.say("pull: ok (0.4s)", "web-1")
    r.say("batch 2 of 2: web-2", "rollout")
    r.done("gate web-2", "healthy")
    r.host_done("web-1", "succeeded")
    r.flush()
    assert out.getvalue().splitlines() == [
        "[pull web-1] pulling v2", "[web-1] pull: ok (0.4s)",
        "[rollout] batch 2 of 2: web-2", "[gate web-2] healthy"]


def test_in_github_actions_each_host_is_a_group_shown_when_a_phase_ends() -> None:
    Secret("tok-123456789")
    out = io.StringIO()
    r = output.EventLines(out, grouped=True)
    r.say("lock+env: ok (0.1s)", "web-1")
    r.say("lock+env: ok (0.2s)", "web-2")
    r.update("pull web-1", "pulling v2 tok-123456789")
    r.say("verifying the image")  # about no host: at once
    assert out.getvalue() == "verifying the image\n"
    r.flush()
    assert out.getvalue().splitlines()[1:] == [
        "::group::web-1", "[web-1] lock+env: ok (0.1s)", "[pull web-1] pulling v2 ***",
        "::endgroup::",
        "::group::web-2", "[web-2] lock+env: ok (0.2s)", "::endgroup::"]
    r.flush()  # nothing held: nothing shown
    assert out.getvalue().count("::group::") == 2


def test_on_a_terminal_a_live_view_shows_each_hosts_step_and_elapsed_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    tty = Tty()
    monkeypatch.setattr(sys, "stdout", tty)
    now = [100.0]
    view = output.HostsView(tty, clock=lambda: now[0])
    view.TICK = 3600  # no redraws but the ones the events cause
    view.step("web-1", "pull")
    view.step("web-10", "lock+env")
    now[0] = 102.5
    view.update("pull web-1", "pulling v2: 1 layer(s) done")
    assert view.lines() == ["web-1   pull             2.5s  pulling v2: 1 layer(s) done",
                            "web-10  lock+env         2.5s"]
    # an event line goes above the view, which is drawn again under it
    view.say("lock+env: ok (0.1s)", "web-10")
    screen = tty.getvalue()
    assert screen.endswith("\r\x1b[1A\x1b[J[web-10] lock+env: ok (0.1s)\n"
                           "web-1   pull             2.5s  pulling v2: 1 layer(s) done\n"
                           "web-10  lock+env         2.5s")
    view.host_done("web-10", "succeeded")
    assert view.lines()[1] == "web-10  succeeded"
    output.say("the summary")  # other output clears the view first
    assert tty.getvalue().endswith("\r\x1b[1A\x1b[J" + "the summary\n")


def test_the_deploy_reporter_follows_the_terminal_and_ci(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(sys, "stdout", Tty())
    assert type(output.reporter({"TERM": "xterm"})) is output.HostsView
    assert type(output.reporter({"TERM": "xterm", "CI": "true"})) is output.EventLines
    gha = output.reporter({"TERM": "xterm", "CI": "true", "GITHUB_ACTIONS": "true"})
    assert isinstance(gha, output.EventLines) and gha.grouped
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert type(output.reporter({"TERM": "xterm"})) is output.EventLines


def test_a_deploy_reports_every_host_step_through_the_one_reporter(tmp_path: Path) -> None:
    from plainsail.deploy.plan import Request
    from plainsail.deploy.run import Deploy
    from tests.test_engine import V1, Bench

    b = Bench(tmp_path, nhosts=2)
    rec = Recording()
    d = Deploy(b.cfg, Request(ref=f"{V1.tag}@{V1.digest}"), rec, environ=dict(b.env),
               executors={f.host.name: f.executor() for f in b.fakes},
               resolve=lambda cfg, r: V1)
    assert d.run()["outcome"] == "succeeded"
    for run in d.runs:
        host = run.host.name
        assert [t for kind, k, t in rec.events if kind == "step" and k == host] == [
            s.name for s in run.plan.steps]
        assert ("host_done", host, "succeeded") in rec.events
        assert any(line.startswith("start-new: ok") for line in rec.said(host))
    assert ("warn", "", "schema gate skipped: nothing runs yet, so no version can be "
            "broken") in rec.events
    assert ("flush", "", "") in rec.events
    assert b.lines == []  # nothing went anywhere else


def test_a_late_certificate_found_by_the_check_through_the_proxy_is_told_as_a_warning(
        tmp_path: Path) -> None:
    """The proxy's check returns its warnings; the deploy tells them through its reporter
    (no library module writes to the terminal)."""
    from plainsail.deploy.plan import Request
    from plainsail.deploy.run import Deploy
    from tests.test_engine import V1, ProxyBench

    b = ProxyBench(tmp_path)
    late = "web-1: the certificate of api.test expires in 5 days and was not renewed"
    b.proxy.check_through = lambda *a, **k: [late]  # type: ignore[method-assign]
    rec = Recording()
    d = Deploy(b.cfg, Request(ref=f"{V1.tag}@{V1.digest}"), rec, environ=dict(b.env),
               executors={f.host.name: f.executor() for f in b.fakes},
               resolve=lambda cfg, r: V1, proxy=b.proxy)
    assert d.run()["outcome"] == "succeeded"
    assert ("warn", "", late) in rec.events
