//! SPI LCD panels (ST7789, ILI9341 class) through mipidsi, on linux-embedded-hal's spidev and GPIO
//! character-device pins. The panel code is generic over embedded-hal 1.0's `SpiDevice` and `OutputPin`, so
//! the same code drives `/dev/spidevB.C` on a board and a recording bus in the tests.

use super::{Canvas, DisplayConfig, DisplayError, DisplayKind, Screen};
use embedded_graphics::pixelcolor::Rgb565;
use embedded_hal::digital::OutputPin;
use embedded_hal::spi::SpiDevice;
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};
use linux_embedded_hal::{CdevPin, Delay, SpidevDevice};
use mipidsi::interface::SpiInterface;
use mipidsi::models::{Model, ILI9341Rgb565, ST7789};
use mipidsi::options::{ColorInversion, Orientation, Rotation};

/// An optional output line (reset, backlight): setting an absent one does nothing.
pub struct OptPin<P>(pub Option<P>);

impl<P: OutputPin> embedded_hal::digital::ErrorType for OptPin<P> {
    type Error = P::Error;
}

impl<P: OutputPin> OutputPin for OptPin<P> {
    fn set_low(&mut self) -> Result<(), P::Error> {
        self.0.as_mut().map_or(Ok(()), |p| p.set_low())
    }
    fn set_high(&mut self) -> Result<(), P::Error> {
        self.0.as_mut().map_or(Ok(()), |p| p.set_high())
    }
}

/// One initialised panel.
pub struct Panel<SPI: SpiDevice, DC: OutputPin, RST: OutputPin, M: Model<ColorFormat = Rgb565>> {
    display: mipidsi::Display<SpiInterface<'static, SPI, DC>, M, RST>,
    size: (u32, u32),
    name: String,
}

impl<SPI, DC, RST, M> Panel<SPI, DC, RST, M>
where
    SPI: SpiDevice,
    DC: OutputPin,
    RST: OutputPin,
    M: Model<ColorFormat = Rgb565>,
{
    /// Reset and initialise the panel. `width` x `height` is its native (unrotated) size.
    #[allow(clippy::too_many_arguments)]
    pub fn init(
        model: M,
        spi: SPI,
        dc: DC,
        rst: RST,
        width: u16,
        height: u16,
        rotation: u32,
        invert: bool,
        name: String,
        delay: &mut impl embedded_hal::delay::DelayNs,
    ) -> Result<Self, DisplayError> {
        // The interface's transfer buffer lives as long as the process (one per panel, opened once).
        let buf: &'static mut [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
        let rot = Rotation::try_from_degree(rotation as i32)
            .map_err(|_| DisplayError::Open { device: name.clone(), msg: format!("rotation {rotation}") })?;
        let display = mipidsi::Builder::new(model, SpiInterface::new(spi, dc, buf))
            .display_size(width, height)
            .orientation(Orientation::new().rotate(rot))
            .invert_colors(if invert { ColorInversion::Inverted } else { ColorInversion::Normal })
            .reset_pin(rst)
            .init(delay)
            .map_err(|e| DisplayError::Open { device: name.clone(), msg: format!("panel init failed: {e:?}") })?;
        let size = if rotation % 180 == 90 { (height as u32, width as u32) } else { (width as u32, height as u32) };
        Ok(Panel { display, size, name })
    }
}

