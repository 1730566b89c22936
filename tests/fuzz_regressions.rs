//! Every input the fuzzers found a fault with (fuzz/regressions/<target>/), replayed through the same checks the
//! fuzz targets run (fuzz/checks.rs), on stable, in every `cargo test`: a fixed fault stays fixed. Plus a few
//! hand-made hostile inputs per target, so each check runs here even before the fuzzers keep anything.

include!("../fuzz/checks.rs");

fn replay(target: &str, check: fn(&[u8]), handmade: &[&[u8]]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.file_name().is_some_and(|n| n == "README.md" || n == ".gitkeep") {
            continue;
        }
        let data = std::fs::read(&p).unwrap();
        eprintln!("{target}: {}", p.display());
        check(&data);
        n += 1;
    }
    for h in handmade {
        check(h);
    }
    eprintln!("{target}: {n} kept inputs and {} hand-made ones pass", handmade.len());
}

#[test]
fn config_inputs() {
    replay("config", config, &[
        b"",
        b"[camera]\nwidth = -1\n",
        b"[camera]\nfps = nan\n",
        b"[metrics]\nlisten = \"[::]:0\"\n",
        b"[[camera]]\n",
        b"\xff\xfe[camera]",
        mien::config::DEFAULT_PROFILE.as_bytes(),
    ]);
}

#[test]
fn replay_decode_inputs() {
    replay("replay_decode", replay_decode, &[
        b"",
        b"\xff\xd8\xff\xe0 truncated",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\0\0\0\0\0\x08\x02\0\0\0",
        b"P5\n0 0\n255\n",
        b"P6\n2 2\n255\n\x01\x02",
        b"P5\n99999 99999\n65535\n",
        b"P3\n1 1\n70000\n1 2 3\n",
    ]);
}

#[test]
fn v4l2_buffer_inputs() {
    replay("v4l2_buffer", v4l2_buffer, &[
        b"\x00\x03\x00\x02\x00\x00\x00",
        b"\x00\x02\x00\x01\x00\xff\xff\x01\x02\x03\x04\x05\x06\x07\x08",
        b"\x01\x01\x00\x01\x00\x00\x00\x10\x20\x30",
        b"\x02\x00\x00\x00\x00\x00\x00\x55",
        b"\x07\x10\x00\x10\x00\x00\x00\xff\xd8\xff\xd9",
        // Multi-planar: NM12 2x2 in two planes, the same with a third plane, YM12 4x4 in three.
        b"\x83\x01\x00\x01\x00\x02\x00\x10\x20\x30\x40\x80\x80\x00\x00",
        b"\xa3\x01\x00\x01\x00\x02\x00\x10\x20\x30\x40\x80\x80\x00\x00\x00\x00\x00\x00",
        &[[0x85, 3, 0, 3, 0, 4, 0].as_slice(), &[0x80; 48]].concat(),
    ]);
}

#[test]
fn spool_recovery_inputs() {
    replay("spool_recovery", spool_recovery, &[
        b"",
        b"\x00\x00not a spool",
        b"\x01\x00\x05\x00\x00\x00",
        b"\x07\x0cacked=5\ndropp\x01\x03abc\x02\x01x",
        b"\x07\x09acked=999\x09\x00\x05\x00",
    ]);
}

#[test]
fn label_codec_inputs() {
    let mut nan = vec![0u8; 23];
    nan.extend(f32::NAN.to_le_bytes());
    let mut big = vec![0xffu8; 23];
    big.extend(f32::INFINITY.to_le_bytes());
    let mut tiny = vec![1u8; 23];
    tiny.extend((-0.0f32).to_le_bytes());
    replay("label_codec", label_codec, &[&nan, &big, &tiny, b"short"]);
}
