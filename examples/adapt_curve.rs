//! Adaptation curves: how many labelled faces per class a site needs, and what the encoder under the head gives.
//!
//!     cargo run --release --example adapt_curve -- --images ../shared/data/site-colour \
//!         --labels ../shared/data/site-colour/labels.csv --models models/mien_student_int8.onnx,W/encoders/ssl.onnx
//!     cargo run --release --example adapt_curve -- --ferplus ../shared/data/ferplus --split test --models ...
//!
//! Each face goes once through the firmware's own path (`adapt::read_pilot`: decode, the profile's detector unless
//! the faces are crops, crop box, encoder), as `mien adapt` reads a pilot. Then, for each repeat:
//! - a seeded split holds out a share of each class's faces (`--test-share`, at most `--test-max` per class). The
//!   split depends on the repeat only, so every model and every pilot size is judged on the same faces (paired);
//! - from the other faces, k per class form the pilot (a class with fewer takes all it has);
//! - a head is fitted and judged on the held-out faces. `--base own`: exactly as `mien adapt` fits it
//!   (`adapt::fit_head`, pulled towards the model's own head). `--base probe`: the textbook linear probe, for
//!   encoders that have no head of their own (a ContraWarping encoder, a random one): each feature standardized
//!   over all the set's faces (their labels unused), the same fit pulled towards zero.
//!
//! It prints macro-F1 as `mien eval` computes it (over the 8 classes) and accuracy, the mean and the spread (min to
//! max) over repeats. k = 0 is the model's own head, unadapted. Faces are split by file: the data sets here give no
//! identities, so one person's pictures may sit on both sides of a split (an optimistic reading).

use clap::Parser;
use mien::adapt::{self, Base, Head, Pilot};
use mien::eval::{CropMode, Metrics};
use mien::vocab::Emotion;
use std::path::PathBuf;

#[path = "common/mod.rs"]
mod common;
use common::Rng;

