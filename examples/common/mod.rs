//! What the examples share: a small seeded generator, and the images they build frames from.
#![allow(dead_code)] // each example uses what it needs

use mien::frame::Frame;
use std::path::{Path, PathBuf};

/// A small deterministic generator (SplitMix64): the same seed gives the same frames on every machine.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

/// An image file as an RGB frame (the examples' inputs are known-good files: a bad one is a panic with its name).
pub fn read_rgb(p: &Path) -> Frame {
    let img = image::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).into_rgb8();
    let mut f = Frame::new(img.width(), img.height());
    f.data.copy_from_slice(img.as_raw());
    f
}

/// The colour close-ups of `../shared/data/site-colour`, in name order.
pub fn site_colour_files(shared: &Path) -> Vec<PathBuf> {
    let dir = shared.join("data/site-colour/images");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    v.sort();
    v
}
