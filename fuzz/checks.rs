// The fuzz targets' checks, one function per target, each fed arbitrary bytes; a broken invariant panics.
// Included by each fuzz target (fuzz/fuzz_targets/*.rs, cargo fuzz on nightly) and by tests/fuzz_regressions.rs,
// which replays every input kept in fuzz/regressions/<target>/ on stable, in CI.

#[allow(unused_imports)]
use mien::config::Config;
#[allow(unused_imports)]
use mien::frame::Frame;

/// A profile from any bytes: refused with an error that names where it came from, or accepted, and then valid
/// again and unchanged through a write and a re-read (what `mien doctor` and the .deb's copies rely on).
#[allow(dead_code)]
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::from_toml(&text, "fuzz.toml") {
        Err(e) => assert!(e.to_string().contains("fuzz.toml"), "an error without its origin: {e}"),
        Ok(cfg) => {
            cfg.validate("again").unwrap_or_else(|e| panic!("accepted, then invalid: {e}"));
            let back = toml::to_string(&cfg).expect("an accepted profile writes out");
            let again = Config::from_toml(&back, "rewritten").unwrap_or_else(|e| panic!("rewritten profile refused: {e}\n{back}"));
            assert_eq!(toml::to_string(&again).unwrap(), back, "a profile changes through a write and a read");
        }
    }
}

/// Any file in a replay directory (JPEG, PNG, PGM/PPM, or none of them): refused, or a whole frame within the
/// size limit.
#[allow(dead_code)]
pub fn replay_decode(data: &[u8]) {
    let mut f = Frame::new(1, 1);
    if mien::source::replay::decode_image_bytes(data, &mut f).is_ok() {
        let max = mien::source::replay::MAX_IMAGE_SIDE;
        assert!((1..=max).contains(&f.width) && (1..=max).contains(&f.height), "{}x{}", f.width, f.height);
        assert_eq!(f.data.len(), f.width as usize * f.height as usize * 3);
    }
}

/// A raw V4L2 buffer of each pixel format, at any size and stride the driver might claim, with any bytes, in one
/// buffer or cut into planes as a multi-planar device hands them over (sometimes one plane too many): refused, or
/// a frame of the negotiated size (MJPEG: of the JPEG's own size).
#[allow(dead_code)]
pub fn v4l2_buffer(data: &[u8]) {
    use mien::source::PixelFormat;
    let Some((head, buf)) = data.split_first_chunk::<7>() else { return };
    let fmt = PixelFormat::ALL[head[0] as usize % PixelFormat::ALL.len()];
    let w = 1 + u16::from_le_bytes([head[1], head[2]]) as u32 % 96;
    let h = 1 + u16::from_le_bytes([head[3], head[4]]) as u32 % 72;
    let stride = u16::from_le_bytes([head[5], head[6]]) as usize % 512;
    let mut f = Frame::new(1, 1);
    let ok = if head[0] & 0x80 == 0 {
        mien::source::convert(fmt, buf, w, h, stride, &mut f).is_ok()
    } else {
        // A multi-planar buffer: the bytes cut into the format's planes (1 to 3), each with its own stride.
        let n = fmt.planes() + (head[0] as usize >> 5 & 1);
        let part = buf.len() / n;
        let planes: Vec<(&[u8], usize)> =
            (0..n).map(|i| (&buf[i * part..(i + 1) * part], if i == 0 { stride } else { stride / 2 + i })).collect();
        mien::source::convert_planes(fmt, &planes, w, h, &mut f).is_ok()
    };
    if ok {
        assert_eq!(f.data.len(), f.width as usize * f.height as usize * 3);
        if fmt != PixelFormat::Mjpeg {
            assert_eq!((f.width, f.height), (w, h));
        }
    }
}

