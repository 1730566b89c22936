//! Board I/O: a status LED and a button on GPIO lines, through linux-embedded-hal (GPIO character device).
//!
//! The LED tells a technician at the line what is wrong without a screen; the button toggles the display's
//! blurred preview. The pattern and button logic is generic over embedded-hal 1.0 pins; [`BoardIo::open`] puts
//! it on `/dev/gpiochipN` lines named by the board profile (`[gpio]`). A small thread runs the blink timing,
//! so patterns keep their rhythm whatever the frame rate.

use crate::display::Status;
use crate::vocab::{CameraState, LinkState, PrivacyState};
use embedded_hal::digital::{InputPin, OutputPin, PinState};
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::CdevPin;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

impl BoardInfo {
    /// Check the profile's board section; the first bad value is reported with its field name.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for kv in &self.tract_env {
            let ok = kv.split_once('=').is_some_and(|(k, v)| k.starts_with("TRACT_") && !v.is_empty());
            if !ok {
                return Err(("board.tract_env", format!("{kv:?} is not TRACT_NAME=value")));
            }
        }
        Ok(())
    }
}

/// What the status LED shows, most urgent last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum LedPattern {
    Off = 0,
    /// Steady on: camera, privacy and uplink all fine.
    Running = 1,
    /// Two short blinks per second: the uplink is down and labels are being spooled.
    UplinkDown = 2,
    /// Slow blink (1 Hz): no frames from the camera.
    NoCamera = 3,
    /// Fast blink (5 Hz): no working face detector: frames are being masked whole.
    PrivacyFault = 4,
}

impl LedPattern {
    fn from_u8(v: u8) -> LedPattern {
        match v {
            1 => LedPattern::Running,
            2 => LedPattern::UplinkDown,
            3 => LedPattern::NoCamera,
            4 => LedPattern::PrivacyFault,
            _ => LedPattern::Off,
        }
    }

    /// The most urgent pattern that applies.
    pub fn from_status(st: &Status) -> LedPattern {
        if st.privacy == PrivacyState::MaskedWhole && st.camera == CameraState::Ok {
            LedPattern::PrivacyFault
        } else if st.camera == CameraState::Lost {
            LedPattern::NoCamera
        } else if st.uplink == LinkState::Down {
            LedPattern::UplinkDown
        } else {
            LedPattern::Running
        }
    }

    /// Whether the LED is lit `t_ms` after the pattern started.
    pub fn level(self, t_ms: u64) -> bool {
        match self {
            LedPattern::Off => false,
            LedPattern::Running => true,
            LedPattern::UplinkDown => {
                let p = t_ms % 1000;
                p < 100 || (200..300).contains(&p)
            }
            LedPattern::NoCamera => t_ms % 1000 < 500,
            LedPattern::PrivacyFault => t_ms % 200 < 100,
        }
    }
}

/// Drives one LED pin through a pattern; writes the pin only when its level changes.
pub struct StatusLed<P: OutputPin> {
    pin: P,
    active_low: bool,
    pattern: LedPattern,
    since_ms: u64,
    lit: Option<bool>,
}

impl<P: OutputPin> StatusLed<P> {
    pub fn new(pin: P, active_low: bool) -> Self {
        StatusLed { pin, active_low, pattern: LedPattern::Off, since_ms: 0, lit: None }
    }

    pub fn set(&mut self, pattern: LedPattern, now_ms: u64) {
        if pattern != self.pattern {
            self.pattern = pattern;
            self.since_ms = now_ms;
        }
    }

    pub fn tick(&mut self, now_ms: u64) -> Result<(), P::Error> {
        let on = self.pattern.level(now_ms.saturating_sub(self.since_ms));
        if self.lit != Some(on) {
            self.pin.set_state(PinState::from(on != self.active_low))?;
            self.lit = Some(on);
        }
        Ok(())
    }
}

/// A debounced push button: `poll` reports each press once, after the level held for `debounce_ms`.
pub struct Button<P: InputPin> {
    pin: P,
    active_low: bool,
    debounce_ms: u64,
    stable: bool,
    candidate: bool,
    since_ms: u64,
}

impl<P: InputPin> Button<P> {
    pub fn new(pin: P, active_low: bool, debounce_ms: u64) -> Self {
        Button { pin, active_low, debounce_ms, stable: false, candidate: false, since_ms: 0 }
    }

