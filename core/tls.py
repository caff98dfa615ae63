"""TLS for the centre's own servers (传输加密): the web app, the desk push server and, in the
sandbox, Asterisk's HTTPS/WSS for the desks' softphones.

`web.tls` says where the certificate comes from:
- "off": plain HTTP (loopback development, or a TLS proxy in front that does it);
- "generated": a self-signed certificate made once with the `cryptography` package into
  <data_dir>/tls/ (key mode 600), naming 127.0.0.1, localhost, web.host and pbx.bind_address:
  a sandbox or a test; browsers must be told to accept it;
- "files": the operator's certificate chain and key (web.tls_cert_file, web.tls_key_file),
  e.g. from the city's CA or ACME, in production.

One source serves all three servers, so a browser that trusts it trusts the desk page, its
push stream and its softphone's WSS alike.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.config import Settings
from core.errors import ConfigError

GENERATED_DAYS = 3650
TLS_DIR = "tls"


def generated_certificate(settings: Settings) -> tuple[Path, Path]:
    """The self-signed certificate and key under <data_dir>/tls, made on first use (and
    again when a name it must carry is missing, e.g. web.host changed)."""
    folder = settings.storage.data_dir / TLS_DIR
    cert, key = folder / "server.crt", folder / "server.key"
    names = _names(settings)
    if cert.exists() and key.exists() and names <= _names_in(cert):
        return cert, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "12319 hotline"),
                         x509.NameAttribute(NameOID.COMMON_NAME, settings.web.host)])
    alt: list[x509.GeneralName] = []
    for name in sorted(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    # the certificate's own time, not the centre's clock: it is checked by browsers
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(private.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=GENERATED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(private, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    _write(key, private.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()), 0o600)
    _write(cert, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def certificate_files(settings: Settings) -> tuple[Path, Path] | None:
    """The web's certificate and key as web.tls says; None when TLS is off."""
    web = settings.web
    if web.tls == "off":
        return None
    if web.tls == "generated":
        return generated_certificate(settings)
    assert web.tls_cert_file is not None and web.tls_key_file is not None
    for path, key in ((web.tls_cert_file, "tls_cert_file"), (web.tls_key_file, "tls_key_file")):
        if not os.access(path, os.R_OK):
            raise ConfigError(f"config: web.{key} {str(path)!r} is not a readable file")
    return web.tls_cert_file, web.tls_key_file


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """A server SSLContext (TLS 1.2 at least) for the web's certificate; None when off."""
    files = certificate_files(settings)
    if files is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(files[0]), str(files[1]))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"config: web.tls: cannot load the certificate {files[0]} with its "
                          f"key {files[1]}: {exc}") from None
    return context


def _names(settings: Settings) -> set[str]:
    return {"127.0.0.1", "localhost", settings.web.host, settings.pbx.bind_address} - {
        "0.0.0.0", "::"}


def _names_in(cert: Path) -> set[str]:
    from cryptography import x509

    try:
        loaded = x509.load_pem_x509_certificate(cert.read_bytes())
        alt = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, OSError, x509.ExtensionNotFound):
        return set()
    return {str(v) for v in alt.get_values_for_type(x509.IPAddress)} | set(
        alt.get_values_for_type(x509.DNSName))


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