#[derive(Parser)]
struct Args {
    /// Images with a `path,label` CSV (`--labels`), as `mien eval` and `mien adapt` read them.
    #[arg(long, requires = "labels", conflicts_with = "ferplus")]
    images: Option<PathBuf>,
    #[arg(long)]
    labels: Option<PathBuf>,
    /// The images are face crops already (no detector).
    #[arg(long)]
    crops: bool,
    /// Crops (--crops, --ferplus) re-framed by the detector as the firmware frames a face (`mien eval --reframe`).
    #[arg(long)]
    reframe: bool,
    /// FER+ in `../shared/data/ferplus`'s layout (48x48 crops); with `--split`.
    #[arg(long)]
    ferplus: Option<PathBuf>,
    #[arg(long, default_value = "test")]
    split: String,
    /// mien expression models (1x1xSxS input, a Gemm head), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    models: Vec<PathBuf>,
    /// Pilot sizes, faces per class.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 5, 10, 20])]
    k: Vec<usize>,
    /// How heads are fitted: `own` (pulled towards the model's head, as `mien adapt` does) and/or `probe`
    /// (standardized features, pulled towards zero).
    #[arg(long, value_delimiter = ',', default_values_t = ["own".to_string()])]
    base: Vec<String>,
    /// Pull strengths (`mien adapt --strength`), comma-separated: a row each.
    #[arg(long, value_delimiter = ',', default_values_t = [adapt::STRENGTHS[0]])]
    strength: Vec<f32>,
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// Share of each class's faces held out for judging.
    #[arg(long, default_value_t = 0.3)]
    test_share: f64,
    /// At most this many held-out faces per class.
    #[arg(long, default_value_t = 100)]
    test_max: usize,
    /// Profile whose detector and `expression.align` are used (default: the embedded one).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Held-out faces and the pilot pool of one repeat: each class's faces shuffled, the first share held out.
fn split(y: &[usize], share: f64, max: usize, rng: &mut Rng) -> (Vec<usize>, Vec<Vec<usize>>) {
    let (mut test, mut pool) = (Vec::new(), vec![Vec::new(); Emotion::ALL.len()]);
    for (c, pool) in pool.iter_mut().enumerate() {
        let mut idx: Vec<usize> = (0..y.len()).filter(|&i| y[i] == c).collect();
        for i in (1..idx.len()).rev() {
            idx.swap(i, rng.below(i + 1));
        }
        let n = ((idx.len() as f64 * share).ceil() as usize).min(max).min(idx.len().saturating_sub(1));
        test.extend_from_slice(&idx[..n]);
        pool.extend_from_slice(&idx[n..]);
    }
    (test, pool)
}

fn judge(p: &Pilot, head: &Head, test: &[usize]) -> Metrics {
    let mut m = Metrics::default();
    for &i in test {
        m.add(p.labels[i], head.predict(&p.features[i]));
    }
    m
}

/// The pilot's features standardized per dimension over all its faces (no label is read), for `--base probe`.
fn standardized(p: &Pilot) -> Pilot {
    let (n, d) = (p.features.len().max(1) as f32, p.features.first().map_or(0, |f| f.len()));
    let mut mean = vec![0f32; d];
    for f in &p.features {
        mean.iter_mut().zip(f).for_each(|(m, v)| *m += v / n);
    }
    let mut sd = vec![0f32; d];
    for f in &p.features {
        sd.iter_mut().zip(f).zip(&mean).for_each(|((s, v), m)| *s += (v - m) * (v - m) / n);
    }
    let features = p
        .features
        .iter()
        .map(|f| f.iter().zip(&mean).zip(&sd).map(|((v, m), s)| (v - m) / (s.sqrt() + 1e-6)).collect())
        .collect();
    Pilot { features, labels: p.labels.clone(), unreadable: Vec::new(), ..*p }
}

/// "mean (min-max)" of a list of figures.
fn spread(v: &[f64]) -> String {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    format!("{mean:.3} ({lo:.3}-{hi:.3})")
}

/// "mean (rose/n)" of the paired differences `after - before`.
fn paired(before: &[f64], after: &[f64]) -> String {
    let d: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let rose = d.iter().filter(|&&x| x > 0.0).count();
    format!("{:+.3} ({rose}/{})", d.iter().sum::<f64>() / d.len().max(1) as f64, d.len())
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    mien::model::keep_freed_memory();
    if let Some(b) = a.base.iter().find(|b| *b != "own" && *b != "probe") {
        anyhow::bail!("--base {b}: give own and/or probe");
    }
    let data = match (&a.images, &a.labels, &a.ferplus) {
        (Some(dir), Some(csv), _) => mien::eval::read_images(dir, csv)?,
        (None, _, Some(dir)) => mien::eval::read_ferplus(dir, &a.split)?,
        _ => anyhow::bail!("give --images DIR --labels CSV, or --ferplus DIR"),
    };
    let cfg = match &a.config {
        Some(p) => mien::config::Config::load(p)?,
        None => mien::config::Config::embedded_default(),
    };
    let crops = a.crops || a.ferplus.is_some();
    if a.reframe && !crops {
        anyhow::bail!("--reframe: give it with --crops or --ferplus (whole images are framed by the detector anyway)");
    }
    let mut detector = if crops && !a.reframe { None } else { Some(mien::detect::load(&cfg.detect.labelling())?) };
    let mut rows = Vec::new();
    for path in &a.models {
        let mut base = Base::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let t = std::time::Instant::now();
        let mode = CropMode::with(crops, detector.as_deref_mut(), cfg.expression.align);
        let p = adapt::read_pilot(&data, &mut base, mode)?;
        let counts = p.counts();
        eprintln!(
            "{}: {} faces ({} without a detected face, {} unreadable), {} features each, in {:.0} s; per class {:?}",
            path.display(),
            p.labels.len(),
            p.no_face,
            p.unreadable.len(),
            base.head.dim,
            t.elapsed().as_secs_f64(),
            counts
        );
        let y: Vec<usize> = p.labels.iter().map(|e| e.index()).collect();
        let zero = Head { dim: base.head.dim, w: vec![0.0; base.head.w.len()], b: vec![0.0; 8] };
        let probe = standardized(&p);
        for (which, &strength) in a.base.iter().flat_map(|b| a.strength.iter().map(move |s| (b, s))) {
            let (pull, fit) = if which == "own" { (&base.head, &p) } else { (&zero, &probe) };
            let mut f1 = vec![Vec::new(); a.k.len() + 1];
            let mut acc = vec![Vec::new(); a.k.len() + 1];
            for r in 0..a.repeats {
                let mut rng = Rng(a.seed.wrapping_mul(1000).wrapping_add(r as u64));
                let (test, pool) = split(&y, a.test_share, a.test_max, &mut rng);
                let m = judge(&p, &base.head, &test);
                f1[0].push(m.macro_f1());
                acc[0].push(m.accuracy());
                for (j, &k) in a.k.iter().enumerate() {
                    // The pilot: the first k of each class's shuffled pool (a larger k holds a smaller one).
                    let pick: Vec<usize> = pool.iter().flat_map(|c| c.iter().take(k).copied()).collect();
                    let xs: Vec<&[f32]> = pick.iter().map(|&i| fit.features[i].as_slice()).collect();
                    let ys: Vec<usize> = pick.iter().map(|&i| y[i]).collect();
                    let head = adapt::fit_head(&xs, &ys, pull, strength);
                    let m = judge(fit, &head, &test);
                    f1[j + 1].push(m.macro_f1());
                    acc[j + 1].push(m.accuracy());
                }
            }
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            rows.push((format!("{name} | {which}, strength {strength}"), f1, acc));
        }
    }
    let head: Vec<String> = std::iter::once("k = 0 (own head)".to_string())
        .chain(a.k.iter().map(|k| format!("k = {k}")))
        .collect();
    println!(
        "{} faces; {} repeats, held out per class: {:.0}% up to {}",
        data.items.len(),
        a.repeats,
        a.test_share * 100.0,
        a.test_max
    );
    for (title, pick) in [("macro-F1", 1), ("accuracy", 2)] {
        println!("\n{title}, mean (min-max) over repeats\n\n| model | head | {} |", head.join(" | "));
        println!("|---|---|{}", "---|".repeat(head.len()));
        for (name, f1, acc) in &rows {
            let v = if pick == 1 { f1 } else { acc };
            println!("| {name} | {} |", v.iter().map(|x| spread(x)).collect::<Vec<_>>().join(" | "));
        }
    }
    // Each pilot against no pilot on the same held-out faces: the paired lift is steadier than the two means.
    println!("\nmacro-F1 lift over k = 0, paired by repeat: mean (repeats that rose / repeats)\n");
    println!("| model | head | {} |", head[1..].join(" | "));
    println!("|---|---|{}", "---|".repeat(head.len() - 1));
    for (name, f1, _) in &rows {
        let cells: Vec<String> = f1[1..].iter().map(|v| paired(&f1[0], v)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    Ok(())
}
