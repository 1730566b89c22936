//! Real V4L2: the `mien` binary captures from the kernel's `vivid` driver in a qemu guest (Debian's kernel,
//! TCG), fed known face frames through vivid's output->capture loopback. Its labels must equal those of a
//! replay run on the same frames, and its saved frames must be blurred where the faces are. Camera faults
//! (vivid's error-injection controls and a real unplug) must be survived. Each test runs twice: the host build
//! in an amd64 guest, and the aarch64 build in an arm64 guest (qemu-system-aarch64, Cortex-A72, Debian arm64),
//! which leaves two loopback cases to the amd64 one (`NOT_ON_ARM64`).
//!
//! Needs qemu-system-x86 / qemu-system-arm, the guest kit (tests/guest/build.sh downloads Debian's kernel
//! .debs) and the aarch64 build: `.ci/run` provides all three and runs these tests with `--include-ignored`.

mod common;
use common::*;
use mien::pixels::detail;

/// One guest at a time: two TCG guests on a 2-core machine slow each other past the tests' time budgets.
static GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Frames of the sample clip fed through the loopback: one face, a relit face, two small faces.
/// Frame 0 also goes through YUYV (4:2:2) and NV12 and YU12 (4:2:0, as MPLANE and ISP cameras send). The last
/// field says how mien reaches the camera: "" directly; "pre-" under libv4l2's LD_PRELOAD wrapper (the way
/// libcamerify hands a Pi camera module to V4L2 programs); "mp-" with vivid reloaded multi-planar (the MPLANE API
/// only): RGB3 in one plane, NV12 as NM12 (Y and UV in two buffers), YU12 as YM12 (three).
const CASES: [(usize, &str, &str, &str); 10] = [
    (0, "RGB3", "rgb", ""),
    (9, "RGB3", "rgb", ""),
    (14, "RGB3", "rgb", ""),
    (0, "YUYV", "yuyv", ""),
    (0, "NV12", "nv12", ""),
    (0, "YU12", "yu12", ""),
    (0, "RGB3", "rgb", "pre-"),
    (14, "RGB3", "rgb", "mp-"),
    (0, "NM12", "nv12", "mp-"),
    (0, "YM12", "yu12", "mp-"),
];
/// The first captured frames may predate the loopback picture; compare from this frame on.
const SKIP: u64 = 2;
/// Frames mien captures per case: two are compared. Each takes about 2.5 s under TCG.
const FRAMES: u64 = 4;
/// Cases the arm64 guest leaves to the amd64 one: the relit face and the two faces through the MPLANE API. Their
/// labels on ARM against x86 are checked under qemu-user on the whole clip (tests/arm_parity.rs), the MPLANE API by
/// the arm64 guest's other multi-planar cases, and each costs about 15 s of TCG time.
const NOT_ON_ARM64: [(usize, &str); 2] = [(9, ""), (14, "mp-")];

#[test]
#[ignore = "boots a qemu guest (about a minute under TCG); .ci/run runs it"]
fn vivid_loopback_capture_matches_replay_and_is_blurred() {
    loopback(Guest::host());
}

#[test]
#[ignore = "boots an arm64 qemu guest with the aarch64 build; .ci/run builds it and runs this"]
fn arm64_vivid_loopback_capture_matches_x86_replay_and_is_blurred() {
    loopback(Guest::arm64());
}

#[test]
#[ignore = "boots a qemu guest (about a minute under TCG); .ci/run runs it"]
fn camera_faults_are_survived_and_the_camera_reconnects_within_two_seconds() {
    faults(Guest::host());
}

#[test]
#[ignore = "boots an arm64 qemu guest with the aarch64 build; .ci/run builds it and runs this"]
fn arm64_camera_faults_are_survived_and_the_camera_reconnects_within_two_seconds() {
    faults(Guest::arm64());
}

