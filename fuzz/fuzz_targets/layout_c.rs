//! Layout C parsers on arbitrary bytes: the 16-byte header, a TSEK payload, a CORE
//! payload's "H4TB" prefix and a chunk header's flag fields.
#![no_main]

use h4fs::format::layout_c::{self as lc, ChunkHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = lc::parse_header(data) {
        assert!(data.len() >= lc::HEADER_LEN && h.version == 1);
    }
    if let Ok(t) = lc::parse_tsek(data, 0) {
        assert_eq!(data.len(), 16 + 8 * t.entries.len());
        assert!(t.entries.windows(2).all(|w| w[0].0 <= w[1].0));
    }
    if lc::parse_block_prefix(data, 0).is_ok() {
        assert!(data.len() >= lc::BLOCK_PREFIX_LEN);
    }
    if let Some(b) = data.first_chunk::<{ lc::CHUNK_HEADER_LEN }>() {
        let h = ChunkHeader::parse(b);
        assert!(h.pts_ms() < 1 << 28);
        assert_eq!(h.block_type().is_none(), (h.flags >> 28) & 3 == 3);
    }
});
