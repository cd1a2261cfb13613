//! `Engine::decode` on arbitrary stored bytes and an arbitrary expected length, for every
//! engine: success yields exactly the expected length, agrees with `decoded_len`, and
//! re-encoding the output decodes back to it. The expected length comes from the first
//! 8 input bytes, so huge values are tried and must not cause huge allocations.
#![no_main]

use h4fs::engine::Engine;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, stored)) = data.split_first_chunk::<8>() else {
        return;
    };
    let hinted = u64::from_le_bytes(*head);
    for engine in Engine::ALL {
        let exact = engine.decoded_len(stored);
        for expect in [hinted, exact.clone().unwrap_or(0)] {
            let Ok(out) = engine.decode(stored.to_vec(), expect) else {
                continue;
            };
            assert_eq!(out.len() as u64, expect);
            assert_eq!(exact, Ok(expect));
            let mut again = Vec::new();
            engine.encode_into(&out, &mut again);
            assert_eq!(
                engine
                    .decode(again, expect)
                    .expect("re-encoded data decodes"),
                out
            );
        }
    }
});
