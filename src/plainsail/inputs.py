"""Reading untrusted input within limits: files of bounded size, JSON and YAML of bounded
depth (and, for YAML, bounded alias expansion).

Everything plainsail reads from a file, a registry or another program passes through one of
these so that a hostile input ends in one clear error, in time linear in its size, instead of
a RecursionError, a gigabyte of memory or minutes of CPU. The caps themselves are listed in
docs/configuration.md ("Input limits").

- `read_bounded(path, limit)` reads at most `limit` bytes and refuses a larger file (it never
  reads more than `limit + 1` bytes, whatever the file's size).
- `loads_json(data, max_depth=...)` refuses nesting deeper than `max_depth` before Python's
  recursive JSON decoder sees it (one linear scan), and optionally refuses duplicate keys.
- `compose_yaml(text, ...)` composes a YAML document while refusing, event by event, nesting
  deeper than `max_depth` and (when `aliases` is False) any anchor or alias.
"""

from __future__ import annotations

import json
from itertools import accumulate
from pathlib import Path
from typing import Any

import yaml

JSON_MAX_DEPTH = 64  # the JSON plainsail reads nests at most 8 levels (a Sigstore root)
YAML_MAX_DEPTH = 50  # a plainsail.yml nests 4 levels, a workflow about 8


class InputError(ValueError):
    """An input refused before it is parsed: too large or too deeply nested."""


class TooLarge(InputError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"larger than {size_text(limit)}")


def size_text(n: int) -> str:
    """1048576 -> "1 MiB", 65536 -> "64 KiB"."""
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of `path`, or TooLarge when it holds more than `limit` (never reading more
    than limit + 1 bytes). OSError as open() raises it."""
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(limit)
    return data


# ---------------------------------------------------------------- JSON

_DROP = bytes(b for b in range(256) if b not in b'"[]{}')
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")  # +1 / -1 as signed bytes


def json_depth(data: bytes | str) -> int:
    """How deeply the arrays and objects of a JSON text nest (0 for a scalar), counted
    outside strings in a few linear passes of C code (no recursion, no Python loop)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    # Backslashes occur only in strings: without the escape pairs, every `"` left opens or
    # closes a string. Keep only quotes and brackets, then drop adjacent quote pairs (an
    # empty string, or one string's end and the next one's start: either way no bracket
    # changes sides); what is left between quotes are brackets inside strings.
    marks = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _DROP)
    pieces = marks.replace(b'""', b"").split(b'"')
    brackets = b"".join(pieces[::2]).translate(_STEPS)
    if not brackets:
        return 0
    return max(0, max(accumulate(memoryview(brackets).cast("b"))))


class _Object(dict[str, Any]):
    """A JSON object that remembers the first key it saw twice."""

    duplicate: str | None = None


def _pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    for k, v in pairs:
        if k in obj and obj.duplicate is None:
            obj.duplicate = k
        obj[k] = v
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_json(data: bytes | str, *, max_depth: int = JSON_MAX_DEPTH,
               keep_duplicates: bool = False) -> Any:
    """json.loads with a depth limit (InputError) and without NaN/Infinity (ValueError, as
    every other JSON error). With `keep_duplicates`, objects are dicts whose `duplicate`
    attribute names a key given twice (see `duplicate_key`)."""
    depth = json_depth(data)
    if depth > max_depth:
        raise InputError(f"nested {depth} levels deep, more than the {max_depth} allowed")
    hook = _pairs if keep_duplicates else None
    return json.loads(data, object_pairs_hook=hook, parse_constant=_no_constant)


def duplicate_key(obj: Any) -> str | None:
    """The key given twice in an object read by loads_json(keep_duplicates=True)."""
    return getattr(obj, "duplicate", None)


# ---------------------------------------------------------------- YAML


class YamlRefused(InputError):
    """A YAML document refused while it was composed; `line` is 1-based."""

    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}")


class _BoundedLoader(yaml.SafeLoader):
    """Composes nodes while refusing, as each event arrives (before the composer, which
    recurses, acts on it), nesting deeper than `max_depth` and, unless allowed, anchors and
    aliases. One pass, linear in the size of the text."""

    depth = 0
    max_depth = YAML_MAX_DEPTH
    aliases = False
    no_aliases = "YAML anchors and aliases are not supported here"

    def get_event(self) -> Any:
        event = super().get_event()  # type: ignore[no-untyped-call]
        if not self.aliases and (isinstance(event, yaml.AliasEvent)
                                 or getattr(event, "anchor", None) is not None):
            raise _refused(event, self.no_aliases)
        if isinstance(event, yaml.CollectionStartEvent):
            self.depth += 1
            if self.depth > self.max_depth:
                raise _refused(event, f"nested more than {self.max_depth} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            self.depth -= 1
        return event


def _refused(event: yaml.Event, problem: str) -> YamlRefused:
    line = event.start_mark.line + 1 if event.start_mark is not None else 1
    return YamlRefused(line, problem)


def compose_yaml(text: str, *, max_depth: int = YAML_MAX_DEPTH, aliases: bool = True,
                 no_aliases: str = _BoundedLoader.no_aliases) -> yaml.Node | None:
    """The first (single) document of `text` as YAML nodes, None when empty.

    Raises YamlRefused for nesting deeper than `max_depth`, for an anchor or alias when
    `aliases` is False (message `no_aliases`), and for an escape sequence beyond Unicode
    (which PyYAML's scanner lets escape as a ValueError); yaml.YAMLError otherwise.
    Aliased nodes are shared, not copied: whoever walks the nodes bounds the expansion.
    """
    loader = _BoundedLoader(text)
    loader.max_depth, loader.aliases, loader.no_aliases = max_depth, aliases, no_aliases
    try:
        node: yaml.Node | None = loader.get_single_node()
        return node
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, YamlRefused):
            raise
        raise YamlRefused(loader.line + 1, "not valid YAML: an escape sequence in a "
                          "double-quoted string names no Unicode character") from None
    finally:
        loader.dispose()
