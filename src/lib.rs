//! mien: camera firmware that blurs faces in place and sends only expression labels upstream.
//!
//! One module per pipeline stage, each behind a small trait:
//! `source` (FrameSource) -> `detect` (FaceDetector) -> `privacy` (PrivacyGuard) -> `expression`
//! (ExpressionClassifier) -> `uplink` (LabelSink), with `display` (Screen) and `board` (status LED, button)
//! alongside; `pipeline` only wires them.

pub mod adapt;
pub mod board;
pub mod config;
pub mod detect;
pub mod display;
pub mod doctor;
pub mod eval;
pub mod expression;
pub mod frame;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod pipeline;
pub mod pixels;
pub mod privacy;
pub mod save;
pub mod source;
pub mod track;
pub mod uplink;
pub mod vocab;
