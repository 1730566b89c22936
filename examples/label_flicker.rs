//! Labels over time: flicker and delay of the pipeline's labels for several `expression.smoothing_ms` windows.
//!
//!     cargo run --release --example label_flicker                     # 40 faces, windows 0,250,500,1000,2000 ms
//!     cargo run --release --example label_flicker -- --faces 10 --windows 0,500
//!
//! Clips are made in memory from `../shared/data/site-colour` close-ups and run through the real pipeline
//! (`Pipeline` with the embedded default profile, its detector, tracker, classifier and smoother) at a
//! camera's 15 frames/s (the timestamps say so, whatever the machine's speed):
//! - **steady clips**: one face held for 8 s, as a camera sees a still face: each frame moves it by up to 3 px,
//!   scales it by up to 3%, changes the light by up to 6% and adds sensor noise. Every label change on its track
//!   is flicker; reported per track-minute.
//! - **change clips**: face A for 4 s, then face B in its place for 4 s (same track). The pair is used when the
//!   unsmoothed pipeline reads A and B as different classes in most of their steady frames. Delay = frames after
//!   the switch until the label first shows B's class (not shown within the 4 s: counted as missed).

use clap::Parser;
use mien::config::Config;
use mien::frame::Frame;
use mien::pipeline::{Pipeline, Stages, StepOutcome, StepTiming};
use mien::pixels::Scaler;
use mien::privacy::PrivacyGuard;
use mien::source::{FrameSource, SourceError};
use mien::uplink::{LabelEvent, LabelSink, SinkError};
use mien::vocab::Emotion;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[path = "common/mod.rs"]
mod common;
use common::{read_rgb, site_colour_files, Rng};

