//! Board I/O on real kernel devices: the `mien` binary in a qemu guest (Debian's kernel, TCG) drives a real
//! framebuffer (`vfb`, /dev/fb0) and a real GPIO chip (`gpio-sim`, built out of tree by
//! tests/guest/build-gpio-sim.sh) through the GPIO character device: status LED on line 3, button on line 5.
//! The guest script (tests/guest/board-io.sh) dumps the framebuffer and samples the LED; this test judges them.
//!
//! Needs qemu-system-x86, the guest kit and linux-headers for the guest kernel: `.ci/run` provides them and runs
//! this test with `--include-ignored`.

mod common;
use common::*;
use std::path::Path;

const BG: [u8; 3] = [16, 16, 20];
const GREEN: [u8; 3] = [40, 200, 90];
const RED: [u8; 3] = [230, 50, 50];

/// One framebuffer dump, decoded to RGB888 with the geometry the kernel reported.
struct Dump {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
    bpp: usize,
}

/// Channel offsets mien reported for the framebuffer ("... bpp, r16:8 g8:8 b0:8)" in its log).
fn offsets(log: &str) -> [u32; 3] {
    let line = log.lines().find(|l| l.contains("display: framebuffer")).expect("no display line in the log");
    let tail = &line[line.find("bpp, ").unwrap_or_else(|| panic!("{line}")) + 5..];
    let field = |c: &str| -> u32 {
        let i = tail.find(c).unwrap_or_else(|| panic!("{line}")) + 1;
        tail[i..].split(':').next().unwrap().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    [field("r"), field("g"), field("b")]
}

fn read_dump(dir: &Path, name: &str, off: [u32; 3]) -> Dump {
    let txt = |ext: &str| std::fs::read_to_string(dir.join(format!("{name}.{ext}"))).unwrap().trim().to_string();
    let bpp: usize = txt("bpp").parse().unwrap();
    let stride: usize = txt("stride").parse().unwrap();
    let size = txt("size");
    let (w, h) = size.split_once(',').map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap())).unwrap();
    let raw = std::fs::read(dir.join(format!("{name}.raw"))).unwrap();
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let px = match bpp {
                32 => {
                    let i = y * stride + x * 4;
                    let v = u32::from_le_bytes(raw[i..i + 4].try_into().unwrap());
                    [(v >> off[0]) as u8, (v >> off[1]) as u8, (v >> off[2]) as u8]
                }
                16 => {
                    let i = y * stride + x * 2;
                    let v = u16::from_le_bytes([raw[i], raw[i + 1]]) as u32;
                    let ch = |o: u32, bits: u32| (((v >> o) & ((1 << bits) - 1)) << (8 - bits)) as u8;
                    [ch(off[0], 5), ch(off[1], 6), ch(off[2], 5)]
                }
                b => panic!("{name}: framebuffer left at {b} bits per pixel"),
            };
            rgb.extend_from_slice(&px);
        }
    }
    Dump { w, h, rgb, bpp }
}

impl Dump {
    fn px(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.w + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
    fn near(&self, x: usize, y: usize, c: [u8; 3]) -> bool {
        self.px(x, y).iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 8)
    }
    /// Share of the middle area (between the bars) that is background.
    fn background_share(&self) -> f64 {
        let (y0, y1) = (self.h / 8, self.h * 7 / 8);
        let mut bg = 0;
        let mut n = 0;
        for y in (y0..y1).step_by(3) {
            for x in (0..self.w).step_by(3) {
                n += 1;
                if self.near(x, y, BG) {
                    bg += 1;
                }
            }
        }
        bg as f64 / n as f64
    }
}

