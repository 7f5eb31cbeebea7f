"""`proxy.tls: auto` for real: certificates from an ACME CA (Debian's `pebble`, a real ACME
server) obtained by the proxy (Caddy) during `plainsail deploy`.

The CA validates http-01 for real: pebble resolves the test host name through
pebble-challtestsrv's DNS (which answers 127.0.0.1 for every name) and fetches the
challenge from the proxy's published HTTP port (pebble's `httpPort`); its TLS-ALPN-01 port
is a closed one, so only HTTP-01 through the proxy can pass. The proxy, in its
container, reaches pebble's directory at the proxy network's gateway address, over HTTPS
with a certificate from a CA the test makes (`proxy.acme.ca_root`).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plainsail.proxy import argv as pargv
from tests.support.proxy_env import ProxyApps, ProxyService, proxy_service
from tests.support.services import free_port
from tests.test_proxy_integration import (  # noqa: F401 - fixtures
    ProxyHost,
    caddy_ref,
    ph,
)

pytestmark = pytest.mark.integration


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey, ips: list[str] = ()) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(UTC)
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.subject if issuer else name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None),
                        critical=True))
    if ips:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pebble:
    directory: str
    ca_root: Path  # the CA of pebble's own HTTPS certificate (proxy.acme.ca_root)
    management: int
    log: Path

    def _get(self, path: str) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.ca_root))
        conn = http.client.HTTPSConnection("127.0.0.1", self.management, context=ctx,
                                           timeout=10)
        try:
            conn.request("GET", path)
            return conn.getresponse().read()
        finally:
            conn.close()

    def issuing_chain(self) -> tuple[x509.Certificate, x509.Certificate]:
        """(intermediate, root) the CA issues under (new at every pebble start)."""
        return (x509.load_pem_x509_certificate(self._get("/intermediates/0")),
                x509.load_pem_x509_certificate(self._get("/roots/0")))

    def issued(self) -> int:
        """Certificates pebble has issued (one per finalized order)."""
        return self.log.read_text(errors="replace").count("Issued certificate serial")


def _wait_tcp(host: str, port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {host}:{port}")


@pytest.fixture
def pebble(ph: ProxyHost, tmp_path: Path) -> Iterator[Pebble]:  # noqa: F811
    if not shutil.which("pebble") or not shutil.which("pebble-challtestsrv"):
        pytest.skip("needs Debian's pebble (scripts/setup.sh installs it)")
    # The proxy's network exists before the proxy (plainsail uses it as it finds it), so
    # its gateway, where pebble listens for the proxy container, is known.
    subprocess.run(["docker", "network", "create", "--label",
                    f"{pargv.LABEL_ROLE}={pargv.ROLE}", ph.network], check=True,
                   capture_output=True)
    gateway = subprocess.run(
        ["docker", "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}",
         ph.network], check=True, capture_output=True, text=True).stdout.strip()
    folder = tmp_path / "pebble"
    folder.mkdir()
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca = _cert("plainsail test ACME server CA", ca_key, None, ca_key)
    (folder / "ca.pem").write_bytes(_pem(ca))
    (folder / "cert.pem").write_bytes(_pem(_cert("pebble", key, ca, ca_key,
                                                 [gateway, "127.0.0.1"])))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    port, management, dns = free_port(), free_port(), free_port()
    (folder / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"{gateway}:{port}",
        "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(folder / "cert.pem"), "privateKey": str(folder / "key.pem"),
        # TLS-ALPN-01 is sent to a closed port: only HTTP-01 through the proxy can pass.
        "httpPort": ph.http_port, "tlsPort": free_port(), "ocspResponderURL": "",
        "externalAccountBindingRequired": False}}))
    log = folder / "pebble.log"
    dns_srv = subprocess.Popen(
        ["pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns}", "-http01", "",
         "-https01", "", "-tlsalpn01", "", "-management", f"127.0.0.1:{free_port()}",
         "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with log.open("w") as out:
        server = subprocess.Popen(
            ["pebble", "-config", str(folder / "pebble.json"), "-dnsserver",
             f"127.0.0.1:{dns}"], stdout=out, stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", "PEBBLE_VA_NOSLEEP": "1",
                 "PEBBLE_WFE_NONCEREJECT": "0"})
    try:
        _wait_tcp(gateway, port)
        _wait_tcp("127.0.0.1", management)
        yield Pebble(f"https://{gateway}:{port}/dir", folder / "ca.pem", management, log)
    finally:
        for proc in (server, dns_srv):
            proc.terminate()
            proc.wait(timeout=10)


def served_certificate(ph: ProxyHost, name: str) -> x509.Certificate:  # noqa: F811
    ctx = ssl._create_unverified_context()  # noqa: S323 - the test checks the chain itself
    with socket.create_connection(("127.0.0.1", ph.https_port), timeout=10) as sock, \
            ctx.wrap_socket(sock, server_hostname=name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der)


def acme_service(ph: ProxyHost, proxy_apps: ProxyApps, root: Path,  # noqa: F811
                 directory: str, ca_root: Path) -> ProxyService:
    s = proxy_service(ph, proxy_apps, root, "acme")
    s.write_config(f"  acme:\n    directory: {directory}\n    ca_root: {ca_root}\n")
    text = (s.path / "plainsail.yml").read_text().replace("  tls: off\n", "  tls: auto\n")
    (s.path / "plainsail.yml").write_text(text)
    return s


def test_tls_auto_gets_a_certificate_from_the_acme_ca_and_keeps_it(
        ph: ProxyHost, proxy_apps: ProxyApps, pebble: Pebble,  # noqa: F811
        tmp_path: Path) -> None:
    s = acme_service(ph, proxy_apps, tmp_path, pebble.directory, pebble.ca_root)
    try:
        first = s.run("deploy", s.ref("v1"))
        assert first["outcome"] == "succeeded", first
        leaf = served_certificate(ph, s.host_name)
        intermediate, root = pebble.issuing_chain()
        leaf.verify_directly_issued_by(intermediate)
        intermediate.verify_directly_issued_by(root)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [s.host_name]
        assert pebble.issued() == 1
        proxy_log = subprocess.run(["docker", "logs", pargv.container_name(ph.host_dir)],
                                   capture_output=True, text=True).stderr
        assert '"challenge_type":"http-01"' in proxy_log and "validations succeeded" in \
            proxy_log
        # HTTPS serves the app, verified against the ACME CA's root; HTTP redirects.
        ctx = ssl.create_default_context(cadata=_pem(root).decode())
        ctx.load_verify_locations(cadata=_pem(intermediate).decode())
        with socket.create_connection(("127.0.0.1", ph.https_port), timeout=10) as sock:
            tls = ctx.wrap_socket(sock, server_hostname=s.host_name)
            conn = http.client.HTTPConnection(s.host_name, ph.https_port, timeout=10)
            conn.sock = tls
            conn.request("GET", "/health")
            assert conn.getresponse().status == 200
            conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", ph.http_port, timeout=10)
        conn.request("GET", "/x", headers={"Host": s.host_name})
        resp = conn.getresponse()
        assert resp.status in (301, 308)
        assert resp.getheader("Location", "").startswith(f"https://{s.host_name}")
        conn.close()
        # A restart of the proxy and a redeploy keep the certificate: no new order.
        name = pargv.container_name(ph.host_dir)
        subprocess.run(["docker", "restart", "-t", "2", name], check=True,
                       capture_output=True)
        _wait_tcp("127.0.0.1", ph.https_port)
        deadline = time.monotonic() + 20
        while True:
            try:
                after_restart = served_certificate(ph, s.host_name)
                break
            except (ssl.SSLError, OSError):
                assert time.monotonic() < deadline, "no certificate after the restart"
                time.sleep(0.2)
        assert after_restart.serial_number == leaf.serial_number
        second = s.run("deploy", s.ref("v2"))
        assert second["outcome"] == "succeeded", second
        assert served_certificate(ph, s.host_name).serial_number == leaf.serial_number
        assert pebble.issued() == 1
    finally:
        s.remove()


def test_unreachable_acme_server_is_a_named_outcome_not_a_hang(
        ph: ProxyHost, proxy_apps: ProxyApps, pebble: Pebble,  # noqa: F811
        tmp_path: Path) -> None:
    closed = f"https://127.0.0.1:{free_port()}/dir"  # nothing listens there
    s = acme_service(ph, proxy_apps, tmp_path, closed, pebble.ca_root)
    try:
        start = time.monotonic()
        doc = s.run("deploy", s.ref("v1"), code=1)
        assert time.monotonic() - start < 90
        assert doc["outcome"] == "restore-failed", doc
        text = json.dumps(doc)
        assert f"no TLS certificate for {s.host_name} within 10s" in text  # 40 x 250 ms
        assert closed in text
        assert pebble.issued() == 0
    finally:
        s.remove()
