//! `mien doctor`: what a technician runs after flashing a board. Checks the camera (device, formats, one real
//! frame), the models (hash against SHA256SUMS, that they load, and the expression model's time per face against
//! its int8/fp32 twin), the broker (TCP reachability), the clock,
//! the disk under the spool and outputs, the display and the GPIO lines, and prints a pass/fail list.

use crate::config::Config;
use crate::display::{self, DisplayKind};
use crate::frame::{BBox, Frame};
use crate::{expression, source};
use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

fn check(name: &'static str, r: Result<String, String>) -> Check {
    match r {
        Ok(detail) => Check { name, verdict: Verdict::Pass, detail },
        Err(detail) => Check { name, verdict: Verdict::Fail, detail },
    }
}

/// Timestamps before this mean the clock was never set (a board without RTC that has not reached NTP).
const CLOCK_FLOOR_S: u64 = 1_735_689_600; // 2025-01-01

/// Run every check for `cfg`. Nothing here changes the system (the display is drawn on, no more).
pub fn run(cfg: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(check("camera", camera(cfg)));
    let det = crate::detect::load_for_camera(&cfg.detect, cfg.camera.width, cfg.camera.height);
    out.push(check(
        "detect model",
        det.as_ref().map(|d| format!("{} (hash as in SHA256SUMS; loads)", d.describe())).map_err(|e| format!("{e} (frames would be masked whole)")),
    ));
    match det {
        Ok(d) => {
            // A guided pyramid (`detect.blur_also.guide`) runs its finest level only around mien-face's boxes, and the
            // blank test frame has none: the time is taken unguided, the level whole, as a frame of many boxes runs it.
            let mut worst = cfg.detect.clone();
            let guided = worst.blur_also.as_mut().is_some_and(|b| std::mem::take(&mut b.guide));
            let (w, h) = (cfg.camera.width, cfg.camera.height);
            let (mut timed, whole) = match guided.then(|| crate::detect::load_for_camera(&worst, w, h)) {
                Some(Ok(unguided)) => (unguided, true),
                _ => (d, false),
            };
            out.push(face_sizes(cfg, timed.as_mut(), whole))
        }
        Err(_) => out.push(Check { name: "face sizes", verdict: Verdict::Skip, detail: "no detector".into() }),
    }
    if cfg.expression.enabled {
        match expression::load(cfg.expression.kind, Path::new(&cfg.expression.model)) {
            Ok(c) => {
                out.push(check("expression model", Ok(format!("{} (hash as in SHA256SUMS; loads)", c.describe()))));
                out.push(expression_speed(cfg, c));
            }
            Err(e) => out.push(check("expression model", Err(e.to_string()))),
        }
    } else {
        out.push(Check { name: "expression model", verdict: Verdict::Skip, detail: "expression.enabled = false".into() });
    }
    out.push(kernels());
    out.push(broker(cfg));
    out.push(clock());
    out.extend(disks(cfg));
    out.push(screen(cfg));
    out.push(gpio(cfg));
    out.extend(metrics(cfg));
    out
}

/// node_exporter's textfile directory on Debian and Raspberry Pi OS (prometheus-node-exporter).
const NODE_EXPORTER_DIR: &str = "/var/lib/prometheus/node-exporter";

