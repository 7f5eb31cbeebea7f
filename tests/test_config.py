"""The config loader: the documented example is valid; every problem names key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from plainsail.config import model as configlib
from plainsail.errors import ConfigError
from plainsail.secret import Secret

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "plainsail.yml"
EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "plainsail.example.yml"


def parse(text: str, env: dict[str, str] | None = None) -> configlib.Config:
    return configlib.parse(text, Path("/x/plainsail.yml"), env or {})


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return info.value.problems


@pytest.mark.parametrize("path", [EXAMPLE, SPEC], ids=["docs-example", "shared-spec"])
def test_documented_example_is_valid(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path.name} is not present here")
    cfg = configlib.parse(path.read_text(), path, {"REGISTRY_PASSWORD": "hunter22"})
    assert cfg.service == "notes-api"
    assert cfg.build.tag_length == 8
    assert cfg.health.interval == 1.0 and cfg.migrate and cfg.migrate.timeout == 300.0
    assert cfg.registry is not None and isinstance(cfg.registry.password, Secret)
    assert cfg.registry.password.reveal() == "hunter22"
    assert "hunter22" not in repr(configlib.to_display(cfg))


MINIMAL = "service: api\nimage: 127.0.0.1:5000/acme/api\n"


def test_minimal_defaults() -> None:
    cfg = parse(MINIMAL)
    assert cfg.hosts == ["local"]
    assert cfg.app.init is True and cfg.app.stop_timeout == 10.0
    assert cfg.on_failure == "restore" and cfg.retain == 3 and cfg.migrate is None


def test_interpolation_required_optional_and_escape() -> None:
    text = MINIMAL + "app:\n  env:\n    A: ${X}\n    B: ${Y:-fallback}\n    C: $${literal}\n"
    cfg = parse(text, {"X": "from-env"})
    assert cfg.app.env == {"A": "from-env", "B": "fallback", "C": "${literal}"}


def test_unset_variable_names_key_and_line() -> None:
    (p,) = problems(MINIMAL + "registry:\n  username: u\n  password: ${REG_PW}\n")
    assert p.startswith("line 5: registry.password:") and "REG_PW is not set" in p


@pytest.mark.parametrize(
    "image, needle",
    [("r.example.com/a/b:latest", "contains a tag"),
     ("r.example.com/a/b@sha256:" + "0" * 64, "contains a digest"),
     ("R.example.com/A/B", "not a valid image repository")],
)
def test_image_must_be_a_repository(image: str, needle: str) -> None:
    (p,) = problems(f"service: api\nimage: {image}\n")
    assert p.startswith("line 2: image:") and needle in p


def test_unknown_keys_and_types_all_reported() -> None:
    ps = problems(MINIMAL + "app:\n  prot: 1\n  port: http\nretain: many\nextra: 1\n")
    assert any("app.prot: unknown key (did you mean port?)" in p for p in ps)
    assert any(p.startswith("line 5: app.port: expected a whole number") for p in ps)
    assert any("retain: expected a whole number" in p for p in ps)
    assert any("extra: unknown key" in p for p in ps)


def test_secrets_never_displayed() -> None:
    text = MINIMAL + "registry:\n  username: ci\n  password: ${PW}\nnotify:\n  - webhook: ${HOOK}\n"
    cfg = parse(text, {"PW": "pw-123456", "HOOK": "https://hooks.example/T0KEN"})
    shown = repr(configlib.to_display(cfg)) + str(cfg) + repr(cfg)
    assert "pw-123456" not in shown and "T0KEN" not in shown
    assert cfg.registry and cfg.registry.password.reveal() == "pw-123456"


def test_missing_required_and_bad_yaml() -> None:
    assert any("service: is required" in p for p in problems("image: a.b/c\n"))
    with pytest.raises(ConfigError, match="line 2: not valid YAML"):
        parse("service: [a\n")


def test_cross_checks() -> None:
    ps = problems(MINIMAL + "app:\n  network: host\n  port: 8080\n  publish: 9090\n")
    assert any("with network: host" in p for p in ps)
    ps = problems(MINIMAL + "app:\n  env: {DATABASE_URL: x}\n  secrets: [DATABASE_URL]\n")
    assert any("both in app.env and app.secrets" in p for p in ps)


def test_hosts_validated() -> None:
    ps = problems(MINIMAL + "hosts: ['http://x', 'ssh://u@h:99999', 'bad host']\n")
    assert len(ps) == 3


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        configlib.load(tmp_path / "plainsail.yml")


# ---------------------------------------------------------------- values that cannot work
# Each of these passed `config check` once and failed (or crashed) later, in a deploy.


def one_problem(text: str, env: dict[str, str] | None = None) -> str:
    (p,) = problems(text, env)
    assert "\n" not in p
    return p


@pytest.mark.parametrize("path", ["/health/é", "/a b", "health", "/x#frag", "/%zz", "/a\tb"])
def test_health_path_must_be_a_url_path(path: str) -> None:
    p = one_problem(MINIMAL + f"health:\n  path: {path!r}\n".replace("'", '"'))
    assert p.startswith("line 4: health.path:") and "not a URL path" in p


@pytest.mark.parametrize("path", ["/health", "/h%C3%A9alth", "/health?deep=1&x=a/b", "/"])
def test_health_path_accepts_encoded_paths_and_queries(path: str) -> None:
    assert parse(MINIMAL + f"health:\n  path: '{path}'\n").health.path == path


@pytest.mark.parametrize(
    "key, value, needle",
    [("health.interval", "100000000000", "too long: at most 1h"),
     ("health.interval", "2h", "too long: at most 1h"),
     ("health.timeout", "1e11", "not a duration"),
     ("health.timeout", "0", "longer than 0"),
     ("health.timeout", "0ms", "longer than 0"),
     ("health.timeout", "-1", "not a duration"),
     ("health.timeout", ".inf", "not a duration"),
     ("health.timeout", ".nan", "not a duration"),
     ("app.stop_timeout", "9" * 400, "too long a duration"),
     ("app.stop_timeout", "9" * 400 + "h", "too long a duration"),
     ("app.stop_timeout", "61m", "too long: at most 1h"),
     ("migrate.timeout", "25h", "too long: at most 24h"),
     ("migrate.timeout", "0s", "longer than 0"),
     ("timeouts.command", "0", "longer than 0"),
     ("timeouts.command", "2h", "too long: at most 1h"),
     ("timeouts.pull", "25h", "too long: at most 24h")],
)
def test_durations_have_bounds(key: str, value: str, needle: str) -> None:
    section, name = key.split(".")
    extra = "  command: [migrate]\n" if section == "migrate" else ""
    p = one_problem(MINIMAL + f"{section}:\n{extra}  {name}: {value}\n")
    assert f"{key}:" in p and needle in p and p.startswith("line ")
    assert len(p) < 200  # a 400-digit value is cut short


def test_durations_at_their_bounds_are_accepted() -> None:
    cfg = parse(MINIMAL + "app:\n  stop_timeout: 0\nhealth:\n  interval: 0\n  timeout: 1h\n"
                "migrate:\n  command: [m]\n  timeout: 24h\n")
    assert cfg.app.stop_timeout == 0 and cfg.health.interval == 0
    assert cfg.health.timeout == 3600 and cfg.migrate and cfg.migrate.timeout == 86400


def test_host_command_timeouts_reach_every_step_of_the_plan() -> None:
    from plainsail.deploy import plan
    from plainsail.hosts.containers import Container
    from plainsail.hosts.state import LockInfo, Paths

    assert parse(MINIMAL).timeouts == configlib.TimeoutsConfig(120.0, 900.0)
    cfg = parse(MINIMAL + "app:\n  stop_timeout: 3s\ntimeouts:\n  command: 4s\n  pull: 1m\n"
                "migrate:\n  command: [m]\n  timeout: 9s\n")
    assert cfg.timeouts.command == 4 and cfg.timeouts.pull == 60 and cfg.timeouts.query == 4
    target = plan.Target(cfg.image, "a3f1b2c3", "sha256:" + "ab" * 32, True)
    old = Container("api-0ld", "id0", "0ld", "sha256:" + "cd" * 32, "d0", "fp", "running",
                    "", "", cfg.image)
    paths = Paths("/h/.plainsail/api")
    hp = plan.host_plan(cfg, target, "d1", "fp", paths, [old], old, None,
                        LockInfo("d1", "me@m", "m", 1, "t", target.tag, "ci"),
                        unchanged=False, migrate_here=True)
    limits = {s.name: s.timeout for s in hp.steps}
    assert limits == {"lock+env": 4, "pull": 60, "migrate": 9, "stop-old": 7,
                      "start-new": 4, "gate": limits["gate"], "record": 4, "unlock": 4}


@pytest.mark.parametrize(
    "block, needle",
    [("registry: {username: u}", "password missing"),
     ("registry: {password: p}", "username missing"),
     ("registry: {}", "the block is empty"),
     ("registry:", "the block is empty"),
     ("registry:  # only a comment", "the block is empty")],
)
def test_registry_needs_both_or_nothing(block: str, needle: str) -> None:
    p = one_problem(MINIMAL + block + "\n")
    assert p.startswith("line 3: registry:") and needle in p
    assert "give both username and password, or remove the block" in p


def test_registry_password_must_not_be_empty_when_a_user_is_given() -> None:
    p = one_problem(MINIMAL + "registry:\n  username: ci\n  password: ${PW:-}\n")
    assert p.startswith("line 5: registry.password: is empty")
    # Both empty (the documented ${VAR:-} pattern, unset): Docker's credentials are used.
    cfg = parse(MINIMAL + "registry:\n  username: ${U:-}\n  password: ${PW:-}\n")
    assert cfg.registry and not cfg.registry.username


@pytest.mark.parametrize(
    "url",
    ["not-a-url", "http://127.0.0.1:abc/", "ftp://hooks.example/T0KEN", "https:///T0KEN",
     "http://127.0.0.1:99999/T0KEN", "https://hooks.example/T0KEN x", "https://hööks.example/",
     "http://hooks.example:0/T0KEN"],
)
def test_notify_webhook_must_be_an_http_url_and_is_never_shown(url: str) -> None:
    p = one_problem(MINIMAL + "notify:\n  - webhook: ${HOOK}\n", {"HOOK": url})
    assert p == ("line 4: notify[0].webhook: not an http(s) URL with a host (the value is "
                 "secret, so it is not shown)")
    assert url not in p and "T0KEN" not in p


def test_notify_webhook_accepts_http_and_https_and_empty() -> None:
    text = MINIMAL + "notify:\n  - webhook: ${A}\n  - webhook: ${B}\n  - webhook: ${C:-}\n"
    cfg = parse(text, {"A": "https://hooks.example/T0KEN", "B": "http://127.0.0.1:8080/x"})
    assert [bool(t.webhook) for t in cfg.notify] == [True, True, False]


@pytest.mark.parametrize(
    "image",
    ["a..b/x", ".a/x", "a./x", "-a.b/x", "a-.b/x", "r.example.com:0/x", "r.example.com:65536/x",
     "[::g]:5000/x", "r_x.example.com/x", "localhost:/x"],
)
def test_image_registry_host_must_be_a_host_name(image: str) -> None:
    p = one_problem(f"service: api\nimage: '{image}'\n")
    assert p.startswith("line 2: image:")


@pytest.mark.parametrize(
    "image",
    ["127.0.0.1:5000/acme/api", "localhost/api", "localhost:5000/api", "[::1]:5000/api",
     "Registry.Example.com/team/api", "r-1.example.com:443/a/b", "acme/api", "api"],
)
def test_image_valid_repositories(image: str) -> None:
    assert parse(f"service: api\nimage: '{image}'\n").image == image


def test_load_invalid_utf8_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "plainsail.yml"
    f.write_bytes(MINIMAL.encode() + b"app:\n  env:\n    A: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        configlib.load(f, {})
    assert info.value.problems == [
        f"not UTF-8 text (byte offset {len(MINIMAL) + 22}); save the file as UTF-8"]


def test_load_refuses_a_huge_file(tmp_path: Path) -> None:
    f = tmp_path / "plainsail.yml"
    f.write_text(MINIMAL + "#" * (configlib.MAX_FILE_BYTES + 1) + "\n")
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        configlib.load(f, {})


@pytest.mark.parametrize("nested", ["app: " + "[" * 5000, "app: " + "{a: " * 5000,
                                    "app:\n" + "- " * 5000 + "x"])
def test_deep_nesting_is_refused_before_it_is_walked(nested: str) -> None:
    p = one_problem(MINIMAL + nested + "\n")
    assert "nested more than 50 levels deep" in p


def test_yaml_alias_bomb_is_refused_quickly() -> None:
    import time

    bomb = MINIMAL + "app:\n  command: &a0 [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        bomb += f"  volumes{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    start = time.monotonic()
    p = one_problem(bomb)
    assert time.monotonic() - start < 2
    assert p == ("line 4: YAML anchors and aliases are not supported in plainsail.yml; write "
                 "the values out")


def test_an_anchor_alone_is_refused_too() -> None:
    p = one_problem(MINIMAL + "app:\n  env: &e {A: '1'}\n")
    assert "anchors and aliases are not supported" in p


@pytest.mark.parametrize("value", ["", "# only a comment", "[]", "~"])
def test_hosts_empty_or_null_is_an_error(value: str) -> None:
    p = one_problem(MINIMAL + f"hosts: {value}\n")
    assert p == "line 3: hosts: needs at least one host, e.g. [local] or ssh://deploy@web-1"


@pytest.mark.parametrize("value, needle",
                         [("''", "must not be empty"), ("relative/dir", "not an absolute path"),
                          ("'~other/dir'", "not an absolute path"),
                          ('"/srv/a\\nb"', "must be one line"), ('"/srv/a\\0b"', "NUL")])
def test_host_dir_must_be_a_usable_path(value: str, needle: str) -> None:
    p = one_problem(MINIMAL + f"host_dir: {value}\n")
    assert p.startswith("line 3: host_dir:") and needle in p


def test_host_dir_accepts_home_and_absolute_paths() -> None:
    for value in ("'~'", "~/.plainsail", "/srv/plainsail"):
        assert parse(MINIMAL + f"host_dir: {value}\n").host_dir == value.strip("'")


def test_duplicate_env_keys_are_an_error() -> None:
    p = one_problem(MINIMAL + "app:\n  env:\n    A: '1'\n    A: '2'\n")
    assert p == "line 6: app.env.A: duplicate key"
    p = one_problem(MINIMAL + "build:\n  args: {X: a, X: b}\n")
    assert p == "line 4: build.args.X: duplicate key"


@pytest.mark.parametrize("section", ["app", "migrate"])
@pytest.mark.parametrize("value", ['""', "'   '", "[]", "['']"])
def test_empty_command_names_key_and_line(section: str, value: str) -> None:
    p = one_problem(MINIMAL + f"{section}:\n  command: {value}\n")
    assert p.startswith(f"line 4: {section}.command") and "empty" in p


@pytest.mark.parametrize(
    "text, where",
    [(MINIMAL + "app:\n  env:\n    A: \"x\\ny\"\n", "line 5: app.env.A: contains a line break"),
     (MINIMAL + "ssh:\n  options:\n    ProxyJump: \"b\\nHost *\"\n",
      "line 5: ssh.options.ProxyJump: must be one line"),
     (MINIMAL + "ssh:\n  options:\n    ProxyJump: ''\n", "line 5: ssh.options.ProxyJump: needs"),
     (MINIMAL + "app:\n  command: [\"a\\0b\"]\n", "line 4: app.command[0]: contains a NUL"),
     (MINIMAL + "hosts: [\"web-1\\nweb-2\"]\n", "line 3: hosts[0]: must be one line"),
     (MINIMAL + "app:\n  env:\n    A: ${V}\n", "line 5: app.env.A: contains a line break")],
)
def test_line_breaks_and_nul_are_rejected_where_they_cannot_work(text: str, where: str) -> None:
    assert one_problem(text, {"V": "two\nlines"}).startswith(where)


def test_line_breaks_are_fine_in_commands_and_body_checks() -> None:
    cfg = parse(MINIMAL + "app:\n  command: [sh, -c, \"a\\nb\"]\n"
                "health:\n  body_contains: \"a\\nb\"\n")
    assert cfg.app.command == ["sh", "-c", "a\nb"] and cfg.health.body_contains == "a\nb"


@pytest.mark.parametrize(
    "text, where",
    [("service: " + "a" * 64 + "\nimage: a.b/c\n", "line 1: service:"),
     (MINIMAL + "health:\n  status: 100\n", "line 4: health.status: 100 is out of range"),
     (MINIMAL + "retain: 101\n", "line 3: retain: 101 is out of range"),
     (MINIMAL + "retain: " + "9" * 5000 + "\n", "line 3: retain: expected a whole number"),
     (MINIMAL + "build:\n  tag_length: 6\n", "line 4: build.tag_length: 6 is out of range"),
     (MINIMAL + "build:\n  dockerfile: ''\n", "line 4: build.dockerfile: must not be empty"),
     (MINIMAL + "app:\n  secrets: [A, A]\n", "line 4: app.secrets[1]: 'A' is listed twice"),
     (MINIMAL + "app:\n  port: 0\n", "line 4: app.port: 0 is out of range"),
     (MINIMAL + "app:\n  publish: 65536\n", "line 4: app.publish: 65536 is out of range"),
     (MINIMAL + "app:\n  volumes: ['data:']\n", "line 4: app.volumes[0]: the target"),
     (MINIMAL + "app:\n  volumes: ['./data:/d']\n", "line 4: app.volumes[0]: the source"),
     (MINIMAL + "app:\n  volumes: ['data:/d:rx']\n", "line 4: app.volumes[0]: unknown option"),
     (MINIMAL + "app:\n  volumes: ['/data']\n", "line 4: app.volumes[0]: '/data' is not"),
     (MINIMAL + "registry:\n  username: 'a:b'\n  password: p\n",
      "line 4: registry.username: 'a:b' is not valid"),
     (MINIMAL + "app:\n  env:\n    [A]: x\n", "line 5: app.env: a key must be a plain name"),
     (MINIMAL + "? [a]\n: x\n", "line 3: (top level): a key must be a plain name")],
)
def test_other_values_that_cannot_work(text: str, where: str) -> None:
    p = one_problem(text)
    assert p.startswith(where) and len(p) < 300


def test_volume_forms_that_work() -> None:
    vols = ["data:/data", "/srv/x:/x:ro", "d.b_1:/var/lib/db:rw,z"]
    assert parse(MINIMAL + f"app:\n  volumes: {vols}\n").app.volumes == vols


def test_problems_are_one_line_each_even_with_odd_keys() -> None:
    p = one_problem(MINIMAL + '"a\\nb": 1\n')
    assert p.startswith("line 3: a\\nb: unknown key")
    ps = problems(MINIMAL + "app:\n  env:\n    A: ${X\nY}\n")
    assert all("\n" not in p for p in ps)


def test_reader_errors_name_the_line() -> None:
    p = one_problem(MINIMAL + 'app: "\x07"\n')
    assert p == "line 3: not valid YAML: the character U+0007 is not allowed"


@pytest.mark.parametrize("escape", ["\\UFFFFFFFF", "\\U00110000"])
def test_an_escape_beyond_unicode_is_a_yaml_error(escape: str) -> None:
    # PyYAML raises ValueError/OverflowError here, not a YAMLError.
    p = one_problem(MINIMAL + f'app: "{escape}"\n')
    assert p == ("line 3: not valid YAML: an escape sequence in a double-quoted string "
                 "names no Unicode character")


@pytest.mark.parametrize(
    "content",
    [MINIMAL.encode() + b"x: \xff\n",
     (MINIMAL + "app: " + "[" * 5000 + "\n").encode(),
     (MINIMAL + "a: &a [x, x, x, x, x, x, x, x, x]\n"
      + "".join(f"b{i}: &b{i} [" + ", ".join(["*a" if i == 0 else f"*b{i - 1}"] * 9) + "]\n"
                for i in range(9))).encode(),
     (MINIMAL + "registry: {}\n").encode(),
     (MINIMAL + "app: {stop_timeout: " + "9" * 400 + "}\n").encode(),
     (MINIMAL + "notify: [{webhook: 'http://127.0.0.1:abc/T0KEN'}]\n").encode()],
    ids=["not-utf8", "deep", "alias-bomb", "empty-registry", "huge-duration", "bad-webhook"],
)
def test_config_check_exits_1_with_one_line_never_3(
    content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from plainsail.cli import main

    f = tmp_path / "plainsail.yml"
    f.write_bytes(content)
    assert main(["config", "check", "-c", str(f)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {f}: ") and err.count("\n") == 1 and "T0KEN" not in err


def test_values_from_non_utf8_environment_variables_are_refused() -> None:
    # os.environ keeps bytes that are not UTF-8 as lone surrogates; they cannot be written
    # to an env file or a command line, so config check says so (without the value).
    p = one_problem(MINIMAL + "app:\n  env:\n    A: ${V}\n", {"V": "caf\udce9"})
    assert p.startswith("line 5: app.env.A: contains bytes that are not UTF-8")
