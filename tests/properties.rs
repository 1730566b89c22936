//! Property tests (proptest) for the invariants that matter most: a blur touches only its rectangle and a failed
//! detection masks everything; a spool replay yields every record not acknowledged, once and in order, across
//! reopenings, and sequence numbers are never reused; any bad value in a profile is refused with its field named.
//! Each runs 256 random cases (PROPTEST_CASES to change); a failure prints its shrunk input.

use mien::config::Config;
use mien::detect::{DetectError, Detection};
use mien::frame::{BBox, Frame};
use mien::privacy::{BlurMode, PrivacyConfig, PrivacyGuard, PrivacyState};
use mien::uplink::spool::{Fsync, Spool, SpoolConfig};
use proptest::prelude::*;
use std::time::Duration;

fn noisy(w: u32, h: u32, seed: u32) -> Frame {
    let mut f = Frame::new(w, h);
    let mut s = seed | 1;
    for v in f.data.iter_mut() {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        *v = (s >> 24) as u8;
    }
    f
}

fn any_box() -> impl Strategy<Value = BBox> {
    // Faces anywhere: inside, across an edge, outside, degenerate, huge.
    (-80.0f32..300.0, -80.0f32..250.0, 0.0f32..260.0, 0.0f32..220.0)
        .prop_map(|(x, y, w, h)| BBox { x0: x, y0: y, x1: x + w, y1: y + h })
}

fn any_mode() -> impl Strategy<Value = BlurMode> {
    prop_oneof![Just(BlurMode::Mosaic), Just(BlurMode::Gaussian), Just(BlurMode::Fill)]
}

proptest! {
    /// Pixels outside every face's expanded rectangle are exactly as they were; with one face, its rectangle
    /// lost its detail (or was filled).
    #[test]
    fn a_blur_touches_only_its_rectangles(
        w in 1u32..200, h in 1u32..150, seed in any::<u32>(),
        boxes in prop::collection::vec(any_box(), 0..4),
        mode in any_mode(), margin in 0.0f32..=2.0, cells in 2u32..=16,
    ) {
        let cfg = PrivacyConfig { mode, margin, mosaic_cells: cells, hold_frames: 0, ..Default::default() };
        let mut g = PrivacyGuard::new(cfg);
        let before = noisy(w, h, seed);
        let mut f = before.clone();
        let dets: Vec<Detection> = boxes.iter().map(|b| Detection::new(*b, 0.9)).collect();
        let state = g.protect(&mut f, Ok(&dets)).state();
        prop_assert_eq!(state, PrivacyState::Ok { regions: dets.len() });
        let rects: Vec<_> = boxes.iter().filter_map(|b| b.expand(margin).to_rect(w, h)).collect();
        for y in 0..h {
            for x in 0..w {
                let inside = rects.iter().any(|r| x >= r.x0 && x < r.x1 && y >= r.y0 && y < r.y1);
                let i = ((y * w + x) * 3) as usize;
                if !inside {
                    prop_assert_eq!(&f.data[i..i + 3], &before.data[i..i + 3], "pixel ({}, {}) outside {:?}", x, y, rects);
                }
            }
        }
        if let [r] = rects[..] {
            if r.width() >= 8 && r.height() >= 8 {
                let (d0, d1) = (mien::pixels::detail(&before, r), mien::pixels::detail(&f, r));
                prop_assert!(d1 < d0 / 2.0, "{:?} {:?}: detail {} -> {}", mode, r, d0, d1);
            }
        }
    }

    /// A failed or timed-out detection masks every pixel, whatever faces were held from before.
    #[test]
    fn a_failed_detection_masks_every_pixel(
        w in 1u32..200, h in 1u32..150, seed in any::<u32>(), earlier in prop::collection::vec(any_box(), 0..4),
        mode in any_mode(), fill in any::<[u8; 3]>(), timeout in any::<bool>(),
    ) {
        let mut g = PrivacyGuard::new(PrivacyConfig { mode, fill_rgb: fill, ..Default::default() });
        let mut f = noisy(w, h, seed);
        let dets: Vec<Detection> = earlier.iter().map(|b| Detection::new(*b, 0.9)).collect();
        g.protect(&mut f, Ok(&dets));
        let err = if timeout { DetectError::Timeout { took_ms: 2, limit_ms: 1 } } else { DetectError::Inference("x".into()) };
        let mut f = noisy(w, h, seed ^ 0x5555);
        prop_assert_eq!(g.protect(&mut f, Err(&err)).state(), PrivacyState::MaskedWhole);
        prop_assert!(f.data.chunks_exact(3).all(|p| p == fill));
    }
}

#[derive(Debug, Clone)]
enum SpoolOp {
    Append(Vec<u8>),
    /// Acknowledge through the k-th pending record (modulo how many there are).
    Ack(usize),
    /// Close and open again, as a restart does (after a clean stop's sync, or straight away).
    Reopen { synced: bool },
}

fn spool_op() -> impl Strategy<Value = SpoolOp> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..200).prop_map(SpoolOp::Append),
        3 => any::<usize>().prop_map(SpoolOp::Ack),
        1 => any::<bool>().prop_map(|synced| SpoolOp::Reopen { synced }),
    ]
}

fn open(dir: &std::path::Path, fsync: Fsync) -> Spool {
    let cfg = SpoolConfig { dir: dir.into(), max_bytes: 1 << 30, fsync, fsync_interval: Duration::from_secs(3600) };
    Spool::open(cfg).expect("the spool reopens").0
}