/// `[metrics]`: the textfile's directory can be written (or is the service's own /run/mien) and node_exporter
/// can find the file; the endpoint's address can be bound.
fn metrics(cfg: &Config) -> Vec<Check> {
    let m = &cfg.metrics;
    if !m.enabled() {
        return vec![Check { name: "metrics", verdict: Verdict::Skip, detail: "metrics.textfile and metrics.listen are off".into() }];
    }
    let mut v = Vec::new();
    if !m.textfile.is_empty() {
        let file = Path::new(&m.textfile);
        let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let seen_by_exporter = file.starts_with(NODE_EXPORTER_DIR)
            || std::fs::read_dir(NODE_EXPORTER_DIR).is_ok_and(|d| {
                d.filter_map(|e| e.ok()).any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == file))
            });
        let reader = if seen_by_exporter {
            format!("node_exporter reads it from {NODE_EXPORTER_DIR}")
        } else {
            format!("no link to it in {NODE_EXPORTER_DIR} (node_exporter's textfile collector will not see it)")
        };
        let (verdict, detail) = match std::fs::metadata(dir) {
            Ok(md) if md.is_dir() && !md.permissions().readonly() => {
                (if seen_by_exporter { Verdict::Pass } else { Verdict::Warn }, format!("{}: {reader}", file.display()))
            }
            Ok(_) => (Verdict::Fail, format!("metrics.textfile: {} is not a writable directory", dir.display())),
            Err(_) if dir == Path::new("/run/mien") => {
                (Verdict::Warn, format!("{}: /run/mien appears when the service starts (RuntimeDirectory); {reader}", file.display()))
            }
            Err(e) => (Verdict::Fail, format!("metrics.textfile: {}: {e}", dir.display())),
        };
        v.push(Check { name: "metrics file", verdict, detail });
    }
    if !m.listen.is_empty() {
        let r = std::net::TcpListener::bind(&m.listen)
            .map(|l| format!("http://{}/metrics can be served", l.local_addr().map_or(m.listen.clone(), |a| a.to_string())))
            .map_err(|e| format!("metrics.listen {}: {e} (is mien's service already running?)", m.listen));
        v.push(check("metrics endpoint", r));
    }
    v
}

