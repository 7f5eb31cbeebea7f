"""Where a deploy goes: `local` (this machine's Docker engine) or a host reached over SSH."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Host:
    """A deploy target. `name` is what the user wrote and what records show."""

    name: str
    hostname: str = ""
    user: str | None = None
    port: int | None = None

    @property
    def is_local(self) -> bool:
        return self.name == "local"

    @property
    def destination(self) -> str:
        """The ssh destination argument: [user@]hostname."""
        return f"{self.user}@{self.hostname}" if self.user else self.hostname


def parse_host(text: str) -> Host:
    """Parse `local`, `ssh://user@host[:port]`, `user@host` or an ~/.ssh/config alias."""
    text = text.strip()
    if text == "local":
        return Host("local")
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme != "ssh":
            raise ValueError(f"{text!r}: only ssh:// hosts are supported (or local)")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{text!r}: the port is not a number between 1 and 65535") from None
        if parts.password is not None:
            raise ValueError(f"{text!r}: do not put a password in a host URL; use SSH keys")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{text!r}: a host URL has no path; write ssh://user@host[:port]")
        hostname = parts.hostname or ""
        user = parts.username
    else:
        user, _, hostname = text.rpartition("@")
        user = user or None
        port = None
    if not hostname or not (_NAME_RE.fullmatch(hostname) or _is_ipv6(hostname)):
        raise ValueError(
            f"{text!r} is not a host; write ssh://user@host[:port], an ~/.ssh/config "
            "alias, or local"
        )
    if user is not None and not _USER_RE.fullmatch(user):
        raise ValueError(f"{text!r}: {user!r} is not a valid user name")
    return Host(text, hostname, user, port)


def _is_ipv6(text: str) -> bool:
    return ":" in text and all(c in "0123456789abcdefABCDEF:." for c in text)
