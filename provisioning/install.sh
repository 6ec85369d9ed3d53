#!/usr/bin/env bash
# ordoscan-setup: turns a fresh Raspberry Pi OS Lite (bookworm, 64-bit) into
# an ordoscan kiosk, then looks after it. Run as root. Installed on the kiosk
# as /usr/local/sbin/ordoscan-setup; docs/INSTALL.md is the guide.
#
#   install --site SITE --broker HOST [--port N] [--device-id ID]
#           [--source DIR|WHEEL|DEB] [--ca FILE] [--username NAME] [--rewrite-config]
#                       apt packages, user, venv, ordoscan, config, device key
#                       and certificate request, systemd unit, camera and
#                       watchdog settings; starts the service once the device
#                       certificate is there
#   csr [--renew]       print the certificate request (--renew: new key + request)
#   install-cert CERT [--ca FILE]
#                       install the device certificate signed by the pharmacy's CA
#   set-password        read the MQTT password on standard input
#   appliance enable --data DEVICE [--format] | appliance disable
#                       read-only root (overlay) with the outbox on DEVICE
#   status              what is installed and how it is doing
#   uninstall [--purge --yes]
#                       remove ordoscan (--purge: also its config, key, outbox, user)
#
# Every command can be run again: what is already in place is left untouched,
# and a second run of the same command changes nothing.
set -euo pipefail

PROG=ordoscan-setup
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")
TOP=$(dirname "$HERE")

SERVICE_USER=ordoscan
PREFIX=/opt/ordoscan
VENV=$PREFIX/venv
SHARE=$PREFIX/share
STAMP=$PREFIX/installed-source.sha256
# ordoscan's dependencies as CI tested them, with their hashes; numpy and Pillow come from apt
PINS=$HERE/constraints-kiosk.txt
LINK=/usr/local/sbin/ordoscan-setup
CONF_DIR=/etc/ordoscan
CONF=$CONF_DIR/ordoscan.toml
KEY=$CONF_DIR/device.key
NEW_KEY=$CONF_DIR/device.key.new
CSR=$CONF_DIR/device.csr
CERT=$CONF_DIR/device.crt
CA=$CONF_DIR/ca.crt
PASSWORD_FILE=$CONF_DIR/mqtt.password
STATE_DIR=/var/lib/ordoscan
UNIT=ordoscan.service
UNIT_FILE=/etc/systemd/system/$UNIT
# Installed from the Debian package (ordoscan_<version>_<arch>.deb), the unit
# and the watchdog setting are the package's, and apt removes them.
PACKAGE_UNIT_FILE=/lib/systemd/system/$UNIT
UNIT_DROPINS=/etc/systemd/system/$UNIT.d
WATCHDOG_CONF=/etc/systemd/system.conf.d/ordoscan-watchdog.conf
DATA_MOUNT=/etc/systemd/system/var-lib-ordoscan.mount
JOURNAL_CONF=/etc/systemd/journald.conf.d/ordoscan-appliance.conf
DATA_LABEL=ordoscan-data

# Everything the kiosk needs from Debian. numpy and Pillow come from apt so
# that picamera2 (built against apt's numpy) and ordoscan share one copy.
APT_REQUIRED=(python3 python3-venv python3-numpy python3-pil ca-certificates openssl)
# Only in the Raspberry Pi OS archive: skipped, with a message, elsewhere.
APT_PI_ONLY=(python3-picamera2 python3-lgpio)

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# pip keeps no wheel cache on the kiosk unless one is asked for.
[ -n "${PIP_CACHE_DIR:-}" ] || export PIP_NO_CACHE_DIR=1
umask 022

CHANGES=0
REBOOT_NEEDED=no
WORK=

