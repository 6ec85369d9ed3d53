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
# 0.13.2 still panics the guest the same way (seen here in 1 boot of 9): a reader's
# VIDIOC_REQBUFS with fewer buffers (OpenCV's, for the kiosk's CAP_PROP_BUFFERSIZE=1)
# unlinks the buffers beyond the new count with list_del and no lock, while write()
# copies a frame into one of them (its index taken before the count changed), then
# buffer_written() moves that unlinked buffer: "list_del corruption ... LIST_POISON1".
# Upstream took the lock around those list operations after 0.13.2 (c80af89, "Add guard
# to list ops in REQBUFS"); that alone still moves the unlinked buffer. So here: the lock,
# list_del_init, and buffer_written() drops a frame written into a buffer no longer in
# the list (the next write goes to a buffer in use).
python3 - "$v4l/v4l2loopback.c" <<'PY'
import sys
path = sys.argv[1]
src = open(path).read()
def once(old, new):
    global src
    assert src.count(old) == 1, f"v4l2loopback.c: {old!r} not found once"
    src = src.replace(old, new)
once("\t\t/* make sure that outbufs_list contains buffers from 0 to used_buffers-1",
     "\t\tspin_lock_bh(&dev->list_lock);\n"
     "\t\t/* make sure that outbufs_list contains buffers from 0 to used_buffers-1")
once("\t\t\t\t\tlist_del(&pos->list_head);", "\t\t\t\t\tlist_del_init(&pos->list_head);")
once("\t\t\t\t++i;\n\t\t\t}\n\t\t}\n\n\t\topener->buffers_number = b->count;",
     "\t\t\t\t++i;\n\t\t\t}\n\t\t}\n\t\tspin_unlock_bh(&dev->list_lock);\n\n"
     "\t\topener->buffers_number = b->count;")
once("\tspin_lock_bh(&dev->list_lock);\n\tlist_move_tail(&buf->list_head, &dev->outbufs_list);",
     "\tspin_lock_bh(&dev->list_lock);\n"
     "\tif (list_empty(&buf->list_head)) {\n"
     "\t\t/* unlinked by REQBUFS while the frame was copied into it */\n"
     "\t\tspin_unlock_bh(&dev->list_lock);\n\t\treturn;\n\t}\n"
     "\tlist_move_tail(&buf->list_head, &dev->outbufs_list);")
open(path, "w").write(src)
PY
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
