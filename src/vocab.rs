//! The shared vocabulary: the expression classes and the states the screen, the status LED and the MQTT status
//! message show. It sits below every stage (it imports none of them), so a stage that shows or sends one of
//! these does not reach into the stage that produces it.

use serde::{Deserialize, Serialize};

/// The 8 FER+ expression classes, in FER+ order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Emotion {
    Neutral,
    Happiness,
    Surprise,
    Sadness,
    Anger,
    Disgust,
    Fear,
    Contempt,
}

impl Emotion {
    pub const ALL: [Emotion; 8] = [
        Emotion::Neutral,
        Emotion::Happiness,
        Emotion::Surprise,
        Emotion::Sadness,
        Emotion::Anger,
        Emotion::Disgust,
        Emotion::Fear,
        Emotion::Contempt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Emotion::Neutral => "neutral",
            Emotion::Happiness => "happiness",
            Emotion::Surprise => "surprise",
            Emotion::Sadness => "sadness",
            Emotion::Anger => "anger",
            Emotion::Disgust => "disgust",
            Emotion::Fear => "fear",
            Emotion::Contempt => "contempt",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The class with the largest of `scores` (probabilities or logits, in FER+ order; the first on a tie), and
    /// that score.
    pub fn top(scores: &[f32; 8]) -> (Emotion, f32) {
        let i = (0..8).fold(0, |b, c| if scores[c] > scores[b] { c } else { b });
        (Emotion::ALL[i], scores[i])
    }
}

impl std::str::FromStr for Emotion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Emotion::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown expression {s:?} (one of the 8 FER+ classes)"))
    }
}

/// The camera as the pipeline last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraState {
    Ok,
    /// No frame from the camera (disconnected or timing out); the source is reconnecting.
    Lost,
}

/// Whether labels are reaching their destination (shown on the board's display and LED), in order of
/// concern: the larger of two states is the worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LinkState {
    /// Local output only (stdout or a file): nothing to be connected to.
    Local,
    /// Connected to the broker.
    Up,
    /// Not connected: labels are being spooled to disk.
    Down,
}

/// What privacy did to a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivacyState {
    /// Faces (if any) blurred; the rest of the frame is visible.
    Ok { regions: usize },
    /// Detection failed or timed out, or no detector is loaded: the whole frame is masked.
    MaskedWhole,
}
