#!/bin/bash
# At boot, before the kiosk starts (unit kiosk-board.service of the test image):
# the Raspberry Pi's GPIO as a real gpiochip made by gpio-sim, and the board
# revision gpiozero asks for.
#
# gpiozero's lgpio factory refuses to run off a Raspberry Pi: it reads the board
# revision from /proc/device-tree or the "Revision" line of /proc/cpuinfo. This x86
# machine has neither, so this script writes /run/kiosk-board/cpuinfo (the real one
# plus a Pi 4 Model B's lines) and the image's drop-in for ordoscan.service binds it
# over /proc/cpuinfo inside the service's own mount namespace. Nothing else on the
# machine, and nothing in the kiosk's package or code, sees it.
set -euo pipefail
LINES=58            # a BCM2711's GPIO bank: BCM n is line n
LABEL=pinctrl-bcm2711
REVISION=c03114     # Raspberry Pi 4 Model B rev 1.4, 4 GB
cfg=/sys/kernel/config/gpio-sim/kiosk

modprobe configfs
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
modprobe gpio-sim
# gpiolib's tracepoints, which the pin watcher follows (the image masks the mount unit)
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing || true
if [ ! -d "$cfg" ]; then
    mkdir "$cfg" "$cfg/bank0"
    echo "$LINES" >"$cfg/bank0/num_lines"
    echo "$LABEL" >"$cfg/bank0/label"
    for ((i = 0; i < LINES; i++)); do
        mkdir "$cfg/bank0/line$i"
        echo "GPIO$i" >"$cfg/bank0/line$i/name"
    done
    echo 1 >"$cfg/live"
fi
chip=$(cat "$cfg/bank0/chip_name")
# /dev/gpiochipN for the gpio group (the image's udev rule), as on Raspberry Pi OS
udevadm settle --timeout=30 || true
mkdir -p /run/kiosk-board
{
    cat /proc/cpuinfo
    printf 'Hardware\t: BCM2835\nRevision\t: %s\nSerial\t\t: 100000000000c0de\n' "$REVISION"
    printf 'Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n'
} >/run/kiosk-board/cpuinfo
# the global number of line 0, as gpiolib's tracepoints print lines (pinwatch.py)
base=-1
for d in /sys/class/gpio/gpiochip*; do
    [ "$(cat "$d/label")" = "$LABEL" ] && base=$(cat "$d/base")
done
echo "$chip $(cat "$cfg/dev_name") $base" >/run/kiosk-board/gpiochip
echo "kiosk-board: $chip ($LABEL, $LINES lines) on $(cat "$cfg/dev_name"), revision $REVISION"