fn led_samples(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read_to_string(dir.join(name)).unwrap().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[test]
#[ignore = "boots a qemu guest (about two minutes under TCG); .ci/run runs it"]
fn framebuffer_led_and_button_on_real_kernel_devices() {
    let guest = Guest::host();
    let share = guest_share(&guest, "mien-board-", "tests/guest/board-io.sh");
    let s = share.path();
    std::fs::create_dir_all(s.join("clip")).unwrap();
    for p in images(&repo("samples/clip")).iter().take(3) {
        std::fs::copy(p, s.join("clip").join(p.file_name().unwrap())).unwrap();
    }
    // Under TCG a detection takes ~100x longer than on the board: widen the budgets, keep everything else.
    let cfg = replaced(
        mien::config::DEFAULT_PROFILE,
        &[
            ("timeout_ms = 1000", "timeout_ms = 60000"),
            ("timeout_ms = 2000", "timeout_ms = 20000"),
            EMULATED_MIN_FACE,
            guest_one_detector(),
            ("kind = \"none\"", "kind = \"framebuffer\""),
            ("refresh_ms = 200", "refresh_ms = 20"),
            ("chip = \"/dev/gpiochip0\"", "chip = \"@CHIP@\"\nled = 3\nbutton = 5\nbutton_active_low = true"),
        ],
    );
    let check = mien::config::Config::from_toml(&cfg.replace("@CHIP@", "/dev/gpiochip0"), "board.toml").expect("valid config");
    assert_eq!((check.display.kind, check.gpio.led, check.display.refresh_ms), (mien::display::DisplayKind::Framebuffer, Some(3), 20));
    std::fs::write(s.join("board.toml"), cfg).unwrap();

    let (st, console) = run_guest(&guest, s, &[]);
    let out = s.join("out");
    let logs: String = ["mien.log", "mien-fault.log"]
        .iter()
        .map(|f| format!("--- {f}\n{}\n", std::fs::read_to_string(out.join(f)).unwrap_or_default()))
        .collect();
    assert!(st.success(), "guest test failed ({st}):\n{console}\n{logs}");

    let doctor = std::fs::read_to_string(out.join("doctor.log")).unwrap();
    for want in ["PASS  display", "Virtual FB", "PASS  gpio", "led line 3, button line 5", "0 failed"] {
        assert!(doctor.contains(want), "mien doctor: no {want:?} in\n{doctor}");
    }

    // The framebuffer came up in 8 bpp; mien switched it to true colour and drew the overlay.
    let log = std::fs::read_to_string(out.join("mien.log")).unwrap();
    let off = offsets(&log);
    let on = read_dump(&out, "fb-preview", off);
    assert!(on.bpp == 32 || on.bpp == 16, "bpp {}", on.bpp);
    let img = repo("target/board-guest-fb0.png");
    image::save_buffer(&img, &on.rgb, on.w as u32, on.h as u32, image::ExtendedColorType::Rgb8).unwrap();
    assert!(on.near(on.w / 2, 1, GREEN), "privacy bar not green: {:?} (see {})\n{logs}", on.px(on.w / 2, 1), img.display());
    assert!(on.background_share() < 0.5, "no preview on screen ({:.2} background)", on.background_share());
    // The button hid the preview.
    let hidden = read_dump(&out, "fb-nopreview", off);
    assert!(hidden.near(hidden.w / 2, 1, GREEN));
    assert!(hidden.background_share() > 0.9, "preview still shown ({:.2} background)", hidden.background_share());
    // No detector: red bar, and the preview is the mask (the frame never shows).
    let fault = read_dump(&out, "fb-fault", off);
    assert!(fault.near(fault.w / 2, 1, RED), "privacy fault bar not red: {:?}", fault.px(fault.w / 2, 1));
    let fill = mien::config::Config::embedded_default().privacy.fill_rgb;
    assert!(fault.near(fault.w / 2, fault.h / 2, fill), "masked preview: {:?}", fault.px(fault.w / 2, fault.h / 2));

    // LED: steady on while all is well; fast blink while frames are masked whole.
    let run = led_samples(&out, "led-running.txt");
    assert!(run.len() >= 50 && run.iter().all(|&v| v == 1), "LED not steady on: {run:?}");
    let f = led_samples(&out, "led-fault.txt");
    let edges = f.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(edges >= 6, "LED does not blink fast on a privacy fault ({edges} edges): {f:?}");

    let labels = std::fs::read_to_string(out.join("labels.jsonl")).unwrap_or_default();
    assert!(labels.lines().count() >= 1, "no labels from the running pipeline\n{logs}");
    let faulty = std::fs::read_to_string(out.join("labels-fault.jsonl")).unwrap_or_default();
    assert_eq!(faulty.lines().count(), 0, "labels without a detector");
}
