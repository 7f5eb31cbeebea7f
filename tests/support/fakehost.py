"""A fake host for unit tests of the deploy engine: a small in-memory Docker engine and
file system behind the Executor interface, with faults that can be injected per command.

It understands exactly the argv lists plainsail builds (docker ps/inspect/run/stop/start/
rm/rename/logs/pull/network inspect, and the fixed `sh -c` scripts of the host state), so
every branch of a deploy or rollback runs in milliseconds without Docker or SSH. The
integration tests run the same code against a real sshd and a real Docker Engine.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from plainsail.backup import host as backuphost
from plainsail.backup import restore as restorelib
from plainsail.deploy import hostregistry
from plainsail.errors import RemoteError
from plainsail.hosts import state as hoststate
from plainsail.hosts.addresses import parse_host
from plainsail.hosts.executor import Executor, Result, write_file_argv

_ids = itertools.count(1)
_clock = itertools.count(1)


@dataclass
class FakeContainer:
    name: str
    id: str
    image: str
    labels: dict[str, str]
    env: str
    status: str = "running"
    created: str = ""
    ip: str = ""
    restarts: int = 0
    logs: list[str] = field(default_factory=list)


@dataclass
class Fault:
    """What happens when a matching command runs: fail (exit 1), timeout, drop (SSH lost,
    exit 255), crash (an unexpected exception), or signal (SIGTERM arrives)."""

    kind: str
    times: int = 1  # how many matching commands it hits (0: every one)
    message: str = "injected failure"


class FakeHost:
    """One host's state: containers, networks, files and directories."""

    def __init__(self, name: str = "ssh://deploy@web-1", home: str = "/home/deploy") -> None:
        self.host = parse_host(name)
        self.home = home
        self.docker_version = "20.10.24"
        self.containers: dict[str, FakeContainer] = {}
        self.networks = {"bridge", "host", "none"}
        self.files: dict[str, str] = {}
        self.dirs: set[str] = set()
        self.readonly: set[str] = set()  # path prefixes where writes fail
        self.images: set[str] = set()
        # Ports held by others than the deployed service: "listen" (a program) or the id
        # of a container publishing it.
        self.taken_ports: dict[int, str] = {}
        # Labels of images by digest (e.g. the revision label), which Docker copies onto
        # every container of the image.
        self.image_labels: dict[str, dict[str, str]] = {}
        self.faults: dict[str, Fault] = {}
        self.log: list[list[str]] = []  # every argv run, in order
        self.migrate_exit = 0
        self.tables = {"public.notes": 3}  # what a backup of the database finds
        self.restored: list[str] = []  # the dumps restored
        self.migrate_output = "applied 0001_init.sql"
        # Is the app in this container healthy? Default: running is healthy.
        self.healthy: Callable[[FakeContainer], bool] = lambda c: True
        # What an app container writes to its log (docker logs), unless its `logs` are set.
        self.app_logs: Callable[[FakeContainer], list[str]] = lambda c: []
        self.executors: list[FakeExecutor] = []

    def executor(self, secrets: Sequence[Any] = ()) -> FakeExecutor:
        ex = FakeExecutor(self, secrets)
        self.executors.append(ex)
        return ex

    def fail(self, step: str, kind: str = "fail", times: int = 1, message: str = "") -> None:
        self.faults[step] = Fault(kind, times, message or f"injected {kind} in {step}")

    def running(self) -> list[str]:
        return sorted(c.name for c in self.containers.values() if c.status == "running")

    def container_of(self, address: str) -> FakeContainer | None:
        """The running container an address reaches: its own IP, or (a published port or
        the host network, on 127.0.0.1) the newest running one."""
        running = [c for c in self.containers.values() if c.status == "running"]
        if address == "127.0.0.1":
            return max(running, key=lambda c: c.created, default=None)
        return next((c for c in running if c.ip == address), None)

    def history(self, service: str) -> list[dict[str, Any]]:
        text = self.files.get(f"{self.home}/.plainsail/{service}/history.jsonl", "")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def locked(self, service: str) -> bool:
        return f"{self.home}/.plainsail/{service}/lock" in self.dirs


