"""PostgreSQL's parser (pglast's libpg_query binding), loaded without its node classes.

The lint reads the parser's JSON output only. pglast's compiled module imports
`pglast.ast` and `pglast.enums` when it loads (some thousand classes, about 35 ms, a third
of linting a whole history); the JSON functions never use them. So, while the compiled
module loads, those two modules are stand-ins that import the real module the first time
anything is looked up on them: code that does use pglast's classes (here or in the same
process) still gets them, only later. If pglast is already imported, or its layout is not
the expected one, this is a plain import.
"""

from __future__ import annotations

import sys
import types
from typing import Any

_LAZY = ("pglast.enums", "pglast.ast")


class _OnDemand(types.ModuleType):
    """Stands in for a module until the first attribute is looked up on it."""

    def __getattr__(self, attr: str) -> Any:
        import importlib

        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        self.__dict__.update({k: v for k, v in real.__dict__.items()
                              if k not in ("__class__", "__dict__")})
        return getattr(real, attr)


def _load() -> Any:
    if "pglast.parser" in sys.modules:
        return sys.modules["pglast.parser"]
    from importlib.machinery import PathFinder

    placed: list[str] = []
    if "pglast" not in sys.modules:
        spec = PathFinder.find_spec("pglast")
        where = spec.submodule_search_locations if spec else None
        for name in _LAZY:
            sub = PathFinder.find_spec(name, where) if where else None
            if sub is None:
                break
            mod = _OnDemand(name)
            mod.__spec__, mod.__file__ = sub, sub.origin
            if sub.submodule_search_locations is not None:
                mod.__path__ = list(sub.submodule_search_locations)
            sys.modules[name] = mod
            placed.append(name)
    try:
        import pglast.parser as parser
    except Exception:
        for name in placed:  # undo, and let the plain import say what is wrong
            if isinstance(sys.modules.get(name), _OnDemand):
                del sys.modules[name]
        import pglast.parser as parser
    return parser


_parser = _load()
parse_sql_json = _parser.parse_sql_json
parse_plpgsql_json = _parser.parse_plpgsql_json
ParseError = _parser.ParseError
