//! Local display: what a technician at the line sees on the board, without a laptop.
//!
//! The overlay (a downscaled *blurred* preview, the label of each face, fps, privacy and uplink state) is drawn
//! with embedded-graphics into an in-memory [`Canvas`], then handed to a [`Screen`]: the Linux framebuffer
//! (`fb`), an SPI LCD (`spi`, ST7789 / ILI9341 through mipidsi and linux-embedded-hal) or nothing. Only a
//! [`Protected`] frame (one privacy has run on) can reach the preview: the raw frame never does.

pub mod fb;
pub mod spi;

use crate::detect::MAX_FACES;
use crate::frame::{BBox, Frame, Rect};
use crate::pixels::Scaler;
use crate::privacy::Protected;
use crate::vocab::{Emotion, LinkState, PrivacyState};

pub use crate::vocab::CameraState;
use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_9X15_BOLD};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::{Rgb565, Rgb888};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error("display {device}: {msg}")]
    Open { device: String, msg: String },
    #[error("display {device}: {msg}")]
    Io { device: String, msg: String },
}

/// One face as the display shows it: its box in frame coordinates and, when classified, its label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceView {
    pub bbox: BBox,
    pub label: Option<(Emotion, f32)>,
}


/// Everything the overlay and the status LED show, rebuilt by the pipeline after each frame.
#[derive(Debug, Clone)]
pub struct Status {
    pub fps: f32,
    pub camera: CameraState,
    pub privacy: PrivacyState,
    pub uplink: LinkState,
    pub faces: heapless::Vec<FaceView, MAX_FACES>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            fps: 0.0,
            camera: CameraState::Ok,
            privacy: PrivacyState::Ok { regions: 0 },
            uplink: LinkState::Local,
            faces: heapless::Vec::new(),
        }
    }
}

/// An RGB888 image in memory that embedded-graphics draws into; screens convert it to their pixel format.
#[derive(Debug, Clone)]
pub struct Canvas {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas { width, height, rgb: vec![0; width as usize * height as usize * 3] }
    }
    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    /// Packed RGB24 rows, `3 * width` bytes each.
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
    /// The canvas as RGB565 colours, row by row (what SPI LCDs take).
    pub fn rgb565(&self) -> impl Iterator<Item = Rgb565> + '_ {
        self.rgb.chunks_exact(3).map(|p| Rgb565::from(Rgb888::new(p[0], p[1], p[2])))
    }
    pub fn save_png(&self, path: &Path) -> image::ImageResult<()> {
        image::save_buffer(path, &self.rgb, self.width, self.height, image::ExtendedColorType::Rgb8)
    }
    /// Copy an RGB24 block (`w` x `h`, packed) to (`x`, `y`), clipped to the canvas.
    fn blit(&mut self, x: u32, y: u32, w: u32, h: u32, src: &[u8]) {
        let cw = w.min(self.width.saturating_sub(x)) as usize;
        for row in 0..h.min(self.height.saturating_sub(y)) as usize {
            let d = ((y as usize + row) * self.width as usize + x as usize) * 3;
            let s = row * w as usize * 3;
            self.rgb[d..d + cw * 3].copy_from_slice(&src[s..s + cw * 3]);
        }
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(&mut self, pixels: I) -> Result<(), Self::Error> {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < self.width && (p.y as u32) < self.height {
                let i = (p.y as usize * self.width as usize + p.x as usize) * 3;
                self.rgb[i..i + 3].copy_from_slice(&[c.r(), c.g(), c.b()]);
            }
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, c: Rgb888) -> Result<(), Self::Error> {
        let a = area.intersection(&self.bounding_box());
        if let Some(br) = a.bottom_right() {
            for y in a.top_left.y..=br.y {
                let row = y as usize * self.width as usize;
                for x in a.top_left.x..=br.x {
                    let i = (row + x as usize) * 3;
                    self.rgb[i..i + 3].copy_from_slice(&[c.r(), c.g(), c.b()]);
                }
            }
        }
        Ok(())
    }
}

/// Where the canvas goes. Small on purpose: a new panel is one `present`.
pub trait Screen: Send {
    /// Pixels the screen shows (the canvas is made this size).
    fn size(&self) -> (u32, u32);
    fn present(&mut self, canvas: &Canvas) -> Result<(), DisplayError>;
    fn describe(&self) -> String;
}

