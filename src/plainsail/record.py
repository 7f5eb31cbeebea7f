"""A plain record class: fields set in __init__, compared and printed field by field.

Used instead of dataclasses where start-up time counts (`plainsail lint`, the migration
runner): importing dataclasses pulls in inspect, ast and tokenize, and each dataclass is
compiled when its module loads, together a tenth of a lint run over a whole history.
Standard library only.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Record:
    """Subclasses list their fields in `_fields` and set them in __init__."""

    _fields: ClassVar[tuple[str, ...]] = ()
    # Defining __eq__ leaves __hash__ None: records are mutable, like plain dataclasses.

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._fields)
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self._fields)

    def _values(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._fields}
