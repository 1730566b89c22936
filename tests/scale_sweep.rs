//! The reduced scale sweep (`examples/scale_sweep.rs --reduced`): faces from 16 px to a face filling the frame,
//! 1 to 268 per frame (MAX_FACES + 12), colour and grey, at 640x480 and 1920x1080 and as 160/350 px close-ups,
//! through the default profile's detection stage and blur, judged by the independent reference detector. Every
//! size bucket must reach a blur recall of 0.995, and the crowd frame with more faces than the stage keeps must be
//! masked whole.
//! The default profile runs two detectors (the pyramid from 32 px, labelled, and mien-face from 16 px, blurred
//! only: `[detect.blur_also]`); the bar holds from 16 px, whichever detector finds the face.
//! Needs `../shared/data` (site-colour, FER+) and `models/prepare.sh --reference`.

mod common;

#[test]
fn reduced_scale_sweep_blurs_every_face_size_and_masks_the_crowd() {
    // Fails (with its output) when a bucket is under its bar.
    let stdout = common::example("scale_sweep", &["--reduced", "--min-recall", "0.995"]);
    eprintln!("{stdout}");
    // The 1920x1080 set holds one frame of MAX_FACES + 12 faces: it must have been masked whole. A frame is masked
    // whole when its faces and the two detectors' false boxes together pass MAX_FACES. In this reduced set only
    // that crowd is: its 640x480 set's most crowded frame holds 127 faces, blurred face by face. (At MAX_FACES 128,
    // until 2026-12-07, the full sweep masked frames of 54-119 small faces too; docs/privacy.md.)
    let crowds = |res: &str| -> Vec<usize> {
        let line = stdout.lines().find(|l| l.starts_with(res)).unwrap_or_else(|| panic!("a {res} line"));
        let list = line.split("frames of [").nth(1).and_then(|r| r.split(']').next()).unwrap_or_else(|| panic!("{line}"));
        list.split(", ").filter(|n| !n.is_empty()).map(|n| n.parse().unwrap()).collect()
    };
    let big = crowds("1920x1080:");
    assert!(big.contains(&(mien::detect::MAX_FACES + 12)), "the crowd past MAX_FACES was not masked: {big:?}");
    for res in ["1920x1080:", "640x480:"] {
        let under = mien::detect::MAX_FACES;
        assert!(crowds(res).iter().all(|&n| n > under), "{res} a frame of {under} faces or fewer was masked whole: {:?}", crowds(res));
    }
    // Every bucket from 16 px up was exercised.
    for bucket in ["| 16-23 |", "| 24-31 |", "| 32-47 |", "| 48-63 |", "| 128-191 |", "| 256-383 |"] {
        assert!(stdout.contains(bucket), "no faces in {bucket}");
    }
    // Beyond the recall over the faces the reference finds: of every face pasted into the composed frames, the ones
    // it misses too, at least 99.5% blurred. Neither detector is sure of every face the reference misses: a 28 px
    // grey face at 1920x1080 here is found by neither (mien-face's passes for large faces used to cover it by
    // chance, with a box over the grey background; the default keeps those boxes no more: `max_face` 128,
    // docs/privacy.md). The close-ups count by the reference: one of them is a cheek, nose and mouth filling the
    // frame, without eyes, which neither it nor the pyramid sees as a face.
    let header = stdout.lines().find(|l| l.starts_with("| face height")).expect("the table");
    let is_size = |col: &str| col.split_once('x').is_some_and(|(w, h)| w.parse::<u32>().is_ok() && h.parse::<u32>().is_ok());
    let columns: Vec<&str> = header.split('|').map(str::trim).collect();
    let (mut blurred, mut pasted, mut cells) = (0u32, 0u32, 0);
    for row in stdout.lines().filter(|l| l.starts_with("| ") && l.as_bytes().get(2).is_some_and(u8::is_ascii_digit)) {
        for (cell, _) in row.split('|').map(str::trim).zip(&columns).filter(|(c, col)| !c.is_empty() && is_size(col)) {
            let all = cell.split("all ").nth(1).and_then(|r| r.strip_suffix(')')).unwrap_or_else(|| panic!("{row}"));
            let (b, p) = all.split_once('/').unwrap_or_else(|| panic!("{row}"));
            (blurred, pasted, cells) = (blurred + b.parse::<u32>().unwrap(), pasted + p.parse::<u32>().unwrap(), cells + 1);
        }
    }
    assert!(cells >= 16 && pasted >= 500, "only {cells} cells, {pasted} faces of composed frames read: {header}");
    assert!(blurred as f64 >= 0.995 * pasted as f64, "{blurred} of all {pasted} faces pasted into composed frames blurred");
}