    /// True once per press (released -> held for the debounce time).
    pub fn poll(&mut self, now_ms: u64) -> Result<bool, P::Error> {
        let down = self.pin.is_high()? != self.active_low;
        if down != self.candidate {
            self.candidate = down;
            self.since_ms = now_ms;
        }
        if self.candidate != self.stable && now_ms.saturating_sub(self.since_ms) >= self.debounce_ms {
            self.stable = self.candidate;
            return Ok(self.stable);
        }
        Ok(false)
    }
}

/// `[gpio]` in a board profile: line offsets on one GPIO chip. Unset lines are not used.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpioConfig {
    pub chip: String,
    pub led: Option<u32>,
    pub led_active_low: bool,
    pub button: Option<u32>,
    /// Buttons wired to ground with a pull-up read low when pressed.
    pub button_active_low: bool,
    pub debounce_ms: u32,
}

impl Default for GpioConfig {
    fn default() -> Self {
        GpioConfig {
            chip: "/dev/gpiochip0".into(),
            led: None,
            led_active_low: false,
            button: None,
            button_active_low: true,
            debounce_ms: 30,
        }
    }
}

impl GpioConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if (self.led.is_some() || self.button.is_some()) && self.chip.is_empty() {
            return Err(("gpio.chip", "must name /dev/gpiochipN when gpio.led or gpio.button is set".into()));
        }
        if self.led.is_some() && self.led == self.button {
            return Err(("gpio.button", "must not be the LED's line".into()));
        }
        if self.debounce_ms > 1000 {
            return Err(("gpio.debounce_ms", format!("{} is over 1000", self.debounce_ms)));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("gpio {chip} {what}: {msg}")]
pub struct BoardError {
    chip: String,
    what: String,
    msg: String,
}