say() { printf '%s: %s\n' "$PROG" "$*"; }
note() { printf '%s: note: %s\n' "$PROG" "$*"; }
changed() { CHANGES=$((CHANGES + 1)); printf '  + %s\n' "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
usage_error() { printf '%s: %s\n(see: %s --help)\n' "$PROG" "$*" "$PROG" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//'; }

cleanup() { if [ -n "$WORK" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT
workdir() { if [ -z "$WORK" ]; then WORK=$(mktemp -d /tmp/ordoscan-setup.XXXXXX); fi; }

need_root() { [ "$(id -u)" -eq 0 ] || die "run me as root (sudo $PROG $*)"; }
systemd_running() { [ -d /run/systemd/system ]; }

# The Raspberry Pi overlay (raspi-config) puts the root in RAM: changes made
# while it is active are lost at the next boot.
overlay_active() { [ -r /proc/cmdline ] && grep -qw 'overlayroot=tmpfs' /proc/cmdline; }
refuse_on_overlay() {
    if overlay_active; then
        die "the read-only root (appliance mode) is active: changes now would be lost at the next boot. Run '$PROG appliance disable', reboot, make the change, then '$PROG appliance enable' again"
    fi
}

firmware_file() {  # /boot/firmware on bookworm, /boot before
    local name=$1 dir
    for dir in /boot/firmware /boot; do
        if [ -f "$dir/$name" ]; then printf '%s\n' "$dir/$name"; return 0; fi
    done
    return 1
}

# --- files: change only what differs -----------------------------------------

# fix_attrs PATH MODE OWNER:GROUP
fix_attrs() {
    local path=$1 mode=$2 owner=$3
    if [ "$(stat -c '%a %U:%G' "$path")" != "$mode $owner" ]; then
        chown "$owner" "$path"
        chmod "$mode" "$path"
        changed "$path: mode $mode, owner $owner"
    fi
}

# commit TMP DEST: TMP's data on disk, then renamed over DEST, then the rename on disk;
# a power cut at any point leaves the old DEST or the new one, never an empty file
# (ext4 writes data back up to 30 s late, and a kiosk's power is pulled, not shut down)
commit() {
    sync "$1" && mv -f "$1" "$2" && sync "$(dirname "$2")"
}

# put_file SRC DEST MODE OWNER:GROUP: copy, atomically and durably, if content differs
put_file() {
    local src=$1 dest=$2 mode=$3 owner=$4 tmp
    if [ -f "$dest" ] && [ ! -L "$dest" ] && cmp -s "$src" "$dest"; then
        fix_attrs "$dest" "$mode" "$owner"
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    tmp=$(mktemp "$(dirname "$dest")/.$PROG.XXXXXX")
    if ! { cat "$src" >"$tmp" && chown "$owner" "$tmp" && chmod "$mode" "$tmp" && commit "$tmp" "$dest"; }; then
        rm -f "$tmp"
        die "could not write $dest"
    fi
    changed "$dest"
}

# put_text DEST MODE OWNER:GROUP < text
put_text() {
    workdir
    cat >"$WORK/text"
    put_file "$WORK/text" "$@"
}

# ensure_dir PATH MODE OWNER:GROUP
ensure_dir() {
    if [ ! -d "$1" ]; then
        mkdir -p "$1"
        chown "$3" "$1"
        chmod "$2" "$1"
        changed "$1/"
    else
        fix_attrs "$1" "$2" "$3"
    fi
}

# ensure_link TARGET LINK
ensure_link() {
    if [ "$(readlink "$2" 2>/dev/null)" != "$1" ]; then
        mkdir -p "$(dirname "$2")"
        ln -sfn "$1" "$2"
        changed "$2 -> $1"
    fi
}

remove() {
    local p
    for p in "$@"; do
        if [ -e "$p" ] || [ -L "$p" ]; then
            rm -rf -- "$p"
            changed "removed $p"
        fi
    done
}

remove_if_empty() {
    local d
    for d in "$@"; do
        if [ -d "$d" ] && [ -z "$(ls -A "$d")" ]; then
            rmdir "$d"
            changed "removed $d/ (empty)"
        fi
    done
}

# --- input checks ------------------------------------------------------------

# Same rule as the config's [device] id and site: they go into MQTT topics.
check_name() {
    [[ $2 =~ ^[A-Za-z0-9_.-]{1,64}$ ]] ||
        usage_error "$1 '$2': use 1 to 64 letters, digits, '_', '.', '-' (it goes into MQTT topics)"
}
check_host() {
    if ! [[ $1 =~ ^[A-Za-z0-9._:-]{1,253}$ ]] || [[ $1 == [.-]* ]]; then
        usage_error "--broker '$1': give a host name or an IP address"
    fi
}
check_port() {
    if ! [[ $1 =~ ^[0-9]{1,5}$ ]] || [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then
        usage_error "--port '$1': give a number from 1 to 65535"
    fi
}
need_value() { if [ $# -lt 2 ] || [ -z "$2" ]; then usage_error "$1 needs a value"; fi; }

# The Pi's serial number, as ordoscan's config defaults to it: leading zeros
# dropped, last 8 characters.
pi_serial() {
    local s=""
    if [ -r /proc/device-tree/serial-number ]; then
        s=$(tr -d '\000\n ' </proc/device-tree/serial-number)
    fi
    if [ -z "$s" ] && [ -r /proc/cpuinfo ]; then
        s=$(sed -n 's/^Serial[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n1)
    fi
    s=$(printf '%s' "$s" | sed 's/^0*//')
    [ -n "$s" ] || return 1
    printf '%s\n' "${s: -8}"
}

# --- apt ---------------------------------------------------------------------

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
pkg_available() {
    local candidate
    candidate=$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
    [ -n "$candidate" ] && [ "$candidate" != "(none)" ]
}
apt_lists_present() { compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; }

install_packages() {
    local p missing=() optional=() wanted=()
    for p in "${APT_REQUIRED[@]}"; do pkg_installed "$p" || missing+=("$p"); done
    for p in "${APT_PI_ONLY[@]}"; do pkg_installed "$p" || optional+=("$p"); done
    [ ${#missing[@]} -gt 0 ] || [ ${#optional[@]} -gt 0 ] || return 0
    if [ ${#missing[@]} -gt 0 ] || ! apt_lists_present; then
        say "apt-get update"
        if ! apt-get update -q >/dev/null; then
            # only the Raspberry Pi OS packages were wanted: they are optional off a Pi
            [ ${#missing[@]} -eq 0 ] || die "apt-get update failed (network? /etc/apt/sources.list*)"
            note "apt-get update failed (offline?): the optional packages are looked up in what apt already knows"
        fi
    fi
    wanted=("${missing[@]}")
    for p in "${optional[@]}"; do
        if pkg_available "$p"; then
            wanted+=("$p")
        else
            note "apt package $p is not available here (it comes from the Raspberry Pi OS archive): skipped; the kiosk's camera/GPIO need it on a Pi"
        fi
    done
    [ ${#wanted[@]} -gt 0 ] || return 0
    say "installing apt packages: ${wanted[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${wanted[@]}" >/dev/null ||
        die "apt-get install ${wanted[*]} failed"
    changed "apt packages: ${wanted[*]}"
}

# --- user --------------------------------------------------------------------

ensure_user() {
    local g
    if ! getent group gpio >/dev/null; then
        # Raspberry Pi OS has it (its udev rules give it /dev/gpiochip*).
        groupadd --system gpio
        changed "group gpio (not Raspberry Pi OS: give it /dev/gpiochip* with a udev rule)"
    fi
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        useradd --system --user-group --no-create-home --home-dir "$STATE_DIR" \
            --shell /usr/sbin/nologin --comment "ordoscan kiosk daemon" \
            --groups video,gpio "$SERVICE_USER"
        changed "user $SERVICE_USER (groups video, gpio)"
    fi
    for g in video gpio; do
        if ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx "$g"; then
            usermod -a -G "$g" "$SERVICE_USER"
            changed "user $SERVICE_USER added to group $g"
        fi
    done
}

as_service_user() {
    setpriv --reuid="$SERVICE_USER" --regid="$SERVICE_USER" --init-groups --inh-caps=-all -- "$@"
}

# --- ordoscan in its venv ------------------------------------------------------

default_source() {
    if [ -f "$TOP/pyproject.toml" ] && grep -q '^name = "ordoscan"' "$TOP/pyproject.toml"; then
        printf '%s\n' "$TOP"
    fi
}

# A checksum of what would be installed: the wheel, or the package's source.
source_fingerprint() {
    local src=$1
    if [ -f "$src" ]; then
        sha256sum <"$src" | cut -d' ' -f1
        return
    fi
    (
        cd "$src"
        {
            for f in pyproject.toml setup.cfg setup.py README.md; do
                if [ -f "$f" ]; then printf '%s\0' "$f"; fi
            done
            find firmware -type f ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0
        } | LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -d' ' -f1
}

venv_ok() {
    [ -x "$VENV/bin/python" ] && grep -qx 'include-system-site-packages = true' "$VENV/pyvenv.cfg" 2>/dev/null &&
        "$VENV/bin/python" -c 'import sys' 2>/dev/null
}

ordoscan_works() { [ -x "$VENV/bin/ordoscan" ] && "$VENV/bin/ordoscan" --version >/dev/null 2>&1; }

from_package() { pkg_installed ordoscan; }

# No site config yet: none at all, or the package's conffile as shipped.
config_unset() {
    local shipped
    [ -f "$CONF" ] || return 0
    shipped=$(dpkg-query -W -f='${Conffiles}\n' ordoscan 2>/dev/null | awk -v f="$CONF" '$1 == f {print $2}')
    [ -n "$shipped" ] && [ "$(md5sum <"$CONF" | cut -d' ' -f1)" = "$shipped" ]
}

# The unit in use: the package's, or the one this script installs.
unit_file() { if from_package; then printf '%s\n' "$PACKAGE_UNIT_FILE"; else printf '%s\n' "$UNIT_FILE"; fi; }

# install_deb FILE: the Debian package, through apt (it makes the venv offline
# from the wheels it carries, the user, the folders and the unit)
install_deb() {
    local src=$1 want
    want=$(dpkg-deb -f "$src" Version) || usage_error "--source $src: not a Debian package"
    if [ "$(dpkg-query -W -f='${Status} ${Version}' ordoscan 2>/dev/null)" = "install ok installed $want" ] &&
        ordoscan_works; then
        return 0
    fi
    if [ -f "$UNIT_FILE" ]; then
        # a kiosk installed by this script before: the package's unit takes over
        remove "$UNIT_FILE" "$STAMP"
        if systemd_running; then systemctl daemon-reload; fi
    fi
    say "installing the package $src (apt)"
    apt-get install -y -q -o Dpkg::Options::=--force-confold "$src" >/dev/null ||
        die "apt-get install $src failed (see the messages above)"
    ordoscan_works || die "the package was installed but '$VENV/bin/ordoscan --version' fails"
    changed "ordoscan $want (Debian package)"
    PACKAGE_CHANGED=yes
}

# install_ordoscan SOURCE; sets PACKAGE_CHANGED
install_ordoscan() {
    local src=$1 want
    PACKAGE_CHANGED=no
    if [[ $src == *.deb ]]; then
        install_deb "$src"
        return 0
    fi
    if from_package; then
        die "ordoscan is installed from its Debian package: give --source ordoscan_<version>_<arch>.deb, or 'apt-get remove ordoscan' first"
    fi
    ensure_dir "$PREFIX" 755 root:root
    if ! venv_ok; then
        if [ -e "$VENV" ]; then rm -rf "$VENV"; fi
        python3 -m venv --system-site-packages "$VENV" || die "could not create the venv $VENV"
        changed "venv $VENV (with the system site packages: picamera2, lgpio from apt)"
    fi
    if [ -z "$src" ]; then
        ordoscan_works || usage_error "ordoscan is not installed yet: give --source DIR (a checkout) or --source FILE.whl"
        return 0
    fi
    [ -f "$PINS" ] || die "$PINS is missing: it pins the versions ordoscan is installed with (take it from the same checkout)"
    want="$(source_fingerprint "$src") $(sha256sum <"$PINS" | cut -d' ' -f1)"
    if [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] && ordoscan_works; then
        return 0
    fi
    if systemd_running && systemctl is-active --quiet "$UNIT"; then
        say "stopping $UNIT for the update"
        systemctl stop "$UNIT"
    fi
    say "installing ordoscan from $src into $VENV (pip)"
    if "$VENV/bin/python" -m pip show ordoscan >/dev/null 2>&1; then
        "$VENV/bin/python" -m pip uninstall -q -y ordoscan >/dev/null
    fi
    # the dependencies at the pinned versions, each checked against its hash, then ordoscan alone
    "$VENV/bin/python" -m pip install -q --no-warn-script-location --require-hashes -r "$PINS" ||
        die "pip install -r $PINS failed (PyPI reachable? a hash that does not match is named above)"
    "$VENV/bin/python" -m pip install -q --no-warn-script-location --no-deps "$src" ||
        die "pip install $src failed (see the messages above)"
    ordoscan_works || die "ordoscan was installed but '$VENV/bin/ordoscan --version' fails"
    printf '%s\n' "$want" | put_text "$STAMP" 644 root:root
    changed "ordoscan $("$VENV/bin/ordoscan" --version 2>&1 | awk '{print $NF}') in $VENV"
    PACKAGE_CHANGED=yes
}

# Scripts, templates, units and the guide, kept on the kiosk for later use.
install_share() {
    local doc
    put_file "$HERE/install.sh" "$SHARE/provisioning/install.sh" 755 root:root
    put_file "$PINS" "$SHARE/provisioning/constraints-kiosk.txt" 644 root:root
    put_file "$HERE/ordoscan.toml.in" "$SHARE/provisioning/ordoscan.toml.in" 644 root:root
    put_file "$TOP/systemd/ordoscan.service" "$SHARE/systemd/ordoscan.service" 644 root:root
    put_file "$TOP/systemd/system.conf.d/ordoscan-watchdog.conf" \
        "$SHARE/systemd/system.conf.d/ordoscan-watchdog.conf" 644 root:root
    for doc in "$TOP/docs/INSTALL.md" "$TOP/INSTALL.md"; do
        if [ -f "$doc" ]; then put_file "$doc" "$SHARE/INSTALL.md" 644 root:root; break; fi
    done
    ensure_link "$SHARE/provisioning/install.sh" "$LINK"
}

# --- configuration -------------------------------------------------------------

render_config() {  # DEVICE_ID SITE HOST PORT USERNAME
    local password_file=""
    if [ -n "$5" ]; then password_file=$PASSWORD_FILE; fi
    sed -e "s|@DEVICE_ID@|$1|g" -e "s|@SITE@|$2|g" -e "s|@BROKER_HOST@|$3|g" \
        -e "s|@BROKER_PORT@|$4|g" -e "s|@USERNAME@|$5|g" -e "s|@PASSWORD_FILE@|$password_file|g" \
        "$HERE/ordoscan.toml.in"
}

# Device id and site of the installed config, one per line.
config_identity() {
    "$VENV/bin/python" - "$CONF" <<'EOF'
import sys
from ordoscan.config import load_config
cfg = load_config(sys.argv[1])
print(cfg.device.id)
print(cfg.device.site)
EOF
}

validate_config() {
    local out
    # the certificate and the password come later (csr, install-cert, set-password): check the
    # keys and values now; `ordoscan check` and the service check the files once they are there
    if ! out=$(as_service_user "$VENV/bin/ordoscan" config validate --values-only --config "$CONF" 2>&1); then
        printf '%s\n' "$out" >&2
        die "$CONF is not valid (above); fix it, or rewrite it with: $PROG install --rewrite-config --site ... --broker ..."
    fi
}

# --- device key and certificate request --------------------------------------------

pubkey_of_key() { openssl pkey -in "$1" -pubout 2>/dev/null | sha256sum | cut -d' ' -f1; }
pubkey_of_csr() { openssl req -in "$1" -noout -pubkey 2>/dev/null | sha256sum | cut -d' ' -f1; }
pubkey_of_cert() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null | sha256sum | cut -d' ' -f1; }

# new_key PATH: an EC P-256 key made on this kiosk, 0600, owned by the service user
new_key() {
    local tmp
    tmp=$(mktemp "$CONF_DIR/.$PROG.XXXXXX")
    if ! openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp" 2>/dev/null; then
        rm -f "$tmp"
        die "openssl could not generate a key"
    fi
    chown "$SERVICE_USER:$SERVICE_USER" "$tmp"
    chmod 600 "$tmp"
    commit "$tmp" "$1" || die "could not write $1"
    changed "$1 (new private key, never leaves this kiosk)"
}

# ensure_csr KEY DEVICE_ID SITE: the request for KEY, subject CN=device id, O=site
ensure_csr() {
    local key=$1 id=$2 site=$3
    workdir
    if [ -f "$CSR" ] && [ "$(pubkey_of_csr "$CSR")" = "$(pubkey_of_key "$key")" ] &&
        [ "$(openssl req -in "$CSR" -noout -subject -nameopt RFC2253 2>/dev/null)" = "subject=CN=$id,O=$site" ]; then
        fix_attrs "$CSR" 644 root:root
        return 0
    fi
    openssl req -new -key "$key" -subj "/O=$site/CN=$id" -out "$WORK/device.csr" ||
        die "openssl could not write the certificate request"
    put_file "$WORK/device.csr" "$CSR" 644 root:root
}

ensure_key_and_csr() {
    if [ ! -s "$KEY" ]; then new_key "$KEY"; else fix_attrs "$KEY" 600 "$SERVICE_USER:$SERVICE_USER"; fi
    if [ -s "$NEW_KEY" ]; then
        fix_attrs "$NEW_KEY" 600 "$SERVICE_USER:$SERVICE_USER"
        ensure_csr "$NEW_KEY" "$1" "$2"  # a renewal is under way
    else
        ensure_csr "$KEY" "$1" "$2"
    fi
}

# --- systemd -------------------------------------------------------------------------

install_units() {  # sets UNITS_CHANGED, WATCHDOG_CHANGED
    local before=$CHANGES
    UNITS_CHANGED=$PACKAGE_CHANGED
    WATCHDOG_CHANGED=no
    if from_package; then
        # the package installs, reloads and enables its unit
        if ! systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
            systemctl enable --quiet "$UNIT" || die "systemctl enable $UNIT failed"
            changed "$UNIT enabled (starts at boot)"
        fi
        return 0
    fi
    put_file "$TOP/systemd/ordoscan.service" "$UNIT_FILE" 644 root:root
    UNITS_CHANGED=no
    if [ "$CHANGES" -ne "$before" ]; then UNITS_CHANGED=yes; fi
    before=$CHANGES
    put_file "$TOP/systemd/system.conf.d/ordoscan-watchdog.conf" "$WATCHDOG_CONF" 644 root:root
    WATCHDOG_CHANGED=no
    if [ "$CHANGES" -ne "$before" ]; then WATCHDOG_CHANGED=yes; fi
    if systemd_running; then
        if [ "$WATCHDOG_CHANGED" = yes ]; then
            systemctl daemon-reexec  # RuntimeWatchdogSec= is read at (re)start of PID 1
        elif [ "$UNITS_CHANGED" = yes ]; then
            systemctl daemon-reload
        fi
    fi
    if ! systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
        systemctl enable --quiet "$UNIT" || die "systemctl enable $UNIT failed"
        changed "$UNIT enabled (starts at boot)"
    fi
}

# --- Raspberry Pi firmware settings ------------------------------------------------

enable_camera() {
    local cfg
    if ! cfg=$(firmware_file config.txt); then
        note "no /boot/firmware/config.txt (not a Raspberry Pi?): camera setting skipped"
        return 0
    fi
    if grep -Eq '^[[:space:]]*camera_auto_detect=1' "$cfg"; then return 0; fi
    if grep -Eq '^[[:space:]]*camera_auto_detect=' "$cfg"; then
        sed -i -E 's/^[[:space:]]*camera_auto_detect=.*/camera_auto_detect=1/' "$cfg"
    else
        printf '\n[all]\n# ordoscan: the CSI camera (libcamera)\ncamera_auto_detect=1\n' >>"$cfg"
    fi
    changed "$cfg: camera_auto_detect=1"
    REBOOT_NEEDED=yes
}

# --- commands ---------------------------------------------------------------------------

cmd_install() {
    local site="" host="" port=8883 device_id="" source="" ca="" username="" rewrite=no
    while [ $# -gt 0 ]; do
        case $1 in
            --site) need_value "$@"; site=$2; shift 2 ;;
            --broker) need_value "$@"; host=$2; shift 2 ;;
            --port) need_value "$@"; port=$2; shift 2 ;;
            --device-id) need_value "$@"; device_id=$2; shift 2 ;;
            --source) need_value "$@"; source=$2; shift 2 ;;
            --ca) need_value "$@"; ca=$2; shift 2 ;;
            --username) need_value "$@"; username=$2; shift 2 ;;
            --rewrite-config) rewrite=yes; shift ;;
            *) usage_error "install: unknown option '$1'" ;;
        esac
    done
    [ -z "$site" ] || check_name --site "$site"
    [ -z "$host" ] || check_host "$host"
    check_port "$port"
    [ -z "$device_id" ] || check_name --device-id "$device_id"
    [ -z "$username" ] || [[ $username =~ ^[A-Za-z0-9_.@-]{1,128}$ ]] ||
        usage_error "--username '$username': use letters, digits, '_', '.', '@', '-'"
    if [ -n "$ca" ]; then
        [ -r "$ca" ] || usage_error "--ca $ca: no such file"
        openssl x509 -in "$ca" -noout 2>/dev/null || usage_error "--ca $ca: not a PEM certificate"
    fi
    if [ -z "$source" ]; then
        source=$(default_source)
    else
        source=$(readlink -f -- "$source") || usage_error "--source: no such file or folder"
        if [ -d "$source" ]; then
            [ -f "$source/pyproject.toml" ] || usage_error "--source $source: no pyproject.toml there (give an ordoscan checkout)"
        elif [ -f "$source" ]; then
            [[ $(basename "$source") == ordoscan-*.whl || $(basename "$source") == ordoscan_*.deb ]] ||
                usage_error "--source $source: not an ordoscan wheel (ordoscan-*.whl) or package (ordoscan_*.deb)"
        else
            usage_error "--source $source: no such file or folder"
        fi
    fi
    if config_unset || [ "$rewrite" = yes ]; then
        if [ -z "$site" ] || [ -z "$host" ]; then
            usage_error "install: a new kiosk needs --site SITE and --broker HOST"
        fi
    fi
    need_root install
    refuse_on_overlay
    if [ -r /etc/os-release ] && ! grep -q '^VERSION_CODENAME=bookworm' /etc/os-release; then
        note "this is not Debian/Raspberry Pi OS bookworm: going on, but only bookworm is supported"
    fi

    say "installing ordoscan"
    install_packages
    ensure_user
    install_ordoscan "$source"
    install_share

    ensure_dir "$CONF_DIR" 750 "root:$SERVICE_USER"
    ensure_dir "$STATE_DIR" 700 "$SERVICE_USER:$SERVICE_USER"
    local conf_before=$CHANGES
    if config_unset || [ "$rewrite" = yes ]; then
        if [ -z "$device_id" ]; then
            device_id=$(pi_serial) ||
                usage_error "cannot read the Raspberry Pi serial number (/proc/device-tree/serial-number); give --device-id ID"
            check_name "device id from the serial number" "$device_id"
        fi
        workdir
        render_config "$device_id" "$site" "$host" "$port" "$username" >"$WORK/ordoscan.toml"
        if [ -f "$CONF" ] && ! cmp -s "$WORK/ordoscan.toml" "$CONF"; then
            cp -p "$CONF" "$CONF.bak"
            note "the previous configuration is kept as $CONF.bak"
        fi
        put_file "$WORK/ordoscan.toml" "$CONF" 640 "root:$SERVICE_USER"
    else
        fix_attrs "$CONF" 640 "root:$SERVICE_USER"
        if [ -n "$site$host$device_id$username" ]; then
            note "$CONF exists and is kept as it is; --site/--broker/--device-id/--username apply to a new config only (add --rewrite-config to write it again)"
        fi
    fi
    local config_changed=no
    if [ "$CHANGES" -ne "$conf_before" ]; then config_changed=yes; fi
    validate_config
    local identity id_site
    identity=$(config_identity) || die "could not read the device id and site from $CONF"
    device_id=$(sed -n 1p <<<"$identity")
    id_site=$(sed -n 2p <<<"$identity")
    if [ -n "$ca" ]; then put_file "$ca" "$CA" 644 root:root; fi
    ensure_key_and_csr "$device_id" "$id_site"

    install_units
    enable_camera

    local ready=yes
    [ -s "$CERT" ] || ready=no
    [ -s "$CA" ] || ready=no
    if ! systemd_running; then
        note "systemd is not running (chroot or image build): $UNIT is enabled and starts at the first boot"
    elif [ "$ready" = no ]; then
        note "$UNIT starts once the device certificate and the broker's CA are installed ($PROG install-cert)"
    elif ! systemctl is-active --quiet "$UNIT"; then
        start_service start
    elif [ "$PACKAGE_CHANGED" = yes ] || [ "$config_changed" = yes ] || [ "$UNITS_CHANGED" = yes ]; then
        start_service restart
    fi

    summary
    if [ ! -s "$CERT" ]; then
        cat <<EOF

Next: have the pharmacy's CA sign this kiosk's certificate request
  $CSR   (subject: CN=$device_id, O=$id_site)
then install the certificate (and the CA that signed the broker's certificate):
  $PROG install-cert device.crt --ca ca.crt
EOF
    fi
}

start_service() {  # start | restart
    say "systemctl $1 $UNIT"
    systemctl reset-failed "$UNIT" 2>/dev/null || true  # a start limit hit earlier must not block it
    if ! systemctl "$1" "$UNIT"; then
        journalctl -u "$UNIT" -n 20 --no-pager >&2 || true
        die "$UNIT did not start (journal above; 'ordoscan check' tells more)"
    fi
    changed "$UNIT ${1}ed"
}

summary() {
    if [ "$CHANGES" -eq 0 ]; then say "done: nothing to change"; else say "done: $CHANGES change(s)"; fi
    if [ "$REBOOT_NEEDED" = yes ]; then say "reboot for the firmware settings to apply (sudo reboot)"; fi
}

cmd_csr() {
    local renew=no
    while [ $# -gt 0 ]; do
        case $1 in
            --renew) renew=yes; shift ;;
            *) usage_error "csr: unknown option '$1'" ;;
        esac
    done
    need_root csr
    refuse_on_overlay
    if [ ! -f "$CONF" ] || ! venv_ok; then die "ordoscan is not installed: run '$PROG install' first"; fi
    local identity
    identity=$(config_identity) || die "could not read the device id and site from $CONF"
    if [ "$renew" = yes ] && [ ! -s "$NEW_KEY" ]; then new_key "$NEW_KEY"; fi
    ensure_key_and_csr "$(sed -n 1p <<<"$identity")" "$(sed -n 2p <<<"$identity")"
    say "certificate request: $CSR"
    cat "$CSR"
    if [ -s "$NEW_KEY" ]; then
        note "renewal: the current certificate and key stay in use until '$PROG install-cert' installs the new certificate"
    fi
}

cmd_install_cert() {
    local cert="" ca=""
    while [ $# -gt 0 ]; do
        case $1 in
            --ca) need_value "$@"; ca=$2; shift 2 ;;
            -*) usage_error "install-cert: unknown option '$1'" ;;
            *) [ -z "$cert" ] || usage_error "install-cert: one certificate file only"; cert=$1; shift ;;
        esac
    done
    [ -n "$cert" ] || usage_error "install-cert: give the signed certificate file (install-cert device.crt [--ca ca.crt])"
    [ -r "$cert" ] || usage_error "install-cert: $cert: no such file"
    openssl x509 -in "$cert" -noout 2>/dev/null || usage_error "install-cert: $cert is not a PEM certificate"
    if [ -n "$ca" ]; then
        [ -r "$ca" ] || usage_error "install-cert: --ca $ca: no such file"
        openssl x509 -in "$ca" -noout 2>/dev/null || usage_error "install-cert: --ca $ca is not a PEM certificate"
    fi
    need_root install-cert
    refuse_on_overlay
    [ -s "$KEY" ] || die "no device key ($KEY): run '$PROG install' first"
    local pub key_used=""
    pub=$(pubkey_of_cert "$cert")
    if [ -s "$NEW_KEY" ] && [ "$pub" = "$(pubkey_of_key "$NEW_KEY")" ]; then
        key_used=$NEW_KEY
    elif [ "$pub" = "$(pubkey_of_key "$KEY")" ]; then
        key_used=$KEY
    else
        die "$cert does not belong to this kiosk's key: it must be signed from this kiosk's request ($CSR)"
    fi
    openssl x509 -in "$cert" -noout -checkend 0 >/dev/null ||
        die "$cert has expired ($(openssl x509 -in "$cert" -noout -enddate)); ask for a new one"
    if [ -n "$ca" ]; then put_file "$ca" "$CA" 644 root:root; fi
    if [ ! -s "$CA" ]; then
        note "no broker CA yet ($CA): add --ca FILE (the CA that signed the broker's certificate)"
    elif ! openssl verify -CAfile "$CA" "$cert" >/dev/null 2>&1; then
        note "$cert is not signed by $CA: fine if the broker's CA differs from the CA of the kiosks"
    fi
    local before=$CHANGES
    put_file "$cert" "$CERT" 644 root:root
    if [ "$key_used" = "$NEW_KEY" ]; then
        commit "$NEW_KEY" "$KEY" || die "could not write $KEY"
        changed "$KEY replaced by the renewed key"
    fi
    say "device certificate: $(openssl x509 -in "$CERT" -noout -subject -nameopt RFC2253), $(openssl x509 -in "$CERT" -noout -enddate)"
    if [ "$CHANGES" -ne "$before" ] && systemd_running && [ -s "$CA" ] && [ -f "$(unit_file)" ]; then
        if systemctl is-active --quiet "$UNIT"; then start_service restart; else start_service start; fi
    fi
    summary
}

cmd_set_password() {
    [ $# -eq 0 ] || usage_error "set-password takes no argument: it reads the password on standard input"
    need_root set-password
    refuse_on_overlay
    if [ ! -d "$CONF_DIR" ] || ! getent passwd "$SERVICE_USER" >/dev/null; then die "run '$PROG install' first"; fi
    local pw=""
    if [ -t 0 ]; then
        IFS= read -r -s -p "MQTT password: " pw
        echo
    else
        IFS= read -r pw || true
    fi
    [ -n "$pw" ] || usage_error "set-password: empty password"
    printf '%s' "$pw" | put_text "$PASSWORD_FILE" 600 "$SERVICE_USER:$SERVICE_USER"
    if [ -f "$CONF" ] && ! grep -q "^password_file = \"$PASSWORD_FILE\"" "$CONF"; then
        note "$CONF does not name $PASSWORD_FILE: set mqtt.username and mqtt.password_file there"
    fi
    if [ "$CHANGES" -gt 0 ] && systemd_running && systemctl is-active --quiet "$UNIT"; then
        start_service restart
    fi
    summary
}

# --- appliance mode ---------------------------------------------------------------------

cmd_appliance() {
    local action=${1:-}
    [ $# -eq 0 ] || shift
    case $action in
        enable) appliance_enable "$@" ;;
        disable) appliance_disable "$@" ;;
        *) usage_error "appliance: say 'enable --data DEVICE [--format]' or 'disable'" ;;
    esac
}

appliance_enable() {
    local dev="" format=no
    while [ $# -gt 0 ]; do
        case $1 in
            --data) need_value "$@"; dev=$2; shift 2 ;;
            --format) format=yes; shift ;;
            *) usage_error "appliance enable: unknown option '$1'" ;;
        esac
    done
    [ -n "$dev" ] || usage_error "appliance enable: give --data DEVICE, a partition or USB drive for the outbox (it must survive power cuts; the root becomes read-only)"
    need_root appliance
    refuse_on_overlay
    [ -f "$(unit_file)" ] || die "run '$PROG install' first"
    dev=$(readlink -f -- "$dev")
    [ -b "$dev" ] || usage_error "appliance enable: $dev is not a block device"
    local mounted
    mounted=$(lsblk -nro MOUNTPOINT "$dev" 2>/dev/null | grep -v -x -e '' -e "$STATE_DIR" | head -n1 || true)
    [ -z "$mounted" ] || usage_error "appliance enable: $dev (or a partition on it) is in use at $mounted; choose a spare partition or USB drive"

    local fstype
    fstype=$(blkid -p -o value -s TYPE "$dev" 2>/dev/null || true)
    if [ "$fstype" != ext4 ]; then
        [ "$format" = yes ] || usage_error "appliance enable: $dev holds ${fstype:-no file system}; add --format to make it an ext4 file system for the outbox (this erases $dev)"
        say "formatting $dev (ext4, label $DATA_LABEL)"
        mkfs.ext4 -q -F -L "$DATA_LABEL" "$dev" || die "mkfs.ext4 $dev failed"
        changed "$dev formatted (ext4)"
    fi
    local uuid
    uuid=$(blkid -p -o value -s UUID "$dev") || die "no UUID on $dev"

    local was_active=no
    if systemd_running && systemctl is-active --quiet "$UNIT"; then was_active=yes; fi
    copy_outbox_to "$dev"  # stops the service if there is an outbox to move

    put_text "$DATA_MOUNT" 644 root:root <<EOF
# Written by $PROG (appliance enable): the outbox lives on persistent
# storage while the root file system is a RAM overlay. ordoscan.service
# requires this mount (StateDirectory=): if the drive is missing, the kiosk
# does not start rather than queue scans in RAM.
[Unit]
Description=ordoscan outbox on persistent storage
Before=ordoscan.service

[Mount]
What=/dev/disk/by-uuid/$uuid
Where=$STATE_DIR
Type=ext4
Options=noatime,nodev,nosuid,noexec,errors=remount-ro
EOF
    put_text "$JOURNAL_CONF" 644 root:root <<'EOF'
# Written by ordoscan-setup (appliance enable): the root is a RAM overlay,
# so the journal is kept in RAM and its size bounded.
[Journal]
Storage=volatile
RuntimeMaxUse=32M
EOF
    if systemd_running; then
        systemctl daemon-reload
        if ! findmnt -n -M "$STATE_DIR" >/dev/null 2>&1; then
            if systemctl is-active --quiet "$UNIT"; then systemctl stop "$UNIT"; fi
            systemctl start var-lib-ordoscan.mount || die "could not mount $dev on $STATE_DIR"
            changed "$dev mounted on $STATE_DIR"
        fi
        if [ "$was_active" = yes ] && ! systemctl is-active --quiet "$UNIT"; then start_service start; fi
    fi

    local cmdline
    if ! command -v raspi-config >/dev/null; then
        note "raspi-config not found (not Raspberry Pi OS): the read-only root (overlay) is skipped"
    elif cmdline=$(firmware_file cmdline.txt) && grep -qw 'overlayroot=tmpfs' "$cmdline"; then
        :
    else
        say "raspi-config: overlay file system on, boot partition read-only"
        raspi-config nonint do_overlayfs 0 || die "raspi-config nonint do_overlayfs 0 failed"
        changed "read-only root (overlay) enabled"
        REBOOT_NEEDED=yes
    fi
    summary
}

# Before the outbox moves to DEV, what it holds goes with it.
copy_outbox_to() {
    local dev=$1 mnt
    if findmnt -n -M "$STATE_DIR" >/dev/null 2>&1; then return 0; fi  # already there
    if [ -z "$(ls -A "$STATE_DIR" 2>/dev/null)" ]; then return 0; fi
    workdir
    mnt=$WORK/data
    mkdir -p "$mnt"
    mount -t ext4 "$dev" "$mnt" || die "could not mount $dev"
    if diff -r -q "$STATE_DIR" "$mnt" -x lost+found >/dev/null 2>&1; then
        :  # copied already
    elif [ -e "$mnt/outbox.sqlite3" ]; then
        note "$dev already holds an outbox: kept; the one in $STATE_DIR is left underneath"
    else
        if systemd_running && systemctl is-active --quiet "$UNIT"; then
            say "stopping $UNIT to move the outbox"
            systemctl stop "$UNIT"
        fi
        if ! cp -a "$STATE_DIR/." "$mnt/"; then umount "$mnt"; die "could not copy $STATE_DIR to $dev"; fi
        changed "outbox copied from $STATE_DIR to $dev"
    fi
    chown "$SERVICE_USER:$SERVICE_USER" "$mnt"
    chmod 700 "$mnt"
    sync
    umount "$mnt"
}

appliance_disable() {
    [ $# -eq 0 ] || usage_error "appliance disable takes no option"
    need_root appliance
    local cmdline
    if cmdline=$(firmware_file cmdline.txt) && grep -qw 'overlayroot=tmpfs' "$cmdline"; then
        command -v raspi-config >/dev/null || die "overlayroot is set in $cmdline but raspi-config is missing"
        say "raspi-config: overlay file system off"
        raspi-config nonint do_overlayfs 1 || die "raspi-config nonint do_overlayfs 1 failed"
        changed "read-only root (overlay) disabled"
        REBOOT_NEEDED=yes
    fi
    if overlay_active; then
        note "the overlay is still active until the reboot; after it, run '$PROG appliance disable' again to finish"
    else
        remove "$JOURNAL_CONF"
        remove_if_empty "$(dirname "$JOURNAL_CONF")"
        if [ -f "$DATA_MOUNT" ]; then
            note "the outbox stays on its drive ($DATA_MOUNT); '$PROG uninstall' removes that mount"
        fi
    fi
    summary
}

# --- status -----------------------------------------------------------------------------

cmd_status() {
    [ $# -eq 0 ] || usage_error "status takes no option"
    local v
    if ordoscan_works; then v=$("$VENV/bin/ordoscan" --version 2>&1); else v="not installed"; fi
    printf 'ordoscan:        %s (%s)\n' "$v" "$VENV"
    if [ -f "$CONF" ] && [ -r "$CONF" ] && venv_ok; then
        printf 'device, site:    %s\n' "$(config_identity 2>/dev/null | paste -sd' ' - || echo '?')"
    fi
    printf 'config:          %s\n' "$( [ -f "$CONF" ] && echo "$CONF" || echo missing)"
    if [ -s "$CERT" ]; then
        printf 'certificate:     %s, %s\n' "$(openssl x509 -in "$CERT" -noout -subject -nameopt RFC2253)" \
            "$(openssl x509 -in "$CERT" -noout -enddate)"
    else
        printf 'certificate:     missing (request: %s)\n' "$CSR"
    fi
    printf 'broker CA:       %s\n' "$( [ -s "$CA" ] && echo "$CA" || echo missing)"
    if systemd_running; then
        printf 'service:         %s, %s\n' "$(systemctl is-enabled "$UNIT" 2>/dev/null || true)" \
            "$(systemctl is-active "$UNIT" 2>/dev/null || true)"
    else
        printf 'service:         %s (systemd not running)\n' "$(systemctl is-enabled "$UNIT" 2>/dev/null || true)"
    fi
    local mode="off"
    if [ -f "$DATA_MOUNT" ]; then mode="outbox on $(sed -n 's/^What=//p' "$DATA_MOUNT")"; fi
    if overlay_active; then mode="$mode, read-only root active"; fi
    printf 'appliance mode:  %s\n' "$mode"
    printf 'self-test:       sudo -u %s %s check --config %s\n' "$SERVICE_USER" "$VENV/bin/ordoscan" "$CONF"
}

# --- uninstall ---------------------------------------------------------------------------

cmd_uninstall() {
    local purge=no yes=no
    while [ $# -gt 0 ]; do
        case $1 in
            --purge) purge=yes; shift ;;
            --yes) yes=yes; shift ;;
            *) usage_error "uninstall: unknown option '$1'" ;;
        esac
    done
    if [ "$purge" = yes ] && [ "$yes" = no ]; then
        usage_error "uninstall --purge deletes the device key, the config and the outbox with any scan not yet delivered; add --yes to confirm"
    fi
    need_root uninstall
    refuse_on_overlay
    local cmdline
    if cmdline=$(firmware_file cmdline.txt) && grep -qw 'overlayroot=tmpfs' "$cmdline"; then
        die "appliance mode is on: run '$PROG appliance disable' and reboot first"
    fi
    say "removing ordoscan"
    if [ -f "$(unit_file)" ]; then
        if systemd_running && systemctl is-active --quiet "$UNIT"; then
            systemctl stop "$UNIT"
            changed "$UNIT stopped"
        fi
        if systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
            systemctl disable --quiet "$UNIT"
            changed "$UNIT disabled"
        fi
    fi
    if systemd_running && findmnt -n -M "$STATE_DIR" >/dev/null 2>&1; then
        systemctl stop var-lib-ordoscan.mount || umount "$STATE_DIR"
        changed "$STATE_DIR unmounted (the outbox stays on its drive)"
    fi
    if from_package; then
        # apt removes the venvs and the unit; a purge also the config and the outbox
        if [ "$purge" = yes ]; then
            apt-get purge -y -q ordoscan >/dev/null || die "apt-get purge ordoscan failed"
            changed "package ordoscan purged"
        else
            apt-get remove -y -q ordoscan >/dev/null || die "apt-get remove ordoscan failed"
            changed "package ordoscan removed"
        fi
    fi
    remove "$UNIT_FILE" "$UNIT_DROPINS" "$WATCHDOG_CONF" "$DATA_MOUNT" "$JOURNAL_CONF" "$LINK" "$PREFIX"
    remove_if_empty "$(dirname "$WATCHDOG_CONF")" "$(dirname "$JOURNAL_CONF")"
    if systemd_running; then systemctl daemon-reload; fi
    if [ "$purge" = yes ]; then
        remove "$CONF_DIR" "$STATE_DIR"
        if getent passwd "$SERVICE_USER" >/dev/null; then
            userdel "$SERVICE_USER"
            changed "user $SERVICE_USER removed"
        fi
        if getent group "$SERVICE_USER" >/dev/null; then
            groupdel "$SERVICE_USER"
            changed "group $SERVICE_USER removed"
        fi
    else
        local kept=()
        [ ! -e "$CONF_DIR" ] || kept+=("$CONF_DIR")
        [ ! -e "$STATE_DIR" ] || kept+=("$STATE_DIR")
        getent passwd "$SERVICE_USER" >/dev/null && kept+=("user $SERVICE_USER")
        if [ ${#kept[@]} -gt 0 ]; then
            note "kept: ${kept[*]} (key, config, undelivered scans); 'uninstall --purge --yes' removes them"
        fi
    fi
    note "apt packages, the gpio group and camera_auto_detect in config.txt are left in place"
    summary
}

main() {
    local cmd=${1:-}
    [ $# -eq 0 ] || shift
    case $cmd in
        install) cmd_install "$@" ;;
        csr) cmd_csr "$@" ;;
        install-cert) cmd_install_cert "$@" ;;
        set-password) cmd_set_password "$@" ;;
        appliance) cmd_appliance "$@" ;;
        status) cmd_status "$@" ;;
        uninstall) cmd_uninstall "$@" ;;
        -h | --help | help) usage ;;
        "") usage >&2; exit 2 ;;
        *) usage_error "unknown command '$cmd'" ;;
    esac
}

main "$@"
