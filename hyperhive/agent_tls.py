"""TLS of the agents' TCP channel (issue 18): the daemon's own CA, its server
certificate, and the server's ssl context (the relay's is
`agent_wire.client_context`, the CA pinned).

``<state>/tls/`` is the daemon's alone (0700; never under the agents dir,
which other nodes mount)::

    ca.key      0600  the CA's private key: made at the first start with --agent-listen, then kept
    ca.pem      0644  its self-signed certificate: what every relay pins
    server.key  0600  made again at each start, with
    server.pem  0644  its certificate, signed by the CA, for the --agent-listen host (and localhost,
                      127.0.0.1, ::1; a wildcard host adds this machine's names)

Keys are ECDSA P-256; TLS 1.3 only. Every file is written link-proof
(O_NOFOLLOW|O_EXCL on a temp name, fsync, rename): the state dir is the
daemon's, and still nothing there is followed.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import hyperhive.logs as logs
from hyperhive.sandbox.safefs import read_nofollow

__all__ = ["TLS_DIR", "ca_pem", "ensure_ca", "make_ca", "make_server_cert", "server_context", "server_names",
           "tls_dir", "write_private"]

_log = logs.get("hyperhive.agent_link")

TLS_DIR = "tls"
CA_YEARS = 20
SERVER_YEARS = 5  # made again at every start anyway
_SKEW = datetime.timedelta(days=1)  # not_valid_before: another node's clock may be behind
_WILDCARDS = ("", "0.0.0.0", "::")


def tls_dir(root: Path) -> Path:
    """``<root>/tls``, made 0700; refused if it is a link or not a directory."""
    d = root / TLS_DIR
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(f"{d} is not a directory (a symlink?); refusing to keep keys there")
    os.chmod(d, 0o700, follow_symlinks=False)
    return d


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` at ``path`` atomically, never through a link."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new CA: its key and self-signed certificate (signs server certificates only)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW).not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def server_names(host: str) -> list[str]:
    """The names a server certificate for ``host`` carries (pure but for a wildcard host,
    which adds this machine's host name and FQDN)."""
    names = [] if host in _WILDCARDS else [host]
    if host in _WILDCARDS:
        names += [socket.gethostname(), socket.getfqdn()]
    names += ["localhost", "127.0.0.1", "::1"]
    out: list[str] = []
    for n in names:
        if n and n.lower() not in (o.lower() for o in out):
            out.append(n)
    return out


def make_server_cert(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, names: list[str],
                     ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server key and its certificate for ``names`` (SANs), signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW).not_valid_after(now + datetime.timedelta(days=365 * SERVER_YEARS))
            .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_ca(d: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    raw_key, raw_cert = read_nofollow(d, "ca.key"), read_nofollow(d, "ca.pem")
    if raw_key is None or raw_cert is None:
        return None
    try:
        key = serialization.load_pem_private_key(raw_key, password=None)
        cert = x509.load_pem_x509_certificate(raw_cert)
    except ValueError:
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.public_key() != key.public_key():
        return None
    return key, cert


def ensure_ca(root: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The state dir's CA: the kept one, else a new one (written, logged). Blocks (key
    generation, fsync): not for the loop."""
    d = tls_dir(root)
    kept = _load_ca(d)
    if kept is not None:
        return kept
    key, cert = make_ca(f"hyperhive agent CA {os.urandom(4).hex()}")
    write_private(d / "ca.key", _key_pem(key))
    write_private(d / "ca.pem", _cert_pem(cert), 0o644)
    _log.info("agent_link.ca_made", path=str(d / "ca.pem"))
    return key, cert


def ca_pem(root: Path) -> str:
    """The CA's certificate as PEM text: what a relay pins (made if missing)."""
    return _cert_pem(ensure_ca(root)[1]).decode()


def server_context(root: Path, host: str) -> ssl.SSLContext:
    """A new server certificate for ``host``, written beside the CA, in a TLS 1.3 server
    context. Blocks: not for the loop."""
    ca_key, ca_cert = ensure_ca(root)
    key, cert = make_server_cert(ca_key, ca_cert, server_names(host))
    d = tls_dir(root)
    write_private(d / "server.key", _key_pem(key))
    write_private(d / "server.pem", _cert_pem(cert), 0o644)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(d / "server.pem", d / "server.key")
    return ctx
