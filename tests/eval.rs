//! `mien eval` end to end: the committed student on FER+ test (the CI accuracy gate stated in models/README.md),
//! the uncropped-image path through the detector, tract against onnxruntime on the shipped students, and clear
//! errors on bad input.
//!
//! Needs FER+ (`../shared/data/ferplus`, or MIEN_FERPLUS): these tests fail, not skip, when it is missing.

mod common;
use common::{mien, repo};
use std::path::{Path, PathBuf};

fn ferplus() -> PathBuf {
    let candidates = [
        std::env::var("MIEN_FERPLUS").unwrap_or_default(),
        repo("../shared/data/ferplus").display().to_string(),
        "/work/shared/data/ferplus".to_string(),
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("images.u8").is_file())
        .unwrap_or_else(|| panic!("FER+ not found in {candidates:?}: set MIEN_FERPLUS"))
}

/// Run `mien eval`, return stdout; the last line must be `accuracy=... macro_f1=... n=N`.
fn eval(args: &[&str]) -> (String, f64, f64, u64) {
    let out = mien().arg("eval").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "mien eval {args:?}: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    let field = |k: &str| -> f64 {
        last.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in last line {last:?}"))
            .parse()
            .unwrap()
    };
    let (acc, f1, n) = (field("accuracy"), field("macro_f1"), field("n") as u64);
    (stdout, acc, f1, n)
}

/// The figure the model card states for the shipped int8 student on FER+ test (`ci_gate: accuracy=0.xxxx`).
fn stated_accuracy() -> f64 {
    let card = std::fs::read_to_string(repo("models/README.md")).unwrap();
    let line = card.lines().find(|l| l.contains("ci_gate:")).expect("models/README.md has no `ci_gate:` line");
    line.split("accuracy=").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().trim_end_matches('`').parse().unwrap()
}

#[test]
fn shipped_student_holds_its_stated_ferplus_test_accuracy() {
    let data = ferplus();
    let (out, acc, f1, n) = eval(&["--ferplus", data.to_str().unwrap(), "--split", "test"]);
    println!("{out}");
    assert!(out.contains("mien expression mien_student_int8.onnx"), "default model is not the int8 student:\n{out}");
    // FER+ test without unknown/NF rows.
    assert_eq!(n, 3152, "FER+ test has 3152 faces with one of the 8 labels");
    let stated = stated_accuracy();
    assert!(acc >= stated - 0.01, "int8 student: accuracy {acc:.4} fell more than 1 point below the stated {stated:.4}");
    assert!(f1 > 0.3, "macro-F1 {f1:.4}");
    for class in ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"] {
        assert!(out.lines().any(|l| l.starts_with(class)), "no recall row for {class}");
    }
}

/// The first `n` FER+ val faces with one of the 8 labels, each as a crop (`crop{i}.png`) and as a scene
/// (`scene{i}.png`: scaled up 4x, off-centre on a grey 400x300 background, turned by `tilt_deg` degrees about its
/// centre, alternately clockwise and anticlockwise), with `crops.csv` and `labels.csv` (which also names a row
/// with a label outside the 8, to be skipped).
fn val_faces(dir: &Path, n: usize, tilt_deg: f32) {
    let data = ferplus();
    let pixels = std::fs::read(data.join("images.u8")).unwrap();
    let csv = std::fs::read_to_string(data.join("labels.csv")).unwrap();
    let mut labels = String::from("path,label\n");
    let mut crops = String::from("path,label\n");
    let mut k = 0;
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f[1] != "val" || f[3] == "unknown" || f[3] == "NF" {
            continue;
        }
        let idx: usize = f[0].parse().unwrap();
        let face = &pixels[idx * 2304..(idx + 1) * 2304];
        let crop = image::GrayImage::from_fn(48, 48, |x, y| image::Luma([face[(y * 48 + x) as usize]]));
        let t = if k % 2 == 0 { tilt_deg } else { -tilt_deg }.to_radians();
        let (cos, sin) = (t.cos(), t.sin());
        let scene = image::RgbImage::from_fn(400, 300, |x, y| {
            // Scene pixel -> the upright 192x192 face centred on (246, 156), turned back by t.
            let (dx, dy) = (x as f32 + 0.5 - 246.0, y as f32 + 0.5 - 156.0);
            let (fx, fy) = ((cos * dx + sin * dy + 96.0).floor(), (-sin * dx + cos * dy + 96.0).floor());
            if (0.0..192.0).contains(&fx) && (0.0..192.0).contains(&fy) {
                let g = face[(fy as usize / 4) * 48 + fx as usize / 4];
                image::Rgb([g, g, g])
            } else {
                image::Rgb([120, 130, 125])
            }
        });
        scene.save(dir.join(format!("scene{idx}.png"))).unwrap();
        crop.save(dir.join(format!("crop{idx}.png"))).unwrap();
        labels += &format!("scene{idx}.png,{}\n", f[3]);
        crops += &format!("crop{idx}.png,{}\n", f[3]);
        k += 1;
        if k == n {
            break;
        }
    }
    labels += "missing.png,bored\n";
    std::fs::write(dir.join("labels.csv"), labels).unwrap();
    std::fs::write(dir.join("crops.csv"), crops).unwrap();
}