#[test]
fn reduced_scale_sweep_with_mien_face_blurs_every_face_size() {
    // mien's own detector (models/detector), at the threshold its card gives; it was trained on other faces than
    // the sweep pastes (every fifth site-colour file and FER+ rows under 20,000 are held out from its training).
    let setup = ["--kind", "mien-face", "--model", "models/mien_face.onnx", "--threshold", "0.3", "--min-face", "16"];
    let args = [&["--reduced", "--min-recall", "0.995"][..], &setup].concat();
    let stdout = common::example("scale_sweep", &args);
    eprintln!("{stdout}");
    assert!(stdout.starts_with("Setup: mien-face (faces from 16 px)"), "the sweep ran another detector");
    // The crowd past MAX_FACES is masked whole (its extra detections can only add to the count).
    let line = stdout.lines().find(|l| l.starts_with("1920x1080:")).expect("a 1920x1080 line");
    assert!(line.contains(&format!("{}", mien::detect::MAX_FACES + 12)), "{line}");
    for bucket in ["| 16-23 |", "| 24-31 |", "| 32-47 |", "| 48-63 |", "| 128-191 |", "| 256-383 |"] {
        assert!(stdout.contains(bucket), "no faces in {bucket}");
    }
}

/// Real photographs (`models/prepare.sh --photos`: group photos and a crowd with a face mesh drawn over it, from
/// registry packages; nothing here was trained on them) at their own size, up to 2560 px wide, through a detector
/// setup: every face the reference finds must be blurred. Returns the report.
fn photographs(setup: &[&str]) -> String {
    let dir = common::repo("models/reference/photos");
    assert!(dir.join("human-samples.jpg").exists(), "{} missing: run models/prepare.sh --photos", dir.display());
    let mut args = vec!["--photos", dir.to_str().unwrap(), "--photo-widths", "0", "--min-recall", "0.995"];
    args.extend_from_slice(setup);
    let stdout = common::example("scale_sweep", &args);
    eprintln!("{stdout}");
    // All eleven were read, and the crowd's small faces were among those judged.
    assert!(stdout.contains("photos, own size: 11 frames"), "not the 11 photographs");
    let crowd = stdout.lines().find(|l| l.contains("human-samples.jpg")).expect("the crowd photo's line");
    assert!(crowd.contains(": 15 of 15 faces blurred"), "{crowd}");
    for bucket in ["| 16-23 |", "| 64-95 |", "| 192-255 |"] {
        assert!(stdout.contains(bucket), "no faces in {bucket}");
    }
    stdout
}

