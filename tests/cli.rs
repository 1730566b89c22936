//! The command line: labels-only output from the default run, and clear errors for bad input.

mod common;
use common::*;

#[test]
fn default_run_prints_only_label_lines_with_the_schema_fields() {
    let out = run_ok(&["run", "--max-frames", "24"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut n = 0;
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        let mut want = mien::uplink::LABEL_FIELDS.to_vec();
        want.sort();
        assert_eq!(keys, want, "unexpected fields in {line}");
        let label: mien::expression::Emotion = v["label"].as_str().unwrap().parse().unwrap();
        let c = v["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c), "{label:?} {c}");
        n += 1;
    }
    assert!(n >= 20, "only {n} labels from the sample clip");
    // The astronaut (frames 0-7) smiles broadly: any working expression model says happiness.
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["label"], "happiness");
}

#[test]
fn bad_config_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "[detect]\nscore_threshold = 2.0\n").unwrap();
    let out = mien().args(["run", "--config", p.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("detect.score_threshold") && err.contains("bad.toml"), "{err}");
    // A second detector's max_face under its own floor is named too, with the floor.
    let second = "[detect.blur_also]\nkind = \"mien-face\"\nmodel = \"models/mien_face.onnx\"\n\
                  score_threshold = 0.3\nmin_face = 40\nmax_face = 24\n";
    std::fs::write(&p, format!("[detect]\nmin_face = 40\n{second}")).unwrap();
    let out = mien().args(["run", "--config", p.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("detect.blur_also.max_face") && err.contains("24 is outside 40"), "{err}");

    let out = mien().args(["run", "--source", "/nonexistent/dir"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir"));

    let out = mien().args(["run", "--source", "/dev/video97"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/dev/video97: no such device"));
}

#[test]
fn sigterm_stops_cleanly_and_keeps_every_label() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.jsonl");
    let child = mien()
        .args(["run", "--loop", "--fps", "20", "--labels", labels.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let some frames through, then stop it as systemd would.
    let t = std::time::Instant::now();
    while std::fs::metadata(&labels).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(t.elapsed().as_secs() < 60, "no labels within a minute");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {} after SIGTERM:\n{err}", out.status);
    assert!(err.contains("stopping on request"), "{err}");
    // Every line is whole JSON: nothing was cut mid-write.
    let text = std::fs::read_to_string(&labels).unwrap();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    }
}

#[test]
fn doctor_passes_on_the_default_profile_and_names_each_failure() {
    let out = run_ok(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in ["PASS  camera", "PASS  detect model", "PASS  expression model", "SKIP  broker", "PASS  clock"] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert!(text.contains("0 failed"), "{text}");
    // The shipped int8 student is timed against its fp32 twin on this machine (the figures are not checked).
    let speed = text.lines().find(|l| l.contains("expression speed")).unwrap_or_else(|| panic!("no expression speed in:\n{text}"));
    assert!(speed.contains("mien_student_int8.onnx: ") && speed.contains("its fp32 twin") && speed.contains("int8/fp32 = "), "{speed}");
    // The default's pyramid is guided by mien-face: the time against the budget is its worst case, the finest level
    // whole (the blank test frame gives mien-face no box to guide by).
    let sizes = text.lines().find(|l| l.contains("face sizes")).unwrap_or_else(|| panic!("no face sizes in:\n{text}"));
    let guided = sizes.contains("guiding the pyramid's finest level") && sizes.contains("at most (the finest level whole)");
    assert!(sizes.contains("PASS") && guided, "{sizes}");

    let out = mien().args(["doctor", "--source", "/dev/video9", "--detect-model", "/nonexistent.onnx"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "doctor must fail:\n{text}");
    let camera = text.lines().find(|l| l.contains("camera")).unwrap();
    assert!(camera.contains("FAIL") && camera.contains("/dev/video9"), "{camera}");
    let det = text.lines().find(|l| l.contains("detect model")).unwrap();
    assert!(det.contains("FAIL") && det.contains("/nonexistent.onnx"), "{det}");
    assert!(text.contains("2 failed"), "{text}");
}
