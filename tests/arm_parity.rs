//! ARM and x86 give the same labels and the same privacy on the sample clip: the aarch64 build of `mien`
//! (NEON kernels in tract, SIMD pixel crates) runs under qemu-aarch64 with a Cortex-A72 (Pi 4) CPU and is
//! compared with the host build.
//!
//! Needs `cargo build --release --target aarch64-unknown-linux-gnu` and qemu-user first: `.ci/run` does both.

mod common;
use common::*;
use std::process::Command;

#[test]
#[ignore = "needs the aarch64 build and qemu-aarch64 (about a minute); .ci/run runs it"]
fn aarch64_build_matches_x86_labels_and_blur() {
    let arm = repo("target/aarch64-unknown-linux-gnu/release/mien");
    assert!(arm.exists(), "{} missing: cargo build --release --target aarch64-unknown-linux-gnu", arm.display());
    let dir = tempfile::tempdir().unwrap();
    // qemu-user runs the models ~80x slower than the host: widen the detector's time budget, nothing else.
    let cfg = dir.path().join("qemu.toml");
    std::fs::write(&cfg, mien::config::DEFAULT_PROFILE.replace("timeout_ms = 500", "timeout_ms = 60000")).unwrap();
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
    let parse = |s: &[u8]| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(s).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (a, x) = (parse(&out.stdout), parse(&host.stdout));
    assert_eq!(a.len(), x.len(), "label count");
    assert!(x.len() >= 20);
    for (la, lx) in a.iter().zip(&x) {
        for k in ["frame", "face", "track", "label"] {
            assert_eq!(la[k], lx[k], "{k}: arm {la} vs x86 {lx}");
        }
        let d = (la["confidence"].as_f64().unwrap() - lx["confidence"].as_f64().unwrap()).abs();
        assert!(d <= 0.01, "confidence: arm {la} vs x86 {lx}");
    }
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
