#!/bin/bash
# Builds the kernel drivers the virtual kiosk needs for the image's kernel, in a
# throw-away copy of the image root (the image itself gets no compiler):
#   gpio-sim      a real gpiochip; Debian's kernels do not build it, so it is built
#                 out of tree from linux-source-6.1 at the kernel's exact version
#   v4l2loopback  a real V4L2 capture device, through Debian's DKMS package
# Usage (in the chroot): build.sh KERNEL_VERSION OUT_DIR
set -euo pipefail
kver=$1
out=$2
mkdir -p "$out"
# the source must be the kernel's own version, not the newest one
version=$(dpkg-query -W -f '${Version}' "linux-image-$kver")
apt-get update -qq
apt-get install -y -qq --no-install-recommends "linux-headers-$kver" "linux-source-6.1=$version" \
    make xz-utils dkms v4l2loopback-dkms >/dev/null

# v4l2loopback: DKMS may already have built it while installing; if not, for this kernel
v4l=$(dpkg-query -W -f '${Version}' v4l2loopback-dkms)
v4l=${v4l%-*}
if ! find "/var/lib/dkms/v4l2loopback/$v4l/$kver" -name 'v4l2loopback.ko*' 2>/dev/null | grep -q .; then
    dkms build -m v4l2loopback -v "$v4l" -k "$kver"
fi
find "/var/lib/dkms/v4l2loopback/$v4l/$kver" -name 'v4l2loopback.ko*' -exec cp {} "$out/" \;

# gpio-sim, with the parts of the kernel it needs that Debian leaves out
src=/root/gpio-sim
rm -rf "$src"
mkdir -p "$src"
cd "$src"
tar -xJf /usr/src/linux-source-6.1.tar.xz linux-source-6.1/drivers/gpio/gpio-sim.c \
    linux-source-6.1/drivers/gpio/gpiolib.h linux-source-6.1/kernel/irq/irq_sim.c
mv linux-source-6.1/drivers/gpio/gpio-sim.c gpio-sim-core.c
mv linux-source-6.1/drivers/gpio/gpiolib.h linux-source-6.1/kernel/irq/irq_sim.c .
# irq_to_desc is not exported to modules; generic_handle_irq does the same lookup
grep -q 'handle_simple_irq(irq_to_desc(irqnum))' irq_sim.c
sed -i 's/handle_simple_irq(irq_to_desc(irqnum))/generic_handle_irq(irqnum)/' irq_sim.c
printf 'obj-m := gpio-sim.o\ngpio-sim-y := gpio-sim-core.o irq_sim.o\n' >Kbuild
make -s -C "/lib/modules/$kver/build" M="$src" modules
cp gpio-sim.ko "$out/"
echo "built for $kver: $(cd "$out" && ls)"
