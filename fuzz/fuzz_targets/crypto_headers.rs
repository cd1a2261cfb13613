//! The encryption records on arbitrary bytes: an h4fs `HENC` payload (`Henc::parse`) and
//! the Living Cipher v3 header at the start of an encrypted reference block
//! (`living::parse_header`).
#![no_main]

use h4fs::crypto::{Henc, living};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = Henc::parse(data, 0) {
        assert!(!e.to_string().is_empty());
    }
    if let Ok(h) = living::parse_header(data, 3, 100) {
        assert!(data.len() >= living::HEADER_LEN);
        let _ = format!("{h:?}");
    }
});
