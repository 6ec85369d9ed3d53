#!/usr/bin/env bash
# Builds the kiosk's Debian package, ordoscan_<version>-<revision>_<arch>.deb,
# with dpkg-deb (no debhelper). `./dev deb` runs it.
#
#   packaging/build-deb.sh [--arch amd64|arm64] [--revision N] [--out DIR]
#
# The package carries ordoscan's wheel and the wheels of its dependencies for
# ARCH and Python 3.11 (bookworm's), so that the kiosk installs offline: its
# postinst makes a venv with --system-site-packages (numpy, Pillow, picamera2
# and lgpio from apt where apt has them) and pip-installs from those wheels
# with --no-index. The wheels are exactly those pinned, with their sha256, in
# provisioning/constraints-kiosk.txt: a wheel whose hash is not pinned stops
# the build, naming the package. It also installs the unit, the service user
# and its folders; /etc/ordoscan/ordoscan.toml is a conffile.
#
# Wheels are downloaded once into $ORDOSCAN_WHEEL_CACHE
# (default /var/cache/ordoscan-test/wheels/ARCH) and reused offline after.
set -euo pipefail

TOP=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
ARCH=$(dpkg --print-architecture)
REVISION=1
OUT=$TOP/build
PY=${PYTHON:-python3}

die() { printf 'build-deb: %s\n' "$*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case $1 in
        --arch) ARCH=${2:?--arch needs a value}; shift 2 ;;
        --revision) REVISION=${2:?--revision needs a value}; shift 2 ;;
        --out) OUT=${2:?--out needs a value}; shift 2 ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) printf 'build-deb: unknown option %s\n' "$1" >&2; exit 2 ;;
    esac
done
[[ $REVISION =~ ^[0-9]+$ ]] || { printf 'build-deb: --revision %s: give a number\n' "$REVISION" >&2; exit 2; }
case $ARCH in
    amd64) MACHINE=x86_64 ;;
    arm64) MACHINE=aarch64 ;;
    *) printf 'build-deb: --arch %s: amd64 or arm64\n' "$ARCH" >&2; exit 2 ;;
esac
WHEELS=${ORDOSCAN_WHEEL_CACHE:-/var/cache/ordoscan-test/wheels}/$ARCH

VERSION=$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$TOP/pyproject.toml")
PKGVER=$VERSION-$REVISION
# ordoscan's dependencies at the pinned versions, minus what apt provides (numpy,
# Pillow; on the Pi also lgpio, python3-lgpio, which PyPI has no wheel of).
PINS=$TOP/provisioning/constraints-kiosk.txt
mapfile -t REQS < <("$PY" "$TOP/packaging/pins.py" list "$PINS")
[ ${#REQS[@]} -gt 0 ] || die "no pins read from $PINS"

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
PKG=$STAGE/ordoscan
WHEEL_DIR=$PKG/opt/ordoscan/wheels
mkdir -p "$WHEEL_DIR" "$OUT" "$WHEELS"

# ordoscan itself: a pure-Python wheel
"$PY" -m pip wheel -q --no-deps -w "$STAGE/own" "$TOP" >/dev/null || die "pip wheel of $TOP failed"
cp "$STAGE"/own/ordoscan-*.whl "$WHEEL_DIR/"

# the dependencies' wheels, for the kiosk's Python and architecture
PLATFORM=(--no-deps --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none
          --platform "manylinux2014_$MACHINE" --platform "manylinux_2_17_$MACHINE"
          --platform "manylinux_2_28_$MACHINE" --platform any)
if ! "$PY" -m pip download -q --no-index --find-links "$WHEELS" "${PLATFORM[@]}" -d "$WHEEL_DIR" "${REQS[@]}" >/dev/null 2>&1; then
    "$PY" -m pip download -q "${PLATFORM[@]}" -d "$WHEELS" "${REQS[@]}" ||
        die "pip download of ${REQS[*]} for $ARCH failed (network?)"
    "$PY" -m pip download -q --no-index --find-links "$WHEELS" "${PLATFORM[@]}" -d "$WHEEL_DIR" "${REQS[@]}" >/dev/null ||
        die "the wheels in $WHEELS do not cover ${REQS[*]}"
fi
"$PY" "$TOP/packaging/pins.py" verify "$PINS" "$WHEEL_DIR" ||
    die "the wheels for $ARCH are not the ones pinned in $PINS (above; downloaded into $WHEELS)"
# the postinst installs with these versions as constraints (the hashes were checked here)
printf '%s\n' "${REQS[@]}" >"$PKG/opt/ordoscan/constraints.txt"

install -D -m 0644 "$TOP/systemd/ordoscan.service" "$PKG/lib/systemd/system/ordoscan.service"
install -D -m 0644 "$TOP/systemd/system.conf.d/ordoscan-watchdog.conf" \
    "$PKG/lib/systemd/system.conf.d/ordoscan-watchdog.conf"
install -D -m 0644 "$TOP/packaging/ordoscan.toml" "$PKG/etc/ordoscan/ordoscan.toml"
# the guide and the installer, laid out as install.sh keeps them on a kiosk
SHARE=$PKG/opt/ordoscan/share
install -D -m 0644 "$TOP/docs/INSTALL.md" "$SHARE/INSTALL.md"
install -D -m 0755 "$TOP/provisioning/install.sh" "$SHARE/provisioning/install.sh"
install -D -m 0644 "$PINS" "$SHARE/provisioning/constraints-kiosk.txt"
install -D -m 0644 "$TOP/provisioning/ordoscan.toml.in" "$SHARE/provisioning/ordoscan.toml.in"
install -D -m 0644 "$TOP/systemd/ordoscan.service" "$SHARE/systemd/ordoscan.service"
install -D -m 0644 "$TOP/systemd/system.conf.d/ordoscan-watchdog.conf" \
    "$SHARE/systemd/system.conf.d/ordoscan-watchdog.conf"
mkdir -p "$PKG/usr/sbin"
ln -s /opt/ordoscan/share/provisioning/install.sh "$PKG/usr/sbin/ordoscan-setup"
printf '%s\n' "$PKGVER" >"$PKG/opt/ordoscan/package-version"

mkdir -p "$PKG/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "$TOP/packaging/$script" "$PKG/DEBIAN/$script"
done
echo /etc/ordoscan/ordoscan.toml >"$PKG/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
cat >"$PKG/DEBIAN/control" <<EOF
Package: ordoscan
Version: $PKGVER
Architecture: $ARCH
Maintainer: ordoscan <ordoscan@localhost>
Installed-Size: $SIZE
Depends: python3 (>= 3.11), python3 (<< 3.12), python3-venv, python3-numpy, python3-pil, adduser, systemd, ca-certificates, openssl
Recommends: python3-picamera2, python3-lgpio
Section: misc
Priority: optional
Description: prescription QR kiosk relaying scans over MQTT
 Reads the QR code of a French ordonnance numérique from a camera and relays
 its identifier to the pharmacy system over MQTT, without losing a scan.
 Runs as the systemd service ordoscan (its own venv under /opt/ordoscan,
 outbox in /var/lib/ordoscan, config in /etc/ordoscan).
EOF
DEB=$OUT/ordoscan_${PKGVER}_$ARCH.deb
dpkg-deb --root-owner-group -Zxz --build "$PKG" "$DEB" >/dev/null
printf '%s\n' "$DEB"
