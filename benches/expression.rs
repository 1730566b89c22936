//! Expression latency per face, single thread, through the firmware's classifier (grey conversion,
//! standardization, tract): mien's int8 student against its fp32 twin in the same run (the ratio is the
//! int8 cost), plus the teacher and face-api for scale. Crops are FER+-sized faces cut from the sample clip.
//!
//! `cargo bench --bench expression` (options after `--`: `--faces N`, default 2000 classifications per model, in
//! 10 interleaved rounds)

use mien::config::ExpressionKind;
use mien::expression::{self, CropSet, ExpressionClassifier};
use mien::frame::BBox;
use std::path::Path;
use std::time::Instant;

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

/// Mean ms per face over `n` classifications.
fn measure(c: &mut dyn ExpressionClassifier, frames: &[mien::frame::Frame], n: usize) -> f64 {
    let (w, h) = c.input_size();
    let mut crops = CropSet::new(1, w, h);
    let mut slots = Vec::new();
    let face = BBox { x0: 260.0, y0: 120.0, x1: 380.0, y1: 260.0 };
    let mut total = std::time::Duration::ZERO;
    for i in 0..n {
        crops.extract(&frames[i % frames.len()], std::iter::once(&face), |b| c.crop_box(b), 1, &mut slots).unwrap();
        let t = Instant::now();
        std::hint::black_box(c.classify(crops.get(0)).unwrap());
        total += t.elapsed();
    }
    total.as_secs_f64() * 1e3 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.iter().position(|a| a == "--faces").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(2000);
    let frames = frames();
    let models = [
        ("mien student int8 (shipped)", ExpressionKind::Mien, "models/mien_student_int8.onnx"),
        ("mien student fp32 (baseline)", ExpressionKind::Mien, "models/mien_student_fp32.onnx"),
        ("mien teacher fp32", ExpressionKind::Mien, "models/mien_teacher_fp32.onnx"),
        ("face-api expression fp32", ExpressionKind::Faceapi, "models/faceapi_expression.onnx"),
    ];
    let mut loaded: Vec<_> = models
        .iter()
        .map(|(_, kind, path)| expression::load(*kind, Path::new(path)).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect();
    for c in loaded.iter_mut() {
        measure(c.as_mut(), &frames, 50); // warm-up
    }
    // The models take turns in ROUNDS rounds, so a change in machine load hits all of them alike; each figure is
    // the median of its round means, and the ratio is the median of the per-round ratios.
    const ROUNDS: usize = 10;
    let per_round = n.div_ceil(ROUNDS);
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); models.len()];
    for _ in 0..ROUNDS {
        for (i, c) in loaded.iter_mut().enumerate() {
            rounds[i].push(measure(c.as_mut(), &frames, per_round));
        }
    }
    for ((name, _, path), r) in models.iter().zip(&rounds) {
        let t = median(r.clone());
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!("{name:<30} {t:>8.3} ms/face  {:>7.0} faces/s  {:>8.1} KB", 1e3 / t, size as f64 / 1e3);
    }
    let ratios: Vec<f64> = rounds[0].iter().zip(&rounds[1]).map(|(a, b)| a / b).collect();
    let (lo, hi) = ratios.iter().fold((f64::MAX, 0f64), |(l, h), &r| (l.min(r), h.max(r)));
    println!(
        "ratio int8 / fp32 latency: {:.2} (median of {ROUNDS} rounds, range {lo:.2}-{hi:.2}; below 1: int8 is faster)",
        median(ratios)
    );
}
