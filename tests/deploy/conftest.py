"""Fixtures of the deployment tests: the app served over HTTPS on 127.0.0.1 (a self-signed
certificate the test trusts, standing in for the TLS proxy), and a healthy installed portal."""
from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from werkzeug.serving import make_server

from addon.doctor.probe import GUIDE_SCOPE

LONG_SECRET = "deploy-test-secret-key-0123456789abcdef"  # over doctor's 32 characters


def write_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and its key), valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    public = key.public_key()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class HttpsApp:
    """create_app(services) over TLS on a free port; NEZABYT_PUBLIC_URL becomes its https URL."""

    def __init__(self, services, cert: Path, key: Path):
        from addon.web import create_app

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server = make_server("127.0.0.1", 0, self._dispatch, threaded=True, ssl_context=context)
        self.url = f"https://127.0.0.1:{self._server.server_port}"
        services.settings = dataclasses.replace(services.settings, public_url=self.url)
        self.services = services
        self.app = create_app(services)
        self._thread = threading.Thread(target=self._server.serve_forever, name="nezabyt-https-app", daemon=True)
        self._thread.start()

    def _dispatch(self, environ, start_response):
        return self.app(environ, start_response)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def tls(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A certificate every `requests` call of this process trusts (the devportal's deliveries,
    doctor's own look at the public URL), as a real one would be."""
    cert, key = write_certificate(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    return cert, key


@pytest.fixture
def production_services(settings, monkeypatch):
    """Services as the shared fixture makes them, with a production-grade secret key (its own
    is short), emptied after the test."""
    from addon.services import build_services
    from tests.conftest import empty_database

    monkeypatch.setenv("NEZABYT_ALLOW_PRIVATE_PORTALS", "1")  # the devportal lives on 127.0.0.1
    services = build_services(dataclasses.replace(settings, secret_key=LONG_SECRET))
    yield services
    empty_database(services)
    services.dispose()


@pytest.fixture
def https_app(production_services, tls):
    server = HttpsApp(production_services, *tls)
    yield server
    server.stop()


def install(devportal, https_app, scope: str = GUIDE_SCOPE) -> dict:
    settings = https_app.services.settings
    answer = devportal.portal.install_app(https_app.url, settings.client_id, settings.client_secret, scope=scope,
                                          install_path="/install", page_path="/app")
    assert answer["status_code"] == 200, answer["answer"]
    return answer


@pytest.fixture
def healthy(production_services, devportal, https_app):
    """A deployment where every doctor check passes: installed with the guide's scopes, one event
    received, a worker heartbeat just now."""
    from addon.heartbeat import beat

    install(devportal, https_app)
    devportal.portal.act_add("contact", {"NAME": "Первый клиент"})
    assert devportal.portal.wait_for_deliveries(timeout=30)
    beat(production_services, "test-worker", dt.datetime.now(dt.timezone.utc))
    return production_services