const BG: Rgb888 = Rgb888::new(16, 16, 20);
const OK: Rgb888 = Rgb888::new(40, 200, 90);
const WARN: Rgb888 = Rgb888::new(240, 170, 30);
const FAULT: Rgb888 = Rgb888::new(230, 50, 50);
const TEXT: Rgb888 = Rgb888::new(235, 235, 235);
const DIM: Rgb888 = Rgb888::new(150, 150, 160);

/// Draws the overlay; keeps the resampler and the preview buffer from frame to frame.
#[derive(Default)]
pub struct Overlay {
    scaler: Scaler,
    preview: Vec<u8>,
}

fn font_for(canvas: &Canvas) -> &'static MonoFont<'static> {
    if canvas.width >= 480 {
        &FONT_9X15_BOLD
    } else {
        &FONT_6X10
    }
}

impl Overlay {
    /// Draw the whole overlay. `frame` is the blurred frame (None: preview hidden, or no frame this time).
    pub fn draw(&mut self, canvas: &mut Canvas, frame: Option<&Protected>, st: &Status) {
        let font = font_for(canvas);
        let lh = bar_height(canvas);
        let (w, h) = (canvas.width, canvas.height);
        let _ = canvas.clear(BG);

        // Top bar: privacy state (left), fps (right).
        let (ptext, pcol) = match (st.camera, st.privacy) {
            (CameraState::Lost, _) => ("NO CAMERA".to_string(), WARN),
            (_, PrivacyState::MaskedWhole) => ("PRIVACY: MASKING WHOLE FRAMES".to_string(), FAULT),
            (_, PrivacyState::Ok { .. }) => ("PRIVACY OK".to_string(), OK),
        };
        bar(canvas, 0, lh, pcol);
        text(canvas, font, 3, 2, &ptext, Rgb888::BLACK);
        let fps = format!("{:.1} fps", st.fps);
        text(canvas, font, w as i32 - 3 - (fps.len() as u32 * font.character_size.width) as i32, 2, &fps, Rgb888::BLACK);

        // Bottom bar: uplink state (left), faces (right).
        let (utext, ucol) = match st.uplink {
            LinkState::Up => ("UPLINK UP", OK),
            LinkState::Down => ("UPLINK DOWN: SPOOLING", FAULT),
            LinkState::Local => ("UPLINK OFF (LOCAL)", DIM),
        };
        bar(canvas, h.saturating_sub(lh), lh, ucol);
        text(canvas, font, 3, h as i32 - lh as i32 + 2, utext, Rgb888::BLACK);
        let nf = format!("{} face{}", st.faces.len(), if st.faces.len() == 1 { "" } else { "s" });
        text(
            canvas,
            font,
            w as i32 - 3 - (nf.len() as u32 * font.character_size.width) as i32,
            h as i32 - lh as i32 + 2,
            &nf,
            Rgb888::BLACK,
        );

        // Middle: the blurred preview with boxes and labels, or a list of labels.
        let area = Rect { x0: 0, y0: lh, x1: w, y1: h.saturating_sub(lh).max(lh) };
        let shown = frame.and_then(|p| self.preview(canvas, area, p.frame()));
        match shown {
            Some((px, scale)) => {
                for f in &st.faces {
                    let r = Rectangle::new(
                        Point::new(px.x0 as i32 + (f.bbox.x0 * scale) as i32, px.y0 as i32 + (f.bbox.y0 * scale) as i32),
                        Size::new((f.bbox.width() * scale) as u32, (f.bbox.height() * scale) as u32),
                    );
                    let col = if f.label.is_some() { OK } else { DIM };
                    let _ = r.into_styled(PrimitiveStyle::with_stroke(col, 2)).draw(canvas);
                    let label = face_text(f);
                    let ty = (r.top_left.y - lh as i32 + 2).max(area.y0 as i32);
                    let tw = label.len() as u32 * font.character_size.width + 4;
                    let _ = Rectangle::new(Point::new(r.top_left.x, ty), Size::new(tw, lh - 2))
                        .into_styled(PrimitiveStyle::with_fill(Rgb888::BLACK))
                        .draw(canvas);
                    text(canvas, font, r.top_left.x + 2, ty + 1, &label, TEXT);
                }
            }
            None => {
                let mut y = area.y0 as i32 + 4;
                if st.faces.is_empty() {
                    text(canvas, font, 6, y, "no faces", DIM);
                }
                for (i, f) in st.faces.iter().enumerate() {
                    text(canvas, font, 6, y, &format!("face {}: {}", i + 1, face_text(f)), TEXT);
                    y += lh as i32;
                }
            }
        }
    }

