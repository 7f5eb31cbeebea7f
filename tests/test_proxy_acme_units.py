"""`proxy.acme` (tls: auto from a chosen ACME CA) without I/O: the setting, the Caddy
certificate policy it becomes, and the wait for the first certificate at check-through."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from plainsail.config import model as configlib
from plainsail.errors import ConfigError
from plainsail.proxy import caddyconf, routes
from plainsail.proxy.admin import ProxyError

IMAGE = "caddy:2.10@sha256:" + "ab" * 32
DIRECTORY = "https://ca.internal:9000/acme/acme/directory"


def cfg_of(extra: str, tmp_path: Path | None = None, tls: str = "auto") -> configlib.Config:
    text = (f"service: api\nimage: registry.example.com/api\nproxy:\n  host: api.test\n"
            f"  image: {IMAGE}\n  tls: {tls}\n{extra}")
    return configlib.parse(text, (tmp_path or Path("/x")) / "plainsail.yml", env={})


def test_acme_setting() -> None:
    p = cfg_of(f"  acme:\n    directory: {DIRECTORY}\n    ca_root: ca.pem\n"
               "    email: ops@example.com\n").proxy
    assert p is not None
    assert p.acme == configlib.ProxyACME(DIRECTORY, "ca.pem", "ops@example.com")
    assert cfg_of("").proxy.acme is None  # type: ignore[union-attr]


@pytest.mark.parametrize(("extra", "tls", "expected"), [
    (f"  acme:\n    directory: {DIRECTORY}\n", "internal", "proxy.acme: is for tls: auto"),
    ("  acme:\n    directory: http://ca.internal/dir\n", "auto", "not an https:// URL"),
    ("  acme:\n    ca_root: ca.pem\n", "auto", "directory"),
    (f"  acme:\n    directory: {DIRECTORY}\n    email: nobody\n", "auto", "e-mail"),
    (f"  acme:\n    directory: {DIRECTORY}\n    eab: x\n", "auto", "unknown key"),
])
def test_acme_setting_refused(extra: str, tls: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfg_of(extra, tls=tls)
    assert expected in str(err.value)


def route(**kwargs: Any) -> caddyconf.ServiceRoute:
    return caddyconf.ServiceRoute(service="api", hosts=["api.test"], path="/", tls="auto",
                                  upstream="api-1:8000", **kwargs)


def test_acme_policy_in_caddy_config() -> None:
    config = caddyconf.with_service(caddyconf.boot_config(80, 443), route(
        acme_ca=DIRECTORY, acme_root_file="/plainsail/acme-roots/abc.pem",
        acme_email="ops@example.com"))
    assert config["apps"]["tls"]["automation"]["policies"] == [{
        "@id": "ps.api.acme", "subjects": ["api.test"],
        "issuers": [{"module": "acme", "ca": DIRECTORY, "email": "ops@example.com",
                     "trusted_roots_pem_files": ["/plainsail/acme-roots/abc.pem"]}]}]
    info = caddyconf.route_info(config, "api")
    assert info["tls"] == "auto" and info["acme"] == DIRECTORY
    assert caddyconf.without_service(config, "api")["apps"]["tls"]["automation"][
        "policies"] == []
    plain = caddyconf.with_service(caddyconf.boot_config(80, 443), route())
    assert plain["apps"]["tls"]["automation"]["policies"] == []  # Caddy's default issuers
    assert caddyconf.route_info(plain, "api")["acme"] is None


def test_ca_root_is_copied_under_a_content_name(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nAA==\n"
                                     "-----END CERTIFICATE-----\n")
    cfg = cfg_of(f"  acme:\n    directory: {DIRECTORY}\n    ca_root: ca.pem\n", tmp_path)
    want = routes.desired(cfg, "api-1:8000", None, None)
    assert want.acme_ca == DIRECTORY
    assert want.acme_root_file is not None
    assert want.acme_root_file.startswith("/plainsail/acme-roots/")
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(ProxyError, match="holds no PEM certificate"):
        routes.desired(cfg, "api-1:8000", None, None)
    (tmp_path / "ca.pem").unlink()
    with pytest.raises(ProxyError, match="cannot read ca.pem"):
        routes.desired(cfg, "api-1:8000", None, None)


@pytest.mark.parametrize(("tls", "calls"), [("auto", 3), ("internal", 1)])
def test_first_certificate_is_waited_for_with_tls_auto_only(
        monkeypatch: pytest.MonkeyPatch, tls: str, calls: int) -> None:
    """While Caddy obtains the certificate the TLS handshake fails: tls: auto tries again
    until the certificate serves (here the third try), any other mode fails at once."""
    tries: list[int] = []

    def probe(*_args: Any, **_kwargs: Any) -> str:
        tries.append(1)
        if len(tries) < 3:
            raise ssl.SSLError("tlsv1 alert internal error")
        return "answer"

    monkeypatch.setattr(routes, "probe_through", probe)
    monkeypatch.setattr(routes, "CERT_POLL", 0.01)
    cfg = cfg_of("", tls=tls)
    if tls == "auto":
        assert routes._probe_when_certified(None, cfg, 1.0, {}) == "answer"  # type: ignore[arg-type]
    else:
        with pytest.raises(ssl.SSLError):
            routes._probe_when_certified(None, cfg, 1.0, {})  # type: ignore[arg-type]
    assert len(tries) == calls


def test_waiting_for_a_certificate_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    def probe(*_args: Any, **_kwargs: Any) -> str:
        raise ssl.SSLError("tlsv1 alert internal error")

    monkeypatch.setattr(routes, "probe_through", probe)
    monkeypatch.setattr(routes, "CERT_POLL", 0.01)
    monkeypatch.setattr(routes, "cert_wait", lambda _cfg: 0.2)
    with pytest.raises(ssl.SSLError):
        routes._probe_when_certified(None, cfg_of(""), 1.0, {})  # type: ignore[arg-type]
    monkeypatch.undo()
    cfg = cfg_of("")
    assert routes.cert_wait(cfg) == 30.0  # health.attempts 30 x interval 1 s


def test_renewal_overdue_is_warned() -> None:
    """With tls: auto, a served certificate that should have been renewed (less than 14
    days left; Caddy renews with about 30 left) means the ACME CA is not answering: the
    deploy still passes on the old certificate, with this warning."""
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 12, 6, tzinfo=UTC)
    assert routes.renewal_warning("api.test", now + timedelta(days=60), now) is None
    assert routes.renewal_warning("api.test", now + timedelta(days=14), now) is None
    late = routes.renewal_warning("api.test", now + timedelta(days=5, hours=1), now)
    assert late == ("the TLS certificate for api.test expires on 2026-12-11 (5 days left) "
                    "and was not renewed: the ACME CA is unreachable or refuses the "
                    "renewal; see plainsail proxy logs")
    gone = routes.renewal_warning("api.test", now - timedelta(days=1), now)
    assert gone is not None and "expired on 2026-12-05" in gone