/// Scenes in which `mien eval` (output `out`) found no face.
fn no_face(out: &str) -> u64 {
    out.split(" without a detected face").next().unwrap().rsplit(", ").next().unwrap().parse().unwrap()
}

#[test]
fn uncropped_images_go_through_the_detector_and_crop_box() {
    // 120 FER+ val faces, each scaled up 4x and placed off-centre in a larger grey scene, with a labels CSV.
    let dir = tempfile::tempdir().unwrap();
    val_faces(dir.path(), 120, 0.0);
    let d = dir.path().to_str().unwrap();
    let (out, acc_scene, _, n_scene) = eval(&["--images", d, "--labels", &format!("{d}/labels.csv")]);
    println!("{out}");
    assert!(out.contains("1 rows skipped"), "the `bored` row is skipped and counted:\n{out}");
    assert_eq!(n_scene + no_face(&out), 120, "every scene is classified or counted as faceless");
    // 91 of 120 on x86 (FER crops are tight and low-resolution: some faces lose their chin or brow at the edge).
    assert!(n_scene >= 80, "the detector found only {n_scene} of 120 faces");
    let (_, acc_crop, _, n_crop) = eval(&["--images", d, "--labels", &format!("{d}/crops.csv"), "--crops"]);
    assert_eq!(n_crop, 120);
    // Through the detector the crop box re-frames each face as FER does (measured CROP_SCALE): accuracy stays
    // close to that on the original crops.
    assert!(acc_crop > 0.6, "crops: {acc_crop:.4}");
    assert!(acc_scene > acc_crop - 0.1, "scenes {acc_scene:.4} vs crops {acc_crop:.4}");
}

#[test]
fn tilted_heads_are_turned_level_before_they_are_read() {
    // The same faces leaning 30 degrees either way. The student was trained on upright faces (rotation
    // augmentation up to 12 degrees); the firmware turns each crop by the roll of the detector's eye keypoints.
    // 360 faces: on 120, which of a few faces read right cut upright swung the comparison by several points
    // between two students of equal rotation robustness.
    let dir = tempfile::tempdir().unwrap();
    val_faces(dir.path(), 360, 30.0);
    let d = dir.path().to_str().unwrap();
    let labels = format!("{d}/labels.csv");
    let (out, level, _, n) = eval(&["--images", d, "--labels", &labels]);
    println!("{out}");
    assert!(n >= 250 && n + no_face(&out) == 360, "the detector found only {n} of 360 tilted faces");
    let (out_upright, upright, _, n_upright) = eval(&["--images", d, "--labels", &labels, "--no-align"]);
    println!("{out_upright}");
    assert_eq!(n_upright, n, "--no-align changes the crops only, not the detections");
    let (_, acc_crop, _, _) = eval(&["--images", d, "--labels", &format!("{d}/crops.csv"), "--crops"]);
    // Measured on x86: turned level, the tilted scenes read about as well as the upright crops; cut upright,
    // they lose several points. These 360 (284 found): 0.8521 turned, 0.7641 upright with the shipped student,
    // 0.8486 / 0.7993 and 0.8521 / 0.7570 with the two before it; the next 400 val faces (312 found), with the
    // one before it: 0.8494 / 0.7404.
    assert!(level >= upright + 0.03, "turned level {level:.4} vs cut upright {upright:.4}");
    assert!(level > acc_crop - 0.1, "turned level {level:.4} vs the upright crops {acc_crop:.4}");
}

