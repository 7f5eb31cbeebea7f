"""Secret values from short-lived sources: the environment, a file, a command, or Vault.

`app.secrets`, `registry.password` and `notify[].webhook` may name a source instead of a
value. A source is read once per run, at the preflight of a deploy, rollback or drill
(`resolve`), or the first time another command needs the value; the value is wrapped in
`Secret` at once (so it is redacted wherever text leaves the program) and never logged.
An empty value, a failing command, a missing file and an unreachable Vault are each one
line naming the secret and its source, never the value.

Vault and OpenBao are read through their KV version 2 HTTP API with httpx: `VAULT_ADDR`
and `VAULT_TOKEN`, or, without a token, a JWT login (`VAULT_ROLE`) with the OIDC token of
the CI job (GitHub Actions' `ACTIONS_ID_TOKEN_REQUEST_URL`/`_TOKEN`, or a JWT given in
`VAULT_JWT`).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plainsail.errors import PlainsailError
from plainsail.secret import Secret

if TYPE_CHECKING:
    from plainsail.config.model import Config

COMMAND_TIMEOUT = 120.0
VAULT_TIMEOUT = 15.0
MAX_VALUE_BYTES = 1024 * 1024


class SecretSourceError(PlainsailError):
    """A secret could not be read from its source (or was empty there)."""


# ---------------------------------------------------------------- the sources


@dataclass(frozen=True)
class EnvSource:
    env: str

    def describe(self) -> str:
        return f"environment variable {self.env}"


@dataclass(frozen=True)
class FileSource:
    file: str  # absolute once the config is loaded (relative paths start at its folder)

    def describe(self) -> str:
        return f"file {self.file}"


@dataclass(frozen=True)
class CommandSource:
    """`command` is what runs (with `${VAR}` expanded); `written` the command as the config
    wrote it, the only form ever shown: an expanded argument may hold a credential."""

    command: tuple[str, ...]
    written: str = field(default="", compare=False)

    def describe(self) -> str:
        import shlex

        return f"command `{self.written or shlex.join(self.command)}`"


@dataclass(frozen=True)
class VaultSource:
    path: str
    field: str
    mount: str = "secret"

    def describe(self) -> str:
        return f"Vault {self.mount}/{self.path} field {self.field}"


Source = EnvSource | FileSource | CommandSource | VaultSource

# Values read in this run, by source: each source is read once per process.
_FETCHED: dict[Source, str] = {}


def forget() -> None:
    """Drop the values read so far (tests that read a changed source again)."""
    _FETCHED.clear()
    _TOKENS.clear()


def fetch(source: Source, what: str, environ: Mapping[str, str] | None = None) -> str:
    """The value of `source` (read at most once per run), registered for redaction.

    `what` names the setting for messages (e.g. `app.secrets.DATABASE_URL`).
    """
    env = os.environ if environ is None else environ
    if isinstance(source, EnvSource):
        value = env.get(source.env, "")  # read every time: it costs nothing
    elif source in _FETCHED:
        return _FETCHED[source]
    elif isinstance(source, FileSource):
        value = _read_file(source, what)
    elif isinstance(source, CommandSource):
        value = _run_command(source, what, env)
    else:
        value = _read_vault(source, what, env)
    if not value.strip():
        raise SecretSourceError(f"{what}: the {source.describe()} gave an empty value (or "
                                "only white space); a secret must not be empty (check the "
                                "source, or remove it)")
    Secret(value)  # known from now on: redacted wherever text leaves the program
    if not isinstance(source, EnvSource):
        _FETCHED[source] = value
    return value


def _strip_newline(text: str) -> str:
    """Tools print a value followed by one line break; that break is not part of it."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def _read_file(source: FileSource, what: str) -> str:
    path = Path(source.file)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_VALUE_BYTES + 1)
    except FileNotFoundError:
        raise SecretSourceError(f"{what}: the {source.describe()} does not exist; write it "
                                "before plainsail runs (e.g. in an earlier CI step)") from None
    except OSError as exc:
        raise SecretSourceError(f"{what}: cannot read the {source.describe()}: "
                                f"{exc.strerror or type(exc).__name__}") from None
    return _decode(data, source, what)


