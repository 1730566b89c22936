//! A site's unlabelled faces as training data: every image of a folder goes through the firmware's own crop path
//! (the profile's detector, largest face, the expression crop box, roll alignment, 48x48), and the crops are
//! written as grey faces in FER+'s layout (`images.u8`: 48x48 bytes each; `labels.csv` with the file each came
//! from), so the recipe can pretrain on them without labels (`models/expression/train.sh ssl --extra DIR`).
//!
//!     cargo run --release --example face_crops -- --images ../shared/data/site-colour/images \
//!         --out models/expression/work/site
//!
//! The crops are what the model would read on the device, turned to grey with the firmware's own luma
//! (`expression::grey01`). They are training data for a workstation: keep them where the images came from
//! (models/expression/work is ignored by git), never in the repository.

use clap::Parser;
use mien::eval::{CropMode, Cropper, Dataset, Item, ItemSource};
use mien::expression::MienExpression;
use mien::vocab::Emotion;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// Folder of images (jpg, jpeg, png), read in name order.
    #[arg(long)]
    images: PathBuf,
    /// Output folder: images.u8 and labels.csv.
    #[arg(long)]
    out: PathBuf,
    /// Profile whose detector and `expression.align` are used (default: the embedded one).
    #[arg(long)]
    config: Option<PathBuf>,
}

const SIZE: u32 = 48;

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    mien::model::keep_freed_memory();
    let cfg = match &a.config {
        Some(p) => mien::config::Config::load(p)?,
        None => mien::config::Config::embedded_default(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&a.images)
        .map_err(|e| anyhow::anyhow!("--images {}: {e}", a.images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
            ["jpg", "jpeg", "png"].contains(&ext.as_str())
        })
        .collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!("--images {}: no jpg, jpeg or png files", a.images.display());
    }
    // The label is never read: these faces are for self-supervised pretraining.
    let items = files
        .iter()
        .map(|p| Item {
            name: p.display().to_string(),
            label: Emotion::Neutral,
            source: ItemSource::File(p.clone()),
        })
        .collect();
    let ds = Dataset { items, skipped: 0 };
    let mut detector = mien::detect::load(&cfg.detect.labelling())?;
    let mut cropper =
        Cropper::new(CropMode::Detect { detector: detector.as_mut(), align: cfg.expression.align }, (SIZE, SIZE));
    std::fs::create_dir_all(&a.out)?;
    let mut bytes = Vec::new();
    let mut csv = String::from("path,split,label\n");
    let mut grey = vec![0f32; (SIZE * SIZE) as usize];
    for item in &ds.items {
        let Some(crop) = cropper.crop(item, MienExpression::crop_box_for)? else { continue };
        mien::expression::grey01(crop.rgb(), &mut grey);
        bytes.extend(grey.iter().map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8));
        csv.push_str(&format!("{},extra,unknown\n", item.name.replace(',', "_")));
    }
    let n = bytes.len() / (SIZE * SIZE) as usize;
    std::fs::File::create(a.out.join("images.u8"))?.write_all(&bytes)?;
    std::fs::write(a.out.join("labels.csv"), csv)?;
    println!(
        "{n} faces of {} images written to {} ({} without a detected face, {} unreadable)",
        files.len(),
        a.out.display(),
        cropper.left_out.no_face,
        cropper.left_out.unreadable.len()
    );
    Ok(())
}