# The fixed scripts plainsail runs on hosts, by the step name faults are keyed by.
SCRIPTS = {
    hoststate.HOME_AND_DOCKER[2]: "probe",
    hoststate.SURVEY: "survey",
    hoststate.ACQUIRE_ARGV: "lock",
    hoststate.LOCK_AND_WRITE: "lock+env",
    hoststate.READ_LOCK: "read-lock",
    hoststate.RELEASE_ANY: "unlock",
    hoststate.RELEASE_OWN: "unlock",
    hoststate.APPEND_ARGV: "history",
    hoststate.READ_HISTORY: "read-history",
    write_file_argv("x")[2]: "env",
    hostregistry.START_SCRIPT: "host-registry",
    backuphost.TAKE_SCRIPT: "backup",
    backuphost.KEEP_SCRIPT: "backup-keep",
    backuphost.LIST_SCRIPT: "backup-list",
    backuphost.CLEAN_UP: "backup-clean",
    backuphost.LEFTOVERS: "backup-leftovers",
    restorelib.CHECKED_RUN: "restore",
}


def step_of(argv: Sequence[str]) -> str:
    """The name a fault is keyed by: 'docker stop', 'docker run', 'migrate', 'lock', ..."""
    if argv[:2] == ["sh", "-c"]:
        return SCRIPTS.get(argv[2], "unknown script")
    if argv[:2] == ["docker", "run"]:
        return "docker run" if "--detach" in argv else "migrate"
    return " ".join(argv[:2])


