"""Run argv lists here or on a host over SSH, and log each so an operator can replay it.

Commands are built elsewhere as plain argv lists (see `plainsail.hosts.docker`). This module is
the one place that executes them. Over SSH the argv travels as one string quoted with
`shlex.join`; nothing user-supplied is ever formatted into shell code. Input that carries
secrets (an env file) goes through stdin and is never logged.

One SSH connection per host is reused for every command (OpenSSH ControlMaster), since a
new connection costs about 0.3 s and a multiplexed command about 0.1 s.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import select
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from plainsail.errors import RemoteError
from plainsail.hosts.addresses import Host
from plainsail.secret import Secret, redact, scrub

log = logging.getLogger("plainsail.run")

TAIL_LINES = 40


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = TAIL_LINES) -> str:
        text = (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()
        return "\n".join(text.splitlines()[-lines:])


def tail_text(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# What a CLI prints after its error to point at its help ("Run 'docker run --help' for more
# information", "See 'docker run --help'."): never the reason a command failed.
_HELP_HINT = re.compile(r"^(?:Run|See|Try) '[^']*--help'(?: for more information)?\.?$",
                        re.IGNORECASE)


def telling_lines(text: str) -> list[str]:
    """The non-blank lines of a command's output that can say why it failed (help hints
    and blank lines left out)."""
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not _HELP_HINT.match(line)]


def error_line(text: str) -> str:
    """The line of a failed command's output to quote as its reason: the last one that is
    not a help hint (Docker's "network ... not found", not "Run 'docker run --help'")."""
    lines = telling_lines(text)
    return lines[-1] if lines else ""


def error_summary(text: str, lines: int = 3) -> str:
    """The last `lines` telling lines of a failed command's output, on one line."""
    return " | ".join(telling_lines(text)[-lines:])


@dataclass
class SSHOptions:
    identity_file: str | None = None
    known_hosts: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    connect_timeout: int = 10


class Executor:
    """Runs argv lists on one host. Subclasses say how to reach it."""

    host: Host

    def __init__(self, host: Host, secrets: Iterable[Secret] = ()) -> None:
        self.host = host
        self.secrets = [s for s in secrets if s]
        self.connected = False  # a command got through: a later exit 255 is a drop

    # -- what subclasses provide
    def wrap(self, argv: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections held for this host."""

    def reach(self, host: str, port: int) -> tuple[str, int]:
        """An address on this machine that reaches host:port as seen from the target host.

        Locally that is the address itself; over SSH a port forwarded through the shared
        connection, so the host needs nothing beyond sshd, a shell and Docker.
        """
        return host, port

    def http_get(self, host: str, port: int, path: str, timeout: float) -> tuple[int, str]:
        """GET `path` from an address returned by `reach`: (status, the body's start).
        `timeout` bounds the whole exchange, connection, answer and body (TimeoutError)."""
        from plainsail.hosts import deadline

        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            resp, body = deadline.get(conn, path, {"User-Agent": "plainsail-health",
                                                   "Connection": "close"}, timeout)
            return resp.status, body.decode("utf-8", errors="replace")
        finally:
            conn.close()

    # -- shared
    def display(self, argv: Sequence[str]) -> str:
        """The command as an operator would type it, secrets redacted."""
        return scrub(shlex.join(self.wrap(argv)), self.secrets)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 120.0,
        check: bool = True,
        input: str | None = None,
        what: str = "",
        on_line: Callable[[str], None] | None = None,
    ) -> Result:
        """Run argv; with check=True a non-zero exit raises RemoteError.

        With `on_line`, each line of output (stdout and stderr merged, in order) is handed
        to it as it comes, for progress; the result's stdout then holds that merged output
        and its stderr is empty."""
        full = self.wrap(argv)
        shown = self.display(argv)
        log.debug("[%s] $ %s%s", self.host.name, shown, "  (stdin: not shown)" if input else "")
        start = time.monotonic()
        try:
            if on_line is not None:
                proc = _streamed(full, input, timeout, on_line)
            else:
                proc = subprocess.run(
                    full,
                    input=input,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    stdin=None if input is not None else subprocess.DEVNULL,
                    check=False,
                )
        except subprocess.TimeoutExpired as exc:
            out = _decode(exc.stdout) + _decode(exc.stderr)
            raise RemoteError(
                f"{self.host.name}: {what or argv[0]} did not finish within {timeout:g}s: "
                f"{shown}",
                host=self.host.name,
                argv=list(argv),
                returncode=None,
                output_tail=redact(tail_text(out), self.secrets),
            ) from None
        except FileNotFoundError:
            raise RemoteError(
                f"{full[0]} is not installed or not on PATH; install it and retry",
                host=self.host.name,
                argv=list(argv),
            ) from None
        seconds = time.monotonic() - start
        # The output is data (names, paths, JSON to parse): kept as it is. Redaction
        # happens where text leaves the program (messages, records' free text, logs).
        result = Result(list(argv), proc.returncode, proc.stdout, proc.stderr, seconds)
        log.debug("[%s]   exit %d in %.2fs", self.host.name, proc.returncode, seconds)
        if proc.returncode != 255:
            self.connected = True
        if check and not result.ok:
            raise self.failure(result, what)
        return result

    def failure(self, result: Result, what: str = "") -> RemoteError:
        detail = redact(error_summary(result.tail()), self.secrets) or "no output"
        ssh_failed = isinstance(self, SSHExecutor) and result.returncode == 255
        if ssh_failed and self.connected:
            msg = (f"{self.host.name}: the SSH connection dropped during "
                   f"{what or result.argv[0]} ({detail}); it had connected before, so the "
                   "host or the network path went away: check that the host is up")
        elif ssh_failed:
            assert isinstance(self, SSHExecutor)
            msg = self.connect_problem(result) or (
                f"{self.host.name}: cannot connect over SSH ({detail}); check the host "
                "address, your SSH key and known_hosts"
            )
        else:
            msg = (
                f"{self.host.name}: {what or result.argv[0]} failed with exit code "
                f"{result.returncode}: {detail}"
            )
        return RemoteError(
            msg,
            host=self.host.name,
            argv=result.argv,
            returncode=result.returncode,
            output_tail=redact(result.tail(), self.secrets),
        )

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _streamed(full: list[str], input: str | None, timeout: float,
              on_line: Callable[[str], None]) -> subprocess.CompletedProcess[str]:
    """subprocess.run for `Executor.run(on_line=...)`: stdout and stderr merged, each line
    (ended by a newline or a carriage return) handed to `on_line` as it arrives."""
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(full, stdin=subprocess.PIPE if input is not None
                            else subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    chunks: list[bytes] = []
    pending = b""
    try:
        if input is not None and proc.stdin is not None:
            proc.stdin.write(input.encode())
            proc.stdin.close()
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.wait()
                raise subprocess.TimeoutExpired(full, timeout, output=b"".join(chunks))
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append(data)
            *lines, pending = re.split(rb"\r\n|\r|\n", pending + data)
            for line in lines:
                if line.strip():
                    on_line(line.decode(errors="replace"))
        if pending.strip():
            on_line(pending.decode(errors="replace"))
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    return subprocess.CompletedProcess(full, proc.returncode,
                                       b"".join(chunks).decode(errors="replace"), "")


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


class LocalExecutor(Executor):
    """Runs commands on this machine (hosts: [local])."""

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return list(argv)


class SSHExecutor(Executor):
    """Runs commands on a host over one multiplexed OpenSSH connection.

    The user's OpenSSH configuration (~/.ssh/config, /etc/ssh/ssh_config) is honoured:
    OpenSSH keeps the first value it is given for an option and the command line comes
    before the config files, so plainsail passes only what it cannot work without (batch
    mode, the shared connection), puts the user's `ssh.*` settings before those, and adds
    its defaults for a connect timeout and keepalives only where the configuration sets
    none. Host keys are checked as that configuration says: OpenSSH's default in batch
    mode refuses an unknown or changed key.
    """

    def __init__(
        self, host: Host, options: SSHOptions | None = None, secrets: Iterable[Secret] = ()
    ) -> None:
        super().__init__(host, secrets)
        self.options = options or SSHOptions()
        self._control_dir: str | None = None
        self._forwards: dict[tuple[str, int], int] = {}
        self._forwards_master: int | None = None  # the master process the forwards ride on
        self._effective: dict[str, str] | None = None

    def ssh_argv(self) -> list[str]:
        """`ssh` with every option, up to and including the destination."""
        if self._control_dir is None:
            # Short path: unix socket paths are limited to about 100 bytes.
            self._control_dir = tempfile.mkdtemp(prefix="psl-", dir=_socket_dir())
        o = self.options
        argv = ["ssh"]
        # What the user chose first: the first value given for an option wins.
        for key, value in sorted(o.options.items()):
            argv += ["-o", f"{key}={value}"]
        if o.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={os.path.expanduser(o.known_hosts)}"]
        if o.identity_file:
            argv += ["-i", os.path.expanduser(o.identity_file), "-o", "IdentitiesOnly=yes"]
        if self.host.port:
            argv += ["-p", str(self.host.port)]
        # Looked up before batch mode is added: it changes OpenSSH's keepalive default.
        defaults = self._defaults(argv)
        argv += [
            "-o", "BatchMode=yes",
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={self._control_dir}/%C",
            "-o", "ControlPersist=120",
            *defaults,
            self.host.destination,
        ]
        return argv

    def effective_config(self, argv: Sequence[str] | None = None) -> dict[str, str]:
        """What OpenSSH will use for this host (`ssh -G`: the config files evaluated, no
        connection made), given the user's own options; empty if that cannot be found out."""
        if self._effective is None:
            if argv is None:
                self.ssh_argv()
                return self._effective or {}
            base = list(argv)
            try:
                proc = subprocess.run(
                    [*base, "-G", self.host.destination], capture_output=True, text=True,
                    timeout=10, stdin=subprocess.DEVNULL, check=False,
                )
            except (OSError, subprocess.TimeoutExpired):
                proc = subprocess.CompletedProcess(base, 255, "", "")
            found: dict[str, str] = {}
            for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
                key, _, value = line.partition(" ")
                found.setdefault(key.lower(), value.strip())
            self._effective = found
        return self._effective

    def _defaults(self, argv: Sequence[str]) -> list[str]:
        """plainsail's defaults for what neither ssh.options nor ssh_config sets."""
        config = self.effective_config(argv)
        if not config:
            return []
        extra = []
        if config.get("connecttimeout", "none") == "none":
            extra += ["-o", f"ConnectTimeout={self.options.connect_timeout}"]
        if config.get("serveraliveinterval", "0") == "0":
            extra += ["-o", "ServerAliveInterval=15"]
        return extra

    def connect_problem(self, result: Result) -> str | None:
        """Why OpenSSH refused the host key, and how to trust it; None for other failures."""
        text = result.stdout + "\n" + result.stderr
        changed = "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or re.search(
            r"Host key for \S+ has changed", text)
        unknown = re.search(r"No \S+ host key is known for", text) or (
            "Host key verification failed" in text)
        if not (changed or unknown):
            return None
        config = self.effective_config()
        hostname = config.get("hostname") or self.host.hostname
        port = int(config.get("port") or self.host.port or 22)
        known = _home_short(os.path.expanduser(self.options.known_hosts) if
                            self.options.known_hosts else
                            (config.get("userknownhostsfile") or "~/.ssh/known_hosts").split()[0])
        scan = shlex.join(["ssh-keyscan", *(["-p", str(port)] if port != 22 else []), hostname])
        where = f"{hostname}:{port}"
        if changed:
            entry = f"[{hostname}]:{port}" if port != 22 else hostname
            return (
                f"{self.host.name}: the host key of {where} has CHANGED since it was added to "
                f"{known} (the host was reinstalled, or someone is in between); find out "
                f"which, then replace it: ssh-keygen -R {shlex.quote(entry)} -f "
                f"{_shell_path(known)} && {scan} >> {_shell_path(known)}"
            )
        return (
            f"{self.host.name}: the host key of {where} is not known; check it and add it "
            f"with: {scan} >> {_shell_path(known)}"
            + ("" if self.options.known_hosts else " (or set ssh.known_hosts)")
        )

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return [*self.ssh_argv(), "--", shlex.join(argv)]

    def reach(self, host: str, port: int) -> tuple[str, int]:
        key = (host, port)
        # The forward rides on the shared connection: make sure its master runs (asking the
        # local master socket costs no round trip to the host). A master that died (a
        # dropped connection) took its forwards with it: they are made again.
        master = self._master_pid()
        if master is not None and master == self._forwards_master and key in self._forwards:
            return "127.0.0.1", self._forwards[key]
        if master is None:
            self.run(["true"], timeout=30, what="connect")
            master = self._master_pid()
        if master != self._forwards_master:
            self._forwards.clear()  # they belonged to a connection that is gone
            self._forwards_master = master
        local = _free_port()
        spec = f"127.0.0.1:{local}:{host}:{port}"
        argv = [*self.ssh_argv()[:-1], "-O", "forward", "-L", spec, self.host.destination]
        log.debug("[%s] $ %s", self.host.name, shlex.join(argv))
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode != 0:
            raise RemoteError(
                f"{self.host.name}: cannot forward a port to {host}:{port} over SSH: "
                f"{proc.stderr.strip() or 'no output'} (is AllowTcpForwarding on?)",
                host=self.host.name, argv=argv, returncode=proc.returncode,
            )
        self._forwards[key] = local
        return "127.0.0.1", local

    def _master_pid(self) -> int | None:
        """The pid of the shared connection's master process, None when none runs (asked
        of the local control socket: no round trip to the host)."""
        check = subprocess.run([*self.ssh_argv()[:-1], "-O", "check", self.host.destination],
                               capture_output=True, text=True, timeout=10, check=False)
        if check.returncode != 0:
            return None
        m = re.search(r"pid=(\d+)", check.stderr + check.stdout)
        return int(m.group(1)) if m else 0

    def close(self) -> None:
        if self._control_dir is None:
            return
        subprocess.run(
            [*self.ssh_argv()[:-1], "-O", "exit", self.host.destination],
            capture_output=True,
            timeout=10,
            check=False,
        )
        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None
        self._forwards.clear()


def _home_short(path: str) -> str:
    """A path under the home folder written as ~/..., as a user would type it."""
    home = os.path.expanduser("~").rstrip("/")
    return "~" + path[len(home):] if home and path.startswith(home + "/") else path


def _shell_path(path: str) -> str:
    """Quote a path for a shell command shown to the user, keeping a leading ~/ working."""
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _socket_dir() -> str:
    for d in (os.environ.get("XDG_RUNTIME_DIR"), "/tmp"):
        if d and os.path.isdir(d) and os.access(d, os.W_OK):
            return d
    return tempfile.gettempdir()


def executor_for(
    host: Host, ssh: SSHOptions | None = None, secrets: Iterable[Secret] = ()
) -> Executor:
    if host.is_local:
        return LocalExecutor(host, secrets)
    return SSHExecutor(host, ssh, secrets)


# Exit code of write_file_argv when the path is a directory.
IS_A_DIRECTORY = 66

# Writes stdin to $1 through a temporary file beside it, then renames it into place. A
# directory at $1 is refused (mv would move the file into it); on any failure, or when the
# connection drops, the temporary file (which may hold secrets) is removed. The temporary
# file is made by mktemp: a new file (never one that exists, nor a symbolic link planted
# there), mode 0600, with an unpredictable name; the rename replaces whatever $1 was (a
# link included) without following it.
WRITE_FILE_SCRIPT = (
    'umask 077; tmp=; '
    'if [ -d "$1" ]; then printf "%s is a directory\\n" "$1" >&2; exit 66; fi; '
    "trap '[ -z \"$tmp\" ] || rm -f -- \"$tmp\"' EXIT; trap 'exit 1' HUP INT TERM PIPE; "
    'mkdir -p -- "$(dirname -- "$1")" && tmp=$(mktemp -- "$1.tmp.XXXXXXXXXX") && '
    'cat > "$tmp" && chmod "$2" "$tmp" && mv -f -- "$tmp" "$1"'
)


def write_file_argv(path: str, mode: str = "600") -> list[str]:
    """argv that writes stdin to `path` atomically, readable only by its owner.

    The path is passed as a positional parameter, never formatted into the script. Exits
    IS_A_DIRECTORY (leaving nothing behind) when `path` is a directory.
    """
    return ["sh", "-c", WRITE_FILE_SCRIPT, "sh", path, mode]


def expand_home(path: str, home: str) -> str:
    """Replace a leading ~ with the host user's home directory."""
    if path == "~":
        return home
    if path.startswith("~/"):
        return str(Path(home) / path[2:])
    return path