    /// Downscale the frame into `area` (aspect kept, centred); returns where it went and the scale.
    fn preview(&mut self, canvas: &mut Canvas, area: Rect, frame: &Frame) -> Option<(Rect, f32)> {
        let (aw, ah) = (area.width(), area.height());
        if aw < 8 || ah < 8 || frame.width == 0 || frame.height == 0 {
            return None;
        }
        let (pw, ph, scale) = preview_geometry(aw, ah, frame.width, frame.height);
        self.preview.resize(pw as usize * ph as usize * 3, 0);
        if let Err(e) = self.scaler.crop_resize(frame, frame.full_rect(), &mut self.preview, pw, ph) {
            log::warn!("display: preview resize failed: {e}");
            return None;
        }
        let (x, y) = (area.x0 + (aw - pw) / 2, area.y0 + (ah - ph) / 2);
        canvas.blit(x, y, pw, ph, &self.preview);
        Some((Rect { x0: x, y0: y, x1: x + pw, y1: y + ph }, scale))
    }
}

/// Size of a `fw` x `fh` frame fitted into `aw` x `ah` (aspect kept), and the scale used.
pub fn preview_geometry(aw: u32, ah: u32, fw: u32, fh: u32) -> (u32, u32, f32) {
    let scale = (aw as f32 / fw as f32).min(ah as f32 / fh as f32);
    (((fw as f32 * scale) as u32).clamp(1, aw), ((fh as f32 * scale) as u32).clamp(1, ah), scale)
}

/// Height of the status bars for a canvas (the top and bottom bars; the preview fills the rest).
pub fn bar_height(canvas: &Canvas) -> u32 {
    font_for(canvas).character_size.height + 4
}

fn face_text(f: &FaceView) -> String {
    match f.label {
        Some((e, c)) => format!("{} {:.0}%", e.as_str(), c * 100.0),
        None => "(too small)".into(),
    }
}

fn bar(canvas: &mut Canvas, y: u32, h: u32, c: Rgb888) {
    let _ = canvas.fill_solid(&Rectangle::new(Point::new(0, y as i32), Size::new(canvas.width, h)), c);
}

fn text(canvas: &mut Canvas, font: &MonoFont, x: i32, y: i32, s: &str, c: Rgb888) {
    let _ = Text::with_baseline(s, Point::new(x, y), MonoTextStyle::new(font, c), Baseline::Top).draw(canvas);
}

/// Display settings (`[display]` in a board profile).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DisplayConfig {
    pub kind: DisplayKind,
    /// `/dev/fbN` for `framebuffer`, `/dev/spidevB.C` for the SPI panels.
    pub device: String,
    /// Panel size for SPI panels (the framebuffer reports its own).
    pub width: u32,
    pub height: u32,
    /// 0, 90, 180 or 270 degrees (SPI panels).
    pub rotation: u32,
    /// Panels with inverted colours (many ST7789 modules).
    pub invert_colors: bool,
    pub spi_hz: u32,
    /// GPIO chip and line offsets for the panel's data/command, reset and backlight lines.
    pub gpio_chip: String,
    pub dc_pin: Option<u32>,
    pub reset_pin: Option<u32>,
    pub backlight_pin: Option<u32>,
    /// Redraw at most this often (milliseconds): the display never sets the pipeline's pace.
    pub refresh_ms: u32,
    /// Show the blurred preview at start (the board's button toggles it).
    pub preview: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DisplayKind {
    None,
    Framebuffer,
    St7789,
    Ili9341,
}

impl std::str::FromStr for DisplayKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(DisplayKind::None),
            "framebuffer" | "fb" => Ok(DisplayKind::Framebuffer),
            "st7789" => Ok(DisplayKind::St7789),
            "ili9341" => Ok(DisplayKind::Ili9341),
            _ => Err(format!("unknown display {s:?} (none, framebuffer, st7789 or ili9341)")),
        }
    }
}