/// The spool directory after anything (a power cut mid-write, a bad SD card, another program's file): `open`
/// refuses it with a message, or recovers records in strictly increasing order below the next sequence
/// number, and the spool then works: a new label is numbered after every old one, and once acknowledged,
/// nothing is pending after a reopening and no number is reused.
///
/// Input: [flags][state length][state bytes][data bytes]. Flags: bit 0 prefixes the data with the spool's magic,
/// bit 1 writes the state file, bit 2 turns the data into records with valid CRCs (chunks of
/// [seq u8][len u8][payload]), so the fuzzer reaches past the checksums; bits 3-4 the fsync policy.
#[allow(dead_code)]
pub fn spool_recovery(data: &[u8]) {
    use mien::uplink::spool::{Fsync, Spool, SpoolConfig};
    let Some((&flags, rest)) = data.split_first() else { return };
    let Some((&n, rest)) = rest.split_first() else { return };
    let (state, body) = rest.split_at((n as usize).min(rest.len()));
    let mut file = Vec::new();
    if flags & 1 != 0 {
        file.extend_from_slice(b"MIENSPL1");
    }
    if flags & 4 != 0 {
        let mut i = 0;
        while i + 2 <= body.len() {
            let (seq, len) = (body[i] as u64, body[i + 1] as usize);
            let payload = &body[i + 2..(i + 2 + len).min(body.len())];
            let mut h = crc32fast::Hasher::new();
            h.update(&seq.to_le_bytes());
            h.update(payload);
            file.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            file.extend_from_slice(&h.finalize().to_le_bytes());
            file.extend_from_slice(&seq.to_le_bytes());
            file.extend_from_slice(payload);
            i += 2 + len;
        }
    } else {
        file.extend_from_slice(body);
    }
    let dir = std::env::temp_dir().join(format!("mien-fuzz-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("spool.dat"), &file).unwrap();
    if flags & 2 != 0 {
        std::fs::write(dir.join("spool.state"), state).unwrap();
    }
    let fsync = [Fsync::Always, Fsync::Interval, Fsync::Never][(flags >> 3) as usize % 3];
    let cfg = || SpoolConfig { dir: dir.clone(), max_bytes: 1 << 20, fsync, fsync_interval: std::time::Duration::ZERO };
    match Spool::open(cfg()) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok((mut s, rec)) => {
            let seqs: Vec<u64> = s.pending().map(|r| r.seq).collect();
            assert_eq!(rec.pending as usize, seqs.len());
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "recovered out of order: {seqs:?}");
            let next = s.next_seq();
            assert!(seqs.iter().all(|&q| q < next), "next seq {next} reuses one of {seqs:?}");
            if let Ok(q) = s.append(b"{}") {
                assert!(q >= next && seqs.iter().all(|&old| old < q));
                s.ack_through(q).unwrap();
                s.sync_now().unwrap();
                drop(s);
                let (s2, _) = Spool::open(cfg()).expect("a spool mien wrote reopens");
                assert_eq!(s2.pending_len(), 0, "acknowledged records came back");
                assert!(s2.next_seq() > q, "seq {q} would be reused");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Any label a face can get, written as the JSON line the sinks send: exactly the schema's fields, valid JSON,
/// one line, and the same numbers and label read back.
#[allow(dead_code)]
pub fn label_codec(data: &[u8]) {
    use mien::uplink::{JsonLinesSink, LabelEvent, LabelSink, LABEL_FIELDS};
    use mien::vocab::Emotion;
    let Some((b, _)) = data.split_first_chunk::<27>() else { return };
    let ts = u64::from_le_bytes(b[0..8].try_into().unwrap());
    let frame = u64::from_le_bytes(b[8..16].try_into().unwrap());
    let face = u16::from_le_bytes([b[16], b[17]]);
    let track = u32::from_le_bytes(b[18..22].try_into().unwrap());
    let label = Emotion::ALL[b[22] as usize % 8];
    let confidence = f32::from_le_bytes(b[23..27].try_into().unwrap());
    let ev = LabelEvent::new(ts, frame, face, track, label, confidence);
    let mut out = Vec::new();
    JsonLinesSink::new(&mut out).send(&ev).expect("a label always encodes");
    let line = String::from_utf8(out).expect("UTF-8");
    assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "{line:?}");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort();
    let mut want = LABEL_FIELDS.to_vec();
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(v["ts_ms"].as_u64(), Some(ts));
    assert_eq!(v["frame"].as_u64(), Some(frame));
    assert_eq!(v["face"].as_u64(), Some(face as u64));
    assert_eq!(v["track"].as_u64(), Some(track as u64));
    assert_eq!(v["label"].as_str().and_then(|s| s.parse::<Emotion>().ok()), Some(label));
    let c = v["confidence"].as_f64().expect("a number");
    assert!((0.0..=1.0).contains(&c), "confidence {c} from {confidence}");
    if confidence.is_finite() && (0.0..=1.0).contains(&confidence) {
        assert!((c - confidence as f64).abs() <= 5e-5 + 1e-6, "{confidence} sent as {c}");
    }
}
