//! `layout_a::parse_seek` on arbitrary bytes: accepted tables are sorted, re-encode to
//! the same bytes, and lookups return the last entry at or before the target.
#![no_main]

use h4fs::format::layout_a::{encode_seek, parse_seek, seek_lookup};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = parse_seek(data, 0) else {
        return;
    };
    assert_eq!(encode_seek(&entries), data);
    assert!(entries.windows(2).all(|w| w[0].pts_us <= w[1].pts_us));
    let probes = entries.iter().flat_map(|e| {
        [
            e.pts_us,
            e.pts_us.saturating_sub(1),
            e.pts_us.saturating_add(1),
        ]
    });
    for target in probes.chain([0, u64::MAX]) {
        match seek_lookup(&entries, target) {
            Some(i) => {
                assert!(entries[i].pts_us <= target);
                assert!(entries.get(i + 1).is_none_or(|n| n.pts_us > target));
            }
            None => assert!(entries.first().is_none_or(|e| e.pts_us > target)),
        }
    }
});
