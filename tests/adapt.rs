//! `mien adapt` end to end: a pilot of a second domain's labelled faces (`../shared/data/site-colour`: colour
//! close-ups of one population, through the firmware's detector), the adapted model written with its SHA-256,
//! read better than the shipped model by `mien eval` on other faces of that site, and accepted by `mien run`.
//! Bad pilots and bad models are refused with a message.
//!
//! Needs `../shared/data/site-colour`: these tests fail, not skip, when it is missing.

mod common;
use common::{example, label_lines, mien, repo, run_ok};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn site() -> PathBuf {
    let p = repo("../shared/data/site-colour");
    assert!(p.join("labels.csv").is_file(), "{} not found", p.display());
    p
}

/// The site's rows by class, in file order: the first `pilot` of each class form the pilot, the next `held` the
/// faces it is judged on (disjoint files; a class with few faces gives the pilot all but one).
fn split(pilot: usize, held: usize) -> (String, String) {
    let text = std::fs::read_to_string(site().join("labels.csv")).unwrap();
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let (p, l) = line.rsplit_once(',').unwrap();
        by.entry(l.to_string()).or_default().push(p.to_string());
    }
    let (mut a, mut b) = ("path,label\n".to_string(), "path,label\n".to_string());
    for (label, paths) in &by {
        let n = pilot.min(paths.len().saturating_sub(1));
        for p in &paths[..n] {
            a += &format!("{p},{label}\n");
        }
        for p in paths[n..].iter().take(held) {
            b += &format!("{p},{label}\n");
        }
    }
    (a, b)
}

fn macro_f1(stdout: &str) -> f64 {
    let last = stdout.lines().last().unwrap_or_default();
    let v = last.split_whitespace().find_map(|f| f.strip_prefix("macro_f1=")).unwrap_or_else(|| panic!("{stdout}"));
    v.parse().unwrap()
}

