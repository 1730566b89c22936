#!/bin/sh
# Runs inside the guest (cwd /mnt/host = the test's share dir). For each "N FOURCC ext" in ./cases:
# vfeed writes frame_N.ext into vivid's output, vivid loops it to /dev/video0, mien captures it from there.
C=/dev/video0; O=/dev/video1
v4l2-ctl -d $C --set-dv-bt-timings index=0 >/dev/null && v4l2-ctl -d $O --set-dv-bt-timings index=0 >/dev/null || exit 10
# loop the output to the capture; no on-screen text, so the captured frame is exactly the one fed
v4l2-ctl -d $C --set-ctrl loop_video=1 --set-ctrl osd_text_mode=2 || exit 11
mkdir -p out
rc=0
while read -r n fmt ext; do
    [ -n "$n" ] || continue
    cp frame_$n.$ext /tmp/feed
    /bin/vfeed $O /tmp/feed 640 480 $fmt 900 2> out/vfeed-$n-$fmt.log &
    feeder=$!
    sleep 0.5
    /bin/mien run --config guest.toml --source $C --format $fmt --max-frames 5 \
        --save-blurred out/$n-$fmt --labels out/$n-$fmt.jsonl 2> out/mien-$n-$fmt.log
    r=$?
    kill $feeder; wait $feeder 2>/dev/null
    echo "MIEN_GUEST: case $n $fmt: mien exit $r, $(wc -l < out/$n-$fmt.jsonl) labels"
    [ $r -eq 0 ] || rc=$r
done < cases
# mien doctor sees the camera, its formats and a frame (it exits 1 on any failed check)
/bin/mien doctor --config guest.toml --source $C > out/doctor.log 2>&1 || rc=21
# the camera must be refused cleanly when it is missing
/bin/mien run --config guest.toml --source /dev/video9 --max-frames 1 2> out/missing.log && rc=20
exit $rc