fn loopback(guest: Guest) {
    let _one = GUEST.lock().unwrap_or_else(|p| p.into_inner());
    assert!(guest.vfeed.exists(), "{} missing (cargo test builds examples)", guest.vfeed.display());

    // The share: models, a guest config with TCG-sized time budgets, raw frames, the case list, the script.
    let share = guest_share(&guest, &format!("mien-guest-{}-", guest.arch), "tests/guest/vivid-loop.sh");
    let s = share.path();
    // Under TCG a detection takes ~100x longer than on the board: widen the budgets, keep everything else.
    let cfg = replaced(
        mien::config::DEFAULT_PROFILE,
        &[
            ("timeout_ms = 1000", "timeout_ms = 60000"),
            ("timeout_ms = 2000", "timeout_ms = 20000"),
            EMULATED_MIN_FACE,
            guest_one_detector(),
            // Labels are compared frame by frame with a replay: each frame's own (a camera's timestamps under
            // TCG are not a replay's, so smoothing over time would differ).
            ("smoothing_ms = 500", "smoothing_ms = 0"),
            // The guest's two CPUs detect two frames at once (frames still leave in order, each after its blur).
            ("threads = 1", "threads = 2"),
        ],
    );
    std::fs::write(s.join("guest.toml"), cfg).unwrap();
    let clip = images(&repo("samples/clip"));
    let mut lists = std::collections::BTreeMap::from([("", String::new()), ("pre-", String::new()), ("mp-", String::new())]);
    let cases: Vec<_> = CASES.into_iter().filter(|&(n, _, _, via)| guest.arch != "arm64" || !NOT_ON_ARM64.contains(&(n, via))).collect();
    std::fs::write(s.join("frames"), FRAMES.to_string()).unwrap();
    for &(n, fmt, ext, via) in &cases {
        let f = load_frame(&clip[n]);
        let raw = match ext {
            "rgb" => f.data.clone(),
            "yuyv" => mien::pixels::rgb_to_yuyv(&f.data),
            _ => mien::pixels::rgb_to_yuv420(&f.data, 640, 480, ext == "nv12"),
        };
        std::fs::write(s.join(format!("frame_{n}.{ext}")), raw).unwrap();
        lists.get_mut(via).unwrap().push_str(&format!("{n} {fmt} {ext}\n"));
    }
    for (via, file) in [("", "cases"), ("pre-", "cases-preload"), ("mp-", "cases-mplane")] {
        std::fs::write(s.join(file), &lists[via]).unwrap();
    }

    let (st, console) = run_guest(&guest, s, &[format!("{}:/bin/vfeed", guest.vfeed.display())]);
    let logs: String = ["mien-0-RGB3.log", "mien-0-YUYV.log", "mien-0-NV12.log", "mien-0-YU12.log", "missing.log", "mien-pre-0-RGB3.log", "mien-mp-0-NM12.log", "vfeed-mp-0-NM12.log", "doctor-mplane.log"]
        .iter()
        .map(|f| format!("--- {f}\n{}\n", std::fs::read_to_string(s.join("out").join(f)).unwrap_or_default()))
        .collect();
    assert!(st.success(), "{} guest test failed ({st}):\n{console}\n{logs}", guest.arch);
    let doctor = std::fs::read_to_string(s.join("out/doctor.log")).unwrap();
    let cam = doctor.lines().find(|l| l.starts_with("  ") && l.contains(" camera ")).unwrap_or("");
    assert!(cam.contains("PASS") && cam.contains("vivid") && cam.contains("YUYV"), "mien doctor:\n{doctor}");
    let missing = std::fs::read_to_string(s.join("out/missing.log")).unwrap();
    assert!(missing.contains("/dev/video9: no such device"), "{missing}");
    // Reloaded multi-planar, the same camera is seen through the MPLANE API with its multi-plane formats.
    let doctor = std::fs::read_to_string(s.join("out/doctor-mplane.log")).unwrap();
    let cam = doctor.lines().find(|l| l.starts_with("  ") && l.contains(" camera ")).unwrap_or("");
    assert!(cam.contains("PASS") && cam.contains("multi-planar") && cam.contains("NM12"), "mien doctor:\n{doctor}");
    let log = std::fs::read_to_string(s.join("out/mien-mp-0-YM12.log")).unwrap();
    assert!(log.contains("YM12") && log.contains("multi-planar"), "{log}");
    // Under the LD_PRELOAD layer, mien's own calls went through it: libv4l2 logged the ioctls it was handed.
    let calls = std::fs::read_to_string(s.join("out/libv4l2.log")).unwrap_or_default();
    for ioctl in ["VIDIOC_QUERYCAP", "VIDIOC_S_FMT", "VIDIOC_REQBUFS", "VIDIOC_STREAMON"] {
        assert!(calls.contains(ioctl), "libv4l2 saw no {ioctl} from mien:\n{calls}");
    }
    assert!(calls.matches("VIDIOC_DQBUF").count() as u64 >= FRAMES, "libv4l2 saw fewer than {FRAMES} DQBUFs:\n{calls}");

    let cf = CenterFace::load(640, 480);
    let mut rgb_labels = std::collections::HashMap::new();
    for &(n, fmt, _, via) in &cases {
        let case = format!("{via}{n}-{fmt}");
        let guest_labels = label_lines(&s.join(format!("out/{case}.jsonl")));
        let saved = images(&s.join(format!("out/{case}")));
        assert_eq!(saved.len() as u64, FRAMES, "case {case}: saved frames");
        // Replay of the same frame, on the host.
        let rdir = tempfile::tempdir().unwrap();
        let orig = load_frame(&clip[n]);
        let replay_src = rdir.path().join("src");
        std::fs::create_dir(&replay_src).unwrap();
        image::save_buffer(replay_src.join("f.png"), &orig.data, 640, 480, image::ExtendedColorType::Rgb8).unwrap();
        let rl = rdir.path().join("labels.jsonl");
        // The guest's own profile (its detector laid out from 40 px, one detector: EMULATED_MIN_FACE,
        // guest_one_detector()): the same detection setup.
        let gcfg = s.join("guest.toml");
        run_ok(&["run", "--config", gcfg.to_str().unwrap(), "--source", replay_src.to_str().unwrap(), "--labels", rl.to_str().unwrap()]);
        let replay: Vec<(String, f64)> =
            label_lines(&rl).iter().map(|v| (v["label"].as_str().unwrap().to_string(), v["confidence"].as_f64().unwrap())).collect();
        assert!(!replay.is_empty(), "case {n}: replay found no face");
        for frame in SKIP..FRAMES {
            let got: Vec<(String, f64)> = guest_labels
                .iter()
                .filter(|v| v["frame"].as_u64() == Some(frame))
                .map(|v| (v["label"].as_str().unwrap().to_string(), v["confidence"].as_f64().unwrap()))
                .collect();
            assert_eq!(got.len(), replay.len(), "case {case} frame {frame}: {got:?} vs replay {replay:?}");
            for ((gl, gc), (rl, rc)) in got.iter().zip(&replay) {
                assert_eq!(gl, rl, "case {case} frame {frame}: label differs from replay");
                // RGB3 is bit-exact through the loopback; YUYV, NV12 and YU12 go through 4:2:2 or 4:2:0 and back.
                let tol = if fmt == "RGB3" { 0.01 } else { 0.15 };
                assert!((gc - rc).abs() <= tol, "case {case} frame {frame}: confidence {gc} vs replay {rc}");
            }
            if fmt == "RGB3" && via.is_empty() {
                rgb_labels.insert(n, got);
            }
        }
        // Saved frames are blurred where the faces are, and the reference detector finds none.
        let faces = cf.detect(&orig, 0.5);
        assert!(!faces.is_empty());
        for p in &saved[SKIP as usize..] {
            let b = load_frame(p);
            for (bbox, _) in &faces {
                let r = bbox.to_rect(640, 480).unwrap();
                assert!(detail(&b, r) < 0.35 * detail(&orig, r), "{}: face {bbox:?} not blurred", p.display());
            }
            assert!(cf.detect(&b, 0.5).is_empty(), "{}: a face is still detectable", p.display());
        }
    }
    assert!(rgb_labels.contains_key(&14));
}

