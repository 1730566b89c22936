//! `mien`: the command line over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use mien::config::Config;
use mien::pipeline::{Pipeline, Stages};
use mien::privacy::{BlurMode, PrivacyGuard};
use mien::save::FrameSaver;
use mien::source::{self, PixelFormat};
use mien::board::BoardIo;
use mien::display::DisplayStage;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "mien", version, about = "Blur faces in place, send only expression labels")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the pipeline (the default; with no options: bundled models on the bundled sample clip).
    Run(RunArgs),
    /// Measure an expression model on labelled faces: accuracy, macro-F1, per-class recall, confusion matrix.
    Eval(EvalArgs),
    /// Check a board after flashing: camera, models, broker, clock, disk, display, GPIO (exit 1 on a failure).
    Doctor(RunArgs),
    /// The pilot: fit the expression model's head to a site's own labelled faces, here, and write the adapted model.
    Adapt(AdaptArgs),
}

#[derive(clap::Args)]
struct AdaptArgs {
    /// Folder of the site's labelled face images (whole scenes go through the detector; see --crops).
    #[arg(long, value_name = "DIR")]
    images: PathBuf,
    /// CSV with columns path,label (the 8 FER+ class names; any subset of them; other rows are skipped).
    #[arg(long, value_name = "CSV")]
    labels: PathBuf,
    /// The images are face crops already: skip the detector.
    #[arg(long)]
    crops: bool,
    /// With --crops: re-frame each crop as the firmware frames a face (detector in the crop, mien's crop box),
    /// so that crops cut by another tool train the head on what the running firmware will show it.
    #[arg(long, requires = "crops")]
    reframe: bool,
    /// Where to write the adapted model; its SHA-256 goes into the SHA256SUMS beside it.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The model to adapt (default: the profile's expression.model, mien's int8 student).
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Profile whose detector and crop settings to use (default: the embedded default).
    #[arg(long, conflicts_with = "board")]
    config: Option<PathBuf>,
    /// Board profile name: boards/<NAME>.toml.
    #[arg(long)]
    board: Option<String>,
    /// Pull towards the base head (comma-separated to let cross-validation choose; default: the built-in set).
    #[arg(long, value_name = "S[,S...]", value_delimiter = ',')]
    strength: Vec<f32>,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("data").required(true).args(["ferplus", "images"])))]