fn eval(model: &Path, labels: &Path) -> f64 {
    let out = run_ok(&[
        "eval",
        "--images",
        site().to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
    ]);
    macro_f1(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn a_pilot_of_ten_faces_per_class_adapts_the_model_to_the_site() {
    let dir = tempfile::tempdir().unwrap();
    let (pilot, held) = split(10, 60);
    let (pcsv, hcsv) = (dir.path().join("pilot.csv"), dir.path().join("held.csv"));
    std::fs::write(&pcsv, pilot).unwrap();
    std::fs::write(&hcsv, held).unwrap();
    let out = dir.path().join("site").join("adapted.onnx");
    let o = run_ok(&[
        "adapt",
        "--images",
        site().to_str().unwrap(),
        "--labels",
        pcsv.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    println!("{stdout}");
    for want in ["BEFORE", "AFTER", "confusion", "cross-validation", "wrote"] {
        assert!(stdout.contains(want), "no {want:?} in:\n{stdout}");
    }
    // site-colour has 4 disgust faces: the pilot gets 3, and says that is too few.
    assert!(stdout.contains("warning: disgust has 3 pilot face(s)"), "{stdout}");
    // Written with its hash beside it; the file holds the base graph with a new head.
    let sums = std::fs::read_to_string(out.with_file_name("SHA256SUMS")).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    assert!(sums.contains(&format!("{}  adapted.onnx", mien::model::sha256_hex(&bytes))), "{sums}");
    assert!(bytes.len() < 500_000, "{} bytes: weights only", bytes.len());

    // `mien eval` reads other faces of the site with it, no worse than with the shipped head (a head the fit broke
    // reads them far worse). Measured 2026-12-06: macro-F1 0.1567 shipped, 0.1562 adapted on this one split; the
    // gain a pilot brings is measured over many splits by the next test. (On 2026-12-05, before crops running off
    // the picture were cut square, 0.096 and 0.156: the adaptation then mostly undid the stretched crops.)
    let before = eval(&repo("models/mien_student_int8.onnx"), &hcsv);
    let after = eval(&out, &hcsv);
    println!("held-out site faces, macro-F1: shipped {before:.4}, adapted {after:.4}");
    assert!(after > before - 0.02, "adapted {after:.4} reads the site worse than the shipped {before:.4}");

    // The firmware runs it.
    let labels = dir.path().join("labels.jsonl");
    let o = run_ok(&[
        "run",
        "--expression-model",
        out.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--max-frames",
        "4",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("adapted.onnx"), "the adapted model is not the one loaded");
    assert!(!label_lines(&labels).is_empty());
}

#[test]
fn bad_pilots_and_models_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("one-class.csv");
    std::fs::write(&csv, "path,label\nimages/46106121.jpg,anger\nimages/48030105.jpg,anger\n").unwrap();
    let out = dir.path().join("a.onnx");
    let run = |args: &[&str]| {
        let o = mien().arg("adapt").args(args).output().unwrap();
        assert!(!o.status.success(), "mien adapt {args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let site = site();
    let base = ["--images", site.to_str().unwrap(), "--out", out.to_str().unwrap()];
    let e = run(&[&base[..], &["--labels", csv.to_str().unwrap()]].concat());
    assert!(e.contains("at least 2 classes"), "{e}");
    assert!(!out.exists(), "no model from a refused pilot");
    // A truncated model is refused by its checksum.
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let good = std::fs::read(repo("models/mien_student_int8.onnx")).unwrap();
    std::fs::write(models.join("mien_student_int8.onnx"), &good[..good.len() / 2]).unwrap();
    std::fs::copy(repo("models/SHA256SUMS"), models.join("SHA256SUMS")).unwrap();
    let (pilot, _) = split(3, 0);
    std::fs::write(&csv, pilot).unwrap();
    let m = models.join("mien_student_int8.onnx");
    let e = run(&[&base[..], &["--labels", csv.to_str().unwrap(), "--model", m.to_str().unwrap()]].concat());
    assert!(e.contains("--model") && e.to_lowercase().contains("sha"), "{e}");
    // A model mien cannot adapt (the detector: no Gemm head) is named as such.
    let detector = "models/blazeface_short_range.onnx";
    let e = run(&[&base[..], &["--labels", csv.to_str().unwrap(), "--model", detector]].concat());
    assert!(e.contains("not a mien student"), "{e}");
    // A missing CSV names the file.
    let e = run(&[&base[..], &["--labels", "/nonexistent/pilot.csv"]].concat());
    assert!(e.contains("/nonexistent/pilot.csv"), "{e}");
}

/// The figure cells of the first row of an `examples/adapt_curve.rs` table in `text` whose first two cells start
/// with `model` and `head`.
fn row<'a>(text: &'a str, model: &str, head: &str) -> Vec<&'a str> {
    let line = text
        .lines()
        .find(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            cells.len() > 3 && cells[1] == model && cells[2].starts_with(head)
        })
        .unwrap_or_else(|| panic!("no row {model} | {head}:\n{text}"));
    line.split('|').map(str::trim).skip(3).filter(|c| !c.is_empty()).collect()
}

/// The mean figures of a table row (k = 0, then each pilot size).
fn curve(stdout: &str, model: &str, head: &str) -> Vec<f64> {
    row(stdout, model, head).iter().map(|c| c.split_whitespace().next().unwrap().parse().unwrap()).collect()
}

/// The paired lifts of a row of the last table: (mean lift, repeats that rose, repeats) for each pilot size.
fn paired_lift(stdout: &str, model: &str, head: &str) -> Vec<(f64, usize, usize)> {
    let table = &stdout[stdout.find("paired by repeat").unwrap_or_else(|| panic!("no paired table:\n{stdout}"))..];
    row(table, model, head)
        .iter()
        .map(|c| {
            // "+0.020 (9/10)"
            let (mean, rest) = c.split_once(" (").unwrap();
            let (rose, n) = rest.trim_end_matches(')').split_once('/').unwrap();
            (mean.parse().unwrap(), rose.parse().unwrap(), n.parse().unwrap())
        })
        .collect()
}

#[test]
fn a_pilot_lifts_the_sites_macro_f1_over_many_splits() {
    // `mien adapt`'s fit (pulled towards the shipped head, strength 1) on 5 and 10 faces per class, judged on 30% of
    // each class held out, over 10 seeded splits of up to 150 faces per class of site-colour, through the detector.
    // Judged on the classes with 50 faces or more (neutral, happiness, sadness, anger, fear: 665 faces): surprise
    // (14) and disgust (4) leave 1-5 faces to judge per split, and that one disgust face swung the mean macro-F1 of
    // a crop variant by more than the lift itself (docs/adapt.md, "A steadier pilot measure"). Each split is judged
    // with and without the pilot on the same faces, so the lift is paired. Measured 2026-12-07 with the default
    // profile: +0.020 (k = 5) and +0.019 (k = 10), rising in 9 of 10 splits each; seeds 1 and 2: +0.013 to +0.016.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("site150.csv");
    let all = split(0, 150).1;
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    all.lines().skip(1).for_each(|l| *per.entry(l.rsplit_once(',').unwrap().1).or_default() += 1);
    let kept: String =
        all.lines().filter(|l| per.get(l.rsplit_once(',').unwrap().1).is_none_or(|&n| n >= 50)).map(|l| format!("{l}\n")).collect();
    assert_eq!(per.values().filter(|&&n| n >= 50).count(), 5, "{per:?}");
    std::fs::write(&csv, kept).unwrap();
    let (model, site) = (repo("models/mien_student_int8.onnx"), site());
    let args = ["--images", site.to_str().unwrap(), "--labels", csv.to_str().unwrap()];
    let out = example("adapt_curve", &[&args[..], &["--models", model.to_str().unwrap(), "--k", "5,10"]].concat());
    eprintln!("{out}");
    let lift = paired_lift(&out, "mien_student_int8.onnx", "own");
    assert_eq!(lift.len(), 2, "{out}");
    for (k, &(mean, rose, n)) in [5, 10].iter().zip(&lift) {
        assert_eq!(n, 10, "{out}");
        assert!(rose >= 8 && mean >= 0.01, "a pilot of {k} per class: lift {mean:+.3}, rose in {rose} of {n} splits");
    }
}

#[test]
fn adaptation_curves_rise_with_the_pilots_size_on_a_trained_encoder() {
    let ferplus = repo("../shared/data/ferplus");
    let model = repo("models/mien_student_fp32.onnx");
    let out = example(
        "adapt_curve",
        &[
            "--ferplus",
            ferplus.to_str().unwrap(),
            "--split",
            "val",
            "--models",
            model.to_str().unwrap(),
            "--k",
            "1,20",
            "--repeats",
            "2",
            "--base",
            "own,probe",
            "--strength",
            "0.01",
        ],
    );
    eprintln!("{out}");
    // The first table is macro-F1. The shipped head reads FER+ val well; a linear probe from zero on the same
    // features learns from its pilot: 20 faces per class give it far more than 1.
    let f1 = &out[..out.find("accuracy,").expect("an accuracy table")];
    let own = curve(f1, "mien_student_fp32.onnx", "own");
    let probe = curve(f1, "mien_student_fp32.onnx", "probe");
    assert_eq!((own.len(), probe.len()), (3, 3), "{f1}");
    assert!(own[0] > 0.6, "the shipped head on FER+ val: {own:?}");
    assert!(probe[2] > probe[1] + 0.1, "20 faces per class against 1: {probe:?}");
    assert!(probe[2] > 0.5 && probe[2] <= own[0] + 0.05, "{probe:?} against the shipped head {own:?}");
}

#[test]
fn face_crops_writes_the_firmwares_crops_in_the_recipes_layout() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let text = std::fs::read_to_string(site().join("labels.csv")).unwrap();
    for line in text.lines().skip(1).take(6) {
        let p = line.rsplit_once(',').unwrap().0;
        std::fs::copy(site().join(p), images.join(Path::new(p).file_name().unwrap())).unwrap();
    }
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    std::fs::write(images.join("broken.jpg"), b"\xff\xd8 cut short").unwrap();
    let out = dir.path().join("crops");
    let stdout = example("face_crops", &["--images", images.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(stdout.starts_with("6 faces of 7 images"), "{stdout}");
    assert!(stdout.contains("1 unreadable"), "{stdout}");
    let bytes = std::fs::read(out.join("images.u8")).unwrap();
    assert_eq!(bytes.len(), 6 * 48 * 48);
    // Faces, not blank squares: each crop has the contrast of a face.
    for face in bytes.chunks(48 * 48) {
        let (lo, hi) = (face.iter().min().unwrap(), face.iter().max().unwrap());
        assert!(hi - lo > 60, "a flat crop: {lo}..{hi}");
    }
    let csv = std::fs::read_to_string(out.join("labels.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7, "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.ends_with(",extra,unknown")), "{csv}");
}
