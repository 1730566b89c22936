//! Loading ONNX models into tract: checked against `SHA256SUMS`, optimized once, with fixed input shapes.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tract_onnx::prelude::*;

mod ops;

pub type Runnable = Arc<TypedRunnableModel>;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model {path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("model {path}: no checksum: {sums} has no line for {name} (models must be listed in SHA256SUMS)")]
    NotListed { path: PathBuf, sums: PathBuf, name: String },
    #[error("model {path}: cannot read checksums {sums}: {source}")]
    Sums { path: PathBuf, sums: PathBuf, source: std::io::Error },
    #[error("model {path}: SHA-256 is {actual}, SHA256SUMS says {expected} (truncated or corrupt file?)")]
    Mismatch { path: PathBuf, expected: String, actual: String },
    #[error("model {path}: tract cannot load it: {msg}")]
    Tract { path: PathBuf, msg: String },
}

/// A model file checked against the `SHA256SUMS` next to it.
pub struct VerifiedModel {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: Vec<u8>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Read `path` and check its SHA-256 against `SHA256SUMS` in the same directory (`sha256sum` format).
pub fn read_verified(path: &Path) -> Result<VerifiedModel, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Read { path: path.into(), source })?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sums = path.parent().unwrap_or(Path::new(".")).join("SHA256SUMS");
    let text = std::fs::read_to_string(&sums)
        .map_err(|source| ModelError::Sums { path: path.into(), sums: sums.clone(), source })?;
    let expected = text
        .lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(_, f)| f.trim().trim_start_matches('*') == name)
        .map(|(h, _)| h.to_ascii_lowercase())
        .ok_or_else(|| ModelError::NotListed { path: path.into(), sums: sums.clone(), name: name.clone() })?;
    let actual = sha256_hex(&bytes);
    if actual != expected {
        return Err(ModelError::Mismatch { path: path.into(), expected, actual });
    }
    Ok(VerifiedModel { path: path.into(), sha256: actual, bytes })
}

/// A verified model file parsed by tract, not yet optimized: its input can be looked at before choosing how to
/// run it. Every loader goes through this, so a file is read and hashed once.
pub struct Parsed {
    pub path: PathBuf,
    pub sha256: String,
    model: InferenceModel,
}

/// A runnable model with the f32 input shape it was optimized for.
pub struct Loaded {
    pub model: Runnable,
    pub sha256: String,
    pub shape: Vec<usize>,
    pub input_name: String,
}

impl Parsed {
    pub fn open(path: &Path) -> Result<Parsed, ModelError> {
        Self::from_verified(read_verified(path)?)
    }

    /// Parse a file already read and checked (when the caller needs its bytes too).
    pub fn from_verified(m: VerifiedModel) -> Result<Parsed, ModelError> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut m.bytes.as_slice())
            .map_err(|e| ModelError::Tract { path: m.path.clone(), msg: format!("{e:#}") })?;
        Ok(Parsed { path: m.path, sha256: m.sha256, model })
    }

    /// Optimize a copy for a fixed f32 input `shape` whose output is the tensor named `output` instead of the
    /// file's own outputs (a classifier's encoder: the graph cut at its head's input).
    pub fn runnable_with_output(&self, output: &str, shape: &[usize]) -> Result<Runnable, ModelError> {
        let mut m = self.model.clone();
        m.select_outputs_by_name([output])
            .and_then(|()| optimized_for(m, shape))
            .map_err(|e| self.err(format!("output {output:?}, input {shape:?}: {e:#}")))
    }

    fn err(&self, msg: String) -> ModelError {
        ModelError::Tract { path: self.path.clone(), msg }
    }

    /// The first input's name and declared dimensions (`None` where symbolic or unknown).
    pub fn input(&self) -> Result<(String, Vec<Option<usize>>), ModelError> {
        use tract_onnx::tract_hir::infer::Factoid;
        let go = || -> TractResult<(String, Vec<Option<usize>>)> {
            let name = self.model.node(self.model.input_outlets()?[0].node).name.clone();
            let dims = self.model.input_fact(0)?.shape.dims().map(|d| d.concretize().and_then(|d| d.as_i64()).map(|d| d as usize));
            Ok((name, dims.collect()))
        };
        go().map_err(|e| self.err(format!("{e:#}")))
    }

    /// Optimize a copy for a fixed f32 input `shape`, keeping this parsed model for other shapes (a detector that
    /// runs one fully convolutional model at several input sizes).
    pub fn runnable_for(&self, shape: &[usize]) -> Result<Runnable, ModelError> {
        self.runnable_for_ops(shape, OWN_OPS.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// `runnable_for`, with mien's own ops (`ops`) or with tract's alone.
    fn runnable_for_ops(&self, shape: &[usize], own: bool) -> Result<Runnable, ModelError> {
        let mut m = self.model.clone();
        // The file may record every intermediate shape for the size it was made for (tflite2onnx does): forget
        // them, so that tract infers them for this input.
        let go = |m: &mut InferenceModel| -> TractResult<()> {
            for id in 0..m.nodes().len() {
                if m.node(id).op_is::<tract_onnx::tract_hir::ops::konst::Const>() {
                    continue;
                }
                for slot in 0..m.node(id).outputs.len() {
                    m.set_outlet_fact(OutletId::new(id, slot), InferenceFact::default())?;
                }
            }
            Ok(())
        };
        go(&mut m).map_err(|e| self.err(format!("{e:#}")))?;
        optimized_with(m, shape, own).map_err(|e| self.err(format!("input {shape:?}: {e:#}")))
    }

    /// A fresh running state for a plan made from this model (one per thread: the plan itself is shared).
    pub fn state_of(&self, plan: &Runnable) -> Result<State, ModelError> {
        plan.spawn().map_err(|e| self.err(format!("{e:#}")))
    }

    /// Optimize for `shape` (None: the shape the file declares, which must then be fully fixed).
    pub fn load(self, shape: Option<&[usize]>) -> Result<Loaded, ModelError> {
        let (input_name, dims) = self.input()?;
        let shape: Vec<usize> = match shape {
            Some(s) => s.to_vec(),
            None => dims
                .iter()
                .copied()
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| self.err(format!("input shape {dims:?} is not fixed")))?,
        };
        let Parsed { path, sha256, model } = self;
        let model = optimized_for(model, &shape).map_err(|e| ModelError::Tract { path, msg: format!("{e:#}") })?;
        Ok(Loaded { model, sha256, shape, input_name })
    }
}

