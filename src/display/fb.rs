//! The Linux framebuffer (`/dev/fbN`): HDMI on a Pi, fbtft panels, `vfb` in the test guest.
//!
//! The screen's geometry and pixel layout come from the kernel (FBIOGET_VSCREENINFO / FBIOGET_FSCREENINFO);
//! 16, 24 and 32 bits per pixel are packed from the reported colour bitfields. A palette (8 bpp) mode is
//! switched to 32 or 16 bpp if the driver allows it, and refused with a clear error otherwise.

use super::{Canvas, DisplayError, Screen};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct Bitfield {
    offset: u32,
    length: u32,
    msb_right: u32,
}

/// `struct fb_var_screeninfo` (linux/fb.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct VarInfo {
    xres: u32,
    yres: u32,
    xres_virtual: u32,
    yres_virtual: u32,
    xoffset: u32,
    yoffset: u32,
    bits_per_pixel: u32,
    grayscale: u32,
    red: Bitfield,
    green: Bitfield,
    blue: Bitfield,
    transp: Bitfield,
    nonstd: u32,
    activate: u32,
    height: u32,
    width: u32,
    accel_flags: u32,
    pixclock: u32,
    left_margin: u32,
    right_margin: u32,
    upper_margin: u32,
    lower_margin: u32,
    hsync_len: u32,
    vsync_len: u32,
    sync: u32,
    vmode: u32,
    rotate: u32,
    colorspace: u32,
    reserved: [u32; 4],
}

/// `struct fb_fix_screeninfo` (linux/fb.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct FixInfo {
    id: [u8; 16],
    smem_start: libc::c_ulong,
    smem_len: u32,
    type_: u32,
    type_aux: u32,
    visual: u32,
    xpanstep: u16,
    ypanstep: u16,
    ywrapstep: u16,
    line_length: u32,
    mmio_start: libc::c_ulong,
    mmio_len: u32,
    accel: u32,
    capabilities: u16,
    reserved: [u16; 2],
}

const FBIOGET_VSCREENINFO: u32 = 0x4600;
const FBIOPUT_VSCREENINFO: u32 = 0x4601;
const FBIOGET_FSCREENINFO: u32 = 0x4602;

/// How one pixel is packed: bytes per pixel and each channel's (offset, length) in a little-endian word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelLayout {
    pub bytes: usize,
    pub red: (u32, u32),
    pub green: (u32, u32),
    pub blue: (u32, u32),
}

impl PixelLayout {
    pub const RGB565: PixelLayout = PixelLayout { bytes: 2, red: (11, 5), green: (5, 6), blue: (0, 5) };
    pub const XRGB8888: PixelLayout = PixelLayout { bytes: 4, red: (16, 8), green: (8, 8), blue: (0, 8) };

    /// Pack one RGB888 pixel into `out` (`bytes` long, little-endian as the CPU writes it).
    #[inline]
    pub fn pack(&self, rgb: &[u8], out: &mut [u8]) {
        let ch = |v: u8, (off, len): (u32, u32)| ((v as u32) >> (8 - len.min(8))) << off;
        let w = ch(rgb[0], self.red) | ch(rgb[1], self.green) | ch(rgb[2], self.blue);
        out.copy_from_slice(&w.to_le_bytes()[..self.bytes]);
    }

    /// Convert a canvas into framebuffer rows of `line_length` bytes.
    pub fn pack_canvas(&self, canvas: &Canvas, line_length: usize, out: &mut Vec<u8>) {
        let (w, h) = (canvas.width() as usize, canvas.height() as usize);
        out.resize(line_length * h, 0);
        for (y, row) in canvas.rgb().chunks_exact(w * 3).enumerate() {
            let dst = &mut out[y * line_length..y * line_length + w * self.bytes];
            for (px, o) in row.chunks_exact(3).zip(dst.chunks_exact_mut(self.bytes)) {
                self.pack(px, o);
            }
        }
    }
}

pub struct Framebuffer {
    file: File,
    path: String,
    id: String,
    width: u32,
    height: u32,
    line_length: usize,
    /// Byte offset of the visible page (yoffset * line_length).
    offset: u64,
    layout: PixelLayout,
    buf: Vec<u8>,
}

