//! Saving blurred frames for technicians who check the privacy on site (off by default).
//! It only accepts `Protected` frames: what it writes has been through the privacy stage.

use crate::privacy::Protected;
use std::path::{Path, PathBuf};

pub struct FrameSaver {
    dir: PathBuf,
}

impl FrameSaver {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(FrameSaver { dir: dir.into() })
    }

    /// Write `frame_NNNNNN.png` (lossless, so a check sees exactly what privacy left).
    pub fn save(&self, p: &Protected<'_>) -> Result<PathBuf, image::ImageError> {
        let f = p.frame();
        let path = self.dir.join(format!("frame_{:06}.png", f.seq));
        image::save_buffer(&path, &f.data, f.width, f.height, image::ExtendedColorType::Rgb8)?;
        Ok(path)
    }
}