class FakeExecutor(Executor):
    def __init__(self, fake: FakeHost, secrets: Sequence[Any] = ()) -> None:
        super().__init__(fake.host, secrets)
        self.fake = fake
        self.closed = False

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return list(argv) if self.host.is_local else ["ssh", self.host.name, "--", *argv]

    def close(self) -> None:
        self.closed = True

    def reach(self, host: str, port: int) -> tuple[str, int]:
        return host, port

    def http_get(self, host: str, port: int, path: str, timeout: float) -> tuple[int, str]:
        path.encode("ascii")  # as http.client does: a non-ASCII path cannot be sent
        c = self.fake.container_of(host)
        if c is None:
            raise ConnectionRefusedError("connection refused")
        return (200, '{"status": "ok"}') if self.fake.healthy(c) else (500, "db error")

    def run(self, argv: Sequence[str], *, timeout: float = 120.0, check: bool = True,
            input: str | None = None, what: str = "",
            on_line: Callable[[str], None] | None = None) -> Result:
        argv = list(argv)
        self.fake.log.append(argv)
        step = step_of(argv)
        fault = self.fake.faults.get(step)
        if fault is not None and step == "backup" and fault.kind != "fail":
            # The backup had begun on the host when plainsail gave up on it: its files are
            # there (a failing one removes them itself).
            folder, bid = argv[4], argv[5]
            for suffix in ("partial", "counts", "pid"):
                self.fake.files[f"{folder}/.{bid}.{suffix}"] = "unfinished"
        if fault is not None:
            if fault.times == 1:
                del self.fake.faults[step]
            elif fault.times > 1:
                fault.times -= 1
            if fault.kind == "timeout":
                raise RemoteError(f"{self.host.name}: {what or argv[0]} did not finish within "
                                  f"{timeout:g}s", host=self.host.name, argv=argv)
            if fault.kind == "crash":
                raise RuntimeError(fault.message)
            if fault.kind == "signal":  # a real SIGTERM, handled as the deployer handles it
                os.kill(os.getpid(), signal.SIGTERM)
        if fault is not None and fault.kind in ("fail", "drop"):
            code = 255 if fault.kind == "drop" else 1
            res = Result(argv, code, "", fault.message, 0.0)
        else:
            code, out, err = self._do(argv, input)
            res = Result(argv, code, out, err, 0.01)
        if on_line is not None:  # as the real executor streams: merged, line by line
            for line in (res.stdout + "\n" + res.stderr).splitlines():
                if line.strip():
                    on_line(line)
        if check and not res.ok:
            raise self.failure(res, what)
        return res

    # -- the fake engine
    def _do(self, argv: list[str], stdin: str | None) -> tuple[int, str, str]:
        f = self.fake
        if argv[:2] == ["sh", "-c"]:
            return self._script(argv[2], argv[4:], stdin or "")
        if argv[:2] == ["test", "-f"]:
            return (0, "", "") if argv[2] in f.files else (1, "", "")
        cmd = argv[1]
        if cmd == "version":
            return 0, f.docker_version, ""
        if cmd == "ps":
            label = argv[argv.index("--filter") + 1].split("=", 1)[1]
            key, _, value = label.partition("=")
            rows = [json.dumps({"ID": c.id, "Names": c.name}) for c in f.containers.values()
                    if c.labels.get(key) == value]
            return 0, "\n".join(rows), ""
        if argv[1:3] == ["container", "inspect"]:
            found = [self._inspect(n) for n in argv[3:]]
            if any(x is None for x in found):
                return 1, "[]", "Error: No such container"
            return 0, json.dumps(found), ""
        if cmd == "inspect" and "--format" in argv:  # the app's addresses
            c = self._get(argv[-1])
            return (0, c.ip + " ", "") if c else (1, "", "Error: No such object")
        if cmd == "network":
            return (0, argv[-1], "") if argv[-1] in f.networks else (
                1, "", f"Error: No such network: {argv[-1]}")
        if cmd == "pull":  # what docker pull prints without a terminal
            f.images.add(argv[-1])
            digest = argv[-1].split("@")[-1]
            return 0, (f"{digest[7:19]}: Pulling from acme\n0a1b2c3d4e5f: Pull complete\n"
                       f"1b2c3d4e5f6a: Already exists\nDigest: {digest}\n{digest}"), ""
        if cmd == "run":
            return self._run_container(argv)
        if cmd in ("stop", "start"):
            c = self._get(argv[-1])
            if c is None:
                return 1, "", f"Error: No such container: {argv[-1]}"
            c.status = "exited" if cmd == "stop" else "running"
            return 0, c.name, ""
        if cmd == "rename":
            c = self._get(argv[2])
            if c is None or argv[3] in f.containers:
                return 1, "", "Error: rename failed"
            del f.containers[c.name]
            c.name = argv[3]
            f.containers[c.name] = c
            return 0, "", ""
        if cmd == "rm":
            for n in [a for a in argv[2:] if not a.startswith("-")]:
                f.containers.pop(n, None)
            return 0, "", ""
        if cmd == "image":
            return 0, "", ""
        if cmd == "logs":
            c = self._get(argv[-1])
            lines = (c.logs or f.app_logs(c)) if c else []
            return (0, "\n".join(lines), "") if c else (1, "", "Error: No such container")
        return 127, "", f"fake host: unknown command {argv}"

    def _get(self, name: str) -> FakeContainer | None:
        return self.fake.containers.get(name) or next(
            (c for c in self.fake.containers.values() if c.id == name), None)

    def _inspect(self, name: str) -> dict[str, Any] | None:
        c = self._get(name)
        if c is None:
            return None
        return {"Name": "/" + c.name, "Id": c.id, "Created": c.created,
                "RestartCount": c.restarts,
                "Config": {"Labels": {**self.fake.image_labels.get(
                    c.image.partition("@")[2], {}), **c.labels}, "Image": c.image},
                "State": {"Status": c.status, "StartedAt": c.created}}

    def _run_container(self, argv: list[str]) -> tuple[int, str, str]:
        f = self.fake
        name = argv[argv.index("--name") + 1]
        if "--network" in argv and argv[argv.index("--network") + 1] not in f.networks:
            # As Docker 28's CLI says it: the reason, then a pointer to the help.
            net = argv[argv.index("--network") + 1]
            return 125, "", (f"docker: Error response from daemon: network {net} not found\n\n"
                             "Run 'docker run --help' for more information")
        env_file = argv[argv.index("--env-file") + 1] if "--env-file" in argv else None
        env = f.files.get(env_file, "") if env_file else ""
        if "--detach" not in argv:  # the migration container
            code = f.migrate_exit
            return code, f.migrate_output if code == 0 else "", (
                "" if code == 0 else f.migrate_output)
        if name in f.containers:
            return 125, "", f'Conflict. The container name "/{name}" is already in use'
        labels = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--label")
        image = next(a for a in argv if "@sha256:" in a)
        n = next(_ids)
        c = FakeContainer(name, f"{n:064x}", image, labels, env,
                          created=f"2026-01-01T00:00:{next(_clock):06d}Z", ip=f"10.0.0.{n}")
        f.containers[name] = c
        return 0, c.id, ""

    def _script(self, script: str, args: list[str], stdin: str) -> tuple[int, str, str]:
        f = self.fake
        step = SCRIPTS.get(script)
        path = args[0] if args else ""
        if step == "probe":
            return 0, f"{f.home}\n{f.docker_version}\n", ""
        if step == "survey":
            label, network = args[0], args[1]
            key, _, value = label.partition("=")
            found = [self._inspect(c.name) for c in f.containers.values()
                     if c.labels.get(key) == value]
            net = ("network: builtin" if not network else "network: ok"
                   if network in f.networks else "network: missing")
            port = "port: -"
            if len(args) > 2 and args[2]:
                # The service's running containers publish the port (the fake's only port).
                ours = [c.id for c in f.containers.values()
                        if c.labels.get(key) == value and c.status == "running"
                        and c.labels.get("dev.plainsail.role", "app") == "app"]
                other = f.taken_ports.get(int(args[2]))
                held = ours + ([other] if other and other != "listen" else [])
                port = f"port: {'yes' if held or other else 'no'} {' '.join(held)}"
            return 0, (f"{f.home}\n{f.docker_version}\n{net}\n{port}\n"
                       f"{json.dumps(found)}\n"), ""
        if step in ("read-lock", "read-history"):
            if step == "read-history":
                return 0, f.files.get(path, ""), ""
            if path not in f.dirs:
                return 3, "", ""
            return 0, f.files.get(f"{path}/info.json", ""), ""
        if any(path.startswith(p) for p in f.readonly):
            return 73, "", f"mkdir: cannot create directory '{path}': Read-only file system"
        if step in ("lock", "lock+env"):
            if path in f.dirs:
                return hoststate.LOCK_HELD, f.files.get(f"{path}/info.json", ""), ""
            f.dirs.add(path)
            f.files[f"{path}/info.json"] = stdin if step == "lock" else args[1]
            if step == "lock+env":
                f.files[args[2]] = stdin
            return 0, "", ""
        if step == "unlock":
            if path not in f.dirs:
                return 3, "", ""
            if len(args) > 1 and f'"deploy_id": "{args[1]}"' not in f.files.get(
                    f"{path}/info.json", ""):
                return 3, "", ""
            f.dirs.discard(path)
            f.files.pop(f"{path}/info.json", None)
            return 0, "", ""
        if step == "history":  # as APPEND_ARGV: a torn last line gets its line break first
            text = f.files.get(path, "")
            f.files[path] = text + ("\n" if text and not text.endswith("\n") else "") + stdin
            return 0, "", ""
        if step == "env":
            f.files[path] = stdin
            return 0, "", ""
        if step == "backup":
            import hashlib

            data = f"dump of {sorted(f.tables.items())}"
            f.files[f"{path}/{args[1]}.dump"] = data
            rows = "".join(f"{t}\t{n}\n" for t, n in f.tables.items())
            return 0, (f"size {len(data)}\nsha256 {hashlib.sha256(data.encode()).hexdigest()}"
                       f"\n{rows}"), ""
        if step == "backup-keep":
            f.files[f"{path}/{args[1]}.json"] = stdin
            dumps = sorted((k for k in f.files if k.startswith(path + "/")
                            and k.endswith(".dump")), reverse=True)
            gone = dumps[int(args[2]):]
            for k in gone:
                f.files.pop(k)
                f.files.pop(k.removesuffix(".dump") + ".json", None)
            return 0, "".join(k.rsplit("/", 1)[1].removesuffix(".dump") + "\n"
                              for k in gone), ""
        if step == "restore":  # the checksum matches, pg_restore succeeds
            self.fake.restored.append(path)
            return (0, "", "") if path in f.files else (66, "", f"{path} is missing")
        if step == "backup-clean":
            for suffix in ("partial", "counts", "pid"):
                f.files.pop(f"{path}/.{args[1]}.{suffix}", None)
            if f"{path}/{args[1]}.json" not in f.files:
                f.files.pop(f"{path}/{args[1]}.dump", None)
            return 0, "", ""
        if step == "backup-leftovers":
            gone = [k for k in f.files if k.startswith(path + "/") and (
                k.rsplit("/", 1)[1].startswith(".") or k.endswith(".dump")
                and k.removesuffix(".dump") + ".json" not in f.files)]
            for k in gone:
                f.files.pop(k)
            return 0, "".join(f"file {k.rsplit('/', 1)[1]}\n" for k in gone), ""
        if step == "backup-list":
            return 0, "".join(v.strip() + "\n" for k, v in sorted(f.files.items())
                              if k.startswith(path + "/") and k.endswith(".json")), ""
        if step == "host-registry":  # a host without docker-registry or registry.image
            return hostregistry.NO_REGISTRY, "", "this host has no docker-registry"
        return 127, "", f"fake host: unknown script {script!r}"