proptest! {
    /// Against a model of what was appended and acknowledged: after any sequence of appends, acks and
    /// reopenings, the pending records are every unacknowledged record, once each and in order: exactly those
    /// until a reopening without a sync. Acknowledgements reach the disk with the next sync (`interval`) or at
    /// most once a second (`always`), so such a reopening may bring back acknowledged ones too (sent again, same
    /// seq: a duplicate the consumer drops), but never loses one. Sequence numbers only grow.
    #[test]
    fn a_spool_replay_yields_every_unacknowledged_record_once_in_order(
        ops in prop::collection::vec(spool_op(), 1..60), always in any::<bool>(),
    ) {
        let fsync = if always { Fsync::Always } else { Fsync::Interval };
        let dir = tempfile::tempdir().unwrap();
        let mut spool = open(dir.path(), fsync);
        let mut model: Vec<(u64, Vec<u8>)> = Vec::new(); // appended, not acknowledged
        let mut all: Vec<(u64, Vec<u8>)> = Vec::new(); // every record ever appended
        let mut last_seq = 0u64;
        let mut unsynced_reopen = false;
        for op in ops {
            match op {
                SpoolOp::Append(p) => {
                    let seq = spool.append(&p).unwrap();
                    prop_assert!(seq > last_seq, "seq {} after {}", seq, last_seq);
                    last_seq = seq;
                    model.push((seq, p.clone()));
                    all.push((seq, p));
                }
                SpoolOp::Ack(k) => {
                    let pending: Vec<u64> = spool.pending().map(|r| r.seq).collect();
                    if !pending.is_empty() {
                        let through = pending[k % pending.len()];
                        spool.ack_through(through).unwrap();
                        model.retain(|(s, _)| *s > through);
                    }
                }
                SpoolOp::Reopen { synced } => {
                    if synced {
                        spool.sync_now().unwrap();
                    } else {
                        unsynced_reopen = true;
                    }
                    drop(spool);
                    spool = open(dir.path(), fsync);
                    prop_assert!(spool.next_seq() > last_seq, "seq {} reused after reopening", spool.next_seq());
                }
            }
            let got: Vec<(u64, Vec<u8>)> = spool.pending().map(|r| (r.seq, r.payload.clone())).collect();
            prop_assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "pending out of order or repeated: {:?}", got);
            for rec in &model {
                prop_assert!(got.contains(rec), "record {} lost", rec.0);
            }
            for rec in &got {
                prop_assert!(all.contains(rec), "record {} was never appended (or its payload changed)", rec.0);
            }
            if !unsynced_reopen {
                prop_assert_eq!(&got, &model);
            }
        }
    }
}

/// Every leaf of the default profile as (section, key).
fn leaves() -> Vec<(String, String)> {
    let t: toml::Table = toml::from_str(mien::config::DEFAULT_PROFILE).unwrap();
    let mut v = Vec::new();
    for (s, sec) in &t {
        for k in sec.as_table().expect("sections only").keys() {
            v.push((s.clone(), k.clone()));
        }
    }
    v
}

fn any_value() -> impl Strategy<Value = toml::Value> {
    use toml::Value as V;
    prop_oneof![
        any::<i64>().prop_map(V::Integer),
        (-5i64..70_000).prop_map(V::Integer),
        any::<f64>().prop_map(V::Float),
        (-2.0f64..5.0).prop_map(V::Float),
        any::<bool>().prop_map(V::Boolean),
        "[a-z0-9./:_ -]{0,12}".prop_map(V::String),
        prop::collection::vec((-300i64..300).prop_map(V::Integer), 0..4).prop_map(V::Array),
    ]
}

proptest! {
    /// Any value put in place of any key of the default profile is accepted or refused with that key named;
    /// a refusal never panics and never blames another field. An unknown key is named too.
    #[test]
    fn any_bad_value_in_a_profile_is_refused_with_its_field(which in any::<prop::sample::Index>(), v in any_value()) {
        let leaves = leaves();
        let (section, key) = &leaves[which.index(leaves.len())];
        let mut t: toml::Table = toml::from_str(mien::config::DEFAULT_PROFILE).unwrap();
        t[section.as_str()].as_table_mut().unwrap().insert(key.clone(), v.clone());
        let text = toml::to_string(&t).unwrap();
        if let Err(e) = Config::from_toml(&text, "prop.toml") {
            let msg = e.to_string();
            prop_assert!(msg.contains("prop.toml"), "{}", msg);
            prop_assert!(msg.contains(key.as_str()), "{}.{} = {}: the error does not name it: {}", section, key, v, msg);
        }
    }

    #[test]
    fn an_unknown_key_is_named(which in any::<prop::sample::Index>(), key in "[a-z]{3,10}_x") {
        let leaves = leaves();
        let (section, _) = &leaves[which.index(leaves.len())];
        let mut t: toml::Table = toml::from_str(mien::config::DEFAULT_PROFILE).unwrap();
        t[section.as_str()].as_table_mut().unwrap().insert(key.clone(), toml::Value::Integer(1));
        let msg = Config::from_toml(&toml::to_string(&t).unwrap(), "prop.toml").unwrap_err().to_string();
        prop_assert!(msg.contains(&key), "{}", msg);
    }
}
