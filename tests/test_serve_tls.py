"""``entitlements serve --ssl-certfile/--ssl-keyfile``: HTTPS with a self-signed certificate.

The real command on a free port over the suite's Postgres; the certificate is made
here with ``cryptography`` (valid from a fixed past instant to far ahead, so the test
does not depend on today's date), and the client trusts exactly that certificate.
"""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from processes import stop_process, wait_ready
from sdk_support import free_port
from test_import_cli import ENTITLEMENTS, env_for

from entitlements.store.postgres import PostgresStore


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2999, 1, 1, tzinfo=UTC))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    keyfile.chmod(0o600)
    return certfile, keyfile


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


@pytest.fixture
def served_tls(
    clean: PostgresStore, pg_dsn: str, tls_files: tuple[Path, Path], tmp_path: Path
) -> Iterator[str]:
    certfile, keyfile = tls_files
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ENTITLEMENTS, "serve", "--port", str(port), "--workers", "1",
             "--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)],
            env=env_for(pg_dsn),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(certfile))
    try:
        wait_ready(url, proc, log.read_text, verify=context)
        yield url
    finally:
        stop_process(proc)


def test_serve_speaks_https_with_the_given_certificate(
    served_tls: str, tls_files: tuple[Path, Path]
) -> None:
    certfile, _ = tls_files
    context = ssl.create_default_context(cafile=str(certfile))
    r = httpx.get(f"{served_tls}/.well-known/authzen-configuration", verify=context)
    assert r.status_code == 200
    assert r.json()["access_evaluation_endpoint"].startswith("https://127.0.0.1:")
    # A client that does not trust the certificate is refused by TLS itself...
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{served_tls}/healthz")
    # ...and plain HTTP on the same port gets no answer of ours.
    plain = served_tls.replace("https://", "http://")
    try:
        response = httpx.get(f"{plain}/healthz", timeout=3)
    except httpx.HTTPError:
        pass
    else:
        assert response.status_code != 200


@pytest.mark.parametrize(
    "args",
    [
        ["--ssl-certfile", "{cert}"],
        ["--ssl-certfile", "{cert}", "--ssl-keyfile", "{missing}"],
        ["--ssl-certfile", "{key}", "--ssl-keyfile", "{key}"],
    ],
)
def test_bad_tls_options_stop_the_start_with_exit_2(
    pg_dsn: str, tls_files: tuple[Path, Path], tmp_path: Path, args: list[str]
) -> None:
    certfile, keyfile = tls_files
    values = {"cert": certfile, "key": keyfile, "missing": tmp_path / "nope.pem"}
    argv = [a.format(**values) for a in args]
    done = subprocess.run(
        [ENTITLEMENTS, "serve", "--port", str(free_port()), *argv],
        env=env_for(pg_dsn),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "--ssl-" in done.stderr
