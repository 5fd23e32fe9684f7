use super::*;

fn segment(format: Format, base: u64, payloads: &[&[u8]]) -> Vec<u8> {
    let mut bytes = encode_header(base, format);
    for (seq, p) in (base..).zip(payloads) {
        encode_record(&mut bytes, format, seq, p);
    }
    bytes
}

#[test]
fn names_round_trip() {
    assert_eq!(file_name(1), "000001.log");
    assert_eq!(parse_file_name("000001.log"), Some(1));
    assert_eq!(parse_file_name("1234567.log"), Some(1_234_567));
    assert_eq!(parse_file_name("x.log"), None);
    assert_eq!(parse_file_name(".log"), None);
    assert_eq!(parse_file_name("000001.tmp"), None);
    assert_eq!(parse_file_name("000001.log.damaged-20-40"), None);
}

#[test]
fn scan_stops_at_a_torn_tail() {
    let f = Format::new();
    let mut bytes = segment(f, 7, &[b"first", b"second"]);
    let whole = scan_bytes(&bytes).unwrap();
    assert_eq!(
        (whole.base_seq, whole.positions().len(), whole.trailing),
        (7, 2, 0)
    );
    let mut third = Vec::new();
    encode_record(&mut third, f, 9, b"third record");
    bytes.extend_from_slice(&third[..10]);
    let torn = scan_bytes(&bytes).unwrap();
    assert_eq!(
        (
            torn.positions().len(),
            torn.valid_len,
            torn.trailing,
            torn.damage().count()
        ),
        (2, whole.valid_len, 10, 0)
    );
}

#[test]
fn a_frame_from_another_offset_or_segment_does_not_resync() {
    // A payload that holds a whole frame, as a named stream's body may: with
    // the right offset but another segment's salt, or this salt but an
    // offset already taken, it is not taken for a record after damage.
    let f = Format::new();
    let other = Format::new();
    for (salt_of, seq) in [(other, 1u64), (f, 0)] {
        let mut inner = Vec::new();
        encode_record(&mut inner, salt_of, seq, b"look like me");
        let mut bytes = segment(f, 0, &[&inner, b"second"]);
        // Zero the first frame's header: only the inner frame could resync.
        let h = HEADER_LEN as usize;
        bytes[h..h + 4].fill(0xff);
        let s = scan_bytes(&bytes).unwrap();
        let d: Vec<_> = s.damage().cloned().collect();
        assert_eq!(d.len(), 1, "{s:?}");
        assert_eq!(d[0].lost, 0..1, "the inner frame must not be placed");
        assert_eq!(s.frames().map(|f| f.seq).collect::<Vec<_>>(), vec![1]);
    }
}

#[test]
fn version_1_segments_still_scan_and_zeroes_are_not_records() {
    let mut bytes = encode_header_v1(3);
    encode_record_v1(&mut bytes, b"old");
    encode_record_v1(&mut bytes, b"older");
    let s = scan_bytes(&bytes).unwrap();
    assert_eq!(
        (s.base_seq, s.format.version, s.next_seq()),
        (3, VERSION_1, 5)
    );
    bytes.extend_from_slice(&[0u8; 64]);
    let s = scan_bytes(&bytes).unwrap();
    assert_eq!((s.next_seq(), s.trailing), (5, 64));
}

#[test]
fn rejects_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("000001.log");
    std::fs::write(&path, b"definitely not a segment header").unwrap();
    assert!(matches!(scan(&path), Err(SegmentError::BadHeader { .. })));
}
