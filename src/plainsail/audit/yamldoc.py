"""YAML with line numbers: documents composed into nodes (as plainsail.config.model does), then
turned into dicts, lists and strings that remember the line they start on.

Every scalar becomes a `YStr` (booleans and numbers too: `push: true` is "true"), so rules
compare text, and `on:` stays the key "on" instead of YAML 1.1's boolean.
"""

from __future__ import annotations

from typing import Any

import yaml


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


def _convert(node: yaml.Node, text: str) -> Any:
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
                merged = _convert(v, text)
                for mk, mv in merged.items():
                    m.setdefault(mk, mv)
                    m.key_lines.setdefault(mk, merged.key_lines.get(mk, line))
                continue
            m[key] = _convert(v, text)
            m.key_lines[key] = k.start_mark.line + 1
        return m
    if isinstance(node, yaml.SequenceNode):
        seq = YList(_convert(c, text) for c in node.value)
        seq.line = line
        return seq
    s = YStr(node.value)
    s.line = line
    s.style = getattr(node, "style", None)
    s.is_null = node.tag == "tag:yaml.org,2002:null" and not node.value
    s.source = text[node.start_mark.index:node.end_mark.index]
    return s


def load(text: str) -> Any:
    """The first document of `text` with line numbers; None for an empty one."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlError(mark.line + 1 if mark is not None else 1, str(problem)) from None
    except (ValueError, OverflowError):  # PyYAML's scanner, on "\U" beyond Unicode
        raise YamlError(loader.line + 1, "an escape sequence in a double-quoted string "
                        "names no Unicode character") from None
    finally:
        loader.dispose()
    return None if root is None else _convert(root, text)


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