impl Default for DisplayConfig {
    fn default() -> Self {
        DisplayConfig {
            kind: DisplayKind::None,
            device: "/dev/fb0".into(),
            width: 240,
            height: 240,
            rotation: 0,
            invert_colors: false,
            spi_hz: 32_000_000,
            gpio_chip: "/dev/gpiochip0".into(),
            dc_pin: None,
            reset_pin: None,
            backlight_pin: None,
            refresh_ms: 200,
            preview: true,
        }
    }
}

impl DisplayConfig {
    /// The first bad value, with its field name.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.kind == DisplayKind::None {
            return Ok(());
        }
        if self.device.is_empty() {
            return Err(("display.device", "must name /dev/fbN or /dev/spidevB.C".into()));
        }
        if !(20..=60_000).contains(&self.refresh_ms) {
            return Err(("display.refresh_ms", format!("{} is outside 20..=60000", self.refresh_ms)));
        }
        if matches!(self.kind, DisplayKind::St7789 | DisplayKind::Ili9341) {
            if !(16..=1024).contains(&self.width) {
                return Err(("display.width", format!("{} is outside 16..=1024", self.width)));
            }
            if !(16..=1024).contains(&self.height) {
                return Err(("display.height", format!("{} is outside 16..=1024", self.height)));
            }
            if ![0, 90, 180, 270].contains(&self.rotation) {
                return Err(("display.rotation", format!("{} is not 0, 90, 180 or 270", self.rotation)));
            }
            if self.dc_pin.is_none() {
                return Err(("display.dc_pin", "SPI panels need the data/command GPIO line".into()));
            }
            if !(1_000_000..=100_000_000).contains(&self.spi_hz) {
                return Err(("display.spi_hz", format!("{} is outside 1 MHz..100 MHz", self.spi_hz)));
            }
        }
        Ok(())
    }
}

/// Open the screen the config names (`None` for `kind = "none"`).
pub fn open_screen(cfg: &DisplayConfig) -> Result<Option<Box<dyn Screen>>, DisplayError> {
    Ok(match cfg.kind {
        DisplayKind::None => None,
        DisplayKind::Framebuffer => Some(Box::new(fb::Framebuffer::open(Path::new(&cfg.device))?)),
        DisplayKind::St7789 | DisplayKind::Ili9341 => Some(spi::open(cfg)?),
    })
}

/// The display stage: redraws the overlay at its own pace and presents it.
pub struct DisplayStage {
    screen: Box<dyn Screen>,
    canvas: Canvas,
    overlay: Overlay,
    refresh: Duration,
    last: Option<Instant>,
    preview: Arc<AtomicBool>,
    failed: bool,
}

impl DisplayStage {
    /// `preview` is shared with whatever toggles it (the board's button).
    pub fn new(screen: Box<dyn Screen>, refresh: Duration, preview: Arc<AtomicBool>) -> DisplayStage {
        let (w, h) = screen.size();
        log::info!("display: {} ({w}x{h}), refresh every {} ms", screen.describe(), refresh.as_millis());
        DisplayStage { screen, canvas: Canvas::new(w, h), overlay: Overlay::default(), refresh, last: None, preview, failed: false }
    }

    /// Redraw if `refresh` has passed since the last redraw. Display errors are logged, never fatal: the
    /// camera's job goes on without a screen.
    pub fn update(&mut self, frame: Option<&Protected>, st: &Status) {
        if self.last.is_some_and(|t| t.elapsed() < self.refresh) {
            return;
        }
        self.last = Some(Instant::now());
        let frame = frame.filter(|_| self.preview.load(Ordering::Relaxed));
        self.overlay.draw(&mut self.canvas, frame, st);
        log::debug!("display: redraw, preview {}, {} faces", frame.is_some(), st.faces.len());
        match self.screen.present(&self.canvas) {
            Ok(()) => {
                if self.failed {
                    log::info!("display: {} works again", self.screen.describe());
                    self.failed = false;
                }
            }
            Err(e) => {
                if !self.failed {
                    log::error!("{e}");
                    self.failed = true;
                }
            }
        }
    }

    pub fn canvas(&self) -> &Canvas {
        &self.canvas
    }
}
