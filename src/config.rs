//! Configuration: one TOML file per board profile (`boards/*.toml`), overridden by command-line flags.
//! Every value is checked at start, and every error names the field it is about.
//!
//! Each stage owns its section's type and its checks (`CameraConfig` in `source`, `DetectConfig` in `detect`,
//! ...); this module only composes them into one profile and owns the settings of the run as a whole
//! (`[output]`, `[runtime]`). It is re-exported here so a profile's types are found in one place.

pub use crate::board::{BoardInfo, GpioConfig};
pub use crate::detect::DetectConfig;
pub use crate::display::DisplayConfig;
pub use crate::expression::{ExpressionConfig, ExpressionKind};
pub use crate::metrics::MetricsConfig;
pub use crate::privacy::PrivacyConfig;
pub use crate::source::CameraConfig;
pub use crate::uplink::mqtt::MqttConfig;
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
    pub uplink: MqttConfig,
    pub display: DisplayConfig,
    pub gpio: GpioConfig,
    pub metrics: MetricsConfig,
    pub runtime: RuntimeConfig,
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
        let mut cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { origin: origin.into(), msg: e.to_string() })?;
        cfg.validate(origin)?;
        // The second detector's boxes that the blur around a first one covers are left out (`detect::BlurAlso`).
        cfg.detect.cover_margin = cfg.privacy.margin;
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

    /// Check every section; the first bad value is reported with its field name. Each stage checks its own
    /// section; only the settings of the run as a whole are checked here.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |field: &'static str, msg: String| Err(ConfigError::Invalid { origin: origin.into(), field, msg });
        let sections = [
            self.board.validate(),
            self.camera.validate(),
            self.detect.validate(),
            self.privacy.validate(),
            self.expression.validate(),
            self.display.validate(),
            self.gpio.validate(),
            self.metrics.validate(),
        ];
        for check in sections {
            if let Err((field, msg)) = check {
                return bad(field, msg);
            }
        }
        if !(1..=64).contains(&self.runtime.threads) {
            return bad("runtime.threads", format!("{} is outside 1..=64", self.runtime.threads));
        }
        if self.output.labels.is_empty() && !self.uplink.enabled {
            return bad("output.labels", "must be - (stdout) or a file path when uplink.enabled is false".into());
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
    fn the_second_detector_is_told_the_privacy_margin() {
        // `detect::BlurAlso` leaves out only boxes the blur around a first one covers: it needs privacy.margin.
        assert_eq!(Config::embedded_default().detect.cover_margin, Config::embedded_default().privacy.margin);
        let c = Config::from_toml("[privacy]\nmargin = 0.15\n", "t.toml").unwrap();
        assert_eq!(c.detect.cover_margin, 0.15);
        assert_eq!(Config::from_toml("", "t.toml").unwrap().detect.cover_margin, PrivacyConfig::default().margin);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[detect]\nscore_threshold = 1.5\n", "detect.score_threshold"),
            ("[camera]\nwidth = 3\n", "camera.width"),
            ("[privacy]\nmosaic_cells = 64\n", "privacy.mosaic_cells"),
            ("[privacy]\nmode = \"pixelate\"\n", "mode"),
            ("[camera]\nformat = \"H264\"\n", "format"),
            ("[detect]\nthreshold = 0.5\n", "threshold"),
            ("[camera]\nfps = \"fast\"\n", "fps"),
            ("[expression]\nmin_face = 2\n", "expression.min_face"),
            ("[metrics]\nlisten = \"9464\"\n", "metrics.listen"),
            ("[metrics]\ninterval_ms = 10\n", "metrics.interval_ms"),
            ("[metrics]\ntextfile = \"/run/mien/mien.txt\"\n", "metrics.textfile"),
            ("[metrics]\nport = 9464\n", "port"),
            ("[expression]\nmin_score = 1.5\n", "expression.min_score"),
            ("[expression]\nsmoothing_ms = 100000\n", "expression.smoothing_ms"),
            ("[detect]\nmin_face = 4\n", "detect.min_face"),
            ("[detect.blur_also]\nkind = \"mien-face\"\nmodel = \"m.onnx\"\nscore_threshold = 1.5\n", "detect.blur_also.score_threshold"),
            ("[detect.blur_also]\nkind = \"mien-face\"\nmodel = \"m.onnx\"\nscore_threshold = 0.3\nmin_face = 2\n", "detect.blur_also.min_face"),
            ("[detect.blur_also]\nkind = \"mien-face\"\nscore_threshold = 0.3\n", "model"),
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
