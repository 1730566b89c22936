//! What the fleet's metrics cost a frame: `Metrics::observe` (once per loop turn: counters, five histogram
//! observations, the state gauges) and `Metrics::encode` (once per textfile write or scrape), against the
//! cheapest stage every frame already pays, the blur of one face in a 640x480 frame, timed in the same run.
//!
//! `cargo bench --bench metrics` (options after `--`: `--turns N`, default 200000)

use mien::detect::Detection;
use mien::frame::{BBox, Frame};
use mien::metrics::{Metrics, Turn, TurnKind};
use mien::privacy::PrivacyGuard;
use mien::uplink::UplinkCounters;
use mien::vocab::{CameraState, LinkState, PrivacyState};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let turns: usize = args.iter().position(|a| a == "--turns").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(200_000);
    let models = [
        ("detect".to_string(), "models/blazeface_short_range.onnx".to_string(), "ab".repeat(32)),
        ("expression".to_string(), "models/mien_student_int8.onnx".to_string(), "cd".repeat(32)),
    ];
    let m = Metrics::new(&models);
    let mut frame = Frame::new(640, 480);
    frame.data.iter_mut().enumerate().for_each(|(i, p)| *p = (i * 31 % 251) as u8);
    let mut guard = PrivacyGuard::new(mien::config::Config::embedded_default().privacy);
    let face = [Detection::new(BBox { x0: 260.0, y0: 120.0, x1: 380.0, y1: 260.0 }, 0.9)];
    let blurs = (turns / 100).max(200);

    // Rounds take turns, so a change in machine load hits both alike; the figures are medians of the rounds.
    const ROUNDS: usize = 7;
    let (mut observe_ns, mut encode_us, mut blur_us) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    for r in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..turns / ROUNDS {
            let turn = Turn {
                what: TurnKind::Processed { faces: 1 + i % 3, labels: 1, privacy: PrivacyState::Ok { regions: 1 } },
                seconds: [0.0017, 0.021 + (i % 7) as f64 * 1e-3, 0.0006, 0.001, 0.0001],
                fps: 15.0,
                camera: CameraState::Ok,
                reconnects: 0,
                link: LinkState::Up,
                uplink: Some(UplinkCounters { pending: (i % 5) as u64, dropped: 0, sent: (r * turns + i) as u64, connected: true }),
            };
            m.observe(black_box(&turn));
        }
        observe_ns.push(t.elapsed().as_secs_f64() * 1e9 / (turns / ROUNDS) as f64);

        let t = Instant::now();
        for _ in 0..200 {
            bytes = black_box(m.encode()).len();
        }
        encode_us.push(t.elapsed().as_secs_f64() * 1e6 / 200.0);

        let t = Instant::now();
        for _ in 0..blurs / ROUNDS {
            black_box(guard.protect(&mut frame, Ok(&face[..])).state());
        }
        blur_us.push(t.elapsed().as_secs_f64() * 1e6 / (blurs / ROUNDS) as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (o, e, b) = (median(&mut observe_ns), median(&mut encode_us), median(&mut blur_us));
    println!("Metrics::observe             {o:>9.0} ns per loop turn");
    println!("Metrics::encode              {e:>9.1} us per write or scrape ({bytes} bytes)");
    println!("baseline: blur of one face   {b:>9.1} us per frame (640x480, privacy defaults)");
    println!("ratio observe/blur: {:.4}", o / 1e3 / b);
    // Per frame at 15 fps with a write every 15 s: one observe, and one encode per 225 frames.
    println!("ratio metrics per frame (observe + encode/225)/blur: {:.4}", (o / 1e3 + e / 225.0) / b);
}
