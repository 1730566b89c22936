//! The .deb a technician installs (scripts/make-deb.sh): its exact contents, control data, conffiles, the
//! hardened systemd unit (checked by systemd-analyze where present), maintainer scripts, and that the packaged
//! binary runs `mien doctor` clean against the packaged models.

mod common;
use common::{replaced, repo};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn deb_contents_unit_and_packaged_binary() {
    let out = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_mien");
    let deb = sh(Command::new(repo("scripts/make-deb.sh")).args(["--bin", bin, "--out"]).arg(out.path()));
    let deb = deb.trim();
    assert!(deb.ends_with("_amd64.deb") || deb.ends_with("_arm64.deb"), "{deb}");

    // Contents, listed (see this test's output) and compared with the expected set.
    let list = sh(Command::new("dpkg-deb").args(["-c", deb]));
    println!("{deb}:\n{list}");
    let mut files = BTreeSet::new();
    for line in list.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner, path) = (f[0], f[1], f[5].trim_start_matches('.'));
        assert_eq!(owner, "root/root", "{line}");
        if mode.starts_with('-') {
            let want = if path == "/usr/bin/mien" { "-rwxr-xr-x" } else { "-rw-r--r--" };
            assert_eq!(mode, want, "{line}");
            files.insert(path.to_string());
        } else {
            assert_eq!(mode, "drwxr-xr-x", "{line}");
        }
    }
    let mut want: BTreeSet<String> = [
        "/usr/bin/mien",
        "/etc/mien/mien.toml",
        "/lib/systemd/system/mien.service",
        "/usr/share/doc/mien/README.md",
        "/usr/share/doc/mien/MODEL-CARD.md",
        "/usr/share/doc/mien/DETECTOR-CARD.md",
        "/usr/share/doc/mien/MODELS-ATTRIBUTION.md",
        "/usr/share/doc/mien/copyright",
        "/usr/share/mien/models/SHA256SUMS",
        "/usr/share/mien/models/blazeface_full_range.onnx",
        "/usr/share/mien/models/blazeface_short_range.onnx",
        "/usr/share/mien/models/mien_face.onnx",
        "/usr/share/mien/models/mien_student_int8.onnx",
        "/usr/share/mien/models/mien_student_fp32.onnx",
        "/usr/share/mien/models/faceapi_expression.onnx",
        "/usr/share/mien/prometheus/mien-alerts.yml",
        "/usr/share/mien/systemd/libcamera.conf",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for b in ["armv7", "generic-aarch64", "rpi4", "rpi5", "zero2w"] {
        want.insert(format!("/etc/mien/boards/{b}.toml"));
    }
    assert_eq!(files, want);

    let control = sh(Command::new("dpkg-deb").args(["-f", deb]));
    for k in ["Package: mien", "Architecture: amd64", "Depends: libc6", "Version: 0.1.0", "Suggests: prometheus-node-exporter"] {
        assert!(control.contains(k), "control lacks {k:?}:\n{control}");
    }
    let x = out.path().join("root");
    sh(Command::new("dpkg-deb").args(["-R", deb]).arg(&x));
    let conffiles: BTreeSet<String> =
        std::fs::read_to_string(x.join("DEBIAN/conffiles")).unwrap().lines().map(String::from).collect();
    let etc: BTreeSet<String> = want.iter().filter(|f| f.starts_with("/etc/")).cloned().collect();
    assert_eq!(conffiles, etc, "every file under /etc is a conffile (a technician's edits survive upgrades)");
    for s in ["postinst", "prerm", "postrm"] {
        sh(Command::new("sh").arg("-n").arg(x.join("DEBIAN").join(s)));
    }

    // The unit: unprivileged, device-restricted, watchdog, restart on failure.
    let unit = std::fs::read_to_string(x.join("lib/systemd/system/mien.service")).unwrap();
    for k in [
        "User=mien",
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "ProtectSystem=strict",
        "DevicePolicy=closed",
        "DeviceAllow=char-video4linux rw",
        "DeviceAllow=char-gpiochip rw",
        "StateDirectory=mien",
        "RuntimeDirectory=mien",
        "ExecStart=/usr/bin/mien run --config /etc/mien/mien.toml",
    ] {
        assert!(unit.contains(k), "unit lacks {k:?}");
    }
    if Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success()) {
        // Verify a copy whose ExecStart points at the extracted binary: no error and no warning allowed.
        let copy = out.path().join("mien.service");
        std::fs::write(&copy, unit.replace("/usr/bin/mien", x.join("usr/bin/mien").to_str().unwrap())).unwrap();
        let v = Command::new("systemd-analyze").args(["verify", "./mien.service"]).current_dir(out.path()).output().unwrap();
        let err = String::from_utf8_lossy(&v.stderr);
        assert!(v.status.success() && err.trim().is_empty(), "systemd-analyze verify:\n{err}");
        // The libcamera drop-in on top of the unit (as systemd merges it: ExecStart reset, then libcamerify's),
        // libcamerify stood in for by a real executable.
        let dropin = std::fs::read_to_string(x.join("usr/share/mien/systemd/libcamera.conf")).unwrap();
        assert!(dropin.contains("ExecStart=\nExecStart=/usr/bin/libcamerify /usr/bin/mien run --config /etc/mien/mien.toml"));
        let dir = out.path().join("mien.service.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("libcamera.conf"), dropin.replace("/usr/bin/libcamerify", "/bin/env")).unwrap();
        let v = Command::new("systemd-analyze").args(["verify", "./mien.service"]).current_dir(out.path()).output().unwrap();
        let err = String::from_utf8_lossy(&v.stderr);
        assert!(v.status.success() && err.trim().is_empty(), "systemd-analyze verify with the libcamera drop-in:\n{err}");
    } else {
        eprintln!("systemd-analyze not installed: unit syntax not verified");
    }

    // The packaged binary with the packaged models and config (paths moved to the extraction): doctor passes
    // the models, and the config is the board profile it says it is.
    let share = x.join("usr/share/mien");
    let cfg = replaced(
        &std::fs::read_to_string(x.join("etc/mien/mien.toml")).unwrap(),
        &[("/usr/share/mien", share.to_str().unwrap()), ("enabled = true", "enabled = false"), ("labels = \"\"", "labels = \"-\"")],
    );
    assert!(cfg.contains("name = \"generic-aarch64\""), "{cfg}");
    let cfg_path = out.path().join("mien.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let d = Command::new(x.join("usr/bin/mien"))
        .args(["doctor", "--config", cfg_path.to_str().unwrap(), "--source", repo("samples/clip").to_str().unwrap(), "--labels", "-"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&d.stdout);
    // "its fp32 twin": the int8 student is timed against the packaged fp32 one, which is what a board needs to say
    // which flavour is faster on its CPU.
    for k in ["PASS  camera", "PASS  detect model", "PASS  face sizes", "PASS  expression model", "its fp32 twin", "0 failed"] {
        assert!(text.contains(k), "packaged mien doctor lacks {k:?}:\n{text}\n{}", String::from_utf8_lossy(&d.stderr));
    }
    assert!(Path::new(deb).metadata().unwrap().len() > 1 << 20);
}