impl<SPI, DC, RST, M> Screen for Panel<SPI, DC, RST, M>
where
    SPI: SpiDevice + Send,
    DC: OutputPin + Send,
    RST: OutputPin + Send,
    M: Model<ColorFormat = Rgb565> + Send,
{
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn present(&mut self, canvas: &Canvas) -> Result<(), DisplayError> {
        let (w, h) = (canvas.width().min(self.size.0), canvas.height().min(self.size.1));
        if w == 0 || h == 0 {
            return Ok(());
        }
        self.display
            .set_pixels(0, 0, (w - 1) as u16, (h - 1) as u16, canvas.rgb565())
            .map_err(|e| DisplayError::Io { device: self.name.clone(), msg: format!("{e:?}") })
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// Open the SPI panel a board profile names: spidev bus, GPIO lines for D/C, reset and backlight.
pub fn open(cfg: &DisplayConfig) -> Result<Box<dyn Screen>, DisplayError> {
    let oerr = |what: &str, e: &dyn std::fmt::Display| DisplayError::Open { device: cfg.device.clone(), msg: format!("{what}: {e}") };
    let mut spi = SpidevDevice::open(&cfg.device).map_err(|e| oerr("spidev", &e))?;
    let opts = SpidevOptions::new().bits_per_word(8).max_speed_hz(cfg.spi_hz).mode(SpiModeFlags::SPI_MODE_0).build();
    spi.0.configure(&opts).map_err(|e| oerr("spidev configure", &e))?;
    let mut chip = Chip::new(&cfg.gpio_chip).map_err(|e| oerr(&cfg.gpio_chip, &e))?;
    let mut out = |pin: Option<u32>, what: &str| -> Result<Option<CdevPin>, DisplayError> {
        let Some(pin) = pin else { return Ok(None) };
        let line = chip.get_line(pin).map_err(|e| oerr(&format!("{} line {pin} ({what})", cfg.gpio_chip), &e))?;
        let h = line
            .request(LineRequestFlags::OUTPUT, 1, &format!("mien-{what}"))
            .map_err(|e| oerr(&format!("{} line {pin} ({what})", cfg.gpio_chip), &e))?;
        CdevPin::new(h).map(Some).map_err(|e| oerr(what, &e))
    };
    let dc = out(cfg.dc_pin, "dc")?.ok_or_else(|| oerr("display.dc_pin", &"not set"))?;
    let rst = OptPin(out(cfg.reset_pin, "reset")?);
    // The backlight line is driven high and held for the life of the process.
    if let Some(bl) = out(cfg.backlight_pin, "backlight")? {
        std::mem::forget(bl);
    }
    let (w, h) = (cfg.width as u16, cfg.height as u16);
    let name = |m: &str| format!("{m} {}x{} on {}", cfg.width, cfg.height, cfg.device);
    let mut delay = Delay;
    Ok(match cfg.kind {
        DisplayKind::St7789 => Box::new(Panel::init(
            ST7789, spi, dc, rst, w, h, cfg.rotation, cfg.invert_colors, name("st7789"), &mut delay,
        )?),
        DisplayKind::Ili9341 => Box::new(Panel::init(
            ILI9341Rgb565, spi, dc, rst, w, h, cfg.rotation, cfg.invert_colors, name("ili9341"), &mut delay,
        )?),
        other => return Err(oerr("display.kind", &format!("{other:?} is not an SPI panel"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_graphics::pixelcolor::raw::ToBytes;
    use embedded_hal::spi::Operation;
    use std::sync::{Arc, Mutex};

    /// Records every byte written on the bus, with the D/C line's level at the time (low = command).
    #[derive(Clone, Default)]
    struct Wire(Arc<Mutex<(bool, Vec<(bool, u8)>)>>);

    impl embedded_hal::spi::ErrorType for Wire {
        type Error = core::convert::Infallible;
    }
    impl SpiDevice for Wire {
        fn transaction(&mut self, ops: &mut [Operation<'_, u8>]) -> Result<(), Self::Error> {
            let mut g = self.0.lock().unwrap();
            let dc = g.0;
            for op in ops {
                if let Operation::Write(b) = op {
                    g.1.extend(b.iter().map(|&x| (dc, x)));
                }
            }
            Ok(())
        }
    }
    struct Dc(Wire);
    impl embedded_hal::digital::ErrorType for Dc {
        type Error = core::convert::Infallible;
    }
    impl OutputPin for Dc {
        fn set_low(&mut self) -> Result<(), Self::Error> {
            self.0 .0.lock().unwrap().0 = false;
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Self::Error> {
            self.0 .0.lock().unwrap().0 = true;
            Ok(())
        }
    }
    struct NoDelay;
    impl embedded_hal::delay::DelayNs for NoDelay {
        fn delay_ns(&mut self, _: u32) {}
    }

    /// Commands (D/C low) with the data bytes that follow each.
    fn commands(log: &[(bool, u8)]) -> Vec<(u8, Vec<u8>)> {
        let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
        for &(dc, b) in log {
            if !dc {
                out.push((b, Vec::new()));
            } else if let Some(last) = out.last_mut() {
                last.1.push(b);
            }
        }
        out
    }

    #[test]
    fn st7789_gets_the_canvas_pixels_in_its_window() {
        let wire = Wire::default();
        let mut p = Panel::init(
            ST7789, wire.clone(), Dc(wire.clone()), OptPin::<Dc>(None), 240, 240, 0, true, "st7789 test".into(), &mut NoDelay,
        )
        .unwrap();
        assert_eq!(p.size(), (240, 240));
        let init = commands(&wire.0.lock().unwrap().1);
        assert!(init.iter().any(|(c, _)| *c == 0x11), "no SLPOUT in init");
        assert!(init.iter().any(|(c, _)| *c == 0x29), "no DISPON in init");
        assert!(init.iter().any(|(c, _)| *c == 0x21), "inversion asked for but no INVON");
        wire.0.lock().unwrap().1.clear();

        let mut canvas = Canvas::new(240, 240);
        for (i, b) in canvas.rgb.iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        p.present(&canvas).unwrap();
        let cmds = commands(&wire.0.lock().unwrap().1);
        let get = |c: u8| cmds.iter().find(|(x, _)| *x == c).map(|(_, d)| d.clone()).unwrap();
        assert_eq!(get(0x2A), vec![0, 0, 0, 239], "column window");
        assert_eq!(get(0x2B), vec![0, 0, 0, 239], "row window");
        let want: Vec<u8> = canvas.rgb565().flat_map(|c| c.to_be_bytes()).collect();
        assert_eq!(get(0x2C), want, "RAMWR data is the canvas in RGB565, big-endian");
    }

    #[test]
    fn rotated_ili9341_is_landscape() {
        let wire = Wire::default();
        let p = Panel::init(
            ILI9341Rgb565, wire.clone(), Dc(wire.clone()), OptPin::<Dc>(None), 240, 320, 90, false, "ili".into(), &mut NoDelay,
        )
        .unwrap();
        assert_eq!(p.size(), (320, 240));
    }

    #[test]
    fn a_missing_spidev_is_named() {
        let cfg = DisplayConfig { kind: DisplayKind::St7789, device: "/dev/spidev9.9".into(), dc_pin: Some(25), ..Default::default() };
        let e = open(&cfg).err().unwrap().to_string();
        assert!(e.contains("/dev/spidev9.9"), "{e}");
    }
}
