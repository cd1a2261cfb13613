//! The h4fs footer (`Footer::parse`) and block index header (`check_index`) on arbitrary
//! bytes: accepted footers re-encode to the same bytes, accepted indexes hold exactly the
//! entries their header counts, and every entry re-encodes to its bytes.
#![no_main]

use h4fs::format::h4fs::{self as hf, Footer, IndexEntry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = Footer::parse(data, 0) {
        assert_eq!(&f.encode()[..], data);
    }
    let own = data
        .get(8..16)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
    for count in [own, own.wrapping_add(1), 0] {
        let Ok(n) = hf::check_index(data, 0, count) else {
            continue;
        };
        assert_eq!(n, count);
        assert_eq!(
            data.len() as u64,
            hf::INDEX_HEADER_LEN as u64 + n * hf::ENTRY_LEN as u64
        );
        for b in data[hf::INDEX_HEADER_LEN..].chunks_exact(hf::ENTRY_LEN) {
            let mut v = Vec::new();
            IndexEntry::parse(b).encode(&mut v);
            assert_eq!(v, b);
        }
    }
});