#[derive(Parser)]
struct Args {
    /// Faces (steady clips); the change clips pair them.
    #[arg(long, default_value_t = 40)]
    faces: usize,
    /// Smoothing windows to compare, ms (0 = off).
    #[arg(long, value_delimiter = ',', default_values_t = [0u32, 250, 500, 1000, 2000])]
    windows: Vec<u32>,
    #[arg(long, default_value = "../shared")]
    shared: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const FPS: u64 = 15;
const STEADY: usize = 120; // 8 s
const HALF: usize = 60; // 4 s each side of a switch
const W: u32 = 320;
const H: u32 = 240;
const SIDE: f32 = 120.0;

/// One frame of a clip: `face` at the centre with this frame's jitter, light and noise.
fn render(face: &Frame, rng: &mut Rng, scaler: &mut Scaler, out: &mut Frame) {
    out.ensure_size(W, H);
    out.data.fill(110);
    let side = SIDE * rng.range(0.97, 1.03) as f32;
    let (cx, cy) = (W as f32 / 2.0 + rng.range(-3.0, 3.0) as f32, H as f32 / 2.0 + rng.range(-3.0, 3.0) as f32);
    let s = side.round() as u32;
    let mut buf = vec![0u8; (s * s * 3) as usize];
    scaler.crop_resize(face, face.full_rect(), &mut buf, s, s).unwrap();
    let gain = rng.range(0.94, 1.06) as f32;
    let (ox, oy) = ((cx - side / 2.0).round() as usize, (cy - side / 2.0).round() as usize);
    for y in 0..s as usize {
        for x in 0..s as usize {
            let d = ((oy + y) * W as usize + ox + x) * 3;
            let k = (y * s as usize + x) * 3;
            for c in 0..3 {
                out.data[d + c] = (buf[k + c] as f32 * gain).min(255.0) as u8;
            }
        }
    }
    for v in out.data.iter_mut() {
        let n = (rng.next() % 9) as i32 - 4; // sensor noise, +-4 levels
        *v = (*v as i32 + n).clamp(0, 255) as u8;
    }
}

/// A clip as a frame source: the faces in turn, `per` frames each, stamped at 15 frames/s.
struct Clip {
    faces: Vec<Frame>,
    per: usize,
    i: usize,
    rng: Rng,
    scaler: Scaler,
}

impl FrameSource for Clip {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError> {
        if self.i >= self.faces.len() * self.per {
            return Ok(false);
        }
        let face = &self.faces[self.i / self.per];
        render(face, &mut self.rng, &mut self.scaler, frame);
        frame.ts_ms = 1_000_000 + self.i as u64 * 1000 / FPS;
        self.i += 1;
        Ok(true)
    }
    fn describe(&self) -> String {
        "synthetic clip".into()
    }
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<LabelEvent>>>);
impl LabelSink for Collect {
    fn send(&mut self, ev: &LabelEvent) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(*ev);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Run one clip through the pipeline; the labels of face 0 per frame (None: no label that frame).
fn run(cfg: &Config, faces: Vec<Frame>, per: usize, seed: u64) -> Vec<Option<(u32, Emotion)>> {
    let n = faces.len() * per;
    let sink = Collect::default();
    let stages = Stages {
        source: Box::new(Clip { faces, per, i: 0, rng: Rng(seed), scaler: Scaler::default() }),
        detector: mien::detect::load_for_camera(&cfg.detect, W, H),
        privacy: PrivacyGuard::new(cfg.privacy.clone()),
        classifier: mien::expression::load_configured(&cfg.expression),
        sink: Box::new(sink.clone()),
        saver: None,
        display: None,
        board: None,
    };
    let mut p = Pipeline::new(stages, cfg);
    let mut t = StepTiming::default();
    while p.step(&mut t).unwrap() != StepOutcome::End {}
    let mut out = vec![None; n];
    for ev in sink.0.lock().unwrap().iter().filter(|e| e.face() == 0) {
        out[ev.frame() as usize] = Some((ev.track(), ev.label()));
    }
    out
}

fn majority(labels: &[Option<(u32, Emotion)>]) -> Option<(Emotion, f32)> {
    let mut n = [0usize; 8];
    for (_, e) in labels.iter().flatten() {
        n[e.index()] += 1;
    }
    let total: usize = n.iter().sum();
    let best = (0..8).max_by_key(|&c| n[c])?;
    (total > 0).then(|| (Emotion::ALL[best], n[best] as f32 / total as f32))
}

/// Label changes along one track (a frame without a label keeps the last one).
fn changes(labels: &[Option<(u32, Emotion)>]) -> usize {
    let mut last: Option<(u32, Emotion)> = None;
    let mut n = 0;
    for l in labels.iter().flatten() {
        if let Some(p) = last {
            if p.0 == l.0 && p.1 != l.1 {
                n += 1;
            }
        }
        last = Some(*l);
    }
    n
}

fn main() {
    let a = Args::parse();
    let files = site_colour_files(&a.shared);
    let step = (files.len() / a.faces.max(1)).max(1);
    let faces: Vec<Frame> = files.iter().step_by(step).take(a.faces).map(|p| read_rgb(p)).collect();
    let mut base = Config::embedded_default();
    base.camera.width = W;
    base.camera.height = H;
    base.detect.min_face = 48; // the faces are ~120 px: a shorter pyramid, same detector
    base.detect.timeout_ms = 60_000;

    // The unsmoothed reading of each face: its majority class over a steady clip.
    let mut off = base.clone();
    off.expression.smoothing_ms = 0;
    let read = |(i, f): (usize, &Frame)| majority(&run(&off, vec![f.clone()], STEADY, a.seed + i as u64));
    let reads: Vec<Option<(Emotion, f32)>> = faces.iter().enumerate().map(read).collect();
    let mut pairs = Vec::new();
    for i in 0..faces.len() {
        let j = (i + 1) % faces.len();
        if let (Some((ea, sa)), Some((eb, sb))) = (reads[i], reads[j]) {
            if ea != eb && sa >= 0.6 && sb >= 0.6 {
                pairs.push((i, j, eb));
            }
        }
    }
    println!(
        "{} faces ({} read as one class in 60% or more of their frames, unsmoothed); {} change clips; {W}x{H}, {FPS} \
         frames/s",
        faces.len(),
        reads.iter().flatten().filter(|(_, share)| *share >= 0.6).count(),
        pairs.len()
    );
    println!(
        "| smoothing_ms | flicker (label changes per track-minute, steady faces) | delay after a change, frames: \
         median / p90 (ms) | changes not shown within 4 s |"
    );
    println!("|---|---|---|---|");
    for &w in &a.windows {
        let mut cfg = base.clone();
        cfg.expression.smoothing_ms = w;
        let mut flips = 0;
        let mut minutes = 0.0;
        for (i, f) in faces.iter().enumerate() {
            let l = run(&cfg, vec![f.clone()], STEADY, a.seed + i as u64);
            flips += changes(&l);
            minutes += l.iter().flatten().count() as f64 / FPS as f64 / 60.0;
        }
        let mut delays = Vec::new();
        let mut missed = 0;
        for (k, &(i, j, eb)) in pairs.iter().enumerate() {
            let l = run(&cfg, vec![faces[i].clone(), faces[j].clone()], HALF, 1000 + a.seed + k as u64);
            match l[HALF..].iter().position(|x| x.is_some_and(|(_, e)| e == eb)) {
                Some(d) => delays.push(d),
                None => missed += 1,
            }
        }
        delays.sort();
        let pick = |q: f64| delays.get(((delays.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or(0);
        let (med, p90) = (pick(0.5), pick(0.9));
        println!(
            "| {w} | {:.1} ({flips} in {:.1} track-minutes) | {med} / {p90} ({} / {} ms) | {missed} of {} |",
            flips as f64 / minutes.max(1e-9),
            minutes,
            med as u64 * 1000 / FPS,
            p90 as u64 * 1000 / FPS,
            pairs.len()
        );
    }
}
