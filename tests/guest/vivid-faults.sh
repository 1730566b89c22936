#!/bin/sh
# Runs inside the guest (cwd /mnt/host): camera faults through vivid's own controls while the real mien binary
# captures from /dev/video0. mien must keep running, drop what it cannot use, and reconnect by itself.
C=/dev/video0
mkdir -p out/frames
up() { cut -d' ' -f1 /proc/uptime; }
count() { ls out/frames | wc -l; }
more_frames() { n=$(count); i=0; while [ $i -lt 600 ]; do [ "$(count)" -ge $((n + $1)) ] && return 0; sleep 0.2; i=$((i+1)); done; return 1; }
logged() { grep -c "$1" out/faults.log; }
stop() { kill $pid 2>/dev/null; wait $pid 2>/dev/null; }

# 1. The first STREAMON fails (inject_vidioc_streamon_error): mien logs it, reopens, and frames flow.
v4l2-ctl -d $C --set-ctrl inject_vidioc_streamon_error=1 || exit 50
RUST_LOG=info /bin/mien run --config faults.toml --source $C --save-blurred out/frames \
    --labels out/labels.jsonl 2> out/faults.log &
pid=$!
more_frames 2 || { stop; exit 51; }
echo "MIEN_GUEST: streamon error survived: $(logged reconnected) reconnects"

# 2. Half the buffers are never returned (percentage_of_dropped_buffers): mien keeps going.
v4l2-ctl -d $C --set-ctrl percentage_of_dropped_buffers=50 || { stop; exit 52; }
more_frames 3 || { stop; exit 53; }
v4l2-ctl -d $C --set-ctrl percentage_of_dropped_buffers=0

# 3. vivid's disconnect control (the driver reports the device gone): mien reopens it.
before=$(logged reconnected)
v4l2-ctl -d $C --set-ctrl disconnect=1
i=0; while [ "$(logged reconnected)" -le "$before" ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i+1)); done
more_frames 2 || { stop; exit 54; }
# 4. Unplugged for two seconds (the driver unbound: the nodes vanish), then plugged back (bound again). The old
# node is still held open meanwhile (as a slow reader would hold it), so the kernel cannot reuse its number: the
# camera comes back as another /dev/videoN, and mien must find it by card and bus.
D=$(basename "$(readlink -f /sys/class/video4linux/video0/device)")
exec 3< $C
echo "$D" > /sys/bus/platform/drivers/vivid/unbind || { stop; exit 55; }
sleep 2
before=$(logged reconnected)
echo "$D" > /sys/bus/platform/drivers/vivid/bind || { stop; exit 56; }
i=0; while [ -z "$(ls /sys/devices/platform/$D/video4linux 2>/dev/null)" ] && [ $i -lt 250 ]; do usleep 20000; i=$((i+1)); done
t0=$(up)
i=0; while [ "$(logged reconnected)" -le "$before" ] && [ $i -lt 1000 ]; do usleep 20000; i=$((i+1)); done
t1=$(up)
exec 3<&-
echo "$t0 $t1" > out/reconnect.txt
echo "MIEN_GUEST: nodes after re-plug: $(ls /sys/devices/platform/$D/video4linux | tr '\n' ' ')"
more_frames 2 || { stop; exit 58; }
echo "MIEN_GUEST: reconnected after re-plug: $t0 -> $t1"
kill -0 $pid || exit 57
stop
exit 0
