"""How results reach the user: plain lines, JSON, and GitHub Actions integration.

This is the output boundary: every human line leaves through `say`, `warn` and the
`gha_*` functions, which redact every known secret (`plainsail.secret.scrub`). In JSON
mode (`--json`) stdout carries only the JSON document; human lines and GitHub Actions
workflow commands go to stderr, which the Actions runner reads as well.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

from plainsail.environment import in_ci, in_github_actions
from plainsail.progress import Progress
from plainsail.secret import scrub

_json_mode = False


def set_json_mode(on: bool) -> None:
    """Reserve stdout for one JSON document (the command's result)."""
    global _json_mode
    _json_mode = on


def human() -> TextIO:
    """Where human lines go: stdout, or stderr when stdout carries JSON."""
    return sys.stderr if _json_mode else sys.stdout


def say(message: str = "") -> None:
    _clear_live()
    print(scrub(message), file=human(), flush=True)


def error(message: str) -> None:
    _clear_live()
    print(f"error: {scrub(message)}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    _clear_live()
    print(f"warning: {scrub(message)}", file=sys.stderr, flush=True)
    if in_github_actions():
        print(f"::warning::{_escape(scrub(message))}", file=human(), flush=True)


def gha_error(message: str) -> None:
    if in_github_actions():
        print(f"::error::{_escape(scrub(message))}", file=human(), flush=True)


def gha_group(title: str) -> None:
    if in_github_actions():
        print(f"::group::{_escape(scrub(title))}", file=human(), flush=True)


def gha_endgroup() -> None:
    if in_github_actions():
        print("::endgroup::", file=human(), flush=True)


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def print_json(data: Any) -> None:
    """The command's result document. Records redact their own free-text fields; the
    structured fields are data and are printed as they are."""
    print(json.dumps(data, indent=2, sort_keys=False, default=str), flush=True)


def append_github_file(var: str, values: Mapping[str, str]) -> bool:
    """Append `key=value` lines to the file named by $var (GITHUB_OUTPUT, GITHUB_ENV)."""
    path = os.environ.get(var)
    if not path:
        return False
    with open(path, "a", encoding="utf-8") as f:
        for key, value in values.items():
            if "\n" in value:
                raise ValueError(f"{key} contains a newline")
            f.write(f"{key}={value}\n")
    return True


def append_step_summary(markdown: str) -> None:
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(scrub(markdown).rstrip() + "\n")


# ---------------------------------------------------------------- progress


def progress() -> Progress:
    """The renderer of long steps' progress (see plainsail.progress) for where human lines
    go: one updating line on a terminal, one line per event otherwise (a pipe, a file, CI)."""
    stream = human()
    live = (stream.isatty() and not in_ci()
            and os.environ.get("TERM", "") not in ("", "dumb"))
    return LiveProgress(stream) if live else LineProgress(stream)


class LineProgress(Progress):
    """One line per event: `[key] text`; an update repeating its key's last text is left
    out."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last: dict[str, str] = {}
        self.lock = threading.RLock()  # hosts may be worked on in threads

    def update(self, key: str, text: str) -> None:
        with self.lock:
            if self.last.get(key) == text:
                return
            self.last[key] = text
            print(scrub(f"[{key}] {text}"), file=self.stream, flush=True)

    def done(self, key: str, text: str = "") -> None:
        with self.lock:
            self.last.pop(key, None)
            if text:
                print(scrub(f"[{key}] {text}"), file=self.stream, flush=True)


_live: LiveProgress | None = None


def _clear_live() -> None:
    if _live is not None:
        _live.clear()


class LiveProgress(Progress):
    """One line on a terminal, rewritten in place: every running step's latest text. Other
    output (say, warn, error) clears it first; the next update draws it again. A step's
    last word stays on the screen as an ordinary line."""

    MIN_INTERVAL = 0.1  # redraws per second at most 10, except when a step ends

    def __init__(self, stream: TextIO) -> None:
        global _live
        self.stream = stream
        self.active: dict[str, str] = {}
        self.shown = False
        self.drawn_at = 0.0
        self.lock = threading.RLock()  # hosts may be worked on in threads
        _live = self

    def update(self, key: str, text: str) -> None:
        with self.lock:
            self.active[key] = text
            if time.monotonic() - self.drawn_at >= self.MIN_INTERVAL:
                self._draw()

    def done(self, key: str, text: str = "") -> None:
        with self.lock:
            self.active.pop(key, None)
            self.clear()
            if text:
                print(scrub(f"[{key}] {text}"), file=self.stream, flush=True)
            self._draw()

    def clear(self) -> None:
        with self.lock:
            if self.shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self.shown = False

    def _draw(self) -> None:
        self.drawn_at = time.monotonic()
        if not self.active:
            self.clear()
            return
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        line = scrub("  ".join(f"[{k}] {t}" for k, t in self.active.items()))
        if len(line) > width:
            line = line[:width - 1] + "…"
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self.shown = True


# ---------------------------------------------------------------- the deploy's reporter


def reporter(environ: Mapping[str, str] | None = None) -> Progress:
    """The renderer of a deploy's reporter (see plainsail.progress) for where human lines
    go: on a terminal, the event lines with a live per-host view under them (each host's
    step and how long it has run); elsewhere one line per event; in GitHub Actions the
    lines of each host in a group of their own, shown once a phase ended on every host."""
    stream = human()
    env = os.environ if environ is None else environ
    if stream.isatty() and not in_ci(env) and env.get("TERM", "") not in ("", "dumb"):
        return HostsView(stream)
    return EventLines(stream, grouped=env.get("GITHUB_ACTIONS") == "true")


def _host_of(key: str) -> str:
    """The host a long step's key names ("pull web-1" -> "web-1"; "build" -> "")."""
    _, _, host = key.rpartition(" ")
    return host if " " in key else ""


class EventLines(LineProgress):
    """One line per event. `grouped` (GitHub Actions): the lines about one host (or one
    section, such as preflight) are held and shown together as a `::group::` once every
    host finished a phase (`flush`), in the order each group first spoke."""

    def __init__(self, stream: TextIO, grouped: bool = False) -> None:
        super().__init__(stream)
        self.grouped = grouped
        self.held: dict[str, list[str]] = {}

    def _line(self, host: str, text: str, keyed: bool = False) -> None:
        """One line about `host` (a long step's line, `keyed`, names its step and host
        itself: `[pull web-1] ...`)."""
        line = scrub(f"[{host}] {text}" if host and not keyed else text)
        with self.lock:
            if self.grouped and host:
                self.held.setdefault(host, []).append(line)
                return
        _clear_live()
        print(line, file=self.stream, flush=True)

    def update(self, key: str, text: str) -> None:
        with self.lock:
            if self.last.get(key) == text:
                return
            self.last[key] = text
        self._line(_host_of(key), f"[{key}] {text}", keyed=True)

    def done(self, key: str, text: str = "") -> None:
        with self.lock:
            self.last.pop(key, None)
        if text:
            self.update(key, text)
            with self.lock:
                self.last.pop(key, None)

    def say(self, text: str, host: str = "") -> None:
        self._line(host, text)

    def warn(self, text: str) -> None:
        warn(text)

    def error(self, text: str) -> None:
        error(text)

    def flush(self) -> None:
        with self.lock:
            held, self.held = self.held, {}
            for host, lines in held.items():
                print(f"::group::{_escape(scrub(host))}", file=self.stream)
                for line in lines:
                    print(line, file=self.stream)
                print("::endgroup::", file=self.stream, flush=True)


class HostsView(EventLines):
    """On a terminal: the event lines, and under them a live view with one line per host
    (its current step, how long it has run, the step's latest progress), redrawn in place
    at most ten times a second and every half second while a step runs. Other output
    (say, warn, error) clears it first; it is drawn again at the next event."""

    MIN_INTERVAL = 0.1
    TICK = 0.5

    def __init__(self, stream: TextIO, clock: Any = time.monotonic) -> None:
        global _live
        super().__init__(stream)
        self.lock = threading.RLock()
        self.clock = clock
        self.hosts: dict[str, list[Any]] = {}  # host -> [step, started, detail, outcome]
        self.others: dict[str, str] = {}  # long steps of no host (build, push)
        self.shown = 0  # lines of the view on the screen
        self.drawn_at = 0.0
        self.ticker: threading.Thread | None = None
        _live = self  # type: ignore[assignment]

    # -- events
    def step(self, host: str, name: str) -> None:
        with self.lock:
            self.hosts[host] = [name, self.clock(), "", ""]
            self._draw(force=True)
        self._tick()

    def host_done(self, host: str, outcome: str) -> None:
        with self.lock:
            entry = self.hosts.setdefault(host, ["", self.clock(), "", ""])
            entry[3] = outcome
            self._draw(force=True)

    def update(self, key: str, text: str) -> None:
        host = _host_of(key)
        with self.lock:
            if host in self.hosts:
                self.hosts[host][2] = text
            else:
                self.others[key] = text
            self._draw()

    def done(self, key: str, text: str = "") -> None:
        host = _host_of(key)
        with self.lock:
            if host in self.hosts:
                self.hosts[host][2] = ""
            self.others.pop(key, None)
            if text:
                self._line(host, f"[{key}] {text}", keyed=True)
            self._draw(force=True)

    def _line(self, host: str, text: str, keyed: bool = False) -> None:
        with self.lock:
            self.clear()
            print(scrub(f"[{host}] {text}" if host and not keyed else text),
                  file=self.stream, flush=True)
            self._draw(force=True)

    def flush(self) -> None:
        pass  # nothing is held on a terminal

    # -- drawing
    def lines(self) -> list[str]:
        now = self.clock()
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        name_width = max((len(h) for h in self.hosts), default=0)
        out = []
        for host, (step, started, detail, outcome) in self.hosts.items():
            if outcome:
                text = f"{host:<{name_width}}  {outcome}"
            else:
                text = f"{host:<{name_width}}  {step:<14} {now - started:5.1f}s" + (
                    f"  {detail}" if detail else "")
            out.append(text)
        out += [f"[{k}] {t}" for k, t in self.others.items()]
        return [scrub(line if len(line) <= width else line[:width - 1] + "…")
                for line in out]

    def clear(self) -> None:
        with self.lock:
            if self.shown:
                up = f"\x1b[{self.shown - 1}A" if self.shown > 1 else ""
                self.stream.write("\r" + up + "\x1b[J")
                self.stream.flush()
                self.shown = 0

    def _draw(self, force: bool = False) -> None:
        if not force and self.clock() - self.drawn_at < self.MIN_INTERVAL:
            return
        self.drawn_at = self.clock()
        self.clear()
        lines = self.lines()
        if lines:
            self.stream.write("\n".join(lines))
            self.stream.flush()
            self.shown = len(lines)

    def _tick(self) -> None:
        """Redraw every TICK seconds while a host is in a step (elapsed times move)."""
        with self.lock:
            if self.ticker is not None and self.ticker.is_alive():
                return
            self.ticker = threading.Thread(target=self._ticking, daemon=True,
                                           name="plainsail-view")
            self.ticker.start()

    def _ticking(self) -> None:
        while True:
            time.sleep(self.TICK)
            with self.lock:
                if not any(not e[3] for e in self.hosts.values()):
                    return
                if self.shown:
                    self._draw(force=True)