struct EvalArgs {
    /// FER+ directory (images.u8 + labels.csv, as ../shared/data/ferplus); unknown/NF rows are skipped.
    #[arg(long, value_name = "DIR")]
    ferplus: Option<PathBuf>,
    /// FER+ split: train, val or test.
    #[arg(long, default_value = "test", requires = "ferplus")]
    split: String,
    /// Folder of images, with --labels.
    #[arg(long, value_name = "DIR", requires = "labels")]
    images: Option<PathBuf>,
    /// CSV with columns path,label (labels: the 8 FER+ classes; other rows are skipped and counted).
    #[arg(long, value_name = "CSV", requires = "images")]
    labels: Option<PathBuf>,
    /// The images are face crops already: skip the detector.
    #[arg(long, requires = "images")]
    crops: bool,
    /// With --crops or --ferplus: re-frame each crop as the firmware frames a face (the detector finds it in the
    /// crop, mien's crop box is cut around it), whatever framing the crops were cut with.
    #[arg(long, conflicts_with_all = ["measure_crop", "crop_scale"])]
    reframe: bool,
    /// Expression model (default: the embedded default profile's, mien's int8 student).
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Face detector for uncropped images (default: the embedded default profile's).
    #[arg(long, value_name = "FILE")]
    detect_model: Option<PathBuf>,
    /// Instead of classifying: measure where the detector's box sits on FER+ crops (for the crop box).
    #[arg(long, requires = "ferplus")]
    measure_crop: bool,
    /// Cut detected (or re-framed) faces upright, ignoring their roll (the firmware turns them level:
    /// expression.align).
    #[arg(long)]
    no_align: bool,
    /// Measure another crop convention: a square this many times the face box's longer side (mien's is 1.13).
    #[arg(long, requires = "images", conflicts_with = "crops", value_name = "S")]
    crop_scale: Option<f32>,
    /// With --crop-scale: move the crop's centre by this many box heights (down when positive; mien's is -0.04).
    #[arg(long, requires = "crop_scale", value_name = "D", default_value_t = -0.04, allow_hyphen_values = true)]
    crop_shift: f32,
}

#[derive(clap::Args, Default)]
struct RunArgs {
    /// TOML config file (a board profile).
    #[arg(long, conflicts_with = "board")]
    config: Option<PathBuf>,
    /// Board profile name: boards/<NAME>.toml.
    #[arg(long)]
    board: Option<String>,
    /// /dev/videoN or a directory of images (overrides camera.source).
    #[arg(long)]
    source: Option<String>,
    /// Write blurred frames here as PNG (overrides output.save_blurred).
    #[arg(long)]
    save_blurred: Option<PathBuf>,
    /// Where labels go: - for stdout or a file (overrides output.labels).
    #[arg(long)]
    labels: Option<String>,
    /// Detection threads, one frame each (overrides runtime.threads).
    #[arg(long)]
    threads: Option<u32>,
    /// Stop after N frames (overrides runtime.max_frames).
    #[arg(long)]
    max_frames: Option<u64>,
    /// Replay rate for directories, frames per second (overrides camera.replay_fps).
    #[arg(long)]
    fps: Option<f32>,
    /// Replay the directory in a loop.
    #[arg(long)]
    r#loop: bool,
    #[arg(long)]
    width: Option<u32>,
    #[arg(long)]
    height: Option<u32>,
    /// YUYV, RGB3, NV12, NM12, YU12, YM12, GREY or MJPG (NM12 and YM12: multi-planar cameras).
    #[arg(long)]
    format: Option<PixelFormat>,
    /// mosaic, gaussian or fill.
    #[arg(long)]
    privacy: Option<BlurMode>,
    /// Face detector ONNX (overrides detect.model).
    #[arg(long)]
    detect_model: Option<String>,
    /// Expression ONNX (overrides expression.model).
    #[arg(long)]
    expression_model: Option<String>,
    /// Local display: none, framebuffer, st7789 or ili9341 (overrides display.kind).
    #[arg(long, value_name = "KIND")]
    display: Option<mien::display::DisplayKind>,
    /// /dev/fbN or /dev/spidevB.C (overrides display.device).
    #[arg(long, value_name = "PATH")]
    display_device: Option<String>,
}

/// The profile `--config FILE` or `--board NAME` names, else the embedded default.
fn profile(config: &Option<PathBuf>, board: &Option<String>) -> anyhow::Result<Config> {
    Ok(match (config, board) {
        (Some(p), _) => Config::load(p)?,
        (None, Some(b)) => Config::board(b)?,
        (None, None) => Config::embedded_default(),
    })
}

fn load_config(a: &RunArgs) -> anyhow::Result<Config> {
    let mut cfg = profile(&a.config, &a.board)?;
    if let Some(s) = &a.source {
        cfg.camera.source = s.clone();
    }
    if let Some(d) = &a.save_blurred {
        cfg.output.save_blurred = d.display().to_string();
    }
    if let Some(l) = &a.labels {
        cfg.output.labels = l.clone();
    }
    if let Some(n) = a.threads {
        cfg.runtime.threads = n;
    }
    if let Some(n) = a.max_frames {
        cfg.runtime.max_frames = n;
    }
    if let Some(f) = a.fps {
        cfg.camera.replay_fps = f;
    }
    if a.r#loop {
        cfg.camera.replay_loop = true;
    }
    if let Some(w) = a.width {
        cfg.camera.width = w;
    }
    if let Some(h) = a.height {
        cfg.camera.height = h;
    }
    if let Some(f) = a.format {
        cfg.camera.format = f;
    }
    if let Some(m) = a.privacy {
        cfg.privacy.mode = m;
    }
    if let Some(m) = &a.detect_model {
        cfg.detect.model = m.clone();
    }
    if let Some(m) = &a.expression_model {
        cfg.expression.model = m.clone();
    }
    if let Some(k) = a.display {
        cfg.display.kind = k;
    }
    if let Some(d) = &a.display_device {
        cfg.display.device = d.clone();
    }
    cfg.validate("command line")?;
    Ok(cfg)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// SIGTERM (systemd stop) and SIGINT end the run cleanly: the current frame finishes, sinks flush, the spool
/// syncs. A second signal while stopping falls back to the default action.
fn stop_on_signals() -> &'static AtomicBool {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe); SA_RESETHAND restores the default.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    &STOP
}

