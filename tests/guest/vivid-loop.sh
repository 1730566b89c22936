#!/bin/sh
# Runs inside the guest (cwd /mnt/host = the test's share dir). For each "N FOURCC ext" in ./cases:
# vfeed writes frame_N.ext into vivid's output, vivid loops it to /dev/video0, mien captures it from there.
# ./cases-preload runs the same under libv4l2's LD_PRELOAD wrapper (v4l2convert.so, logging every ioctl it is
# handed): mien's V4L2 calls must all reach such a layer, as they must reach libcamerify's on a Pi camera module.
# Then vivid is reloaded multi-planar (multiplanar=2: only the MPLANE API) and ./cases-mplane runs the same way.
C=/dev/video0; O=/dev/video1
FRAMES=$(cat frames)  # per case: the first two may predate the loopback picture, the rest are compared
rc=0
setup() { # loop the output to the capture; no on-screen text, so the captured frame is exactly the one fed
    v4l2-ctl -d $C --set-dv-bt-timings index=0 >/dev/null && v4l2-ctl -d $O --set-dv-bt-timings index=0 >/dev/null || exit 10
    v4l2-ctl -d $C --set-ctrl loop_video=1 --set-ctrl osd_text_mode=2 || exit 11
}
run_cases() { # $1: case list, $2: prefix for the output files ("", "pre-", "mp-"), $3...: environment for mien
    list=$1 pfx=$2; shift 2
    while read -r n fmt ext; do
        [ -n "$n" ] || continue
        cp frame_$n.$ext /tmp/feed
        /bin/vfeed $O /tmp/feed 640 480 $fmt 900 2> out/vfeed-$pfx$n-$fmt.log &
        feeder=$!
        sleep 0.5
        env "$@" /bin/mien run --config guest.toml --source $C --format $fmt --max-frames $FRAMES \
            --save-blurred out/$pfx$n-$fmt --labels out/$pfx$n-$fmt.jsonl 2> out/mien-$pfx$n-$fmt.log
        r=$?
        kill $feeder; wait $feeder 2>/dev/null
        echo "MIEN_GUEST: case $pfx$n $fmt: mien exit $r, $(wc -l < out/$pfx$n-$fmt.jsonl) labels"
        [ $r -eq 0 ] || rc=$r
    done < "$list"
}
mkdir -p out
setup
run_cases cases ""
run_cases cases-preload pre- LD_PRELOAD="$(ls /usr/lib/*/libv4l/v4l2convert.so)" LIBV4L2_LOG_FILENAME=out/libv4l2.log
# mien doctor sees the camera, its formats and a frame (it exits 1 on any failed check)
/bin/mien doctor --config guest.toml --source $C > out/doctor.log 2>&1 || rc=21
# the camera must be refused cleanly when it is missing
/bin/mien run --config guest.toml --source /dev/video9 --max-frames 1 2> out/missing.log && rc=20
# multi-planar: the same vivid instance, reloaded with only the MPLANE API on its capture and output nodes
rmmod vivid || exit 12
# shellcheck disable=SC2086
insmod /lib/modules/vivid.ko ${vivid_args:-n_devs=1 node_types=0x101 num_inputs=1 input_types=0x3 num_outputs=1 output_types=0x1} multiplanar=2 || exit 13
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e $O ] && break; sleep 0.1; done
v4l2-ctl -d $C --all > out/mplane-caps.log 2>&1
setup
run_cases cases-mplane mp-
/bin/mien doctor --config guest.toml --source $C > out/doctor-mplane.log 2>&1 || rc=22
exit $rc
