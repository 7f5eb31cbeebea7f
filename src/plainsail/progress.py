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
`Progress()` itself ignores everything: the default of every library function, and what
tests pass when they do not look. `Recording` keeps the events, for tests.
"""

from __future__ import annotations


class Progress:
    """Receives progress events; this base class ignores them (see the module's doc)."""

    def update(self, key: str, text: str) -> None:
        """The step `key` is running; `text` says where it is now."""

    def done(self, key: str, text: str = "") -> None:
        """The step `key` ended; `text` is its last word, if any."""


NULL = Progress()


class Recording(Progress):
    """Keeps every event as (kind, key, text), kind "update" or "done"."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def update(self, key: str, text: str) -> None:
        self.events.append(("update", key, text))

    def done(self, key: str, text: str = "") -> None:
        self.events.append(("done", key, text))

    def texts(self, key: str) -> list[str]:
        return [t for _, k, t in self.events if k == key]