/// The board's LED and button, run by a thread; the pipeline sets the pattern, the button flips `preview`.
pub struct BoardIo {
    pattern: Arc<AtomicU8>,
    presses: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BoardIo {
    /// Run `led` and `button` (either may be absent) on a 10 ms tick.
    pub fn start<L, B>(led: Option<StatusLed<L>>, button: Option<Button<B>>, preview: Arc<AtomicBool>) -> BoardIo
    where
        L: OutputPin + Send + 'static,
        B: InputPin + Send + 'static,
    {
        // Dark until the pipeline reports its first frame (or that the camera is missing).
        let pattern = Arc::new(AtomicU8::new(LedPattern::Off as u8));
        let presses = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, n, s) = (pattern.clone(), presses.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("mien-board-io".into())
            .spawn(move || {
                let (mut led, mut button) = (led, button);
                let t0 = Instant::now();
                let mut failed = false;
                while !s.load(Ordering::Relaxed) {
                    let now = t0.elapsed().as_millis() as u64;
                    if let Some(l) = led.as_mut() {
                        l.set(LedPattern::from_u8(p.load(Ordering::Relaxed)), now);
                        if let Err(e) = l.tick(now) {
                            if !failed {
                                log::error!("status LED: {e:?}");
                                failed = true;
                            }
                        }
                    }
                    if let Some(b) = button.as_mut() {
                        match b.poll(now) {
                            Ok(true) => {
                                let on = !preview.fetch_xor(true, Ordering::Relaxed);
                                n.fetch_add(1, Ordering::Relaxed);
                                log::info!("button: preview {}", if on { "on" } else { "off" });
                            }
                            Ok(false) => {}
                            Err(e) => {
                                if !failed {
                                    log::error!("button: {e:?}");
                                    failed = true;
                                }
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                if let Some(l) = led.as_mut() {
                    l.set(LedPattern::Off, 0);
                    let _ = l.tick(0);
                }
            })
            .expect("spawn the board I/O thread");
        BoardIo { pattern, presses, stop, thread: Some(thread) }
    }

    /// Open the lines `[gpio]` names on the GPIO character device (`None` when it names none).
    pub fn open(cfg: &GpioConfig, preview: Arc<AtomicBool>) -> Result<Option<BoardIo>, BoardError> {
        if cfg.led.is_none() && cfg.button.is_none() {
            return Ok(None);
        }
        let err = |what: String, e: &dyn std::fmt::Display| BoardError { chip: cfg.chip.clone(), what, msg: e.to_string() };
        let mut chip = Chip::new(&cfg.chip).map_err(|e| err("open".into(), &e))?;
        let mut line = |off: u32, flags: LineRequestFlags, what: &str| -> Result<CdevPin, BoardError> {
            let w = format!("line {off} ({what})");
            let l = chip.get_line(off).map_err(|e| err(w.clone(), &e))?;
            let h = l.request(flags, 0, &format!("mien-{what}")).map_err(|e| err(w.clone(), &e))?;
            CdevPin::new(h).map_err(|e| err(w, &e))
        };
        let led = match cfg.led {
            Some(off) => Some(StatusLed::new(line(off, LineRequestFlags::OUTPUT, "led")?, cfg.led_active_low)),
            None => None,
        };
        let button = match cfg.button {
            Some(off) => Some(Button::new(line(off, LineRequestFlags::INPUT, "button")?, cfg.button_active_low, cfg.debounce_ms as u64)),
            None => None,
        };
        log::info!("board I/O on {}: led {:?}, button {:?}", cfg.chip, cfg.led, cfg.button);
        Ok(Some(BoardIo::start(led, button, preview)))
    }

    /// Show the pattern that `st` calls for.
    pub fn show(&self, st: &Status) {
        self.pattern.store(LedPattern::from_status(st) as u8, Ordering::Relaxed);
    }

    pub fn pattern(&self) -> LedPattern {
        LedPattern::from_u8(self.pattern.load(Ordering::Relaxed))
    }

    /// Button presses seen so far.
    pub fn presses(&self) -> u64 {
        self.presses.load(Ordering::Relaxed)
    }
}

impl Drop for BoardIo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as T};

    #[test]
    fn patterns_blink_as_documented() {
        let lit = |p: LedPattern| (0..1000).step_by(10).filter(|&t| p.level(t)).count();
        assert_eq!(lit(LedPattern::Running), 100);
        assert_eq!(lit(LedPattern::Off), 0);
        assert_eq!(lit(LedPattern::NoCamera), 50);
        assert_eq!(lit(LedPattern::UplinkDown), 20);
        assert_eq!(lit(LedPattern::PrivacyFault), 50);
        // Fast blink toggles 10 times a second, slow blink twice.
        let edges = |p: LedPattern| (10..1000).step_by(10).filter(|&t| p.level(t) != p.level(t - 10)).count();
        assert_eq!(edges(LedPattern::PrivacyFault), 9);
        assert_eq!(edges(LedPattern::NoCamera), 1);
    }

    #[test]
    fn most_urgent_pattern_wins() {
        let mut st = Status::default();
        assert_eq!(LedPattern::from_status(&st), LedPattern::Running);
        st.uplink = LinkState::Down;
        assert_eq!(LedPattern::from_status(&st), LedPattern::UplinkDown);
        st.camera = CameraState::Lost;
        assert_eq!(LedPattern::from_status(&st), LedPattern::NoCamera);
        st.camera = CameraState::Ok;
        st.privacy = PrivacyState::MaskedWhole;
        assert_eq!(LedPattern::from_status(&st), LedPattern::PrivacyFault);
    }

    #[test]
    fn led_pin_is_written_only_on_changes_and_honours_active_low() {
        // Active-low LED, fast blink: lit (pin low) at 0, dark (pin high) at 100 ms, lit again at 200.
        let pin = PinMock::new(&[T::set(State::Low), T::set(State::High), T::set(State::Low)]);
        let mut led = StatusLed::new(pin, true);
        led.set(LedPattern::PrivacyFault, 0);
        for t in (0..=250).step_by(10) {
            led.tick(t).unwrap();
        }
        led.pin.done();
    }

    #[test]
    fn button_is_debounced() {
        // Active-low button: bounces (low, high) then held low: one press, reported after 30 ms held.
        let mut seq = vec![T::get(State::High), T::get(State::Low), T::get(State::High)];
        seq.extend(std::iter::repeat_n(T::get(State::Low), 5));
        seq.extend(std::iter::repeat_n(T::get(State::High), 5));
        let mut b = Button::new(PinMock::new(&seq), true, 30);
        let presses: Vec<bool> = (0..seq.len() as u64).map(|i| b.poll(i * 10).unwrap()).collect();
        assert_eq!(presses.iter().filter(|&&p| p).count(), 1, "{presses:?}");
        assert!(presses[6], "press reported once held 30 ms: {presses:?}");
        b.pin.done();
    }

    #[test]
    fn missing_chip_is_named() {
        let cfg = GpioConfig { chip: "/dev/gpiochip99".into(), led: Some(3), ..Default::default() };
        let e = BoardIo::open(&cfg, Arc::new(AtomicBool::new(true))).err().unwrap().to_string();
        assert!(e.contains("/dev/gpiochip99"), "{e}");
    }
}
