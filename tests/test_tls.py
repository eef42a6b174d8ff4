"""The TLS identity: what the certificate says, when it is re-issued, and that it serves."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import logging
import os
import ssl
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from lanpair import certs, tls
from lanpair.errors import CertificateError

V4 = ipaddress.ip_address("10.77.0.1")
V6 = ipaddress.ip_address("fd77::1")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def issue(
    folder: Path, *addresses: tls.IPAddress, hostname: str = "studio", now: datetime = NOW
) -> tls.CertInfo:
    """Run ensure_certificate with the key and certificate under ``folder``/tls."""
    return certs.ensure_certificate(
        folder / "tls" / "key.pem",
        folder / "tls" / "cert.pem",
        hostname=hostname,
        addresses=addresses,
        now=now,
    )


def load_cert(info: tls.CertInfo) -> x509.Certificate:
    """Read the certificate ``info`` points at."""
    return x509.load_pem_x509_certificate(info.cert_path.read_bytes())


def load_key(info: tls.CertInfo) -> ec.EllipticCurvePrivateKey:
    """Read the private key ``info`` points at."""
    key = serialization.load_pem_private_key(info.key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def san_of(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    """Return the certificate's subjectAltName extension."""
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_san_covers_loopback_local_name_and_given_addresses(tmp_path: Path) -> None:
    """The SANs hold localhost, <host>.local, 127.0.0.1, ::1 and every given address."""
    info = issue(tmp_path, V4, V6)
    san = san_of(load_cert(info))
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "studio.local"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        V4,
        V6,
    }
    assert set(info.dns_names) == {"localhost", "studio.local"}
    assert set(info.ip_addresses) == {"127.0.0.1", "::1", "10.77.0.1", "fd77::1"}


def test_certificate_is_a_server_certificate(tmp_path: Path) -> None:
    """The certificate's extended key usage is serverAuth and it is not a CA."""
    cert = load_cert(issue(tmp_path, V4))
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_certificate_is_signed_with_sha256(tmp_path: Path) -> None:
    """The certificate's signature hash is SHA-256."""
    cert = load_cert(issue(tmp_path, V4))
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_key_is_ec_p256(tmp_path: Path) -> None:
    """The key on disk and in the certificate is EC P-256."""
    info = issue(tmp_path, V4)
    assert isinstance(load_key(info).curve, ec.SECP256R1)
    public = load_cert(info).public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)


def test_validity_is_365_days(tmp_path: Path) -> None:
    """The certificate is valid exactly 365 days (under Apple's 825-day cap) and covers now."""
    info = issue(tmp_path, V4)
    cert = load_cert(info)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == timedelta(days=365)
    assert lifetime <= timedelta(days=825)
    assert cert.not_valid_before_utc <= NOW < cert.not_valid_after_utc
    assert info.not_after == cert.not_valid_after_utc


def test_key_file_is_private(tmp_path: Path) -> None:
    """The key file is created with mode 0600."""
    info = issue(tmp_path, V4)
    assert stat.S_IMODE(info.key_path.stat().st_mode) == 0o600


def test_loose_key_file_mode_is_tightened(tmp_path: Path) -> None:
    """A key file later found readable by others is put back to 0600."""
    info = issue(tmp_path, V4)
    info.key_path.chmod(0o644)
    issue(tmp_path, V4)
    assert stat.S_IMODE(info.key_path.stat().st_mode) == 0o600