class FakeProxy:
    """Stands in for plainsail.proxy on fake hosts: one route per (host, service), and a
    log of every moment the route pointed at a container that was not running."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], str] = {}
        self.outages: list[str] = []
        # function name -> "fail" (ProxyError, once), "down" (ProxyError, every call) or
        # "crash" (an unexpected exception, once)
        self.faults: dict[str, str] = {}
        self.calls: list[str] = []
        self.maintenance: dict[tuple[str, str], str] = {}  # (host, service) -> message
        # traffic_gate: when the route pointed where ((host, service) -> [(time, container)]),
        # and how each container answers: container-name prefix -> (requests per second,
        # share of 5xx, seconds per answer); others answer 2,000/s, no 5xx, in 10 ms.
        self.route_log: dict[tuple[str, str], list[tuple[float, str]]] = {}
        self.answers: dict[str, tuple[float, float, float]] = {}
        # the same for one host only: host name -> {container-name prefix: answers}
        self.host_answers: dict[str, dict[str, tuple[float, float, float]]] = {}
        self.fresh_log = False  # what ensure_traffic_log says (the log was just turned on)
        self.caddy = (2, 11, 7)  # the release check_canary finds
        self.boot_warning: str | None = None  # what ensure_booted warns about
        self.shares: dict[tuple[str, str], tuple[str, float]] = {}  # a canary: (name, %)

    def _fault(self, name: str) -> None:
        from plainsail.proxy import ProxyError

        self.calls.append(name)
        kind = self.faults.get(name)
        if kind != "down":
            self.faults.pop(name, None)
        if kind in ("fail", "down"):
            raise ProxyError(f"injected failure in {name}")
        if kind == "crash":
            raise RuntimeError(f"injected crash in {name}")

    @staticmethod
    def _fake(ex: Executor) -> FakeHost:
        assert isinstance(ex, FakeExecutor)
        return ex.fake

    def preflight(self, ex: Executor, cfg: Any) -> None:
        self._fault("preflight")

    def ensure_booted(self, ex: Executor, cfg: Any) -> Any:
        from types import SimpleNamespace

        self._fault("ensure_booted")
        self._fake(ex).networks.add(cfg.proxy.network)  # the proxy's boot creates it
        return SimpleNamespace(maintenance=self.maintenance.get(
            (self._fake(ex).host.name, cfg.service)), warning=self.boot_warning)

    def route_to(self, ex: Executor, cfg: Any, container: str) -> Any:
        from types import SimpleNamespace

        self._fault("route_to")
        fake = self._fake(ex)
        c = fake.containers.get(container)
        if c is None or c.status != "running":
            self.outages.append(f"routed to {container}, which is not running")
        key = (fake.host.name, cfg.service)
        previous = self.routes.get(key)
        self.routes[key] = container
        self.shares.pop(key, None)
        self.route_log.setdefault(key, []).append((time.time(), container))
        return SimpleNamespace(previous=previous, upstream=container, in_flight=2)

    def routed(self, fake: FakeHost, service: str) -> FakeContainer | None:
        name = self.routes.get((fake.host.name, service))
        return fake.containers.get(name) if name else None

    def check_through(self, ex: Executor, cfg: Any, container: str | None = None) -> None:
        from plainsail.proxy import ProxyError

        self._fault("check_through")
        c = self.routed(self._fake(ex), cfg.service)
        if c is None or (container is not None and c.name != container) \
                or c.status != "running" or not self._fake(ex).healthy(c):
            raise ProxyError("the check through the proxy did not pass")

    def drain(self, ex: Executor, cfg: Any, container: str) -> tuple[bool, float]:
        self._fault("drain")
        return True, 0.0

    def split(self, ex: Executor, cfg: Any, container: str, share: float) -> Any:
        from types import SimpleNamespace

        self._fault("split")
        fake = self._fake(ex)
        key = (fake.host.name, cfg.service)
        self.shares[key] = (container, share)
        self.route_log.setdefault(key, []).append((time.time(), f"{container}%{share}"))
        return SimpleNamespace(previous=self.routes.get(key), upstream=container, in_flight=2)

    def check_canary(self, ex: Executor, cfg: Any) -> Any:
        from plainsail.proxy import ProxyError
        from plainsail.proxy.version import canary_problem

        self._fault("check_canary")
        problem = canary_problem(self.caddy, self._fake(ex).host.name, cfg.proxy.image)
        if problem:
            raise ProxyError(problem)
        return self.caddy

    def ensure_traffic_log(self, ex: Executor, cfg: Any) -> bool:
        self._fault("ensure_traffic_log")
        return self.fresh_log

    def host_time(self, ex: Executor) -> float:
        self._fault("host_time")
        return time.time()

    def read_traffic(self, ex: Executor, cfg: Any, since: float) -> list[Any]:
        """The answers each routed container gave since `since`, spread evenly over the
        times it held the route."""
        from plainsail.deploy.trafficgate import Sample

        self._fault("read_traffic")
        now = time.time()
        host = self._fake(ex).host.name
        log = self.route_log.get((host, cfg.service), [])
        samples: list[Sample] = []
        routed = ""
        for i, (start, entry) in enumerate(log):
            end = log[i + 1][0] if i + 1 < len(log) else now
            name, _, share = entry.partition("%")
            # a canary entry (`new%share`) splits the rate with the container routed before
            parts = [(name, 1.0)] if not share else [
                (name, float(share) / 100), (routed, 1 - float(share) / 100)]
            routed = routed if share else name
            lo, hi = max(start, since), min(end, now)
            if hi <= lo:
                continue
            for who, fraction in parts:
                samples += self._answers(who, fraction, lo, hi, cfg.app.port, host)
        return sorted(samples, key=lambda s: s.ts)

    def _answers(self, name: str, fraction: float, lo: float, hi: float,
                 port: int, host: str = "") -> list[Any]:
        from plainsail.deploy.trafficgate import Sample

        answers = {**self.answers, **self.host_answers.get(host, {})}
        rate, errors, seconds = next((a for p, a in sorted(answers.items(), reverse=True)
                                      if name.startswith(p)), (2000.0, 0.0, 0.01))
        n = int(rate * fraction * (hi - lo))
        bad = round(n * errors)
        step = n / bad if bad else 0
        bad_at = {int(k * step) for k in range(bad)}
        return [Sample(lo + (hi - lo) * k / max(n, 1), f"{name}:{port}",
                       500 if k in bad_at else 200, seconds) for k in range(n)]

    def watch(self, fake: FakeHost, service: str) -> None:
        """Note an outage whenever the routed container stops (checked on every command)."""
        original = fake.executor

        def executor(secrets: Sequence[Any] = ()) -> FakeExecutor:
            ex = original(secrets)
            run = ex.run

            def checked(argv: Sequence[str], **kw: Any) -> Result:
                res = run(argv, **kw)
                c = self.routed(fake, service)
                if c is not None and c.status != "running":
                    self.outages.append(f"{c.name} stopped while routed: {list(argv)}")
                return res

            ex.run = checked  # type: ignore[method-assign]
            return ex

        fake.executor = executor  # type: ignore[method-assign]
