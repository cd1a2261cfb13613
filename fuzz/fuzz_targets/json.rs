//! `layout_a::parse_json` (META, SAFE, TRAK payloads) on arbitrary bytes, and the engine
//! choice read from what parsed.
#![no_main]

use h4fs::engine::EngineChoice;
use h4fs::error::Tag;
use h4fs::format::layout_a::parse_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_json(Tag::META, 0, data) {
        Ok(v) => {
            assert!(std::str::from_utf8(data).is_ok());
            let choice = EngineChoice::from_meta(&v);
            assert_eq!(
                choice.known().is_ok(),
                matches!(choice, EngineChoice::Known(_))
            );
        }
        Err(e) => assert!(e.to_string().contains("META chunk at offset 0")),
    }
});
