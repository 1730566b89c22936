//! Every board profile in boards/ loads, validates, and says what it is for.

use mien::config::Config;

#[test]
fn every_board_profile_loads_and_is_complete() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let c = Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
        let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
        assert_eq!(c.board.name, stem, "{}: board.name must match the file name", p.display());
        assert!(!c.board.description.is_empty(), "{}: board.description", p.display());
        if stem != "default" {
            assert!(
                ["aarch64-unknown-linux-gnu", "aarch64-unknown-linux-musl", "armv7-unknown-linux-gnueabihf"]
                    .contains(&c.board.target.as_str()),
                "{}: board.target {:?}",
                p.display(),
                c.board.target
            );
            assert!(c.camera.source.starts_with("/dev/video"), "{}: a board reads a camera", p.display());
            // Both detectors, as the default: mien-face finds faces the pyramid misses under glasses, visors and
            // masks (docs/privacy.md), at least from the pyramid's floor, with the model the .deb installs.
            let b = c.detect.blur_also.as_ref().unwrap_or_else(|| panic!("{}: no [detect.blur_also]", p.display()));
            assert_eq!(b.model, "/usr/share/mien/models/mien_face.onnx", "{}", p.display());
            assert!(b.min_face.unwrap_or(c.detect.min_face) <= c.detect.min_face, "{}: blur_also.min_face", p.display());
            // Its boxes for large faces blur cups and shirts: kept up to twice the largest face the pyramid was
            // measured to miss (63 px, docs/privacy.md) and no further.
            assert_eq!(b.max_face, Some(128), "{}: blur_also.max_face", p.display());
            // And the pyramid unguided: mien-face from a board's floor (one pass at 0.4 of the frame from 40 px) is
            // too coarse a guide; guided, the Pi 4 profile blurred 116 of 148 photograph faces, against 131.
            assert!(!b.guide, "{}: blur_also.guide", p.display());
            assert!(c.uplink.tls, "{}: TLS is on by default on boards", p.display());
            // Metrics for the fleet's node_exporter, on the service's tmpfs; no port opened by default.
            assert_eq!(c.metrics.textfile, "/run/mien/mien.prom", "{}: metrics.textfile", p.display());
            assert!(c.metrics.listen.is_empty(), "{}: metrics.listen opens a port; leave it to the site", p.display());
            // Pi boards have a screen and a status LED; every LED pin is distinct from the display's lines.
            if stem.starts_with("rpi") || stem == "zero2w" {
                assert_ne!(c.display.kind, mien::display::DisplayKind::None, "{}: display", p.display());
                assert!(c.gpio.led.is_some() && c.gpio.button.is_some(), "{}: gpio.led/button", p.display());
            }
            let panel = [c.display.dc_pin, c.display.reset_pin, c.display.backlight_pin];
            for pin in [c.gpio.led, c.gpio.button].into_iter().flatten() {
                assert!(!panel.contains(&Some(pin)), "{}: GPIO {pin} is also a display line", p.display());
            }
        }
        names.push(stem);
    }
    names.sort();
    for want in ["armv7", "default", "generic-aarch64", "rpi4", "rpi5", "zero2w"] {
        assert!(names.iter().any(|n| n == want), "boards/{want}.toml missing");
    }
}
