//! Configuration: one TOML file per board profile (`boards/*.toml`), overridden by command-line flags.
//! Every value is checked at start, and every error names the field it is about.

pub use crate::detect::DetectConfig;
use crate::privacy::PrivacyConfig;
use crate::source::PixelFormat;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The profile `mien run` uses when given no `--config` or `--board`: the bundled models on the bundled clip.
pub const DEFAULT_PROFILE: &str = include_str!("../boards/default.toml");

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub board: BoardInfo,
    pub camera: CameraConfig,
    pub detect: DetectConfig,
    pub privacy: PrivacyConfig,
    pub expression: ExpressionConfig,
    pub output: OutputConfig,
    pub uplink: crate::uplink::mqtt::MqttConfig,
    pub display: crate::display::DisplayConfig,
    pub gpio: crate::board::GpioConfig,
    pub runtime: RuntimeConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoardInfo {
    pub name: String,
    pub description: String,
    /// Rust target triple the board's build uses.
    pub target: String,
    /// The board's CPU, for people and for `qemu -cpu` when testing its build.
    pub cpu: String,
    /// `TRACT_*=value` settings for tract's kernel selection, applied at start unless the environment
    /// already sets them (e.g. `TRACT_CPU_AARCH64_KIND=a53`, `TRACT_CPU_ARM32_NEON=true`).
    pub tract_env: Vec<String>,
}

impl Default for BoardInfo {
    fn default() -> Self {
        BoardInfo {
            name: "default".into(),
            description: String::new(),
            target: String::new(),
            cpu: String::new(),
            tract_env: Vec::new(),
        }
    }
}

