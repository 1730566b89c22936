#!/bin/sh
# Runs inside the guest (cwd /mnt/host = the test's share dir): the real mien binary on a real framebuffer
# (vfb, /dev/fb0) and a real GPIO chip (gpio-sim: line 3 = status LED, line 5 = button, active low).
# Writes framebuffer dumps, LED samples and logs to out/; the host test (tests/board_guest.rs) judges them.
mkdir -p out
# vfb starts in 8 bpp (palette): mien must switch it to a true-colour mode itself.
insmod /lib/modules/vfb.ko vfb_enable=1 videomemorysize=2097152 || exit 30
[ -e /dev/fb0 ] || exit 31
mount -t configfs none /sys/kernel/config 2>/dev/null
insmod /lib/modules/gpio-sim.ko || exit 32
G=/sys/kernel/config/gpio-sim/mien
mkdir $G $G/bank0 && echo 8 > $G/bank0/num_lines && echo 1 > $G/live || exit 33
CHIP=$(cat $G/bank0/chip_name)
S=/sys/devices/platform/$(cat $G/dev_name)/$CHIP
[ -e /dev/$CHIP ] && [ -e $S/sim_gpio3/value ] || exit 34
echo pull-up > $S/sim_gpio5/pull                # the button is released
sed "s#@CHIP@#/dev/$CHIP#" board.toml > /tmp/board.toml
echo "MIEN_GUEST: fb0 $(cat /sys/class/graphics/fb0/virtual_size) at $(cat /sys/class/graphics/fb0/bits_per_pixel) bpp, gpio /dev/$CHIP"

# mien doctor finds the framebuffer and both GPIO lines (exit 1 on any failed check).
/bin/mien doctor --config /tmp/board.toml --source clip > out/doctor.log 2>&1 || exit 35
led() { cat $S/sim_gpio3/value; }
wait_led_on() { i=0; while [ $i -lt 600 ]; do [ "$(led)" = 1 ] && return 0; sleep 0.2; i=$((i+1)); done; return 1; }
wait_log() { i=0; while [ $i -lt 600 ]; do [ "$(grep -c "$1" "$2")" -ge "${3:-1}" ] && return 0; sleep 0.2; i=$((i+1)); done; return 1; }
samples() { i=0; while [ $i -lt 100 ]; do led; usleep 20000; i=$((i+1)); done; }
dump() { cat /sys/class/graphics/fb0/bits_per_pixel > out/$1.bpp; cat /sys/class/graphics/fb0/stride > out/$1.stride
         cat /sys/class/graphics/fb0/virtual_size > out/$1.size; cat /dev/fb0 > out/$1.raw; }

# 1. Normal running: the LED is steady on once a frame went through; the screen shows the blurred preview.
echo 0 > out/led-before.txt; led > out/led-before.txt
RUST_LOG=info,mien::display=debug /bin/mien run --config /tmp/board.toml --source clip --loop \
    --labels out/labels.jsonl 2> out/mien.log &
pid=$!
wait_led_on || { kill $pid; exit 40; }
wait_log "display: redraw, preview true" out/mien.log || { kill $pid; exit 41; }
samples > out/led-running.txt
dump fb-preview
# 2. The button hides the preview (and the screen is redrawn without it).
echo pull-down > $S/sim_gpio5/pull; sleep 0.3; echo pull-up > $S/sim_gpio5/pull
wait_log "button: preview off" out/mien.log || { kill $pid; exit 42; }
wait_log "display: redraw, preview false" out/mien.log 2 || { kill $pid; exit 43; }
dump fb-nopreview
kill $pid; wait $pid 2>/dev/null
# 3. No face detector: frames are masked whole; the LED blinks fast, the screen says so in red.
RUST_LOG=info,mien::display=debug /bin/mien run --config /tmp/board.toml --source clip --loop \
    --detect-model /nonexistent.onnx --labels out/labels-fault.jsonl 2> out/mien-fault.log &
pid=$!
wait_log "display: redraw" out/mien-fault.log 2 || { kill $pid; exit 44; }
samples > out/led-fault.txt
dump fb-fault
kill $pid; wait $pid 2>/dev/null
echo "MIEN_GUEST: board io done"
exit 0
