//! Expression latency per face, single thread, through the firmware's classifier (grey conversion,
//! standardization, tract): mien's int8 student against its fp32 twin in the same run (the ratio is the
//! int8 cost), plus the teacher and face-api for scale. Crops are FER+-sized faces cut from the sample clip.
//!
//! `cargo bench --bench expression` (options after `--`: `--faces N`, default 2000 classifications per model, in
//! 10 interleaved rounds; `--model FILE`, repeatable, adds a candidate model to the same rounds and prints its
//! time against the shipped int8 student's: how models/README.md compares quantization variants and widths)

use mien::config::ExpressionKind;
use mien::expression::{self, Timing};
use mien::frame::BBox;
use std::path::Path;

fn frames() -> Vec<mien::frame::Frame> {
    let mut v = Vec::new();
    let mut dir: Vec<_> = std::fs::read_dir("samples/clip").unwrap().map(|e| e.unwrap().path()).collect();
    dir.sort();
    for p in dir.iter().filter(|p| p.extension().is_some_and(|e| e == "jpg")).take(8) {
        let mut f = mien::frame::Frame::new(1, 1);
        mien::source::replay::decode_image(p, &mut f).unwrap();
        v.push(f);
    }
    v
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.iter().position(|a| a == "--faces").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(2000);
    let frames = frames();
    let mut models: Vec<(String, ExpressionKind, String)> = [
        ("mien student int8 (shipped)", ExpressionKind::Mien, "models/mien_student_int8.onnx"),
        ("mien student fp32 (baseline)", ExpressionKind::Mien, "models/mien_student_fp32.onnx"),
        ("mien teacher fp32", ExpressionKind::Mien, "models/mien_teacher_fp32.onnx"),
        ("face-api expression fp32", ExpressionKind::Faceapi, "models/faceapi_expression.onnx"),
    ]
    .iter()
    .map(|(n, k, p)| (n.to_string(), *k, p.to_string()))
    .collect();
    let shipped = models.len();
    for (i, a) in args.iter().enumerate() {
        if a == "--model" {
            let path = args.get(i + 1).expect("--model needs a file");
            models.push((path.clone(), ExpressionKind::Mien, path.clone()));
        }
    }
    let mut loaded: Vec<_> = models
        .iter()
        .map(|(_, kind, path)| expression::load(*kind, Path::new(path)).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect();
    // The models take turns in ROUNDS rounds, so a change in machine load hits all of them alike; each figure is
    // the median of its round means, and the ratio is the median of the per-round ratios.
    const ROUNDS: usize = 10;
    let face = BBox { x0: 260.0, y0: 120.0, x1: 380.0, y1: 260.0 };
    let timing = Timing::measure(&mut loaded, &frames, &face, 50, ROUNDS, n.div_ceil(ROUNDS)).unwrap();
    for (i, (name, _, path)) in models.iter().enumerate() {
        let t = timing.median_ms(i);
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!("{name:<30} {t:>8.3} ms/face  {:>7.0} faces/s  {:>8.1} KB", 1e3 / t, size as f64 / 1e3);
    }
    let (ratio, lo, hi) = timing.ratio(0, 1);
    println!("ratio int8 / fp32 latency: {ratio:.2} (median of {ROUNDS} rounds, range {lo:.2}-{hi:.2}; below 1: int8 is faster)");
    for (i, (name, _, _)) in models.iter().enumerate().skip(shipped) {
        let (r, lo, hi) = timing.ratio(i, 0);
        let (rf, lof, hif) = timing.ratio(i, 1);
        println!("{name}: {r:.2}x the shipped int8 (range {lo:.2}-{hi:.2}), {rf:.2}x the shipped fp32 (range {lof:.2}-{hif:.2})");
    }
}
