"""Progress of long steps, for the person watching: the reporter interface.

Library code never writes to the terminal. A function that runs a long step (a build, a
push or pull, sending an image to a host's registry, the health gate) takes a `Progress`
and tells it what happens; the CLI passes one that renders it (`plainsail.output.progress`:
one updating line on a terminal, one line per event in a pipe or a CI log).

The whole interface:

- `update(key, text)`: the step `key` is running, and `text` (one line) says where it is
  now: "step 3/7: RUN pip install .", "attempt 4/30: answered 503". `key` names one step
  on one subject, e.g. "build", "push", "pull web-1", "gate web-1": steps with different
  keys may be under way at the same time (one per host) and a renderer shows each.
- `done(key, text="")`: the step `key` ended; `text`, if given, is its last word
  ("3 layer(s) pushed"). A key may be used again after it is done.

Texts may hold anything the step saw (a health body, a build line): renderers redact
secrets, so callers pass text as it is. Calls come from the thread running the step (one
per host when hosts are worked on in parallel): renderers are thread-safe.
The same object is the deploy engine's one reporter: everything a deploy, rollback or
recovery has to tell the person reaches them through it, never through the terminal
directly (the CLI passes a renderer, `plainsail.output.reporter`):

- `say(text, host="")`: an event line; `host` names the host it is about ("" for the
  attempt as a whole, or a section such as "preflight" or "rollout").
- `warn(text)`, `error(text)`: something to act on; an error does not stop the attempt.
- `step(host, name)`: the host began its plan step `name` (a live view shows each host's
  step and how long it has run).
- `host_done(host, outcome)`: the host's part of the attempt ended with `outcome`.
- `flush()`: every host finished a phase (a renderer that groups lines per host, as in a
  GitHub Actions log, shows what it held).

`Progress()` itself ignores everything: the default of every library function, and what
tests pass when they do not look. `Recording` keeps the events, for tests. `Lines` turns a
function taking one line into a reporter (the older interface of the deploy functions).
"""

from __future__ import annotations

from collections.abc import Callable


class Progress:
    """Receives progress events; this base class ignores them (see the module's doc)."""

    def update(self, key: str, text: str) -> None:
        """The step `key` is running; `text` says where it is now."""

    def done(self, key: str, text: str = "") -> None:
        """The step `key` ended; `text` is its last word, if any."""

    def say(self, text: str, host: str = "") -> None:
        """An event line, about `host` when given."""

    def warn(self, text: str) -> None:
        """Something the person should know and may act on."""

    def error(self, text: str) -> None:
        """Something the person must act on (the attempt goes on)."""

    def step(self, host: str, name: str) -> None:
        """The host began its plan step `name`."""

    def host_done(self, host: str, outcome: str) -> None:
        """The host's part of the attempt ended with `outcome`."""

    def flush(self) -> None:
        """Every host finished a phase: lines held per host may be shown now."""


NULL = Progress()


class Lines(Progress):
    """A reporter that hands every line to one function (`[host] text`, `warning: text`,
    `error: text`); long steps' progress goes to `progress`."""

    def __init__(self, out: Callable[[str], None], progress: Progress = NULL) -> None:
        self.out = out
        self.progress = progress

    def update(self, key: str, text: str) -> None:
        self.progress.update(key, text)

    def done(self, key: str, text: str = "") -> None:
        self.progress.done(key, text)

    def say(self, text: str, host: str = "") -> None:
        self.out(f"[{host}] {text}" if host else text)

    def warn(self, text: str) -> None:
        self.out(f"warning: {text}")

    def error(self, text: str) -> None:
        self.out(f"error: {text}")


Reporter = Progress | Callable[[str], None]


def reporter(report: Reporter, progress: Progress = NULL) -> Progress:
    """One reporter from what a caller passed: a reporter as it is, a function taking one
    line wrapped (`Lines`, with `progress` for long steps)."""
    if isinstance(report, Progress):
        return report
    return Lines(report, progress)


class Recording(Progress):
    """Keeps every event as (kind, key, text): kind "update" or "done" (key: the step),
    "say" (key: the host), "warn" or "error" (key ""), "step" (key: the host, text: the
    step's name), "host_done" (text: the outcome) or "flush"."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def update(self, key: str, text: str) -> None:
        self.events.append(("update", key, text))

    def done(self, key: str, text: str = "") -> None:
        self.events.append(("done", key, text))

    def say(self, text: str, host: str = "") -> None:
        self.events.append(("say", host, text))

    def warn(self, text: str) -> None:
        self.events.append(("warn", "", text))

    def error(self, text: str) -> None:
        self.events.append(("error", "", text))

    def step(self, host: str, name: str) -> None:
        self.events.append(("step", host, name))

    def host_done(self, host: str, outcome: str) -> None:
        self.events.append(("host_done", host, outcome))

    def flush(self) -> None:
        self.events.append(("flush", "", ""))

    def texts(self, key: str) -> list[str]:
        """The texts of the long step `key` (its updates and last word)."""
        return [t for kind, k, t in self.events if k == key and kind in ("update", "done")]

    def said(self, host: str | None = None) -> list[str]:
        """The event lines (about `host`, when given)."""
        return [t for kind, k, t in self.events
                if kind == "say" and (host is None or k == host)]