fn run(a: RunArgs) -> anyhow::Result<()> {
    let cfg = load_config(&a)?;
    cfg.board.apply_tract_env();
    let source = source::open(&cfg.camera.source, &cfg.camera, cfg.camera.replay_fps, cfg.camera.replay_loop)?;
    let saver = if cfg.output.save_blurred.is_empty() {
        None
    } else {
        let dir = PathBuf::from(&cfg.output.save_blurred);
        Some(FrameSaver::new(&dir).with_context(|| format!("output.save_blurred: {}", dir.display()))?)
    };
    let detector = mien::detect::load_for_camera(&cfg.detect, cfg.camera.width, cfg.camera.height);
    let classifier = mien::expression::load_configured(&cfg.expression);
    // The status message and the metrics report the models actually verified and loaded, not the files on disk.
    let mut loaded = vec![
        ("detect", &cfg.detect.model, detector.as_ref().map_or("not loaded", |d| d.sha256()).to_string()),
        ("expression", &cfg.expression.model, classifier.as_ref().map_or("not loaded", |c| c.sha256()).to_string()),
    ];
    if let Some(b) = &cfg.detect.blur_also {
        let sha = detector.as_ref().ok().and_then(|d| d.second()).map_or("not loaded", |d| d.sha256()).to_string();
        loaded.insert(1, ("detect.blur_also", &b.model, sha));
    }
    let metrics = cfg.metrics.enabled().then(|| {
        let models: Vec<_> = loaded.iter().map(|(r, f, h)| (r.to_string(), f.to_string(), h.clone())).collect();
        Arc::new(mien::metrics::Metrics::new(&models))
    });
    let exporter = match &metrics {
        Some(m) => Some(mien::metrics::Exporter::start(m.clone(), &cfg.metrics)?),
        None => None,
    };
    let mut sinks: Vec<Box<dyn mien::uplink::LabelSink>> = Vec::new();
    if cfg.uplink.enabled {
        let models = loaded.iter().map(|(r, _, h)| (r.to_string(), h.clone())).collect();
        sinks.push(Box::new(mien::uplink::mqtt::MqttSink::start(&cfg.uplink, models)?));
    }
    if !cfg.output.labels.is_empty() {
        sinks.push(
            mien::uplink::open_sink(&cfg.output.labels)
                .with_context(|| format!("output.labels: cannot open {}", cfg.output.labels))?,
        );
    }
    let sink: Box<dyn mien::uplink::LabelSink> =
        if sinks.len() == 1 { sinks.pop().expect("one sink") } else { Box::new(mien::uplink::TeeSink(sinks)) };
    // Screen and board I/O serve the technician; when they fail the camera's job goes on (logged loudly).
    let preview = Arc::new(AtomicBool::new(cfg.display.preview));
    let display = match mien::display::open_screen(&cfg.display) {
        Ok(s) => s.map(|s| {
            DisplayStage::new(s, Duration::from_millis(cfg.display.refresh_ms as u64), preview.clone())
        }),
        Err(e) => {
            log::error!("{e}; running without a display");
            None
        }
    };
    let board = BoardIo::open(&cfg.gpio, preview).unwrap_or_else(|e| {
        log::error!("{e}; running without the status LED and button");
        None
    });
    let stages = Stages {
        source,
        detector,
        privacy: PrivacyGuard::new(cfg.privacy.clone()),
        classifier,
        sink,
        saver,
        display,
        board,
    };
    let mut p = Pipeline::new(stages, &cfg);
    if let Some(m) = metrics {
        p.with_metrics(m);
    }
    let t = std::time::Instant::now();
    // Under systemd (Type=notify): ready once models and camera are up; the watchdog is fed every loop turn.
    let mut notifier = mien::notify::Notifier::from_env();
    notifier.ready();
    p.on_turn(Box::new(move || notifier.alive()));
    let s = p.run_until(cfg.runtime.max_frames, stop_on_signals());
    mien::notify::Notifier::from_env().stopping();
    drop(exporter); // the textfile's last write, with the final counts
    let s = s?;
    let secs = t.elapsed().as_secs_f64();
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e3 / s.frames.max(1) as f64;
    log::info!(
        "done: {} frames ({:.1} fps), {} faces, {} labels, {} masked whole, {} corrupt, {} while camera away; \
         ms/frame: capture {:.1}, detect {:.1}, blur {:.1}, classify {:.1}, save {:.1}",
        s.frames,
        s.frames as f64 / secs.max(1e-9),
        s.faces,
        s.labels,
        s.masked_whole,
        s.corrupt,
        s.unavailable,
        per(s.total.capture),
        per(s.total.detect),
        per(s.total.blur),
        per(s.total.classify),
        per(s.total.output)
    );
    Ok(())
}

