#!/usr/bin/env bash
# Sourced by the jobs the appliance tests run in the VM (tests/appliance):
# small helpers, and every event line goes to the host on the second serial port.
set -euo pipefail

EVENTS=${EVENTS:-/dev/ttyS1}
export SHARE=/mnt/host
SCENES=/run/scenes

ev() { printf '%s\n' "$*" >"$EVENTS"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
prop() { systemctl show -P "$2" "$1"; }

# wait_for SECONDS COMMAND...: polls every 0.1 s
wait_for() {
    local limit=$1 i
    shift
    for ((i = 0; i < limit * 10; i++)); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    return 1
}
is_active() { [ "$(systemctl is-active "$1")" = active ]; }
pid_is_not() { local p; p=$(prop "$1" MainPID); [ "$p" != 0 ] && [ "$p" != "$2" ] && is_active "$1"; }

# site_setup: the site's configuration, as ordoscan-setup would write it (the test's
# kiosk.toml), and the relay to the host's broker
site_setup() {
    install -m 0640 -o root -g ordoscan "$SHARE/kiosk.toml" /etc/ordoscan/ordoscan.toml
    # this emulated machine only: at boot, on a loaded host, the daemon's start (OpenCV's
    # libraries read and linked for the v4l2 source) took 88 s and more, past the unit's
    # 90 s sized for a Pi, so systemd killed it twice per boot before a third start made it
    # (kept if the run already wrote its own: arm64's is longer)
    mkdir -p /etc/systemd/system/ordoscan.service.d
    [ -e /etc/systemd/system/ordoscan.service.d/emulated.conf ] ||
        printf '[Service]\n# emulated (qemu TCG) on a shared host: a Pi starts in seconds\nTimeoutStartSec=600\n' \
            >/etc/systemd/system/ordoscan.service.d/emulated.conf
    echo 'd /run/scenes 0755 root root -' >/etc/tmpfiles.d/ordoscan-scenes.conf
    systemd-tmpfiles --create /etc/tmpfiles.d/ordoscan-scenes.conf
    cp "$SHARE/relay.service" /etc/systemd/system/broker-relay.service
    systemctl daemon-reload
    systemctl enable --now broker-relay.service
}

# feed FILE...: frames for the replay camera, each renamed in whole
feed() {
    local f name
    for f in "$@"; do
        name=$(basename "$f")
        cp "$f" "$SCENES/.$name"
        mv "$SCENES/.$name" "$SCENES/$name"
    done
}

# show FILE...: each picture held up to the camera as a patient holds the paper until
# the kiosk beeps. The feeder shows a picture for 1.5 s and the kiosk, starved under
# emulation, may skip every frame of it (its decoder's duty cycle): so while the
# daemon's journal has no new scan, the picture is shown again (a copy under a new
# name; 3 s allowed for the journal to catch up after each showing), at most 10 times.
queued_more() { [ "$(grep -c 'queued as seq' "$1")" -gt "$2" ]; }
show() {
    local f name before i log=/run/show-journal.log jpid
    journalctl -b -f -n 0 -o cat -u ordoscan.service >"$log" 2>/dev/null &
    jpid=$!
    sleep 1
    for f in "$@"; do
        name=$(basename "$f" .png)
        before=$(grep -c 'queued as seq' "$log" || true)
        for ((i = 1; ; i++)); do
            if [ "$i" -gt 10 ]; then
                kill "$jpid" 2>/dev/null || true
                echo "show: $name not read in 10 showings" >&2
                return 1
            fi
            cp "$f" "$SCENES/.$name-$i.png"
            mv "$SCENES/.$name-$i.png" "$SCENES/$name-$i.png"
            wait_for 60 [ ! -e "$SCENES/$name-$i.png" ] || true
            if wait_for 3 queued_more "$log" "$before"; then break; fi
        done
        ev "showings $name $i"
    done
    kill "$jpid" 2>/dev/null || true
}

# The scan lines of the daemon's journal (masked identifiers), streamed to the host
# as they come: what the outbox acknowledged before a cut is known outside the VM.
stream_queued() {
    journalctl -b -f -n all -o cat -u ordoscan.service |
        grep --line-buffered -E 'queued as seq|delivered|ready$' |
        while IFS= read -r line; do ev "journal: $line"; done &
}

# lag_probe SECONDS: how late this guest wakes a sleeping process, for SECONDS in the
# background. An emulated CPU on a loaded host is descheduled for whole stretches, and
# every timed step of the kiosk (a good read's 150 ms dip, its 80 ms beep) ends that
# much late. Every 0.5 s the largest overshoot of a 10 ms sleep: "lag <uptime s> <ms>".
lag_probe() {
    python3 - "$1" "$EVENTS" <<'PY' &
import sys, time
end = time.monotonic() + float(sys.argv[1])
with open(sys.argv[2], "w") as events:
    while time.monotonic() < end:
        worst, until = 0.0, time.monotonic() + 0.5
        while time.monotonic() < until:
            t = time.monotonic()
            time.sleep(0.01)
            worst = max(worst, time.monotonic() - t - 0.01)
        events.write(f"lag {time.monotonic():.3f} {worst * 1000:.0f}\n")
        events.flush()
PY
}

# In WAL mode SQLite writes the database file itself only when it checkpoints: the file's
# mtime changing is a checkpoint begun. Polled every 2 ms; on the change the daemon is
# frozen (SIGSTOP) where it is, inside the checkpoint, and the WAL's size sent to the host,
# which then cuts the power: a WAL not yet truncated means the checkpoint had not ended.
watch_checkpoints() {
    python3 - "$(prop ordoscan MainPID)" "$EVENTS" <<'PY' &
import os, signal, sys, time
pid, events = int(sys.argv[1]), sys.argv[2]
db = "/var/lib/ordoscan/outbox.sqlite3"
last = os.stat(db).st_mtime_ns
while os.stat(db).st_mtime_ns == last:
    time.sleep(0.002)
os.kill(pid, signal.SIGSTOP)
try:
    wal = os.path.getsize(db + "-wal")
except OSError:
    wal = 0
with open(events, "w") as f:
    f.write(f"checkpoint-frozen wal={wal}\n")
PY
}

# The package's state in dpkg's database, sent to the host at each change (unpacked,
# half-configured, installed...): the host cuts the power knowing what dpkg is doing.
watch_dpkg() {
    local last="" now
    while :; do
        now=$(dpkg-query -W -f '${Status} ${Version}' ordoscan 2>/dev/null || echo absent)
        if [ "$now" != "$last" ]; then ev "dpkg $now"; last=$now; fi
        sleep 0.1
    done
}
