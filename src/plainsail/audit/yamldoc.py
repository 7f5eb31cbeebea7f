"""YAML with line numbers: documents composed into nodes (as plainsail.config.model does), then
turned into dicts, lists and strings that remember the line they start on.

Every scalar becomes a `YStr` (booleans and numbers too: `push: true` is "true"), so rules
compare text, and `on:` stays the key "on" instead of YAML 1.1's boolean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from plainsail.inputs import TooLarge, YamlRefused, compose_yaml, read_bounded, size_text


class YStr(str):
    line: int = 1
    style: str | None = None
    source: str = ""  # the raw text of the scalar in the file, for block scalars' lines
    is_null: bool = False


class YMap(dict[str, Any]):
    line: int = 1
    key_lines: dict[str, int]


class YList(list[Any]):
    line: int = 1


class YamlError(Exception):
    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}")


MAX_FILE = 1024 * 1024  # a workflow, action.yml or plainsail.yml larger than this is refused
MAX_DEPTH = 50  # a workflow nests about 8 levels


class _Budget:
    """How many more values converting may make: aliases share nodes, converting copies
    them, so an alias bomb of a dozen lines would expand into billions of values."""

    def __init__(self, values: int, chars: int) -> None:
        self.left, self.chars = values, chars

    def take(self, node: yaml.Node, depth: int) -> None:
        self.left -= 1
        if isinstance(node, yaml.ScalarNode):  # the text copied into the value and source
            self.chars -= len(node.value) + node.end_mark.index - node.start_mark.index
        if self.left < 0 or self.chars < 0:
            raise YamlError(node.start_mark.line + 1, "aliases expand the document far "
                            "beyond what is written (an alias bomb?); write it out without "
                            "so much repetition")
        if depth > MAX_DEPTH:
            raise YamlError(node.start_mark.line + 1, f"aliases nest the document more than "
                            f"{MAX_DEPTH} levels deep")


def _convert(node: yaml.Node, text: str, budget: _Budget, depth: int = 0) -> Any:
    budget.take(node, depth)
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        m = YMap()
        m.line = line
        m.key_lines = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                key = str(k.value)
            else:  # complex keys do not occur in workflows; keep them out of the way
                continue
            if key == "<<" and isinstance(v, yaml.MappingNode):
                merged = _convert(v, text, budget, depth + 1)
                for mk, mv in merged.items():
                    m.setdefault(mk, mv)
                    m.key_lines.setdefault(mk, merged.key_lines.get(mk, line))
                continue
            m[key] = _convert(v, text, budget, depth + 1)
            m.key_lines[key] = k.start_mark.line + 1
        return m
    if isinstance(node, yaml.SequenceNode):
        seq = YList(_convert(c, text, budget, depth + 1) for c in node.value)
        seq.line = line
        return seq
    s = YStr(node.value)
    s.line = line
    s.style = getattr(node, "style", None)
    s.is_null = node.tag == "tag:yaml.org,2002:null" and not node.value
    s.source = text[node.start_mark.index:node.end_mark.index]
    return s


def load(text: str) -> Any:
    """The first document of `text` with line numbers; None for an empty one.

    Anchors and aliases are allowed (GitHub Actions reads them), but bounded: nesting deeper
    than MAX_DEPTH is refused as the text is read, and the values aliases expand into may
    number at most a few times the values written (YamlError)."""
    if len(text) > MAX_FILE:
        raise YamlError(1, f"larger than {size_text(MAX_FILE)}; refusing to read it")
    try:
        root = compose_yaml(text, max_depth=MAX_DEPTH)
    except YamlRefused as exc:
        raise YamlError(exc.line, exc.problem) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlError(mark.line + 1 if mark is not None else 1, str(problem)) from None
    if root is None:
        return None
    written = text.count("\n") + text.count(",") + 1  # at least the values written
    return _convert(root, text, _Budget(10_000 + 4 * written, 1_000_000 + 8 * len(text)))


def read(path: Path) -> str:
    """The text of a YAML file of at most MAX_FILE bytes; YamlError when larger, OSError or
    UnicodeDecodeError as reading says."""
    try:
        return read_bounded(path, MAX_FILE).decode("utf-8")
    except TooLarge as exc:
        raise YamlError(1, f"{exc}; refusing to read it") from None


def scalar_lines(value: Any) -> list[tuple[int, str]]:
    """The lines of a scalar with their line numbers in the file.

    Block scalars (`|`, `>`) start on the line after their indicator; a multi-line plain or
    quoted scalar keeps the file's line breaks, so a finding points at the right line.
    """
    if not isinstance(value, YStr):
        return []
    if value.style == "|":
        raw = value.source.split("\n")
        return [(value.line + i, raw[i].strip()) for i in range(1, len(raw))]
    if value.style == ">":  # folded: each paragraph is one line, numbered by its first
        out: list[tuple[int, str]] = []
        start, parts = 0, []
        raw = value.source.split("\n")
        for i in range(1, len(raw)):
            part = raw[i].strip()
            if part:
                start = start or value.line + i
                parts.append(part)
            elif parts:
                out.append((start, " ".join(parts)))
                start, parts = 0, []
        if parts:
            out.append((start, " ".join(parts)))
        return out
    if "\n" not in value.source:
        return [(value.line, str(value))]
    raw = value.source.split("\n")
    out = []
    for i, part in enumerate(raw):
        part = part.strip()
        if i == 0 and value.style in ('"', "'"):
            part = part[1:]
        if i == len(raw) - 1 and value.style in ('"', "'"):
            part = part[:-1]
        out.append((value.line + i, part))
    return out


def line_of(value: Any, default: int = 1) -> int:
    return int(getattr(value, "line", default) or default)


def get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None


def key_line(mapping: Any, key: str, default: int = 1) -> int:
    if isinstance(mapping, YMap):
        return mapping.key_lines.get(key, mapping.line)
    return default


def text_of(value: Any) -> str:
    """Every scalar under `value`, one per line (for keyword searches)."""
    if isinstance(value, dict):
        return "\n".join(f"{k}: {text_of(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "\n".join(text_of(v) for v in value)
    return "" if value is None else str(value)
