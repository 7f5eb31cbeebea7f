"""Swarm's own health check of each task (swarm/healthcheck.py): derived from health.*, run
by the image's HTTP client, kept out of the way of an image's HEALTHCHECK, put back with the
previous spec; a release failing it stops the update (and a first release fails fast). The
script itself runs here with each client against a real HTTP server; the real Swarm tests
(tests/test_swarm_traffic.py) run it inside tasks."""

from __future__ import annotations

import http.server
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from plainsail.deploy.outcomes import RESTORED, SUCCEEDED
from plainsail.swarm import healthcheck
from plainsail.swarm import service as svc
from plainsail.swarm.healthcheck import Health
from tests.test_swarm_engine import V1, V2, Bench

BODY = '"status": "ok"'  # what the fake tasks answer


def create(b: Bench) -> list[str]:
    return next(a for a in b.fake.log if a[1:3] == ["service", "create"])


def last_update(b: Bench) -> list[str]:
    return [a for a in b.fake.log if a[1:3] == ["service", "update"]][-1]


def test_a_first_deploy_sets_a_check_asking_what_the_gate_asks(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    b.cfg = replace(b.cfg, health=replace(b.cfg.health, body_contains=BODY))
    s = b.deploy(V1)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    argv = create(b)
    cmd = shlex.split(argv[argv.index("--health-cmd") + 1])
    assert cmd == ["/bin/sh", healthcheck.HEALTH_PATH, "python3",
                   "http://127.0.0.1:8080/health", "200", BODY, "1"]
    assert argv[argv.index("--health-interval") + 1] == "0.01s"
    assert argv[argv.index("--health-start-period") + 1] == "0.02s"  # attempts x interval
    assert argv[argv.index("--health-retries") + 1] == "3"
    assert f"source={healthcheck.config_name()},target={healthcheck.HEALTH_PATH},mode=0555" \
        in argv
    assert b.fake.configs[healthcheck.config_name()] == healthcheck.HEALTH_SCRIPT
    assert s["healthcheck"] == {"source": "plainsail", "client": "python3", "every": "0.01s"}
    c = b.fake.container_spec()
    assert c["Healthcheck"]["Test"][0] == "CMD-SHELL" and c["Healthcheck"]["Retries"] == 3


def test_an_images_own_healthcheck_is_kept_and_plainsails_removed(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    b.fake.image_config = {**b.fake.image_config,
                           "Healthcheck": {"Test": ["CMD", "/bin/app", "check"]}}
    b.fake.log.clear()
    s = b.deploy(V2)
    assert s["outcome"] == SUCCEEDED and s["healthcheck"] == {"source": "image"}
    argv = last_update(b)
    assert argv[argv.index("--health-cmd") + 1] == ""  # the image's own applies again
    assert f"{healthcheck.config_name()}" == argv[argv.index("--config-rm") + 1]
    c = b.fake.container_spec()
    assert c["Healthcheck"]["Test"] is None
    assert [x["File"]["Name"] for x in c["Configs"]] == [svc.ENTRY_PATH]
    assert not any(healthcheck.CLIENT_SCRIPT in a for a in b.fake.log)


def test_an_image_without_a_client_gets_no_check_and_the_deploy_says_so(
        tmp_path: Path) -> None:
    b = Bench(tmp_path)
    b.fake.image_client = ""
    s = b.deploy(V1)
    assert s["outcome"] == SUCCEEDED and s["healthcheck"] == {"source": "none"}
    assert "--health-cmd" not in create(b)
    assert any("none of curl, wget, python3, node" in line for line in b.lines), b.lines


def test_healthcheck_false_sets_none(tmp_path: Path) -> None:
    b = Bench(tmp_path, swarm="target: swarm\nswarm:\n  manager: ssh://deploy@manager-1\n"
              "  replicas: 3\n  update: {order: stop-first}\n  healthcheck: false\n")
    s = b.deploy(V1)
    assert s["outcome"] == SUCCEEDED and s["healthcheck"] == {"source": "off"}
    assert "--health-cmd" not in create(b)
    assert not any(healthcheck.CLIENT_SCRIPT in a for a in b.fake.log)


def test_a_release_failing_swarms_check_pauses_the_update_and_is_put_back(
        tmp_path: Path) -> None:
    b = Bench(tmp_path)
    assert b.deploy(V1)["outcome"] == SUCCEEDED
    before = b.fake.container_spec()["Healthcheck"]
    b.fake.healthy_image = lambda image: V2.digest not in image
    s = b.deploy(V2)
    assert s["outcome"] == RESTORED, s["reason"]
    assert "update is paused" in s["reason"]
    assert b.fake.image.endswith(V1.digest) and b.fake.container_spec()["Healthcheck"] == before


def test_a_first_release_failing_swarms_check_fails_at_once(tmp_path: Path) -> None:
    """Swarm restarts a new service's unhealthy task for ever (there is no update to pause):
    plainsail stops waiting at the first failed task and removes the service."""
    b = Bench(tmp_path)
    b.fake.healthy_image = lambda image: False
    s = b.deploy(V1)
    assert s["outcome"] == RESTORED and "nothing ran before" in s["reason"], s["reason"]
    assert "stopped by Swarm's health check of /health" in s["reason"]
    assert "unhealthy container" in s["reason"] and b.fake.spec is None


def test_dry_run_shows_the_client_lookup_and_the_check(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    b.deploy(V1, dry_run=True)
    text = "\n".join(b.lines)
    client = next(line for line in b.lines if line.strip().startswith("http-client:"))
    assert "docker run --rm --network none --entrypoint /bin/sh" in client
    assert "health-script:" in text and healthcheck.config_name() in text
    assert "--health-cmd" in text and "CLIENT" in text


@pytest.mark.parametrize(("health", "update", "expected"), [
    (None, False, []),
    (None, True, ["--health-cmd", "", "--health-interval", "0s", "--health-timeout", "0s",
                  "--health-start-period", "0s", "--health-retries", "0"]),
    (Health(("NONE",)), True, ["--no-healthcheck"]),
    (Health(("CMD", "/bin/app", "check me")), False,
     ["--health-cmd", "/bin/app 'check me'", "--health-interval", "0s", "--health-timeout",
      "0s", "--health-start-period", "0s", "--health-retries", "0"]),
])
def test_args_set_every_part_of_a_check(health: Health | None, update: bool,
                                        expected: list[str]) -> None:
    assert healthcheck.args(health, update=update) == expected


def test_a_check_round_trips_through_docker_inspect() -> None:
    h = Health(("CMD-SHELL", "/bin/sh /plainsail-health.sh curl http://x/ 200 '' 2"),
               interval=1.0, timeout=3.0, start_period=30.0, retries=3)
    inspected = {"Healthcheck": {"Test": list(h.test or ()), "Interval": 1_000_000_000,
                                 "Timeout": 3_000_000_000, "StartPeriod": 30_000_000_000,
                                 "Retries": 3}}
    assert healthcheck.parse(inspected) == h and h.ours
    assert healthcheck.parse({}) is None


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        code = {"/ok": 200, "/bad": 500, "/down": 200}.get(self.path, 404)
        body = b'{"status": "ok"}' if self.path == "/ok" else b'{"status": "down"}'
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


@pytest.mark.parametrize("client", healthcheck.CLIENTS)
@pytest.mark.parametrize(("path", "healthy", "says"), [
    ("/ok", True, "status 2"), ("/bad", False, "500"),
    ("/down", False, "lacks the expected text"), ("/missing", False, "404")])
def test_the_script_judges_an_answer_as_the_gate_does(
        tmp_path: Path, server: int, client: str, path: str, healthy: bool,
        says: str) -> None:
    env = dict(os.environ)
    if client == "nc" and shutil.which("nc") is None and shutil.which("busybox"):
        (tmp_path / "bin").mkdir()  # busybox's nc, as in a busybox or alpine image
        (tmp_path / "bin" / "nc").symlink_to(str(shutil.which("busybox")))
        env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
    elif shutil.which(client) is None:
        pytest.skip(f"{client} is not installed here")
    script = tmp_path / "health.sh"
    script.write_text(healthcheck.HEALTH_SCRIPT)
    cfg = Bench(tmp_path).cfg
    cmd = healthcheck.wanted(replace(cfg, health=replace(cfg.health, body_contains=BODY)),
                             client)
    assert cmd.test is not None
    argv = shlex.split(cmd.test[1])
    argv[1] = str(script)
    argv[3] = f"http://127.0.0.1:{server}{path}"
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False,
                         env=env)
    assert (res.returncode == 0) is healthy, (res.stdout, res.stderr)
    if client == "wget" and says in ("500", "404"):
        says = "no 2xx answer"  # wget fails on any status outside 2xx
    assert says in res.stdout and BODY not in res.stdout  # the status, never the body



def test_a_first_release_waits_out_a_task_error_that_is_swarms_to_retry(
        tmp_path: Path) -> None:
    """A task of a new service rejected for a reason of the cluster's (a node not ready for
    the new overlay network yet) is Swarm's to retry: the deploy keeps waiting."""
    b = Bench(tmp_path)
    b.fake.tasks.append({"ID": "task-early", "NodeID": "node2", "ip": "",
                         "DesiredState": "shutdown", "address": "",
                         "Status": {"State": "rejected", "Err": "starting container failed: "
                                    "network plainsail not found"},
                         "Spec": {"ContainerSpec": {"Image": "x", "Labels": {}}}})
    b.fake.lazy = True  # the first look finds no task running yet
    s = b.deploy(V1)
    assert s["outcome"] == SUCCEEDED, s["reason"]
    assert any(a[1:3] == ["service", "ps"] for a in b.fake.log)  # the failed tasks were read
