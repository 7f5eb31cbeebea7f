"""Secrets from short-lived sources: the config shapes, file and command sources (fast),
Vault/OpenBao KV v2 against a real OpenBao dev server, and a real deploy whose
DATABASE_URL comes from OpenBao (integration)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from plainsail.config import model as configlib
from plainsail.config import secretsources
from plainsail.config.secretsources import (
    CommandSource,
    EnvSource,
    FileSource,
    SecretSourceError,
    SourcedSecret,
    VaultSource,
)
from plainsail.deploy import plan
from plainsail.errors import ConfigError, PlainsailError
from plainsail.secret import Secret, scrub
from tests.support.cli import plainsail
from tests.support.deploy_env import DeployDir
from tests.support.openbao import OpenBao
from tests.support.services import free_port

MINIMAL = "service: api\nimage: 127.0.0.1:5000/acme/api\n"
PY = sys.executable


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    secretsources.forget()
    yield
    secretsources.forget()


def parse(text: str, env: dict[str, str] | None = None,
          path: Path = Path("/x/plainsail.yml")) -> configlib.Config:
    return configlib.parse(text, path, env or {})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.problems


# ---------------------------------------------------------------- config shapes


def test_list_form_reads_the_environment_as_before() -> None:
    cfg = parse(MINIMAL + "app:\n  secrets: [DATABASE_URL, API_KEY]\n")
    assert cfg.app.secrets == {"DATABASE_URL": EnvSource("DATABASE_URL"),
                               "API_KEY": EnvSource("API_KEY")}
    assert plan.app_env(cfg, {"DATABASE_URL": "pg://x", "API_KEY": "k-1"}) == {
        "DATABASE_URL": "pg://x", "API_KEY": "k-1"}
    assert plan.missing_secrets(cfg, {"DATABASE_URL": "pg://x", "API_KEY": ""}) == ["API_KEY"]


def test_mapping_form_every_source() -> None:
    cfg = parse(MINIMAL + (
        "app:\n  secrets:\n"
        "    DATABASE_URL: {vault: {path: api/prod, field: database_url, mount: kv}}\n"
        "    STRIPE_KEY: {command: [op, read, 'op://prod/stripe/key']}\n"
        "    SENTRY_DSN: {file: /run/secrets/sentry}\n"
        "    LOCAL_FILE: {file: secrets/local}\n"
        "    SESSION_KEY: {env: CI_SESSION_KEY}\n"
        "    DEFAULT_MOUNT: {vault: {path: api/prod, field: x}}\n"))
    s = cfg.app.secrets
    assert s["DATABASE_URL"] == VaultSource("api/prod", "database_url", "kv")
    assert s["STRIPE_KEY"] == CommandSource(("op", "read", "op://prod/stripe/key"))
    assert s["SENTRY_DSN"] == FileSource("/run/secrets/sentry")
    assert s["LOCAL_FILE"] == FileSource("/x/secrets/local")  # next to plainsail.yml
    assert s["SESSION_KEY"] == EnvSource("CI_SESSION_KEY")
    assert s["DEFAULT_MOUNT"] == VaultSource("api/prod", "x", "secret")
    # the variable to export is named, not the secret
    assert plan.missing_secrets(cfg, {}) == ["CI_SESSION_KEY"]


@pytest.mark.parametrize("body, expected", [
    ("    A: {vualt: {path: p, field: f}}\n",
     "line 5: app.secrets.A.vualt: unknown source (did you mean vault?)"),
    ("    A: {env: X, file: /f}\n", "line 5: app.secrets.A: give exactly one source, not env "
     "and file"),
    ("    A: {}\n", "line 5: app.secrets.A: expected a source, got an empty mapping"),
    ("    A: plain-value\n", "line 5: app.secrets.A: expected a source, got a value"),
    ("    A: {vault: {path: p}}\n", "line 5: app.secrets.A.vault.field: is required"),
    ("    A: {vault: {path: ../p, field: f}}\n", "line 5: app.secrets.A.vault.path: '../p' is "
     "not valid"),
    ("    A: {vault: {path: p, field: f, version: 2}}\n",
     "line 5: app.secrets.A.vault.version: unknown key"),
    ("    A: {env: 'not a name'}\n", "line 5: app.secrets.A.env: 'not a name' is not valid"),
    ("    A: {command: []}\n", "line 5: app.secrets.A.command: the command is empty"),
    ("    A: {file: ''}\n", "line 5: app.secrets.A.file: must not be empty"),
    ("    1A: {env: X}\n", "line 5: app.secrets.1A: invalid name"),
])
def test_bad_sources_are_one_line_with_key_path_and_line(body: str, expected: str) -> None:
    ps = problems(MINIMAL + "app:\n  secrets:\n" + body)
    assert any(p.startswith(expected) for p in ps), ps


def test_secrets_wrong_type_and_overlap_with_env() -> None:
    assert any("expected a list of environment variable names or a mapping" in p
               for p in problems(MINIMAL + "app:\n  secrets: DATABASE_URL\n"))
    ps = problems(MINIMAL + "app:\n  env: {A: x}\n  secrets: {A: {env: B}}\n")
    assert any("A is both in app.env and app.secrets" in p for p in ps)


def test_registry_password_and_webhook_take_sources_without_reading_them(
        tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    cmd = [PY, "-c", f"open({str(marker)!r}, 'w'); print('pw-from-command')"]
    cfg = parse(MINIMAL + "registry:\n  username: ci\n  password: {command: "
                + json.dumps(cmd) + "}\nnotify:\n  - webhook: {file: hook.txt}\n",
                path=tmp_path / "plainsail.yml")
    assert cfg.registry is not None
    pw = cfg.registry.password
    assert isinstance(pw, SourcedSecret) and pw  # set, but not read
    assert not marker.exists()
    shown = repr(configlib.to_display(cfg))
    assert "from the command" in shown and "from the file" in shown
    assert pw.reveal() == "pw-from-command" and marker.exists()
    assert scrub("login pw-from-command") == "login ***"
    (tmp_path / "hook.txt").write_text("not a url\n")
    with pytest.raises(SecretSourceError, match=r"^notify\[0\]\.webhook: the value from the "
                       r"file .* is not an http\(s\) URL"):
        secretsources.resolve(cfg, {})


def test_config_check_reads_no_source(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    cmd = [PY, "-c", f"open({str(marker)!r}, 'w'); print('v')"]
    (tmp_path / "plainsail.yml").write_text(
        MINIMAL + "app:\n  secrets:\n    TOKEN: {command: " + json.dumps(cmd) + "}\n"
        "    DB: {env: DB_URL}\n")
    r = plainsail("config", "check", "--json", cwd=tmp_path, env={"DB_URL": "pg://secret-db"})
    assert r.code == 0, r.text
    shown = json.loads(r.out)["app"]["secrets"]
    assert shown["TOKEN"].startswith("from the command `") and shown["DB"] == "*** (from DB_URL)"
    assert not marker.exists()


# ---------------------------------------------------------------- file and command


def _cfg(tmp_path: Path, secrets_yaml: str) -> configlib.Config:
    return parse(MINIMAL + "app:\n  secrets:\n" + secrets_yaml, path=tmp_path / "plainsail.yml")


def test_file_source(tmp_path: Path) -> None:
    (tmp_path / "db").write_text("pg://user:file-pw-123@db/app\n")
    cfg = _cfg(tmp_path, "    DATABASE_URL: {file: db}\n")
    assert secretsources.resolve(cfg, {}) == {"DATABASE_URL": "pg://user:file-pw-123@db/app"}
    assert "***" in scrub("connect pg://user:file-pw-123@db/app") and "file-pw-123" not in \
        scrub("password file-pw-123")


@pytest.mark.parametrize("content, expected", [
    (None, "app.secrets.S: the file {path} does not exist"),
    ("", "app.secrets.S: the file {path} gave an empty value"),
    ("\n", "app.secrets.S: the file {path} gave an empty value"),
    ("two\nlines", "app.secrets.S: the value from the file {path} contains a line break"),
])
def test_file_source_problems(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "s"
    if content is not None:
        path.write_text(content)
    cfg = _cfg(tmp_path, "    S: {file: s}\n")
    with pytest.raises(SecretSourceError) as info:
        secretsources.resolve(cfg, {})
    msg = str(info.value)
    assert msg.startswith(expected.format(path=path)) and "\n" not in msg


def test_command_source_read_once_per_run(tmp_path: Path) -> None:
    count = tmp_path / "count"
    script = (f"import os; p={str(count)!r}; n=int(open(p).read()) if os.path.exists(p) else 0; "
              "open(p,'w').write(str(n+1)); print(os.environ['GIVEN'] + '-cmd-value')")
    cfg = _cfg(tmp_path, f"    TOKEN: {{command: {json.dumps([PY, '-c', script])}}}\n")
    env = {"GIVEN": "from-env", "PATH": "/usr/bin:/bin"}
    assert plan.app_env(cfg, env) == {"TOKEN": "from-env-cmd-value"}
    assert plan.app_env(cfg, env) == {"TOKEN": "from-env-cmd-value"}
    assert count.read_text() == "1"


@pytest.mark.parametrize("argv, expected", [
    ([PY, "-c", "import sys; print('x', file=sys.stderr); print('no such item', "
      "file=sys.stderr); sys.exit(3)"],
     "failed with exit code 3 (its error output is not shown, as it may hold the secret: "
     "run the command by hand to see it)"),
    (["no-such-program-xyz", "read"], "the program 'no-such-program-xyz' of the command "
     "`no-such-program-xyz read` was not found"),
    ([PY, "-c", "pass"], "gave an empty value"),
])
def test_command_source_problems(tmp_path: Path, argv: list[str], expected: str) -> None:
    cfg = _cfg(tmp_path, f"    TOKEN: {{command: {json.dumps(argv)}}}\n")
    with pytest.raises(PlainsailError) as info:
        plan.app_env(cfg, {"PATH": "/usr/bin:/bin"})
    msg = str(info.value)
    assert msg.startswith("app.secrets.TOKEN: ") and expected in msg and "\n" not in msg


def test_vault_unreachable_or_unconfigured_is_one_line(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "    DB: {vault: {path: api/prod, field: url}}\n")
    with pytest.raises(SecretSourceError, match="^app.secrets.DB: VAULT_ADDR is not set"):
        secretsources.resolve(cfg, {})
    with pytest.raises(SecretSourceError, match="neither VAULT_TOKEN nor VAULT_ROLE"):
        secretsources.resolve(cfg, {"VAULT_ADDR": "http://127.0.0.1:9"})
    addr = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SecretSourceError) as info:
        secretsources.resolve(cfg, {"VAULT_ADDR": addr, "VAULT_TOKEN": "t"})
    assert str(info.value) == (f"app.secrets.DB: Vault at {addr} could not be reached "
                               "(ConnectError); check VAULT_ADDR and the network")
    # A user name and password in VAULT_ADDR are never shown.
    port = free_port()
    with pytest.raises(SecretSourceError) as info:
        secretsources.resolve(cfg, {"VAULT_ADDR": f"http://ops:s3cr3t-pw@127.0.0.1:{port}/x",
                                    "VAULT_TOKEN": "t"})
    assert str(info.value) == (f"app.secrets.DB: Vault at http://127.0.0.1:{port}/x could not "
                               "be reached (ConnectError); check VAULT_ADDR and the network")


@pytest.mark.parametrize("value", [" ", "\t  "])
def test_a_secret_of_white_space_only_is_refused(tmp_path: Path, value: str) -> None:
    from plainsail.deploy.plan import missing_secrets

    (tmp_path / "s").write_text(value)
    cfg = _cfg(tmp_path, "    S: {file: s}\n    E: {env: E_VAR}\n")
    with pytest.raises(SecretSourceError, match="gave an empty value .or only white space"):
        secretsources.resolve(cfg, {"E_VAR": "ok"})
    assert missing_secrets(cfg, {"E_VAR": value}) == ["E_VAR"]


def test_preflight_failure_names_the_source_and_changes_nothing(tmp_path: Path) -> None:
    """A deploy whose secret command fails stops in preflight with one line (no host is
    contacted: the hosts are unreachable on purpose)."""
    (tmp_path / "plainsail.yml").write_text(
        MINIMAL + "hosts: ['ssh://nobody@127.0.0.1:9']\nsigning: {verify: false}\n"
        "app:\n  secrets:\n    TOKEN: {command: [" + shlex.quote(PY)
        + ", -c, 'import sys; sys.exit(7)']}\n")
    r = plainsail("deploy", "abcdef12", cwd=tmp_path)
    assert r.code == 1
    assert r.err.strip().endswith("app.secrets.TOKEN: the command `" + PY
                                  + " -c 'import sys; sys.exit(7)'` failed with exit code 7 "
                                  "(its error output is not shown, as it may hold the secret: "
                                  "run the command by hand to see it)")
    assert len(r.err.strip().splitlines()) == 1, r.err


# ---------------------------------------------------------------- OpenBao (integration)


def test_vault_kv2_reads_and_errors(openbao: OpenBao, tmp_path: Path) -> None:
    path = openbao.unique_path()
    openbao.put(path, {"database_url": "pg://u:bao-pw-1@db/x", "empty": ""})
    cfg = _cfg(tmp_path, f"    DB: {{vault: {{path: {path}, field: database_url}}}}\n"
               f"    E: {{vault: {{path: {path}, field: empty}}}}\n")
    env = openbao.env()
    assert secretsources.fetch(cfg.app.secrets["DB"], "app.secrets.DB", env) == \
        "pg://u:bao-pw-1@db/x"
    with pytest.raises(SecretSourceError, match=rf"^app.secrets.E: the Vault secret/{path} "
                       "field empty gave an empty value"):
        secretsources.resolve(cfg, env)
    for body, expected in [
        (f"{{path: {path}, field: nope}}", f"the secret secret/{path} has no field 'nope' "
         "(its fields: database_url, empty)"),
        ("{path: missing/thing, field: x}", "Vault has no secret at secret/missing/thing (404)"),
    ]:
        c = _cfg(tmp_path, f"    X: {{vault: {body}}}\n")
        with pytest.raises(SecretSourceError) as info:
            secretsources.resolve(c, env)
        assert expected in str(info.value) and "bao-pw-1" not in str(info.value)
    # a token whose policy cannot read the path
    openbao.api("PUT", "sys/policies/acl/nothing", {"policy": 'path "other/*" { '
                                                             'capabilities = ["read"] }'})
    weak = openbao.api("POST", "auth/token/create", {"policies": ["nothing"]}).json()
    c = _cfg(tmp_path, f"    X: {{vault: {{path: {path}, field: database_url}}}}\n")
    secretsources.forget()  # read once per run: this is another run
    with pytest.raises(SecretSourceError,
                       match=r"Vault refused to read .* \(403 permission denied\)"):
        secretsources.resolve(c, {**env, "VAULT_TOKEN": weak["auth"]["client_token"]})


def test_deploy_with_database_url_from_openbao(deploy_dir: DeployDir, openbao: OpenBao) -> None:
    """A real deploy over SSH whose DATABASE_URL comes from OpenBao and a second secret from
    a command: the app gets both; no output or record holds either value."""
    d = deploy_dir
    path = openbao.unique_path()
    openbao.put(path, {"database_url": d.db.url})
    token = f"cmd-token-{uuid.uuid4().hex}"
    d.config()
    text = (d.path / "plainsail.yml").read_text()
    assert "  secrets: [DATABASE_URL]\n" in text
    cmd = json.dumps([PY, "-c", f"print({token!r})"])
    (d.path / "plainsail.yml").write_text(text.replace(
        "  secrets: [DATABASE_URL]\n",
        f"  secrets:\n    DATABASE_URL: {{vault: {{path: {path}, field: database_url}}}}\n"
        f"    EXTRA_TOKEN: {{command: {cmd}}}\n"))
    d.env = {}  # nothing from the environment but Vault's address and token
    r = d.run("deploy", d.builds.ref("v1"), "--json", env=openbao.env())
    assert r.code == 0, r.text
    assert json.loads(r.out)["outcome"] == "succeeded"
    assert '"database": "ok"' in d.get()[1]  # the app reached its database with that URL
    running = [n.split()[0] for n in d.containers() if n.endswith(" running")]
    inspect = d.host_run("docker", "inspect", "--format", "{{json .Config.Env}}", *running)
    assert f"EXTRA_TOKEN={token}" in inspect.stdout
    r2 = d.run("history", "--json")
    r3 = d.run("status", "--json")
    local = (d.path / ".plainsail" / "history.jsonl").read_text()
    everything = r.text + r2.text + r3.text + local + json.dumps(d.host_records())
    for value in (d.db.password, token):
        assert value not in everything
    # without the Vault token the deploy stops in preflight, naming the secret and source
    secretsources.forget()
    r4 = d.run("deploy", d.builds.ref("v1"), "--force", env={"VAULT_ADDR": openbao.addr})
    assert r4.code == 1
    assert "app.secrets.DATABASE_URL: neither VAULT_TOKEN nor VAULT_ROLE is set" in r4.err


def test_secret_value_wrapped() -> None:
    """What resolve reads is known to the redaction at once."""
    cfg = parse(MINIMAL + "app:\n  secrets: {S: {env: SRC}}\n")
    assert secretsources.resolve(cfg, {"SRC": "value-xyz-1"}) == {"S": "value-xyz-1"}
    assert scrub("it is value-xyz-1") == "it is ***"
    assert str(Secret("value-xyz-1")) == "***"


def _es256_jwt(claims: dict[str, object]) -> tuple[str, str]:
    """A signed JWT and the PEM public key that verifies it."""
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    key = ec.generate_private_key(ec.SECP256R1())
    signing_input = (b64(json.dumps({"alg": "ES256", "typ": "JWT"}).encode()) + "."
                     + b64(json.dumps(claims).encode()))
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    token = signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return token, pem.decode()


def test_vault_jwt_login_with_the_ci_oidc_token(openbao: OpenBao, tmp_path: Path) -> None:
    """No VAULT_TOKEN: plainsail asks the CI (a local stand-in for GitHub Actions' token
    endpoint) for an OIDC token and logs in to OpenBao's JWT auth method with VAULT_ROLE."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    path = openbao.unique_path()
    openbao.put(path, {"database_url": "pg://u:jwt-pw-9@db/x"})
    mount = f"jwt-{uuid.uuid4().hex[:6]}"
    now = int(time.time())
    token, pem = _es256_jwt({"iss": "https://token.example", "sub": "repo:acme/api",
                             "aud": "plainsail-test", "iat": now, "nbf": now - 5,
                             "exp": now + 300})
    openbao.api("POST", f"sys/auth/{mount}", {"type": "jwt"})
    openbao.api("POST", f"auth/{mount}/config", {"jwt_validation_pubkeys": [pem],
                                                 "bound_issuer": "https://token.example"})
    openbao.api("PUT", f"sys/policies/acl/{mount}",
                {"policy": f'path "secret/data/{path}" {{ capabilities = ["read"] }}'})
    openbao.api("POST", f"auth/{mount}/role/deploy", {
        "role_type": "jwt", "user_claim": "sub", "bound_audiences": ["plainsail-test"],
        "policies": [mount], "ttl": "5m"})
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            asked.append(f"{self.path} {self.headers.get('Authorization')}")
            body = json.dumps({"value": token}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = _cfg(tmp_path, f"    DB: {{vault: {{path: {path}, field: database_url}}}}\n")
        env = {"VAULT_ADDR": openbao.addr, "VAULT_ROLE": "deploy", "VAULT_AUTH_PATH": mount,
               "VAULT_JWT_AUDIENCE": "plainsail-test",
               "ACTIONS_ID_TOKEN_REQUEST_URL": f"http://127.0.0.1:{server.server_port}/t?x=1",
               "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "runner-bearer"}
        assert secretsources.resolve(cfg, env) == {"DB": "pg://u:jwt-pw-9@db/x"}
        assert asked == ["/t?x=1&audience=plainsail-test bearer runner-bearer"]
        secretsources.forget()
        with pytest.raises(SecretSourceError, match=rf"JWT login to Vault \(auth/{mount}, "
                           r"role nobody\) was refused \(400\)"):
            secretsources.resolve(cfg, {**env, "VAULT_ROLE": "nobody"})
        secretsources.forget()
        with pytest.raises(SecretSourceError, match="VAULT_ROLE is set but there is no OIDC "
                           "token"):
            secretsources.resolve(cfg, {"VAULT_ADDR": openbao.addr, "VAULT_ROLE": "deploy"})
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- what a command source shows

LEAKY = ("import sys; print('Authorization: Bearer ' + sys.argv[1], file=sys.stderr); "
         "sys.exit(4)")


def _leaky_config(tmp_path: Path) -> None:
    (tmp_path / "plainsail.yml").write_text(
        MINIMAL + "hosts: ['ssh://nobody@127.0.0.1:9']\nsigning: {verify: false}\n"
        "app:\n  secrets:\n    TOKEN: {command: [" + shlex.quote(PY) + ", -c, "
        + json.dumps(LEAKY) + ", '${LOGIN_TOKEN}']}\n")


def test_command_source_shows_the_command_as_written(tmp_path: Path) -> None:
    """Neither the expanded argument nor the command's error output (which repeats it) is
    shown: not by config check, not in the error, not in the local history's reason."""
    _leaky_config(tmp_path)
    env = {"LOGIN_TOKEN": "tok-" + uuid.uuid4().hex}
    checked = plainsail("config", "check", cwd=tmp_path, env=env)
    assert checked.code == 0 and "${LOGIN_TOKEN}" in checked.out
    failed = plainsail("deploy", "abcdef12", cwd=tmp_path, env=env)
    assert failed.code == 1 and "failed with exit code 4" in failed.err
    assert "${LOGIN_TOKEN}" in failed.err
    saved = (tmp_path / ".plainsail" / "history.jsonl").read_text()
    assert "${LOGIN_TOKEN}" in saved  # the reason recorded, as written
    for text in (checked.text, failed.text, saved):
        assert env["LOGIN_TOKEN"] not in text


def test_command_source_printing_endlessly_is_cut_off(tmp_path: Path) -> None:
    """Read as it comes: refused (and the command killed) just past 1 MiB, not after the
    command has filled memory."""
    endless = "import sys\nwhile True: sys.stdout.write('x' * 65536)"
    cfg = _cfg(tmp_path, f"    TOKEN: {{command: {json.dumps([PY, '-c', endless])}}}\n")
    with pytest.raises(SecretSourceError, match="gave more than 1024 KiB"):
        plan.app_env(cfg, {"PATH": "/usr/bin:/bin"})


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_command_source_children_are_ended_on_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that hangs is killed at the timeout with everything it started."""
    monkeypatch.setattr(secretsources, "COMMAND_TIMEOUT", 0.5)
    pid_file = tmp_path / "child.pid"
    hang = ("import subprocess, time; c = subprocess.Popen(['sleep', '30'], "
            f"stdout=subprocess.DEVNULL); open({str(pid_file)!r}, 'w').write(str(c.pid)); "
            "time.sleep(30)")
    cfg = _cfg(tmp_path, f"    TOKEN: {{command: {json.dumps([PY, '-c', hang])}}}\n")
    with pytest.raises(SecretSourceError, match="did not finish within"):
        plan.app_env(cfg, {"PATH": "/usr/bin:/bin"})
    pid = int(pid_file.read_text())
    try:
        for _ in range(50):
            if not _alive(pid):
                break
            time.sleep(0.05)
        assert not _alive(pid), "the command's child outlived it"
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_vault_answer_without_end_is_cut_off(tmp_path: Path) -> None:
    """An answer that never ends is refused past its limit, as it arrives (not read into
    memory whole)."""
    import http.server
    import threading

    class Endless(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            try:
                for _ in range(4096):  # 256 MiB at most, then the server gives up
                    self.wfile.write(b"x" * 65536)
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = _cfg(tmp_path, "    DB: {vault: {path: api/prod, field: url}}\n")
        addr = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(SecretSourceError, match="answered with more than 2 MiB"):
            secretsources.resolve(cfg, {"VAULT_ADDR": addr, "VAULT_TOKEN": "t"})
    finally:
        server.shutdown()
        server.server_close()
