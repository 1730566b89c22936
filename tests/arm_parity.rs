//! ARM and x86 give the same labels and the same privacy on the sample clip: the aarch64 build of `mien`
//! (NEON kernels in tract, SIMD pixel crates) runs under qemu-aarch64 with a Cortex-A72 (Pi 4) CPU and is
//! compared with the host build.
//!
//! The static musl build is checked the same way on part of the clip.
//!
//! Needs `cargo build --release --target aarch64-unknown-linux-gnu` (and `...-musl`) and qemu-user first:
//! `.ci/run` does all three.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The default profile with the detector's time budget widened for qemu-user (it runs the models ~80x slower
/// than the host) and both detectors laid out from 40 px faces, the pyramid unguided as on the boards
/// (`EMULATED_MIN_FACE`, `EMULATED_BLUR_ALSO`, `EMULATED_UNGUIDED`), nothing else.
fn qemu_config(dir: &Path) -> PathBuf {
    let cfg = dir.join("qemu.toml");
    let edits = [("timeout_ms = 1000", "timeout_ms = 60000"), EMULATED_MIN_FACE, EMULATED_BLUR_ALSO, EMULATED_UNGUIDED];
    let text = replaced(mien::config::DEFAULT_PROFILE, &edits);
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Label lines of `arm` (an ARM build's stdout) and `x86` (the host's) agree: same count, frame, face, track and
/// label, confidence within 0.01.
fn assert_same_labels(who: &str, arm: &[u8], x86: &[u8]) -> usize {
    let parse = |s: &[u8]| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(s).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (a, x) = (parse(arm), parse(x86));
    assert_eq!(a.len(), x.len(), "label count");
    for (la, lx) in a.iter().zip(&x) {
        for k in ["frame", "face", "track", "label"] {
            assert_eq!(la[k], lx[k], "{k}: {who} {la} vs x86 {lx}");
        }
        let d = (la["confidence"].as_f64().unwrap() - lx["confidence"].as_f64().unwrap()).abs();
        assert!(d <= 0.01, "confidence: {who} {la} vs x86 {lx}");
    }
    x.len()
}

#[test]
#[ignore = "needs the aarch64 build and qemu-aarch64 (about a minute); .ci/run runs it"]
fn aarch64_build_matches_x86_labels_and_blur() {
    let arm = repo("target/aarch64-unknown-linux-gnu/release/mien");
    assert!(arm.exists(), "{} missing: cargo build --release --target aarch64-unknown-linux-gnu", arm.display());
    let dir = tempfile::tempdir().unwrap();
    let cfg = qemu_config(dir.path());
    let (arm_saved, x86_saved) = (dir.path().join("arm"), dir.path().join("x86"));
    let out = Command::new("qemu-aarch64")
        .args(["-L", "/usr/aarch64-linux-gnu", "-cpu", "cortex-a72"])
        .arg(&arm)
        .args(["run", "--config", cfg.to_str().unwrap(), "--save-blurred", arm_saved.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "info,tract_linalg=debug")
        .output()
        .expect("qemu-aarch64 (apt install qemu-user)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Report which tract kernels the aarch64 build picked.
    for l in err.lines().filter(|l| l.contains("mmm tiers") || l.contains("CPU optimisation")) {
        eprintln!("aarch64: {}", l.split_once("] ").map_or(l, |x| x.1));
    }
    let host = run_ok(&["run", "--config", cfg.to_str().unwrap(), "--save-blurred", x86_saved.to_str().unwrap()]);
    assert!(assert_same_labels("arm", &out.stdout, &host.stdout) >= 20);
    let cf = CenterFace::load(640, 480);
    let (fa, fx) = (images(&arm_saved), images(&x86_saved));
    assert_eq!(fa.len(), fx.len());
    for (pa, px) in fa.iter().zip(&fx) {
        let (ia, ix) = (load_frame(pa), load_frame(px));
        let mad = ia.data.iter().zip(&ix.data).map(|(p, q)| (*p as i32 - *q as i32).unsigned_abs() as u64).sum::<u64>() as f64
            / ia.data.len() as f64;
        assert!(mad < 1.0, "{}: arm and x86 frames differ by {mad:.3} on average", pa.display());
        assert!(cf.detect(&ia, 0.5).is_empty(), "{}: a face is detectable in the ARM output", pa.display());
    }
}

/// The static aarch64 musl build (`boards/generic-aarch64.toml`: safest for old board images) has no dynamic
/// loader and reads the clip as the host build does.
#[test]
#[ignore = "needs the aarch64-musl build and qemu-aarch64; .ci/run builds it and runs this"]
fn aarch64_musl_static_build_matches_x86_labels() {
    let bin = repo("target/aarch64-unknown-linux-musl/release/mien");
    assert!(bin.exists(), "{} missing: cargo build --release --target aarch64-unknown-linux-musl", bin.display());
    let hdr = Command::new("readelf").args(["-lW"]).arg(&bin).output().expect("readelf (binutils)");
    let hdr = String::from_utf8_lossy(&hdr.stdout);
    assert!(hdr.contains("LOAD") && !hdr.contains("INTERP"), "not a static executable:\n{hdr}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = qemu_config(dir.path());
    let args = ["run", "--config", cfg.to_str().unwrap(), "--max-frames", "8"];
    // No -L: nothing to load from a sysroot.
    let out = Command::new("qemu-aarch64")
        .args(["-cpu", "cortex-a72"])
        .arg(&bin)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("qemu-aarch64 (apt install qemu-user)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let host = run_ok(&args);
    let n = assert_same_labels("musl", &out.stdout, &host.stdout);
    assert!(n >= 8, "{n} labels from the host");
}