fn faults(guest: Guest) {
    let _one = GUEST.lock().unwrap_or_else(|p| p.into_inner());
    let share = guest_share(&guest, &format!("mien-faults-{}-", guest.arch), "tests/guest/vivid-faults.sh");
    let s = share.path();
    // Detection budget widened for TCG; the camera keeps its real 2 s timeout.
    let cfg = replaced(mien::config::DEFAULT_PROFILE, &[("timeout_ms = 1000", "timeout_ms = 60000"), EMULATED_MIN_FACE, guest_one_detector()]);
    std::fs::write(s.join("faults.toml"), cfg).unwrap();
    let (st, console) = run_guest(&guest, s, &[]);
    let log = std::fs::read_to_string(s.join("out/faults.log")).unwrap_or_default();
    assert!(st.success(), "{} guest fault test failed ({st}):\n{console}\n--- mien log\n{log}", guest.arch);
    // Three faults, each said and followed by a reconnect: failed stream start, disconnect, unplug.
    assert!(log.matches("reconnecting in").count() >= 3, "{log}");
    assert!(log.matches("reconnected").count() >= 3, "{log}");
    assert!(log.contains("gone") || log.contains("no such device"), "the unplug is named in the log:\n{log}");
    // The old node was held through the re-plug: the camera came back under another number and mien followed it.
    assert!(log.contains("back as /dev/video"), "mien did not follow the camera to its new node:\n{log}");
    let t: Vec<f64> = std::fs::read_to_string(s.join("out/reconnect.txt"))
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let took = t[1] - t[0];
    eprintln!("{}: camera back -> mien reconnected in {took:.2} s (guest uptime clock)", guest.arch);
    assert!(took <= 2.0, "reconnect took {took:.2} s after the device came back\n{log}");
    // Every frame that went through was saved whole (nothing half-written reached the output).
    let frames = images(&s.join("out/frames"));
    assert!(frames.len() >= 7, "{} frames", frames.len());
    for f in &frames {
        image::open(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}