#[test]
fn bad_eval_input_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    std::fs::write(dir.path().join("l.csv"), "a.png;happiness\n").unwrap();
    let out = mien().args(["eval", "--images", d, "--labels", &format!("{d}/l.csv")]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("line 1") && err.contains("path,label"), "{err}");

    // A truncated model is refused (its SHA-256 no longer matches), naming the flag and the file.
    let model = std::fs::read(repo("models/mien_student_int8.onnx")).unwrap();
    std::fs::write(dir.path().join("mien_student_int8.onnx"), &model[..model.len() / 2]).unwrap();
    std::fs::copy(repo("models/SHA256SUMS"), dir.path().join("SHA256SUMS")).unwrap();
    let data = ferplus();
    let out = mien()
        .args(["eval", "--ferplus", data.to_str().unwrap(), "--model", &format!("{d}/mien_student_int8.onnx")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--model") && err.contains("SHA-256"), "{err}");

    let out = mien().args(["eval", "--ferplus", "/nonexistent"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/nonexistent/labels.csv"), "{err}");
}

/// tract must execute what onnxruntime executes: the same 64 FER+ val faces through both shipped students, against
/// onnxruntime's logits that the recipe stored (`tests/golden/student_onnxruntime.json`, written by
/// `train.sh quantize` / `export` with the file's SHA-256). Input goes through the firmware's own standardization.
#[test]
fn tract_matches_onnxruntime_on_the_shipped_students() {
    let data = ferplus();
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("tests/golden/student_onnxruntime.json")).unwrap()).unwrap();
    let images = std::fs::read(data.join("images.u8")).unwrap();
    let index: Vec<usize> = golden["index"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(index.len(), 64);
    // int8: onnxruntime and tract may round an intermediate value to the neighbouring uint8 step (their float
    // parts differ in the last bits), which moves a logit by a few hundredths; fp32: float noise only.
    // Largest / mean |difference| allowed:
    for (name, tolerance, mean_tolerance) in
        [("mien_student_int8.onnx", 0.1f32, 0.01f32), ("mien_student_fp32.onnx", 1e-3, 1e-4)]
    {
        let entry = &golden["models"][name];
        let shape = [1usize, 1, 48, 48];
        let (model, sha) = mien::model::load_f32(&repo(&format!("models/{name}")), &shape).unwrap();
        assert_eq!(
            entry["sha256"].as_str().unwrap(),
            sha,
            "{name} changed since its onnxruntime logits were stored: run models/expression/train.sh quantize"
        );
        let (mut worst, mut sum, mut same_class) = (0f32, 0f32, 0);
        let mut input = vec![0f32; 48 * 48];
        for (i, &idx) in index.iter().enumerate() {
            let rgb: Vec<u8> = images[idx * 2304..(idx + 1) * 2304].iter().flat_map(|&g| [g, g, g]).collect();
            mien::expression::grey_standardized(&rgb, &mut input);
            let out = mien::model::run_f32(&model, &shape, &input).unwrap();
            let got = mien::model::output_f32(&out[0]).unwrap();
            let want: Vec<f32> = entry["logits"][i].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                worst = worst.max((a - b).abs());
                sum += (a - b).abs();
            }
            let top = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
            // A near tie in onnxruntime's logits (closer than the tolerance) may go either way.
            let (t, mut rest) = (top(&want), want.clone());
            rest[t] = f32::MIN;
            let tie = want[t] - rest[top(&rest)] <= 2.0 * tolerance;
            same_class += (top(got) == t || tie) as usize;
        }
        let mean = sum / (64.0 * 8.0);
        println!("{name}: logit difference tract vs onnxruntime: largest {worst:.2e}, mean {mean:.2e}; same class {same_class}/64");
        assert!(worst <= tolerance, "{name}: tract's logits differ from onnxruntime's by up to {worst} (> {tolerance})");
        assert!(mean <= mean_tolerance, "{name}: tract's logits differ from onnxruntime's by {mean} on average");
        assert_eq!(same_class, 64, "{name}: tract and onnxruntime disagree on the class");
    }
}

/// `eval --reframe` (and `adapt --crops --reframe`): crops cut loosely by another tool meet the model as the
/// firmware would frame the face. Each FER+ val face (FER's framing, which mien's crop box reproduces) and the
/// same face with 10 px of its edge repeated on every side (a crop 1.42x as loose) are read both ways: as given,
/// the two crops differ by the framing; re-framed, the detector finds the face in each and mien's crop box cuts
/// nearly the same pixels from both.
#[test]
fn reframing_cuts_crops_of_another_framing_as_the_firmware_frames_the_face() {
    use mien::eval::{CropMode, Cropper, Item, ItemSource};
    use mien::expression::MienExpression;
    let cfg = mien::config::Config::embedded_default();
    let mut detector = mien::detect::load(&cfg.detect.labelling()).unwrap();
    let ds = mien::eval::read_ferplus(&ferplus(), "val").unwrap();
    let loose = |item: &Item| -> Item {
        let ItemSource::Grey { width: 48, height: 48, pixels } = &item.source else { panic!("FER+ faces are 48x48") };
        let at = |v: usize| v.saturating_sub(10).min(47);
        let px: Vec<u8> = (0..68 * 68).map(|i| pixels[at(i / 68) * 48 + at(i % 68)]).collect();
        let source = ItemSource::Grey { width: 68, height: 68, pixels: px };
        Item { name: item.name.clone(), label: item.label, source }
    };
    // Mean |difference| of the two crops' 6x6-pixel block means (grey): what the framing moves, not a pixel of
    // detector jitter.
    let blocks = |c: &[u8]| -> Vec<f64> {
        (0..64).map(|b| {
            let (bx, by) = (b % 8 * 6, b / 8 * 6);
            (0..36).map(|i| c[((by + i / 6) * 48 + bx + i % 6) * 3] as f64).sum::<f64>() / 36.0
        }).collect()
    };
    let diff = |a: &[u8], b: &[u8]| blocks(a).iter().zip(blocks(b)).map(|(x, y)| (x - y).abs()).sum::<f64>() / 64.0;
    let (mut reframed, mut given, mut found) = (Vec::new(), Vec::new(), 0);
    let mut as_given = Cropper::new(CropMode::Crops, (48, 48));
    let mut pairs = Vec::new();
    for item in ds.items.iter().take(40) {
        let l = loose(item);
        let a = as_given.crop(item, MienExpression::crop_box_for).unwrap().unwrap().rgb().to_vec();
        let b = as_given.crop(&l, MienExpression::crop_box_for).unwrap().unwrap().rgb().to_vec();
        given.push(diff(&a, &b));
        pairs.push((item, l));
    }
    let mut re = Cropper::new(CropMode::Reframe { detector: detector.as_mut(), align: false }, (48, 48));
    for (item, l) in &pairs {
        let missed = re.left_out.as_given;
        let a = re.crop(item, MienExpression::crop_box_for).unwrap().unwrap().rgb().to_vec();
        let b = re.crop(l, MienExpression::crop_box_for).unwrap().unwrap().rgb().to_vec();
        if re.left_out.as_given == missed {
            found += 1; // the face was found in both framings
            reframed.push(diff(&a, &b));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (r, g) = (median(&mut reframed), median(&mut given));
    println!("median mean |difference| between the two framings: as given {g:.1}, re-framed {r:.1}; found {found}");
    assert!(found >= 32, "the face was found in both framings of only {found} of 40");
    assert!(g > 10.0, "the two framings as given should differ: {g:.1}");
    // Measured 2026-12-06: 25.5 as given, 14.4 re-framed. The rest is the detector's box, which varies by a few
    // percent between the two scales (on FER+ val, re-framing costs 2 points on crops already in FER's framing).
    assert!(r < 0.7 * g, "re-framed crops should meet: {r:.1} against {g:.1} as given");
}
