//! `writer::parse_index_csv` on arbitrary text: accepted rows tile the input from 0 and
//! respect the block size limit.
#![no_main]

use h4fs::writer::{MAX_BLOCK, parse_index_csv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rows) = parse_index_csv(text, "fuzz.csv") else {
        return;
    };
    let mut end = 0u64;
    for r in &rows {
        assert_eq!(r.offset, end);
        assert!(r.size <= MAX_BLOCK);
        end += r.size;
    }
});
