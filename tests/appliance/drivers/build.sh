#!/bin/bash
# Builds the kernel drivers the virtual kiosk needs for the image's kernel, in a
# throw-away copy of the image root (the image itself gets no compiler):
#   gpio-sim      a real gpiochip; Debian's kernels do not build it, so it is built
#                 out of tree from linux-source-6.1 at the kernel's exact version
#   v4l2loopback  a real V4L2 capture device, built out of tree from the source in
#                 Debian's v4l2loopback-dkms package of the release pinned below
# Nothing here depends on the architecture: the kernel version names it, and the
# v4l2loopback package is "Architecture: all" (the same file for amd64 and arm64).
# Usage (in the chroot): build.sh KERNEL_VERSION OUT_DIR [--sources]
# With --sources nothing is compiled: each module's prepared source folder is left in
# OUT_DIR/src/, and the host compiles it with a cross compiler against this root's
# headers (image.py, for another architecture than the host's: an emulated compiler is
# many times slower).
set -euo pipefail
kver=$1
out=$2
mode=${3:-}
mkdir -p "$out"

# kbuild DIR: the module in DIR (its Kbuild file), for $kver, into $out
kbuild() {
    if [ "$mode" = --sources ]; then
        mkdir -p "$out/src"
        cp -r "$1" "$out/src/"
        return
    fi
    make -s -C "/lib/modules/$kver/build" M="$1" modules
    cp "$1"/*.ko "$out/"
}

# v4l2loopback: bookworm's 0.12.7 can corrupt its outbufs list while a writer streams
# and a reader dequeues (kernel panic "list_del corruption" in buffer_written,
# upstream issue v4l2loopback#532); 0.13.0 protects that list with a lock. 0.13.2 is
# bookworm-backports' build of it, for bookworm's kernels. Pinned by version and sha256.
V4L2LOOPBACK=0.13.2
V4L2LOOPBACK_DEB_VERSION=0.13.2-1~bpo12+1
V4L2LOOPBACK_DEB_SUITE=bookworm-backports
V4L2LOOPBACK_DEB_SHA256=fea08332aefeae5b11f1fd772b343f01a7a4909766d840f97d2cee9e8f952aab

# the image's own mirror, for the backports suite (this copy of the root only)
mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list)
echo "deb $mirror $V4L2LOOPBACK_DEB_SUITE main" >/etc/apt/sources.list.d/v4l2loopback.list
# the source must be the kernel's own version, not the newest one
version=$(dpkg-query -W -f '${Version}' "linux-image-$kver")
apt-get update -qq
apt-get install -y -qq --no-install-recommends "linux-headers-$kver" "linux-source-6.1=$version" \
    make xz-utils >/dev/null

deb=/var/cache/apt/archives/v4l2loopback-dkms_${V4L2LOOPBACK_DEB_VERSION/:/%3a}_all.deb
if ! echo "$V4L2LOOPBACK_DEB_SHA256  $deb" | sha256sum -c --quiet 2>/dev/null; then
    (cd /var/cache/apt/archives && apt-get download -qq "v4l2loopback-dkms=$V4L2LOOPBACK_DEB_VERSION")
    echo "$V4L2LOOPBACK_DEB_SHA256  $deb" | sha256sum -c --quiet || {
        echo "v4l2loopback-dkms $V4L2LOOPBACK_DEB_VERSION: not the pinned sha256" >&2; exit 1; }
fi
v4l=/root/v4l2loopback
rm -rf "$v4l" /root/v4l2loopback-deb
dpkg-deb -x "$deb" /root/v4l2loopback-deb
mv "/root/v4l2loopback-deb/usr/src/v4l2loopback-$V4L2LOOPBACK" "$v4l"
# the fix itself: buffer_written() moves the buffer under the list's own lock
grep -q 'spin_lock_bh(&dev->list_lock)' "$v4l/v4l2loopback.c"
grep -q "^PACKAGE_VERSION=\"\?$V4L2LOOPBACK\"\?$" "$v4l/dkms.conf"
kbuild "$v4l"

# gpio-sim, with the parts of the kernel it needs that Debian leaves out
src=/root/gpio-sim
rm -rf "$src"
mkdir -p "$src"
cd "$src"
tar -xJf /usr/src/linux-source-6.1.tar.xz linux-source-6.1/drivers/gpio/gpio-sim.c \
    linux-source-6.1/drivers/gpio/gpiolib.h linux-source-6.1/kernel/irq/irq_sim.c
mv linux-source-6.1/drivers/gpio/gpio-sim.c gpio-sim-core.c
mv linux-source-6.1/drivers/gpio/gpiolib.h linux-source-6.1/kernel/irq/irq_sim.c .
rm -r linux-source-6.1
# irq_to_desc is not exported to modules; generic_handle_irq does the same lookup
grep -q 'handle_simple_irq(irq_to_desc(irqnum))' irq_sim.c
sed -i 's/handle_simple_irq(irq_to_desc(irqnum))/generic_handle_irq(irqnum)/' irq_sim.c
printf 'obj-m := gpio-sim.o\ngpio-sim-y := gpio-sim-core.o irq_sim.o\n' >Kbuild
kbuild "$src"
echo "built for $kver: $(cd "$out" && ls)"