def test_fingerprint_is_sha256_of_spki(tmp_path: Path) -> None:
    """The fingerprint is base64url (unpadded) SHA-256 of the key's SubjectPublicKeyInfo."""
    info = issue(tmp_path, V4)
    spki = (
        load_key(info)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    expected = base64.urlsafe_b64encode(hashlib.sha256(spki).digest()).decode().rstrip("=")
    assert info.fingerprint == expected
    assert len(info.fingerprint) == 43
    der = load_cert(info).public_bytes(serialization.Encoding.DER)
    assert certs.spki_fingerprint(x509.load_der_x509_certificate(der)) == expected


def test_same_inputs_do_not_reissue(tmp_path: Path) -> None:
    """Asking again for the same names keeps the same certificate (same serial)."""
    first = issue(tmp_path, V4, V6)
    serial = load_cert(first).serial_number
    again = issue(tmp_path, V6, V4, now=NOW + timedelta(days=10))
    assert load_cert(again).serial_number == serial
    assert again == first


def test_subset_of_addresses_does_not_reissue(tmp_path: Path) -> None:
    """Asking for fewer addresses than the certificate covers keeps it."""
    first = issue(tmp_path, V4, V6)
    serial = load_cert(first).serial_number
    assert load_cert(issue(tmp_path, V4)).serial_number == serial


def test_new_address_reissues_over_the_same_key(tmp_path: Path) -> None:
    """A new address re-issues the certificate but keeps the key and the fingerprint."""
    first = issue(tmp_path, V4)
    first_serial = load_cert(first).serial_number
    first_key = first.key_path.read_bytes()
    second = issue(tmp_path, V4, V6)
    cert = load_cert(second)
    assert cert.serial_number != first_serial
    assert V6 in san_of(cert).get_values_for_type(x509.IPAddress)
    assert second.key_path.read_bytes() == first_key
    assert second.fingerprint == first.fingerprint


def test_new_hostname_reissues(tmp_path: Path) -> None:
    """A new host name re-issues the certificate for <new>.local, same fingerprint."""
    first = issue(tmp_path, V4)
    first_serial = load_cert(first).serial_number
    second = issue(tmp_path, V4, hostname="attic")
    assert load_cert(second).serial_number != first_serial
    assert "attic.local" in second.dns_names
    assert second.fingerprint == first.fingerprint


def test_nearly_expired_certificate_is_reissued(tmp_path: Path) -> None:
    """With fewer than 30 days left (340 days on), the certificate is re-issued, same key."""
    first = issue(tmp_path, V4)
    first_serial = load_cert(first).serial_number
    later = NOW + timedelta(days=340)
    second = issue(tmp_path, V4, now=later)
    cert = load_cert(second)
    assert cert.serial_number != first_serial
    assert cert.not_valid_after_utc - later > timedelta(days=300)
    assert second.fingerprint == first.fingerprint


def test_certificate_with_over_30_days_left_is_kept(tmp_path: Path) -> None:
    """300 days on (over 30 days left), the certificate is kept."""
    first_serial = load_cert(issue(tmp_path, V4)).serial_number
    second = issue(tmp_path, V4, now=NOW + timedelta(days=300))
    assert load_cert(second).serial_number == first_serial


def test_corrupt_certificate_is_reissued(tmp_path: Path) -> None:
    """An unreadable certificate file is replaced by a fresh one over the same key."""
    first = issue(tmp_path, V4)
    first.cert_path.write_bytes(
        b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"
    )
    second = issue(tmp_path, V4)
    cert = load_cert(second)
    assert second.fingerprint == first.fingerprint
    assert V4 in san_of(cert).get_values_for_type(x509.IPAddress)


def test_corrupt_key_is_a_certificate_error(tmp_path: Path) -> None:
    """An unreadable key file is a CertificateError, not a silently replaced identity."""
    first = issue(tmp_path, V4)
    first.key_path.write_bytes(b"not a key")
    with pytest.raises(CertificateError):
        issue(tmp_path, V4)


def test_server_context_requires_tls_12(tmp_path: Path) -> None:
    """server_context loads the pair and refuses anything older than TLS 1.2."""
    context = tls.server_context(issue(tmp_path, V4))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


async def test_tls_handshake_verifies_against_the_certificate(tmp_path: Path) -> None:
    """A client trusting cert.pem completes a handshake for localhost and sees the pinned key."""
    info = await asyncio.to_thread(issue, tmp_path, V4, now=datetime.now(UTC))

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0, ssl=tls.server_context(info))
    try:
        port = server.sockets[0].getsockname()[1]
        client = ssl.create_default_context(cafile=str(info.cert_path))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="localhost"
        )
        try:
            assert await reader.readline() == b"hello\n"
            peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            assert certs.spki_fingerprint(x509.load_der_x509_certificate(peer)) == info.fingerprint
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def test_server_tls_hands_new_connections_the_reissued_certificate(tmp_path: Path) -> None:
    """After use(new), new handshakes get the new certificate over the same key and pin."""
    first = certs.ensure_certificate(
        tmp_path / "key.pem", tmp_path / "cert.pem", hostname="pc", addresses=[]
    )
    server_tls = tls.ServerTls(first)
    server = await asyncio.start_server(
        lambda _r, w: w.close(), "127.0.0.1", 0, ssl=server_tls.context
    )
    port = server.sockets[0].getsockname()[1]

    async def presented() -> x509.Certificate:
        client = ssl.create_default_context()
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der)

    try:
        before = await presented()
        second = certs.ensure_certificate(
            tmp_path / "key.pem",
            tmp_path / "cert.pem",
            hostname="pc",
            addresses=[ipaddress.ip_address("10.77.0.9")],
        )
        await asyncio.to_thread(server_tls.use, second)
        after = await presented()
    finally:
        server.close()
        await server.wait_closed()
    assert after.serial_number != before.serial_number
    assert certs.spki_fingerprint(after) == certs.spki_fingerprint(before) == first.fingerprint