/// Keep freed memory for the next frame instead of handing it back to the kernel (glibc; elsewhere a no-op).
/// tract allocates every op's output afresh, and the detector's large pyramid level makes outputs of ~20 MB. glibc
/// serves those with `mmap` and unmaps them when freed, or trims its heap, so every frame faulted its activations
/// back in, zeroed by the kernel: on the default profile about 19,000 page faults (75 MB) a frame and a sixth of
/// the time spent in the kernel (`/usr/bin/time mien run` on the 24-frame clip). With blocks up to glibc's largest mmap threshold kept on the heap, no
/// trimming and one arena for every thread (detection workers free what they allocate, so thread arenas only
/// multiplied the kept memory), the frames reuse the same pages. Call it before starting threads. With
/// `MIEN_MALLOC_UNTUNED` set in the environment it does nothing, to measure the setting against glibc as it ships.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // To measure the setting: leave glibc's malloc as it ships (docs/performance.md, "The allocator").
            if std::env::var_os("MIEN_MALLOC_UNTUNED").is_some() {
                log::info!("MIEN_MALLOC_UNTUNED: glibc's malloc left as it ships");
                return;
            }
            // glibc's DEFAULT_MMAP_THRESHOLD_MAX: 32 MiB on 64-bit, 16 MiB on 32-bit; larger values are refused.
            let most = (4 << 20) * std::mem::size_of::<usize>() as i32;
            let ok = unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, most) == 1
                    && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                    && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
            };
            if !ok {
                log::warn!("malloc tuning refused (mallopt): frames will fault their buffers in again");
            }
        });
    }
}

static OWN_OPS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether models optimized from now on get mien's own ops where tract's are slow (`ops`; on by default). Off
/// only to measure them against tract's (`examples/op_profile --baseline`).
pub fn use_own_ops(on: bool) {
    OWN_OPS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// `model` with its first input fixed to f32 `shape`, optimized and made runnable, with mien's own ops swapped
/// in where tract's are slow (`ops`).
fn optimized_for(model: InferenceModel, shape: &[usize]) -> TractResult<Runnable> {
    optimized_with(model, shape, OWN_OPS.load(std::sync::atomic::Ordering::Relaxed))
}

fn optimized_with(model: InferenceModel, shape: &[usize], own: bool) -> TractResult<Runnable> {
    let mut typed = model.with_input_fact(0, f32::fact(shape).into())?.into_typed()?;
    if own {
        typed.declutter()?;
        ops::swap_in_decluttered(&mut typed)?;
    }
    let mut typed = typed.into_optimized()?;
    if own {
        ops::swap_in_optimized(&mut typed)?;
    }
    typed.into_runnable()
}

/// Load a verified ONNX model with one fixed f32 input shape, optimize it and make it runnable.
pub fn load_f32(path: &Path, input_shape: &[usize]) -> Result<(Runnable, String), ModelError> {
    let l = Parsed::open(path)?.load(Some(input_shape))?;
    Ok((l.model, l.sha256))
}

/// One output of a run as a flat f32 slice.
pub fn output_f32(v: &TValue) -> TractResult<&[f32]> {
    v.try_as_plain_ram()?.as_slice::<f32>()
}

/// A model's running state, kept from run to run (`run_f32` spawns a fresh one per run): what tract's ops keep
/// per session (their scratch space) is made once. No speed-up stood out of this machine's run-to-run noise on
/// the pyramid's 1040x784 level; the state is kept because a fresh one buys nothing.
pub type State = TypedSimpleState;

/// Run a single-input model's kept `state` on `input` (laid out as `shape`).
pub fn run_state(state: &mut State, shape: &[usize], input: &[f32]) -> TractResult<TVec<TValue>> {
    let t = Tensor::from_shape(shape, input)?;
    state.run(tvec!(t.into()))
}

/// Run a single-input model on `input` (laid out as `shape`).
pub fn run_f32(model: &Runnable, shape: &[usize], input: &[f32]) -> TractResult<TVec<TValue>> {
    let t = Tensor::from_shape(shape, input)?;
    model.run(tvec!(t.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_mismatch_and_missing_line_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.onnx");
        std::fs::write(&p, b"not really a model").unwrap();
        std::fs::write(dir.path().join("SHA256SUMS"), format!("{}  other.onnx\n", "0".repeat(64))).unwrap();
        let e = read_verified(&p).err().unwrap();
        assert!(matches!(e, ModelError::NotListed { .. }), "{e}");
        std::fs::write(dir.path().join("SHA256SUMS"), format!("{}  m.onnx\n", "0".repeat(64))).unwrap();
        let e = read_verified(&p).err().unwrap();
        assert!(e.to_string().contains("truncated or corrupt"), "{e}");
        let good = sha256_hex(b"not really a model");
        std::fs::write(dir.path().join("SHA256SUMS"), format!("{good} *m.onnx\n")).unwrap();
        assert_eq!(read_verified(&p).unwrap().sha256, good);
    }
}