fn camera(cfg: &Config) -> Result<String, String> {
    let src = &cfg.camera.source;
    let what = if src.starts_with("/dev/") { source::v4l2::probe(src)? } else { format!("image directory {src}") };
    let t = Instant::now();
    let mut s = source::open(src, &cfg.camera, 0.0, false).map_err(|e| e.to_string())?;
    let mut f = Frame::new(cfg.camera.width, cfg.camera.height);
    match s.next_frame(&mut f) {
        Ok(true) => Ok(format!("{what}; got a {}x{} frame in {} ms", f.width, f.height, t.elapsed().as_millis())),
        Ok(false) => Err(format!("{what}: no frames")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// The shipped student's other flavour next to `path` (`..._int8.onnx` <-> `..._fp32.onnx`), if it is there.
fn twin(path: &Path) -> Option<(std::path::PathBuf, &'static str, &'static str)> {
    let name = path.file_name()?.to_str()?;
    let (this, other) = if name.contains("_int8.") { ("int8", "fp32") } else if name.contains("_fp32.") { ("fp32", "int8") } else { return None };
    let p = path.with_file_name(name.replace(&format!("_{this}."), &format!("_{other}.")));
    p.is_file().then_some((p, this, other))
}

/// How long the configured expression model takes per face on this board, single thread, against its int8 or
/// fp32 twin when that file is next to it (the two take turns, as in `cargo bench --bench expression`): which
/// flavour is faster depends on the CPU's int8 kernels, and only the board can say. Warns when one face alone
/// does not fit in the camera's frame interval. About a second in all, whatever the board's speed.
/// The face sizes the detection stage is laid out to blur at the camera's resolution (from the model's measured
/// range, see `detect::PYRAMID_MIN_MODEL_FACE` and the README's sweep table), and its time per frame on this
/// board against `detect.timeout_ms`: a detection over the budget masks the frame whole, so a stage too slow for
/// this board masks every frame.
/// `whole`: `det` is the guided stage's unguided twin, timed for its worst case.
fn face_sizes(cfg: &Config, det: &mut dyn crate::detect::FaceDetector, whole: bool) -> Check {
    let name = "face sizes";
    let (w, h) = (cfg.camera.width, cfg.camera.height);
    let (lo, hi) = det.face_range(w, h);
    let mut frame = Frame::new(w, h);
    for (i, px) in frame.data.chunks_exact_mut(3).enumerate() {
        px.fill((64 + (i % w as usize) * 128 / w as usize) as u8);
    }
    let mut dets = crate::detect::Detections::new();
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        if let Err(e) = det.detect(&frame, &mut dets) {
            return check(name, Err(format!("a detection on a blank {w}x{h} frame failed: {e}")));
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let ms = times[1];
    let budget = cfg.detect.timeout_ms as f64;
    let largest = if hi >= h as f32 { "a face filling the frame".to_string() } else { format!("{hi:.0} px") };
    let floors = match &cfg.detect.blur_also {
        Some(b) => format!(
            "detect.min_face {}, labelled; detect.blur_also.min_face {}{}, blurred only{}",
            cfg.detect.min_face,
            b.min_face.unwrap_or(cfg.detect.min_face),
            b.max_face.map(|m| format!(" to max_face {m}")).unwrap_or_default(),
            if b.guide { ", and guiding the pyramid's finest level" } else { "" }
        ),
        None => format!("detect.min_face {}", cfg.detect.min_face),
    };
    let worst = if whole { " at most (the finest level whole)" } else { "" };
    let detail = format!(
        "blurs faces from {lo:.0} px tall up to {largest} at {w}x{h} ({floors}); detect {ms:.0} ms per frame{worst}, budget {budget:.0} ms"
    );
    let verdict = if ms > budget {
        return Check { name, verdict: Verdict::Fail, detail: format!("{detail}: over the budget, every frame would be masked whole (raise detect.min_face or detect.timeout_ms)") };
    } else if ms > 0.8 * budget {
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    Check { name, verdict, detail }
}

fn expression_speed(cfg: &Config, configured: Box<dyn expression::ExpressionClassifier>) -> Check {
    const ROUNDS: usize = 5;
    const ROUND_MS: f64 = 100.0;
    let name = "expression speed";
    let path = Path::new(&cfg.expression.model);
    let mut models = vec![configured];
    let mut note = String::new();
    let twin = twin(path);
    if let Some((p, _, _)) = &twin {
        match expression::load(cfg.expression.kind, p) {
            Ok(c) => models.push(c),
            Err(e) => note = format!(" (its twin {} does not load: {e})", p.display()),
        }
    }
    // A mid-grey frame with a gradient: the time per face does not depend on what the face shows.
    let mut frame = Frame::new(320, 240);
    for (i, px) in frame.data.chunks_exact_mut(3).enumerate() {
        px.fill((64 + (i % 320) / 3 + (i / 320) / 4) as u8);
    }
    let frames = [frame];
    let face = BBox { x0: 100.0, y0: 60.0, x1: 220.0, y1: 200.0 };
    // 3 faces to learn the speed, then rounds of about ROUND_MS per model.
    let probe = match expression::Timing::measure(&mut models[..1], &frames, &face, 1, 1, 3) {
        Ok(t) => t.median_ms(0),
        Err(e) => return check(name, Err(e.to_string())),
    };
    let per_round = ((ROUND_MS / probe.max(1e-3)) as usize).clamp(1, 200);
    let t = match expression::Timing::measure(&mut models, &frames, &face, 0, ROUNDS, per_round) {
        Ok(t) => t,
        Err(e) => return check(name, Err(e.to_string())),
    };
    let ms = t.median_ms(0);
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let mut detail = format!("{file}: {ms:.2} ms per face");
    if let (Some((_, this, other)), 2) = (&twin, models.len()) {
        let (ratio, lo, hi) = t.ratio(0, 1);
        detail += &format!(
            ", its {other} twin {:.2} ms: {this}/{other} = {ratio:.2} (range {lo:.2}-{hi:.2}; {} is faster here)",
            t.median_ms(1),
            if ratio <= 1.0 { this } else { other }
        );
    }
    detail += &format!("; {ROUNDS} rounds of {per_round}, single thread{note}");
    let verdict = match over_frame_interval(ms, cfg.camera.fps) {
        Some(why) => {
            detail += &format!("; {why}");
            Verdict::Warn
        }
        None => Verdict::Pass,
    };
    Check { name, verdict, detail }
}

/// Why `ms` per face is too slow for a camera at `fps` (0: as fast as frames come, no limit), if it is.
fn over_frame_interval(ms: f64, fps: f32) -> Option<String> {
    let interval_ms = 1e3 / fps as f64;
    (fps > 0.0 && ms > interval_ms).then(|| format!("one face takes longer than a frame at {fps} fps ({interval_ms:.1} ms)"))
}

/// Which CPU features tract found and the matrix-kernel tiers it will pick from, best first (NEON on ARM:
/// `arm64simd`, `armv7neon`; a board without them gets the generic kernels, several times slower).
pub fn kernels() -> Check {
    use tract_onnx::tract_core::tract_linalg::{isa, mmm_tiers};
    let set = isa::native();
    let feats: Vec<&str> = set.iter().map(|i| i.name()).collect();
    let tiers: Vec<&str> = mmm_tiers::for_isa(&set).iter().map(|t| t.name).collect();
    let simd = tiers.iter().any(|t| *t != "generic");
    Check {
        name: "tract kernels",
        verdict: if simd { Verdict::Pass } else { Verdict::Warn },
        detail: format!("{} [{}]; matmul tiers {}", set.nickname(), feats.join(" "), tiers.join(" > ")),
    }
}

fn broker(cfg: &Config) -> Check {
    let u = &cfg.uplink;
    if !u.enabled {
        return Check { name: "broker", verdict: Verdict::Skip, detail: "uplink.enabled = false".into() };
    }
    let r = (|| {
        if u.tls && !u.ca_file.is_empty() {
            std::fs::metadata(&u.ca_file).map_err(|e| format!("uplink.ca_file {}: {e}", u.ca_file))?;
        }
        let addrs: Vec<_> = (u.host.as_str(), u.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}:{}: cannot resolve: {e}", u.host, u.port))?
            .collect();
        let mut last = String::new();
        for a in &addrs {
            match TcpStream::connect_timeout(a, Duration::from_secs(3)) {
                Ok(_) => return Ok(format!("{}:{} reachable ({a}){}", u.host, u.port, if u.tls { ", TLS" } else { "" })),
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        Err(format!("{}:{} unreachable ({last}); labels will spool to {}", u.host, u.port, u.spool_dir))
    })();
    check("broker", r)
}

fn clock() -> Check {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if now >= CLOCK_FLOOR_S {
        Check { name: "clock", verdict: Verdict::Pass, detail: format!("{now} s since the epoch") }
    } else {
        Check {
            name: "clock",
            verdict: Verdict::Fail,
            detail: format!("{now} s since the epoch: the clock is not set (no RTC or NTP?); label times would be wrong"),
        }
    }
}

/// Free bytes on the filesystem holding `dir` (or its nearest existing parent).
fn free_bytes(dir: &Path) -> Result<u64, String> {
    let mut p = dir.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return Err(format!("{}: no existing parent", dir.display()));
        }
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: statvfs fills the zeroed struct; `c` is a valid NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!("{}: {}", p.display(), std::io::Error::last_os_error()));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

fn disks(cfg: &Config) -> Vec<Check> {
    let mut v = Vec::new();
    if cfg.uplink.enabled {
        let need = cfg.uplink.spool_max_bytes;
        let dir = Path::new(&cfg.uplink.spool_dir);
        v.push(match free_bytes(dir) {
            Ok(free) if free >= need.saturating_mul(2) => Check {
                name: "spool disk",
                verdict: Verdict::Pass,
                detail: format!("{}: {} MiB free (spool up to {} MiB)", dir.display(), free >> 20, need >> 20),
            },
            Ok(free) => Check {
                name: "spool disk",
                verdict: Verdict::Warn,
                detail: format!("{}: only {} MiB free for a spool of up to {} MiB", dir.display(), free >> 20, need >> 20),
            },
            Err(e) => Check { name: "spool disk", verdict: Verdict::Fail, detail: e },
        });
    }
    let labels = &cfg.output.labels;
    if !labels.is_empty() && labels != "-" {
        let dir = Path::new(labels).parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        v.push(check(
            "labels file",
            free_bytes(dir).and_then(|free| {
                if free < 1 << 20 {
                    Err(format!("{labels}: under 1 MiB free"))
                } else {
                    Ok(format!("{labels}: {} MiB free", free >> 20))
                }
            }),
        ));
    }
    v
}

fn screen(cfg: &Config) -> Check {
    if cfg.display.kind == DisplayKind::None {
        return Check { name: "display", verdict: Verdict::Skip, detail: "display.kind = none".into() };
    }
    check(
        "display",
        display::open_screen(&cfg.display)
            .map(|s| s.map(|s| format!("{} ({}x{})", s.describe(), s.size().0, s.size().1)).unwrap_or_default())
            .map_err(|e| e.to_string()),
    )
}

fn gpio(cfg: &Config) -> Check {
    let g = &cfg.gpio;
    if g.led.is_none() && g.button.is_none() {
        return Check { name: "gpio", verdict: Verdict::Skip, detail: "no gpio.led or gpio.button".into() };
    }
    let r = (|| {
        let mut chip = linux_embedded_hal::gpio_cdev::Chip::new(&g.chip).map_err(|e| format!("{}: {e}", g.chip))?;
        let mut parts = Vec::new();
        for (what, line) in [("led", g.led), ("button", g.button)] {
            let Some(off) = line else { continue };
            let info = chip
                .get_line(off)
                .and_then(|l| l.info())
                .map_err(|e| format!("{} line {off} ({what}): {e}", g.chip))?;
            if let Some(user) = info.consumer().filter(|_| info.is_used()) {
                return Err(format!("{} line {off} ({what}) is in use by {user:?}", g.chip));
            }
            parts.push(format!("{what} line {off}"));
        }
        Ok(format!("{} ({}): {}", g.chip, chip.label(), parts.join(", ")))
    })();
    check("gpio", r)
}

/// Print the list; true when nothing failed.
pub fn report(origin: &str, cfg: &Config, checks: &[Check]) -> bool {
    println!("mien doctor: board {} ({origin})", cfg.board.name);
    for c in checks {
        println!("  {}  {:<17} {}", c.verdict, c.name, c.detail);
    }
    let n = |v| checks.iter().filter(|c| c.verdict == v).count();
    println!(
        "{} passed, {} warnings, {} failed, {} skipped",
        n(Verdict::Pass),
        n(Verdict::Warn),
        n(Verdict::Fail),
        n(Verdict::Skip)
    );
    n(Verdict::Fail) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tract_finds_simd_kernels_on_this_target() {
        let c = kernels();
        println!("tract kernels: {}", c.detail);
        #[cfg(target_arch = "aarch64")]
        assert!(c.detail.contains("arm64simd"), "{c:?}");
        // qemu-user shows the host's /proc/cpuinfo: CI forces NEON on (TRACT_CPU_ARM32_NEON=true), as a board
        // profile's tract_env can.
        #[cfg(target_arch = "arm")]
        if std::env::var("TRACT_CPU_ARM32_NEON").is_ok_and(|v| v == "true") {
            assert!(c.detail.contains("armv7neon"), "{c:?}");
        }
        #[cfg(target_arch = "x86_64")]
        assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
    }

    #[test]
    fn expression_speed_warns_only_when_one_face_outlasts_a_frame() {
        assert_eq!(over_frame_interval(1.2, 15.0), None);
        assert_eq!(over_frame_interval(5.0, 0.0), None, "fps 0 sets no frame interval");
        let why = over_frame_interval(5.0, 240.0).expect("5 ms per face at 240 fps is too slow");
        assert!(why.contains("240 fps") && why.contains("4.2 ms"), "{why}");
    }

    #[test]
    fn the_twin_is_the_other_flavour_of_the_same_student_when_it_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let (int8, fp32) = (dir.path().join("s_int8.onnx"), dir.path().join("s_fp32.onnx"));
        std::fs::write(&int8, b"x").unwrap();
        assert_eq!(twin(&int8), None, "no twin file yet");
        std::fs::write(&fp32, b"x").unwrap();
        assert_eq!(twin(&int8), Some((fp32.clone(), "int8", "fp32")));
        assert_eq!(twin(&fp32), Some((int8, "fp32", "int8")));
        assert_eq!(twin(&dir.path().join("faceapi_expression.onnx")), None);
    }

    #[test]
    fn free_bytes_walks_up_to_an_existing_directory() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c");
        assert!(free_bytes(&deep).unwrap() > 0);
    }

    #[test]
    fn an_unreachable_broker_fails_with_the_address() {
        // A port nothing listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cfg = Config::embedded_default();
        cfg.uplink.enabled = true;
        cfg.uplink.tls = false;
        cfg.uplink.host = "127.0.0.1".into();
        cfg.uplink.port = port;
        let c = broker(&cfg);
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        assert!(c.detail.contains(&format!("127.0.0.1:{port}")), "{c:?}");
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        cfg.uplink.port = l.local_addr().unwrap().port();
        assert_eq!(broker(&cfg).verdict, Verdict::Pass);
    }
}
