"""The config loader: the documented example is valid; every problem names key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from plainsail import config as configlib
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
    assert isinstance(cfg.registry.password, Secret) if cfg.registry else True
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