def _decode(data: bytes, source: Source, what: str) -> str:
    if len(data) > MAX_VALUE_BYTES:
        raise SecretSourceError(f"{what}: the {source.describe()} gave more than "
                                f"{MAX_VALUE_BYTES // 1024} KiB; is it the right source?")
    try:
        return _strip_newline(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise SecretSourceError(f"{what}: the {source.describe()} gave bytes that are not "
                                "UTF-8 text; encode the secret (e.g. base64)") from None


def _run_command(source: CommandSource, what: str, env: Mapping[str, str]) -> str:
    """The command's standard output, read as it comes and cut off (the command killed) at
    MAX_VALUE_BYTES or COMMAND_TIMEOUT. Its error output is discarded, never shown: a
    failing secret command may print the secret there."""
    argv = list(source.command)
    program = source.written.split()[0] if source.written.split() else argv[0]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=dict(env),
                                start_new_session=True)  # its children are killed with it
    except FileNotFoundError:
        raise SecretSourceError(f"{what}: the program {program!r} of the {source.describe()} "
                                "was not found; install it or fix the command") from None
    except OSError as exc:
        raise SecretSourceError(f"{what}: the {source.describe()} could not start: "
                                f"{exc.strerror or type(exc).__name__}") from None
    with proc:
        try:
            data, code = _bounded_output(proc, time.monotonic() + COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise SecretSourceError(f"{what}: the {source.describe()} did not finish within "
                                    f"{COMMAND_TIMEOUT:.0f}s") from None
        finally:
            _kill(proc)
    if code != 0:
        raise SecretSourceError(f"{what}: the {source.describe()} failed with exit code "
                                f"{code} (its error output is not shown, as it may hold the "
                                "secret: run the command by hand to see it)")
    return _decode(data, source, what)


def _bounded_output(proc: subprocess.Popen[bytes], deadline: float) -> tuple[bytes, int]:
    """(at most MAX_VALUE_BYTES + 1 bytes of stdout, exit code); TimeoutExpired past the
    deadline. Stops reading (the caller kills the command) once the limit is passed."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    chunks: list[bytes] = []
    size = 0
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while size <= MAX_VALUE_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, COMMAND_TIMEOUT)
            if not sel.select(left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    data = b"".join(chunks)
    if size > MAX_VALUE_BYTES:
        return data, 0  # too much: _decode says so, whatever the exit code would be
    return data, proc.wait(timeout=max(0.0, deadline - time.monotonic()))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """End the command and whatever it started (its own session), if still running."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ---------------------------------------------------------------- Vault / OpenBao (KV v2)

_TOKENS: dict[str, str] = {}  # VAULT_ADDR -> a token from a JWT login in this run


def _read_vault(source: VaultSource, what: str, env: Mapping[str, str]) -> str:
    import httpx

    addr = env.get("VAULT_ADDR", "").rstrip("/")
    if not addr:
        raise SecretSourceError(f"{what}: VAULT_ADDR is not set; export the address of the "
                                f"Vault or OpenBao server to read the {source.describe()}")
    url = f"{addr}/v1/{source.mount.strip('/')}/data/{source.path.strip('/')}"
    try:
        with _client(env) as client:
            token = _token(client, addr, env, what)
            resp = client.get(url, headers={"X-Vault-Token": token})
    except httpx.HTTPError as exc:
        raise SecretSourceError(f"{what}: Vault at {shown_address(addr)} could not be reached "
                                f"({type(exc).__name__}); check VAULT_ADDR and the network"
                                ) from None
    except VaultAnswerTooLarge:
        raise SecretSourceError(f"{what}: Vault at {addr} answered with more than "
                                f"{MAX_ANSWER_BYTES // 1024 // 1024} MiB; is VAULT_ADDR a "
                                "Vault server?") from None
    where = f"{source.mount}/{source.path}"
    if resp.status_code == 403:
        raise SecretSourceError(f"{what}: Vault refused to read {where} (403 permission "
                                "denied); the token's policy must allow read on "
                                f"{source.mount}/data/{source.path}")
    if resp.status_code == 404:
        raise SecretSourceError(f"{what}: Vault has no secret at {where} (404); check "
                                "mount and path (KV version 2)")
    if resp.status_code != 200:
        raise SecretSourceError(f"{what}: Vault answered {resp.status_code} reading {where}")
    data = _kv_data(resp)
    if data is None:
        raise SecretSourceError(f"{what}: Vault's answer for {where} is not a KV version 2 "
                                "secret; is the mount a KV v2 engine?")
    if source.field not in data:
        fields = ", ".join(sorted(str(k) for k in data)) or "none"
        raise SecretSourceError(f"{what}: the secret {where} has no field {source.field!r} "
                                f"(its fields: {fields})")
    value = data[source.field]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SecretSourceError(f"{what}: the field {source.field!r} of {where} is not a "
                                "string")
    return value


def shown_address(addr: str) -> str:
    """VAULT_ADDR as it may be shown: without a user name or password in it, nor a query."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(addr)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "VAULT_ADDR (not shown: it is not a URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else "VAULT_ADDR"


def _kv_data(resp: Any) -> dict[str, Any] | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    inner = body.get("data") if isinstance(body, dict) else None
    data = inner.get("data") if isinstance(inner, dict) else None
    return data if isinstance(data, dict) else None


def _client(env: Mapping[str, str]) -> Any:
    import httpx

    verify: Any = env.get("VAULT_CACERT") or True
    if env.get("VAULT_SKIP_VERIFY", "").lower() in ("1", "true"):
        verify = False
    headers = {"X-Vault-Namespace": env["VAULT_NAMESPACE"]} if env.get("VAULT_NAMESPACE") \
        else {}
    transport = _capped(httpx.HTTPTransport(verify=verify))
    return httpx.Client(timeout=VAULT_TIMEOUT, verify=verify, headers=headers,
                        trust_env=False, transport=transport)


class VaultAnswerTooLarge(Exception):
    """Vault (or the CI's token service) sent more than MAX_ANSWER_BYTES."""


MAX_ANSWER_BYTES = 2 * MAX_VALUE_BYTES  # a KV secret of at most 1 MiB, with its JSON


def _capped(inner: Any) -> Any:
    """A transport whose response bodies end in VaultAnswerTooLarge past MAX_ANSWER_BYTES,
    as they arrive (httpx would otherwise read an endless body into memory)."""
    import httpx

    class Stream(httpx.SyncByteStream):
        def __init__(self, stream: Any) -> None:
            self.stream = stream

        def __iter__(self) -> Any:
            size = 0
            for chunk in self.stream:
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise VaultAnswerTooLarge
                yield chunk

        def close(self) -> None:
            self.stream.close()

    class Capped(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            resp = inner.handle_request(request)
            return httpx.Response(resp.status_code, headers=resp.headers,
                                  stream=Stream(resp.stream), extensions=resp.extensions)

        def close(self) -> None:
            inner.close()

    return Capped()


def _token(client: Any, addr: str, env: Mapping[str, str], what: str) -> str:
    """VAULT_TOKEN, or a token from a JWT login with VAULT_ROLE (once per run)."""
    if env.get("VAULT_TOKEN"):
        return env["VAULT_TOKEN"]
    if addr in _TOKENS:
        return _TOKENS[addr]
    role = env.get("VAULT_ROLE")
    if not role:
        raise SecretSourceError(f"{what}: neither VAULT_TOKEN nor VAULT_ROLE is set; give a "
                                "token, or the role of a JWT/OIDC login (in GitHub Actions "
                                "with `permissions: id-token: write`)")
    jwt = env.get("VAULT_JWT") or _ci_oidc_token(client, env, what)
    mount = env.get("VAULT_AUTH_PATH", "jwt").strip("/")
    resp = client.post(f"{addr}/v1/auth/{mount}/login", json={"role": role, "jwt": jwt})
    if resp.status_code != 200:
        raise SecretSourceError(f"{what}: the JWT login to Vault (auth/{mount}, role {role}) "
                                f"was refused ({resp.status_code}); check the role's bound "
                                "claims and audience")
    try:
        token = resp.json()["auth"]["client_token"]
    except (ValueError, KeyError, TypeError):
        raise SecretSourceError(f"{what}: the JWT login to Vault gave no client token"
                                ) from None
    Secret(token)
    _TOKENS[addr] = str(token)
    return str(token)


def _ci_oidc_token(client: Any, env: Mapping[str, str], what: str) -> str:
    url, bearer = env.get("ACTIONS_ID_TOKEN_REQUEST_URL"), env.get(
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not bearer:
        raise SecretSourceError(f"{what}: VAULT_ROLE is set but there is no OIDC token: give "
                                "the job `permissions: id-token: write` (GitHub Actions), or "
                                "put a JWT in VAULT_JWT")
    import httpx

    audience = env.get("VAULT_JWT_AUDIENCE")
    # The URL carries its own query (api-version=...): the audience is added to it.
    target = httpx.URL(url).copy_merge_params({"audience": audience}) if audience else url
    resp = client.get(target, headers={"Authorization": f"bearer {bearer}"})
    try:
        value = resp.json()["value"] if resp.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        value = None
    if not isinstance(value, str) or not value:
        raise SecretSourceError(f"{what}: the CI's OIDC token request failed "
                                f"({resp.status_code}); check `permissions: id-token: write`")
    Secret(value)
    return value


# ---------------------------------------------------------------- secrets with a source


class SourcedSecret(Secret):
    """A secret setting (registry.password, a webhook) whose value comes from a source.

    It counts as set without being read (`config check` reads nothing); `reveal()` reads
    the source the first time it is needed, or `resolve` reads it at preflight.
    """

    __slots__ = ("source", "what")

    def __init__(self, source: Source, what: str) -> None:
        super().__init__("")
        self.source = source
        self.what = what

    def read(self, environ: Mapping[str, str] | None = None) -> str:
        """Read the source now (once per run) and keep the value."""
        if not self._value:
            self._value = fetch(self.source, self.what, environ)
        return self._value

    def reveal(self) -> str:
        return self.read()

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SourcedSecret) and other.source == self.source

    def __hash__(self) -> int:
        return hash(("SourcedSecret", self.source))


def resolve(cfg: Config, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Read every secret of the config from its source, once: the app's secrets (returned,
    name -> value), the registry password and the webhooks. Raise SecretSourceError, one
    line naming the secret and its source, at the first that fails or is empty."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for name, source in cfg.app.secrets.items():
        value = fetch(source, f"app.secrets.{name}", env)
        if "\n" in value or "\r" in value:
            raise SecretSourceError(
                f"app.secrets.{name}: the value from the {source.describe()} contains a line "
                "break, which docker --env-file cannot carry; encode it (e.g. base64) or put "
                "it in a mounted file")
        values[name] = value
    sourced = [cfg.registry.password] if cfg.registry else []
    sourced += [t.webhook for t in cfg.notify]
    for secret in sourced:
        if isinstance(secret, SourcedSecret):
            value = secret.read(env)
            if secret.what.startswith("notify"):
                from plainsail.config.model import is_web_url

                if not is_web_url(value):
                    raise SecretSourceError(
                        f"{secret.what}: the value from the {secret.source.describe()} is not "
                        "an http(s) URL with a host (the value is secret, so it is not shown)")
    return values


def env_values(cfg: Config, environ: Mapping[str, str]) -> list[Secret]:
    """The app secrets that come from the environment and are set there, read without
    touching any other source (for commands that only redact, such as `logs`)."""
    return [Secret(environ[s.env]) for s in cfg.app.secrets.values()
            if isinstance(s, EnvSource) and environ.get(s.env)]