fn eval(a: EvalArgs) -> anyhow::Result<()> {
    use mien::eval::{self, CropMode};
    let cfg = Config::embedded_default();
    let data = match (&a.ferplus, &a.images, &a.labels) {
        (Some(dir), _, _) => eval::read_ferplus(dir, &a.split)?,
        (None, Some(dir), Some(csv)) => eval::read_images(dir, csv)?,
        _ => anyhow::bail!("give --ferplus DIR or --images DIR --labels CSV"),
    };
    let mut detect_cfg = cfg.detect.labelling();
    if let Some(p) = &a.detect_model {
        detect_cfg.model = p.display().to_string();
    }
    let load_detector =
        || mien::detect::load(&detect_cfg).with_context(|| format!("--detect-model {}", detect_cfg.model));
    if a.measure_crop {
        let mut d = load_detector()?;
        // Faces of 96 to 288 px: the pyramid sees them at different levels.
        for up in [2, 4, 6] {
            let m = eval::measure_crop(&data, d.as_mut(), 2000, up);
            let (found, tried) = (m.found, m.tried);
            println!("detector {} on {found} of {tried} FER+ faces ({up}x, centred on grey)", d.describe());
            println!("  FER crop side / box longer side: median {:.3}", m.scale);
            println!("  (FER crop centre - box centre) / box height: median {:+.3}", m.shift);
            let t: Vec<String> = m.template.iter().map(|p| format!("[{:.3}, {:.3}]", p[0], p[1])).collect();
            println!("  keypoints in the FER crop (eyes, nose, mouth): {}", t.join(", "));
            for (way, (side, centre)) in [("box", m.box_fit), ("keypoints", m.keypoint_fit)] {
                let q = |v: [f32; 3]| format!("{:.3} {:.3} {:.3}", v[0], v[1], v[2]);
                println!("  drawn from the {way}: side / FER side {}, centre miss / side {} (quartiles)", q(side), q(centre));
            }
        }
        return Ok(());
    }
    let model = a.model.clone().unwrap_or_else(|| PathBuf::from(&cfg.expression.model));
    let mut classifier =
        mien::expression::load_any(&model).with_context(|| format!("--model {}", model.display()))?;
    if let Some(scale) = a.crop_scale {
        if !(scale > 0.2 && scale < 4.0) {
            anyhow::bail!("--crop-scale {scale}: give a scale between 0.2 and 4 (mien's crop is 1.13)");
        }
        classifier = Box::new(mien::expression::Reframed { inner: classifier, scale, shift: a.crop_shift });
    }
    let crops = a.ferplus.is_some() || a.crops;
    if a.reframe && !crops {
        anyhow::bail!("--reframe: give it with --crops or --ferplus (whole images are framed by the detector anyway)");
    }
    if a.no_align && crops && !a.reframe {
        anyhow::bail!("--no-align: crops are read as given; it applies to detected faces (--images) or with --reframe");
    }
    let mut detector = if !crops || a.reframe { Some(load_detector()?) } else { None };
    let mode = CropMode::with(crops, detector.as_deref_mut(), cfg.expression.align && !a.no_align);
    println!("model: {}", classifier.describe());
    let missing = classifier.missing_classes();
    if !missing.is_empty() {
        println!("model cannot output: {}", missing.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", "));
    }
    let mut last = std::time::Instant::now();
    let rep = eval::evaluate(&data, classifier.as_mut(), mode, |i, n| {
        if last.elapsed().as_secs() >= 2 || i == n {
            eprint!("\reval: {i}/{n} faces");
            last = std::time::Instant::now();
            if i == n {
                eprintln!();
            }
        }
    })?;
    println!("faces: {} classified, {} rows skipped (label not one of the 8), {} without a detected face, {} unreadable",
        rep.metrics.n(), rep.skipped, rep.no_face, rep.unreadable.len());
    if a.reframe {
        let reframed = rep.metrics.n() as usize - rep.as_given;
        println!("reframed: {reframed} crops, {} read as given (no face found in them)", rep.as_given);
    }
    for u in rep.unreadable.iter().take(5) {
        println!("unreadable: {u}");
    }
    println!("latency: {:.3} ms per face (pre-processing + inference, single thread)", rep.ms_per_face());
    println!("{}", rep.metrics.report());
    Ok(())
}