async def test_the_daemon_gets_its_certificate_from_a_child(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """tls.ensure_certificate runs certs in a child: same answer, its log lines logged here."""
    caplog.set_level(logging.INFO)
    folder = tmp_path / "tls"
    made = await tls.ensure_certificate(
        folder / "key.pem", folder / "cert.pem", hostname="studio", addresses=[V4, V6], now=NOW
    )
    assert made == issue(tmp_path, V6, V4)  # the same certificate, not issued again
    relayed = [r for r in caplog.records if r.name == "lanpair.certs"]
    assert [r.levelno for r in relayed] == [logging.INFO, logging.INFO]
    assert relayed[0].getMessage().startswith("made a new TLS key in ")
    assert relayed[1].getMessage().startswith("issued a TLS certificate (first start) for ")
    assert "10.77.0.1" in relayed[1].getMessage()

    caplog.clear()
    later = NOW + timedelta(days=340)
    renewed = await tls.ensure_certificate(
        folder / "key.pem", folder / "cert.pem", hostname="studio", addresses=[V4], now=later
    )
    assert renewed.fingerprint == made.fingerprint
    assert renewed.not_after > made.not_after
    assert "(names or expiry changed)" in caplog.text


async def test_a_refusal_in_the_child_is_a_certificate_error(tmp_path: Path) -> None:
    """The child's CertificateError comes back as one, with its message; nothing is made."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CertificateError, match=r"Cannot set up the TLS certificate in .*file"):
        await tls.ensure_certificate(
            blocker / "key.pem", blocker / "cert.pem", hostname="pc", addresses=[], now=NOW
        )


async def test_a_child_that_cannot_answer_is_a_certificate_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A child that dies without an answer: CertificateError, and what it printed is logged."""
    broken = {**os.environ, "PYTHONPATH": str(tmp_path)}  # a lanpair whose certs.py fails
    monkeypatch.setattr(tls, "python_module", lambda m: ([sys.executable, "-P", "-m", m], broken))
    (tmp_path / "lanpair").mkdir()
    (tmp_path / "lanpair" / "__init__.py").write_text("")
    (tmp_path / "lanpair" / "certs.py").write_text("raise SystemExit('broken install')\n")
    with pytest.raises(CertificateError, match=r"helper failed \(exit status 1\)"):
        await tls.ensure_certificate(
            tmp_path / "key.pem", tmp_path / "cert.pem", hostname="pc", addresses=[], now=NOW
        )
    assert "broken install" in caplog.text
    assert not (tmp_path / "key.pem").exists()


def test_the_daemon_never_imports_cryptography() -> None:
    """Starting the daemon's code loads neither cryptography nor lanpair.certs."""
    probe = (
        "import sys, lanpair.cli, lanpair.daemon\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'cryptography'"
        " or m == 'lanpair.certs'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