#[test]
fn real_photographs_lose_every_face_the_reference_finds() {
    // The default profile: the pyramid from 32 px and mien-face from 16 px, blurred only (the pyramid alone kept 2
    // of the crowd's 15 faces, under the drawn mesh). The crowd photo's faces and both detectors' false boxes (88
    // boxes on 2026-12-07 with mien-face at 0.25 up to 128 px, 89 without the cap, 82 at 0.3; 127 with the pyramid
    // from 16 px) fit under MAX_FACES: no photograph is masked whole, each face is blurred on its own. (At MAX_FACES
    // 128, from 16 px, it held 133 and was masked whole.)
    let stdout = photographs(&[]);
    assert!(stdout.contains("+ blurred only: mien-face"), "the default's two detectors did not run");
    assert!(stdout.contains("photos, own size: 11 frames, 0 masked whole"), "a photograph was masked whole");
    // And the blur stays on the faces: with mien-face's boxes for large faces (no `max_face`) the default blurred
    // 91% of the photographs' background and 77% of the clip's face-free frames; up to 128 px, 26% and 12%; with
    // the pyramid's finest level guided by mien-face (`guide`, 2026-12-07), 21% and 5%: the level no longer runs
    // where mien-face boxes nothing, as on the clip's cup.
    let line = |prefix: &str| stdout.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line {prefix:?}"));
    let share = |prefix: &str| -> f64 {
        let line = line(prefix);
        let after = line.split("background blurred ").nth(1).unwrap_or_else(|| panic!("{line}"));
        after.split('%').next().unwrap().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    let (photos, free) = (share("photos, own size: 11 frames"), share("face-free frames"));
    assert!(photos < 40.0, "{photos}% of the photographs' background blurred");
    assert!(free < 10.0, "{free}% of the face-free frames blurred");
    // The faces that get a label (a pyramid box over expression.min_score): 38 of the 49 the reference finds, guided
    // or not (the other 11 are the crowd's, 13-70 px under its drawn mesh). Guided by mien-face boxes over 0.7 only,
    // it was 35 (and 22 of 49 at 640 wide; 32 over 0.5).
    let line = line("photos, own size: 11 frames");
    let scored = line.split(" faces scored for a label").next().and_then(|l| l.rsplit(", ").next()).unwrap_or_else(|| panic!("{line}"));
    let (read, of) = scored.split_once(" of ").unwrap_or_else(|| panic!("{line}"));
    assert!(read.parse::<u32>().unwrap() >= 38 && of == "49", "{scored} faces scored for a label: {line}");
}

#[test]
fn real_photographs_with_mien_face_lose_every_face_the_reference_finds() {
    photographs(&["--kind", "mien-face", "--model", "models/mien_face.onnx", "--threshold", "0.3", "--min-face", "16"]);
}

/// The "Blur recall" line's count of every face pasted: (blurred, pasted).
fn all_pasted(stdout: &str) -> (u32, u32) {
    let line = stdout.lines().find(|l| l.starts_with("Blur recall:")).expect("the summary line");
    let all = line.split("; ").nth(1).unwrap_or_else(|| panic!("{line}"));
    let (b, rest) = all.split_once(" of all ").unwrap_or_else(|| panic!("{line}"));
    (b.parse().unwrap(), rest.split(' ').next().unwrap().parse().unwrap())
}

/// Of every face pasted turned by 45 degrees, the share the default must blur. The shipped detectors blur 1,127 of
/// 1,145 (0.984, 2026-12-07): faces turned that far are a known gap (docs/privacy.md, "Faces turned in the
/// picture's plane"); this bar keeps it from widening. Raise it with a mien-face trained on turned faces.
const ROLL_BAR: f64 = 0.98;

#[test]
fn faces_turned_to_the_shoulder_are_blurred() {
    // Heads tilted by 45 degrees either way (candid photographs; a worker leaning over a bench), faded into the
    // frame through an ellipse so that no straight edge gives a turned picture away. The reference finds few turned
    // faces (68 of the 1,145 here), so the bar is on every face pasted (the summary's "all").
    let args = ["--resolutions", "640x480,1280x720", "--frames", "16", "--close-ups", "0", "--roll", "45", "--ellipse"];
    let stdout = common::example("scale_sweep", &args);
    eprintln!("{stdout}");
    assert!(stdout.contains("faces turned by 45 degrees either way; faces faded in through an ellipse"), "not turned");
    let (blurred, pasted) = all_pasted(&stdout);
    assert!(pasted >= 1000, "only {pasted} faces pasted");
    assert!(blurred as f64 >= ROLL_BAR * pasted as f64, "{blurred} of {pasted} faces turned by 45 degrees blurred");
}