impl BoardInfo {
    /// Set the profile's tract environment (the process environment wins).
    pub fn apply_tract_env(&self) {
        for kv in &self.tract_env {
            if let Some((k, v)) = kv.split_once('=') {
                if std::env::var_os(k).is_none() {
                    log::info!("board {}: {k}={v}", self.name);
                    std::env::set_var(k, v);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// `/dev/videoN` or a directory of images to replay.
    pub source: String,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub fps: f32,
    /// MMAP buffers to queue.
    pub buffers: u32,
    /// Longest wait for a frame before the camera is treated as lost.
    pub timeout_ms: u32,
    /// Replay rate for directories (0 = as fast as the pipeline goes).
    pub replay_fps: f32,
    /// Replay the directory again and again.
    pub replay_loop: bool,
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            source: "/dev/video0".into(),
            width: 640,
            height: 480,
            format: PixelFormat::Yuyv,
            fps: 15.0,
            buffers: 4,
            timeout_ms: 2000,
            replay_fps: 0.0,
            replay_loop: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpressionKind {
    /// mien's own distilled student (`models/mien_student_int8.onnx`): 1x1xSxS grey, 8 FER+ classes.
    Mien,
    /// face-api.js FaceExpressionNet: 112x112 RGB, 7 classes (no contempt).
    Faceapi,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpressionConfig {
    pub enabled: bool,
    pub kind: ExpressionKind,
    pub model: String,
    /// Faces whose crop is smaller than this (pixels) are blurred but not classified.
    pub min_face: u32,
    /// Faces the detector is less sure of than this are blurred but not classified: privacy blurs at
    /// `detect.score_threshold` (recall first), labels come only from faces above this (precision first).
    pub min_score: f32,
    /// Turn each face crop so that the eyes are level (the detector's eye keypoints give the head's roll): the
    /// model was trained on upright faces and loses accuracy on tilted heads.
    pub align: bool,
}

impl Default for ExpressionConfig {
    fn default() -> Self {
        ExpressionConfig {
            enabled: true,
            kind: ExpressionKind::Mien,
            model: "models/mien_student_int8.onnx".into(),
            min_face: 32,
            min_score: 0.75,
            align: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Where labels go: `-` for stdout, or a file path (JSON lines, appended).
    pub labels: String,
    /// Directory for blurred frames (technicians' privacy check); empty = off.
    pub save_blurred: String,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig { labels: "-".into(), save_blurred: String::new() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Stop after this many frames (0 = run until the source ends).
    pub max_frames: u64,
    /// Threads that detect faces, one frame each, in parallel (1 = detection on the pipeline's own thread).
    /// Frames still leave in capture order, each after its blur. A board's core count is the usual value.
    pub threads: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { max_frames: 0, threads: 1 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {origin}: {msg}")]
    Parse { origin: String, msg: String },
    #[error("config {origin}: {field}: {msg}")]
    Invalid { origin: String, field: &'static str, msg: String },
    #[error("config {path}: {source}")]
    Read { path: String, source: std::io::Error },
}

impl Config {
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { origin: origin.into(), msg: e.to_string() })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// `boards/<name>.toml`, looked up in `./boards` and `/etc/mien/boards`.
    pub fn board(name: &str) -> Result<Config, ConfigError> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(ConfigError::Invalid {
                origin: "--board".into(),
                field: "board",
                msg: format!("{name:?} is not a board name (letters, digits, - and _)"),
            });
        }
        for dir in ["boards", "/etc/mien/boards"] {
            let p = Path::new(dir).join(format!("{name}.toml"));
            if p.exists() {
                return Self::load(&p);
            }
        }
        Err(ConfigError::Invalid {
            origin: "--board".into(),
            field: "board",
            msg: format!("no profile {name}.toml in ./boards or /etc/mien/boards"),
        })
    }

    pub fn embedded_default() -> Config {
        Self::from_toml(DEFAULT_PROFILE, "boards/default.toml").expect("the bundled default profile is valid")
    }

    /// Check ranges; the first bad value is reported with its field name.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |field: &'static str, msg: String| Err(ConfigError::Invalid { origin: origin.into(), field, msg });
        for kv in &self.board.tract_env {
            let ok = kv.split_once('=').is_some_and(|(k, v)| k.starts_with("TRACT_") && !v.is_empty());
            if !ok {
                return bad("board.tract_env", format!("{kv:?} is not TRACT_NAME=value"));
            }
        }
        let c = &self.camera;
        if c.source.is_empty() {
            return bad("camera.source", "must name /dev/videoN or a directory of images".into());
        }
        if !(16..=8192).contains(&c.width) {
            return bad("camera.width", format!("{} is outside 16..=8192", c.width));
        }
        if !(16..=8192).contains(&c.height) {
            return bad("camera.height", format!("{} is outside 16..=8192", c.height));
        }
        if !(c.fps >= 0.0 && c.fps <= 240.0) {
            return bad("camera.fps", format!("{} is outside 0..=240", c.fps));
        }
        if !(2..=32).contains(&c.buffers) {
            return bad("camera.buffers", format!("{} is outside 2..=32", c.buffers));
        }
        if !(50..=60_000).contains(&c.timeout_ms) {
            return bad("camera.timeout_ms", format!("{} is outside 50..=60000", c.timeout_ms));
        }
        if !(c.replay_fps >= 0.0 && c.replay_fps <= 1000.0) {
            return bad("camera.replay_fps", format!("{} is outside 0..=1000", c.replay_fps));
        }
        if let Err((field, why)) = self.detect.validate() {
            return bad(field, why);
        }
        let p = &self.privacy;
        if !(p.margin >= 0.0 && p.margin <= 2.0) {
            return bad("privacy.margin", format!("{} is outside 0..=2", p.margin));
        }
        if !(2..=16).contains(&p.mosaic_cells) {
            return bad(
                "privacy.mosaic_cells",
                format!("{} is outside 2..=16 (more cells would leave a face recognisable)", p.mosaic_cells),
            );
        }
        if p.hold_frames > 300 {
            return bad("privacy.hold_frames", format!("{} is over 300", p.hold_frames));
        }
        let e = &self.expression;
        if e.enabled && e.model.is_empty() {
            return bad("expression.model", "must name an ONNX file (or set expression.enabled = false)".into());
        }
        if !(1..=64).contains(&self.runtime.threads) {
            return bad("runtime.threads", format!("{} is outside 1..=64", self.runtime.threads));
        }
        if !(e.min_score >= 0.0 && e.min_score < 1.0) {
            return bad("expression.min_score", format!("{} is outside 0..1", e.min_score));
        }
        if !(8..=4096).contains(&e.min_face) {
            return bad("expression.min_face", format!("{} is outside 8..=4096", e.min_face));
        }
        if self.output.labels.is_empty() && !self.uplink.enabled {
            return bad("output.labels", "must be - (stdout) or a file path when uplink.enabled is false".into());
        }
        for check in [self.display.check(), self.gpio.check()] {
            if let Err((field, msg)) = check {
                return bad(field, msg);
            }
        }
        if self.uplink.enabled {
            self.uplink.validate().map_err(|e| ConfigError::Invalid {
                origin: origin.into(),
                field: "uplink",
                msg: e.to_string(),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default();
        assert_eq!(c.camera.source, "samples/clip");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[detect]\nscore_threshold = 1.5\n", "detect.score_threshold"),
            ("[camera]\nwidth = 3\n", "camera.width"),
            ("[privacy]\nmosaic_cells = 64\n", "privacy.mosaic_cells"),
            ("[privacy]\nmode = \"pixelate\"\n", "mode"),
            ("[camera]\nformat = \"NV12\"\n", "format"),
            ("[detect]\nthreshold = 0.5\n", "threshold"),
            ("[camera]\nfps = \"fast\"\n", "fps"),
            ("[expression]\nmin_face = 2\n", "expression.min_face"),
            ("[expression]\nmin_score = 1.5\n", "expression.min_score"),
            ("[detect]\nmin_face = 4\n", "detect.min_face"),
            ("[runtime]\nthreads = 0\n", "runtime.threads"),
            ("[detect]\nkind = \"tiles\"\n", "kind"),
            ("[uplink]\nenabled = true\nsite = \"a/b\"\n", "uplink.site"),
            ("[uplink]\nenabled = true\nclient_cert = \"c.pem\"\n", "uplink.client_key"),
            ("[uplink]\nfsync = \"sometimes\"\n", "fsync"),
            ("[board]\ntract_env = [\"LD_PRELOAD=x\"]\n", "board.tract_env"),
            ("[display]\nkind = \"st7789\"\ndevice = \"/dev/spidev0.0\"\n", "display.dc_pin"),
            ("[display]\nkind = \"ili9341\"\ndc_pin = 25\nrotation = 45\n", "display.rotation"),
            ("[display]\nkind = \"framebuffer\"\nrefresh_ms = 1\n", "display.refresh_ms"),
            ("[display]\nkind = \"hdmi\"\n", "kind"),
            ("[gpio]\nled = 4\nbutton = 4\n", "gpio.button"),
            ("[gpio]\nled = -1\n", "led"),
        ];
        for (text, field) in cases {
            let e = Config::from_toml(text, "test.toml").unwrap_err().to_string();
            assert!(e.contains(field), "error for {text:?} does not name {field}: {e}");
        }
    }

    #[test]
    fn bad_board_names_are_refused() {
        assert!(Config::board("../etc/passwd").unwrap_err().to_string().contains("board"));
        assert!(Config::board("no-such-board").unwrap_err().to_string().contains("no-such-board"));
    }
}