fn ioctl<T>(file: &File, req: u32, arg: *mut T) -> std::io::Result<()> {
    // SAFETY: `arg` points to a live #[repr(C)] struct of the type the request reads or writes.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), req as _, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Framebuffer {
    pub fn open(path: &Path) -> Result<Framebuffer, DisplayError> {
        let device = path.display().to_string();
        let err = |msg: String| DisplayError::Open { device: device.clone(), msg };
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| err(e.to_string()))?;
        let mut var = VarInfo::default();
        ioctl(&file, FBIOGET_VSCREENINFO, &mut var).map_err(|e| err(format!("not a framebuffer ({e})")))?;
        if !matches!(var.bits_per_pixel, 16 | 24 | 32) {
            // Palette or mono mode: ask for a true-colour one.
            let was = var.bits_per_pixel;
            let mut ok = false;
            for bpp in [32, 16] {
                let mut want = var;
                want.bits_per_pixel = bpp;
                if ioctl(&file, FBIOPUT_VSCREENINFO, &mut want).is_ok() {
                    ioctl(&file, FBIOGET_VSCREENINFO, &mut var).map_err(|e| err(e.to_string()))?;
                    ok = matches!(var.bits_per_pixel, 16 | 24 | 32);
                    if ok {
                        log::info!("display {device}: switched from {was} to {} bits per pixel", var.bits_per_pixel);
                        break;
                    }
                }
            }
            if !ok {
                return Err(err(format!(
                    "{was} bits per pixel is not supported (16, 24 or 32 needed) and the driver refused to switch"
                )));
            }
        }
        // SAFETY: FixInfo is plain old data; all-zero is a valid value.
        let mut fix: FixInfo = unsafe { std::mem::zeroed() };
        ioctl(&file, FBIOGET_FSCREENINFO, &mut fix).map_err(|e| err(e.to_string()))?;
        let bytes = var.bits_per_pixel as usize / 8;
        let layout = PixelLayout {
            bytes,
            red: (var.red.offset, var.red.length),
            green: (var.green.offset, var.green.length),
            blue: (var.blue.offset, var.blue.length),
        };
        if [layout.red, layout.green, layout.blue].iter().any(|&(o, l)| l == 0 || l > 8 || o + l > 8 * bytes as u32) {
            return Err(err(format!("colour layout {layout:?} is not a true-colour format")));
        }
        let line_length = fix.line_length as usize;
        if var.xres == 0 || var.yres == 0 || line_length < var.xres as usize * bytes {
            return Err(err(format!("bad geometry {}x{} line {}", var.xres, var.yres, line_length)));
        }
        let offset = var.yoffset as u64 * line_length as u64 + var.xoffset as u64 * bytes as u64;
        let need = offset + line_length as u64 * var.yres as u64;
        if fix.smem_len != 0 && need > fix.smem_len as u64 {
            return Err(err(format!("visible page ends at {need} bytes, past the {} byte framebuffer", fix.smem_len)));
        }
        let id = String::from_utf8_lossy(&fix.id).trim_end_matches('\0').to_string();
        Ok(Framebuffer {
            file,
            path: device,
            id,
            width: var.xres,
            height: var.yres,
            line_length,
            offset,
            layout,
            buf: Vec::new(),
        })
    }

    pub fn layout(&self) -> PixelLayout {
        self.layout
    }
}

impl Screen for Framebuffer {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn present(&mut self, canvas: &Canvas) -> Result<(), DisplayError> {
        self.layout.pack_canvas(canvas, self.line_length, &mut self.buf);
        self.file
            .write_all_at(&self.buf, self.offset)
            .map_err(|e| DisplayError::Io { device: self.path.clone(), msg: e.to_string() })
    }

    fn describe(&self) -> String {
        let l = &self.layout;
        format!(
            "framebuffer {} ({}, {} bpp, r{}:{} g{}:{} b{}:{})",
            self.path, self.id, l.bytes * 8, l.red.0, l.red.1, l.green.0, l.green.1, l.blue.0, l.blue.1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_linux_structs() {
        assert_eq!(std::mem::size_of::<VarInfo>(), 160);
        // 68 bytes on 32-bit targets, 80 on 64-bit (two unsigned longs and padding).
        let want = if cfg!(target_pointer_width = "64") { 80 } else { 68 };
        assert_eq!(std::mem::size_of::<FixInfo>(), want);
    }

    #[test]
    fn packs_rgb565_and_xrgb8888() {
        let mut o = [0u8; 2];
        PixelLayout::RGB565.pack(&[255, 0, 0], &mut o);
        assert_eq!(u16::from_le_bytes(o), 0xF800);
        PixelLayout::RGB565.pack(&[0, 255, 0], &mut o);
        assert_eq!(u16::from_le_bytes(o), 0x07E0);
        PixelLayout::RGB565.pack(&[0, 0, 255], &mut o);
        assert_eq!(u16::from_le_bytes(o), 0x001F);
        let mut o = [0u8; 4];
        PixelLayout::XRGB8888.pack(&[1, 2, 3], &mut o);
        assert_eq!(u32::from_le_bytes(o), 0x0001_0203);
    }

    #[test]
    fn pack_canvas_honours_line_length() {
        let mut c = Canvas::new(3, 2);
        c.rgb[..3].copy_from_slice(&[255, 255, 255]);
        let mut out = Vec::new();
        PixelLayout::RGB565.pack_canvas(&c, 8, &mut out);
        assert_eq!(out.len(), 16);
        assert_eq!(&out[..2], &[0xFF, 0xFF]);
        assert_eq!(&out[2..8], &[0; 6]);
    }

    #[test]
    fn a_file_that_is_not_a_framebuffer_is_refused() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = Framebuffer::open(f.path()).err().expect("a plain file is no framebuffer").to_string();
        assert!(e.contains("not a framebuffer"), "{e}");
        let e = Framebuffer::open(Path::new("/dev/no-such-fb")).err().unwrap().to_string();
        assert!(e.contains("/dev/no-such-fb"), "{e}");
    }
}
