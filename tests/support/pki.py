"""A throw-away certificate authority for tests, made with the `openssl` command.

    ca = CertAuthority(tmp_path / "pki")          # a fresh CA (EC P-256)
    server = ca.server()                           # CN/SAN localhost, 127.0.0.1, ::1
    kiosk = ca.client("kiosk-01")                  # CN = the MQTT identity
    old = ca.client("kiosk-02", expired=True)      # notAfter already in the past
    other = CertAuthority(tmp_path / "other")      # a CA the broker does not trust

Every key file is written 0600 (the kiosk refuses anything looser).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class CertKey:
    """A certificate and its private key, both PEM files."""

    cert: Path
    key: Path
    cn: str


def _run(*args: str | Path, cwd: Path) -> None:
    if OPENSSL is None:
        raise RuntimeError("openssl is not installed (it is in ./dev's APT_PACKAGES)")
    proc = subprocess.run(
        [OPENSSL, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


class CertAuthority:
    """A test CA in `workdir`; issues server and client certificates on demand."""

    def __init__(self, workdir: Path, name: str = "ordoscan test CA") -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.cert = self.dir / "ca.crt"
        self.key = self.dir / "ca.key"
        _run(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", self.key, "-out", self.cert, "-days", "365", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=self.dir,
        )
        os.chmod(self.key, 0o600)

    def _issue(self, cn: str, stem: str, extensions: list[str], expired: bool) -> CertKey:
        key, cert = self.dir / f"{stem}.key", self.dir / f"{stem}.crt"
        csr, ext = self.dir / f"{stem}.csr", self.dir / f"{stem}.ext"
        ext.write_text("\n".join(["basicConstraints=CA:FALSE", *extensions]) + "\n")
        _run(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", f"/CN={cn}",
            cwd=self.dir,
        )
        # -days -1 puts notAfter one day before notBefore: a certificate that has expired.
        self.sign(csr, cert, days=-1 if expired else 365, extfile=ext)
        os.chmod(key, 0o600)
        csr.unlink()
        ext.unlink()
        return CertKey(cert=cert, key=key, cn=cn)

    def sign(self, csr: Path, out: Path, *, days: int = 30, extfile: Path | None = None) -> Path:
        """Sign a request made elsewhere (a kiosk's CSR), as the pharmacy's CA would."""
        ext: list[str | Path] = ["-extfile", extfile] if extfile else []
        _run(
            "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial",
            "-out", out, "-days", str(days), *ext,
            cwd=self.dir,
        )
        return out

    def server(self, cn: str = "localhost", *, expired: bool = False) -> CertKey:
        """A broker certificate valid for localhost, 127.0.0.1 and ::1."""
        stem = f"server-{cn}" + ("-expired" if expired else "")
        return self._issue(
            cn, stem,
            ["subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1", "extendedKeyUsage=serverAuth"],
            expired,
        )

    def client(self, cn: str, *, expired: bool = False) -> CertKey:
        """A client certificate whose CN is the MQTT identity (use_identity_as_username)."""
        stem = f"client-{cn}" + ("-expired" if expired else "")
        return self._issue(cn, stem, ["extendedKeyUsage=clientAuth"], expired)
