""".dockerignore as Docker reads it, to tell whether a file would be sent to the builder.

Docker's rules (moby/patternmatcher): one pattern a line, `#` starts a comment line,
patterns are relative to the context root (a leading `/` changes nothing), `*` is any run of
characters but `/`, `?` one such character, `[...]` a class, `**` any number of folders;
a pattern that matches a folder excludes everything in it; `!` re-includes; the last
matching line wins. With BuildKit, `<Dockerfile>.dockerignore` next to the Dockerfile is
used instead of the context's `.dockerignore` when it exists.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from plainsail.errors import BuildError
from plainsail.inputs import TooLarge, read_bounded

MAX_IGNORE_FILE = 1024 * 1024


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    include: bool  # a `!` line


def parse(text: str) -> list[Rule]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        if include:
            line = line[1:].strip()
        line = posixpath.normpath(line.lstrip("/")) if line.lstrip("/") else ""
        if not line or line == ".":
            continue
        rules.append(Rule(_compile(line), include))
    return rules


def _compile(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            body = "^" + body[1:] if body.startswith(("!", "^")) else body
            out += "[" + body.replace("\\", "\\\\") + "]"
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out)


def excluded(rules: list[Rule], path: str) -> bool:
    """Whether `path` (relative to the context, `/`-separated) is left out of the context."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for rule in rules:
        if any(rule.pattern.fullmatch(p) for p in prefixes):
            verdict = not rule.include
    return verdict


def ignore_file(context: Path, dockerfile: Path) -> Path:
    """The ignore file Docker uses for this Dockerfile and context."""
    specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
    return specific if specific.is_file() else context / ".dockerignore"


def rules_for(context: Path, dockerfile: Path) -> list[Rule]:
    path = ignore_file(context, dockerfile)
    try:
        return parse(read_bounded(path, MAX_IGNORE_FILE).decode(errors="replace"))
    except FileNotFoundError:
        return []
    except TooLarge as exc:
        raise BuildError(f"{path} is {exc}; an ignore file is a few lines: is it the right "
                         "file?") from None
