"""The daemon's X.509 work: a P-256 key made once, and self-signed certificates re-issued over it.

The pinned fingerprint is the SHA-256 of the SubjectPublicKeyInfo, so re-issuing the
certificate for new addresses or before expiry never breaks a client's pin.

The daemon runs this in a short-lived child, ``python -m lanpair.certs`` (see
``tls.ensure_certificate``): a request as JSON on stdin, the ``CertInfo`` as JSON on stdout,
log lines on stderr. The daemon itself never loads cryptography, which kept 12 MiB resident
in it (4 MiB of objects, 7 MiB of its library's pages) for work done at start and every few
hours.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lanpair.errors import CertificateError
from lanpair.paths import replace_file
from lanpair.tls import CertInfo, IPAddress, encode_fingerprint

log = logging.getLogger(__name__)

VALIDITY = timedelta(days=365)  # Apple refuses TLS server certificates valid > 825 days
RENEW_BEFORE = timedelta(days=30)
CLOCK_SKEW = timedelta(hours=1)


def spki_digest(cert: x509.Certificate) -> bytes:
    """Return the SHA-256 of a certificate's SubjectPublicKeyInfo (DER)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def spki_fingerprint(cert: x509.Certificate) -> str:
    """Return the pin: SHA-256 of the SubjectPublicKeyInfo (DER), unpadded base64url."""
    return encode_fingerprint(spki_digest(cert))


def ensure_certificate(
    key_path: Path,
    cert_path: Path,
    *,
    hostname: str,
    addresses: Iterable[IPAddress],
    now: datetime | None = None,
) -> CertInfo:
    """Return a certificate covering ``hostname``.local and ``addresses``, issuing one if needed.

    The key is made on first use and kept; a certificate is re-issued over it when its
    names no longer cover what is asked for or fewer than 30 days remain. Blocking.
    """
    now = now or datetime.now(UTC)
    dns_names = ("localhost", f"{hostname}.local")
    wanted = sorted(
        {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"), *addresses},
        key=lambda a: (a.version, int(a)),
    )
    try:
        key = _load_or_make_key(key_path)
        current = _load_cert(cert_path)
        if current is not None and _still_good(current, key, dns_names, wanted, now):
            return _info(current, cert_path, key_path)
        cert = _issue(key, hostname, dns_names, wanted, now)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        replace_file(cert_path, pem, mode=0o644, durable=True)
    except (OSError, ValueError) as exc:
        raise CertificateError(
            f"Cannot set up the TLS certificate in {cert_path.parent}: {exc}"
        ) from exc
    reason = "first start" if current is None else "names or expiry changed"
    log.info(
        "issued a TLS certificate (%s) for %s, valid until %s",
        reason,
        ", ".join([*dns_names, *map(str, wanted)]),
        cert.not_valid_after_utc.date(),
    )
    return _info(cert, cert_path, key_path)


def _load_or_make_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        log.info("made a new TLS key in %s", path)
        return key
    loaded = serialization.load_pem_private_key(data, password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC private key")
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return loaded


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        log.warning("the TLS certificate in %s is unreadable; issuing a new one", path)
        return None


def _still_good(
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    dns_names: tuple[str, ...],
    addresses: list[IPAddress],
    now: datetime,
) -> bool:
    if cert.public_key() != key.public_key():
        return False
    if cert.not_valid_after_utc - now < RENEW_BEFORE or cert.not_valid_before_utc > now:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ips = set(san.get_values_for_type(x509.IPAddress))
    return set(dns_names) <= have_dns and set(addresses) <= have_ips


def _issue(
    key: ec.EllipticCurvePrivateKey,
    hostname: str,
    dns_names: tuple[str, ...],
    addresses: list[IPAddress],
    now: datetime,
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{hostname}.local"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lanpair"),
        ]
    )
    not_before = now - CLOCK_SKEW
    san = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(a) for a in addresses]
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _info(cert: x509.Certificate, cert_path: Path, key_path: Path) -> CertInfo:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return CertInfo(
        cert_path=cert_path,
        key_path=key_path,
        fingerprint=spki_fingerprint(cert),
        not_after=cert.not_valid_after_utc,
        dns_names=tuple(san.get_values_for_type(x509.DNSName)),
        ip_addresses=tuple(str(a) for a in san.get_values_for_type(x509.IPAddress)),
    )


def main() -> int:
    """Answer one request from the daemon (see the module's docstring); 1 on a refusal."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    request = json.load(sys.stdin)
    try:
        info = ensure_certificate(
            Path(request["key_path"]),
            Path(request["cert_path"]),
            hostname=request["hostname"],
            addresses=[ipaddress.ip_address(a) for a in request["addresses"]],
            now=datetime.fromisoformat(request["now"]),
        )
    except CertificateError as exc:
        json.dump({"error": str(exc)}, sys.stdout)
        return 1
    json.dump(info.to_json(), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