fn adapt(a: AdaptArgs) -> anyhow::Result<()> {
    use mien::adapt;
    use mien::eval::CropMode;
    let cfg = profile(&a.config, &a.board)?;
    let data = mien::eval::read_images(&a.images, &a.labels)?;
    let model = a.model.clone().unwrap_or_else(|| PathBuf::from(&cfg.expression.model));
    let mut base = adapt::Base::open(&model).with_context(|| format!("--model {}", model.display()))?;
    println!("base model: {} sha256:{}", base.path.display(), &base.sha256[..12]);
    let t = std::time::Instant::now();
    let labelling = cfg.detect.labelling();
    let load = || mien::detect::load(&labelling).with_context(|| format!("detect.model {}", labelling.model));
    let mut detector = if !a.crops || a.reframe { Some(load()?) } else { None };
    let mode = CropMode::with(a.crops, detector.as_deref_mut(), cfg.expression.align);
    let pilot = adapt::read_pilot(&data, &mut base, mode)?;
    let counts = pilot.counts();
    let listed: Vec<String> = mien::vocab::Emotion::ALL
        .iter()
        .filter(|e| counts[e.index()] > 0)
        .map(|e| format!("{} {}", e.as_str(), counts[e.index()]))
        .collect();
    println!(
        "pilot: {} faces ({}); {} rows skipped (label not one of the 8), {} without a detected face, {} unreadable; \
         features in {:.1} s",
        pilot.labels.len(),
        listed.join(", "),
        pilot.skipped,
        pilot.no_face,
        pilot.unreadable.len(),
        t.elapsed().as_secs_f64()
    );
    if a.reframe {
        println!("reframed: {} crops read as given (no face found in them)", pilot.as_given);
    }
    for u in pilot.unreadable.iter().take(5) {
        println!("unreadable: {u}");
    }
    for e in mien::vocab::Emotion::ALL {
        let n = counts[e.index()];
        if n > 0 && n < adapt::FEW_FACES {
            println!(
                "warning: {} has {n} pilot face(s), fewer than {}: its recall after adaptation is guesswork",
                e.as_str(),
                adapt::FEW_FACES
            );
        }
    }
    let t = std::time::Instant::now();
    let strengths = if a.strength.is_empty() { adapt::STRENGTHS.to_vec() } else { a.strength.clone() };
    if let Some(s) = strengths.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
        anyhow::bail!("--strength {s}: give strengths of 0 or more (e.g. 1)");
    }
    let r = adapt::adapt(&pilot, &base.head, &strengths)?;
    println!("\nBEFORE: the base model on the pilot faces\n{}", r.before.report());
    println!("\ncross-validation over the pilot faces ({} folds; each face read by a head fitted without it):", r.folds);
    for (s, m) in &r.tried {
        let chosen = if *s == r.strength { "  <- chosen" } else { "" };
        println!("  pull strength {s:<5} accuracy={:.4} macro_f1={:.4}{chosen}", m.accuracy(), m.macro_f1());
    }
    println!("\nAFTER: adapted heads, cross-validated (strength {})\n{}", r.strength, r.after().report());
    let meta = [
        ("from", format!("{} sha256:{}", model.display(), base.sha256)),
        ("pilot", format!("{} faces: {}", pilot.labels.len(), listed.join(", "))),
        ("strength", r.strength.to_string()),
        (
            "cv",
            format!(
                "before accuracy={:.4} macro_f1={:.4}; after accuracy={:.4} macro_f1={:.4} ({} folds)",
                r.before.accuracy(),
                r.before.macro_f1(),
                r.after().accuracy(),
                r.after().macro_f1(),
                r.folds
            ),
        ),
    ];
    let sha = base.write(&r.head, &meta, &a.out)?;
    println!(
        "\nwrote {} sha256:{} (head fitted on all {} pilot faces in {:.1} s)\nuse it with: mien eval --model {0}, \
         mien run --expression-model {0}, or expression.model in a profile",
        a.out.display(),
        &sha[..12],
        pilot.labels.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn doctor(a: RunArgs) -> anyhow::Result<()> {
    let origin = match (&a.config, &a.board) {
        (Some(p), _) => p.display().to_string(),
        (None, Some(b)) => format!("board {b}"),
        (None, None) => "embedded default".into(),
    };
    let cfg = load_config(&a)?;
    cfg.board.apply_tract_env();
    let checks = mien::doctor::run(&cfg);
    if !mien::doctor::report(&origin, &cfg, &checks) {
        std::process::exit(1);
    }
    Ok(())
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).target(env_logger::Target::Stderr).init();
    let cli = Cli::parse();
    mien::model::keep_freed_memory();
    let res = match cli.cmd {
        Some(Cmd::Run(a)) => run(a),
        Some(Cmd::Eval(a)) => eval(a),
        Some(Cmd::Doctor(a)) => doctor(a),
        Some(Cmd::Adapt(a)) => adapt(a),
        None => run(RunArgs::default()),
    };
    if let Err(e) = res {
        eprintln!("mien: error: {e:#}");
        std::process::exit(1);
    }
}
