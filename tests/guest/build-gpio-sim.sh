#!/usr/bin/env bash
# Build the gpio-sim kernel module out of tree for the guest kernel: Debian's kernel does not ship it
# (CONFIG_GPIO_SIM is off), so the status LED and button tests would have no real GPIO chip without it.
# Sources: drivers/gpio/gpio-sim.c (+ gpiolib.h) and kernel/irq/irq_sim.c (CONFIG_IRQ_SIM is off too, so it is
# linked into the module) from Debian's linux-source-X.Y package, built against linux-headers-KVER, the same
# way ../shared/v4l2-guest builds v4l2loopback. One patch: irq_sim calls the unexported irq_to_desc();
# generic_handle_irq() (exported) does the same through the handler irq_sim installs.
# usage: build-gpio-sim.sh KVER OUTDIR      (installs linux-headers-KVER with apt when missing)
set -euo pipefail
KVER=$1 OUT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
W=$HERE/work/gpio-sim
mkdir -p "$W" "$OUT"
[ -f "$OUT/gpio-sim.ko" ] && { echo "gpio-sim: already built"; exit 0; }
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
if [ ! -d "/usr/src/linux-headers-$KVER" ]; then
    echo "gpio-sim: apt-get install linux-headers-$KVER"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "linux-headers-$KVER" >/dev/null
fi
SERIES=$(echo "$KVER" | cut -d. -f1,2)
cd "$W"
ls linux-source-"$SERIES"_*.deb >/dev/null 2>&1 || apt-get download "linux-source-$SERIES" 2>&1 | grep -v unsandboxed || true
SRC=linux-source-$SERIES
rm -rf build "$SRC"; mkdir build
dpkg-deb --fsys-tarfile linux-source-"$SERIES"_*.deb | tar -xO --wildcards "*/$SRC.tar.xz" | xz -dc |
    tar -x "$SRC/drivers/gpio/gpio-sim.c" "$SRC/drivers/gpio/gpiolib.h" "$SRC/kernel/irq/irq_sim.c"
cp "$SRC/drivers/gpio/gpio-sim.c" build/gpio-sim-main.c
cp "$SRC/drivers/gpio/gpiolib.h" "$SRC/kernel/irq/irq_sim.c" build/
sed -i 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' build/irq_sim.c
grep -q 'generic_handle_irq(irqnum);' build/irq_sim.c || { echo "gpio-sim: irq_sim.c patch did not apply" >&2; exit 1; }
printf 'obj-m := gpio-sim.o\ngpio-sim-y := gpio-sim-main.o irq_sim.o\n' > build/Kbuild
make -s -C "/usr/src/linux-headers-$KVER" M="$W/build" modules 2>&1 | grep -v "Skipping BTF" || true
cp build/gpio-sim.ko "$OUT/gpio-sim.ko"
rm -rf "$SRC"
echo "gpio-sim: $(modinfo "$OUT/gpio-sim.ko" | sed -n 's/^vermagic: *//p')"
