//! Streaming SHA-256 that can advance two independent hashes in lockstep.
//!
//! Why: the packer computes three SHA-256 streams over every byte (the source file, each
//! block, and VERI over all chunks). One SHA-NI stream is bound by the latency of the
//! `sha256rnds2` instruction, not its throughput, so interleaving the rounds of two
//! independent messages on one core hashes both 1.2 to 1.4 times faster than one after
//! the other (measured on the AMD EPYC of docs/PERFORMANCE.md). [`update2`] does that
//! where the CPU has the SHA extensions and falls back to two plain updates elsewhere.
//!
//! The digests are ordinary SHA-256 (FIPS 180-4); tests compare them with the `sha2`
//! crate for every split of the input.

/// A SHA-256 computation in progress.
#[derive(Clone)]
pub struct Sha256 {
    state: [u32; 8],
    buf: [u8; 64],
    buf_len: usize,
    len: u64,
}

const INIT: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// A fresh hash of the empty message.
    pub fn new() -> Self {
        Sha256 {
            state: INIT,
            buf: [0; 64],
            buf_len: 0,
            len: 0,
        }
    }

    /// Absorb `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        let rest = self.fill_buffer(data);
        self.absorb_aligned(rest);
    }

    /// Top up a partly filled buffer from `data` (compressing it when full) and return
    /// what is left of `data`. Afterwards the buffer is empty unless `data` ran out.
    fn fill_buffer<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        if self.buf_len == 0 {
            return data;
        }
        let take = (64 - self.buf_len).min(data.len());
        self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
        self.buf_len += take;
        if self.buf_len == 64 {
            let block = self.buf;
            compress(&mut self.state, &block);
            self.buf_len = 0;
        }
        &data[take..]
    }

    /// Absorb `data` into an empty buffer: whole blocks now, the tail into the buffer.
    fn absorb_aligned(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        debug_assert_eq!(self.buf_len, 0);
        let whole = data.len() / 64 * 64;
        compress(&mut self.state, &data[..whole]);
        let tail = &data[whole..];
        self.buf[..tail.len()].copy_from_slice(tail);
        self.buf_len = tail.len();
    }

    /// The digest.
    pub fn finalize(mut self) -> [u8; 32] {
        let bits = self.len.wrapping_mul(8);
        let mut pad = [0u8; 72];
        pad[0] = 0x80;
        // Pad to 56 mod 64, then the length in bits.
        let zeros = (119 - self.buf_len) % 64;
        pad[1 + zeros..9 + zeros].copy_from_slice(&bits.to_be_bytes());
        let pad_len = 9 + zeros;
        let rest = self.fill_buffer(&pad[..pad_len]);
        self.absorb_aligned(rest);
        debug_assert_eq!(self.buf_len, 0);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

/// Absorb `da` into `a` and `db` into `b`, interleaving the two where both have whole
/// blocks to compress.
pub fn update2(a: &mut Sha256, da: &[u8], b: &mut Sha256, db: &[u8]) {
    a.len = a.len.wrapping_add(da.len() as u64);
    b.len = b.len.wrapping_add(db.len() as u64);
    let ra = a.fill_buffer(da);
    let rb = b.fill_buffer(db);
    let n = if a.buf_len == 0 && b.buf_len == 0 {
        ra.len().min(rb.len()) / 64 * 64
    } else {
        0
    };
    if n > 0 {
        compress2(&mut a.state, &ra[..n], &mut b.state, &rb[..n]);
    }
    a.absorb_aligned(&ra[n..]);
    b.absorb_aligned(&rb[n..]);
}

/// Compress whole 64-byte blocks, one stream: the `sha2` crate's own kernel (SHA-NI
/// where the CPU has it), which is as fast as one stream gets.
fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    debug_assert_eq!(blocks.len() % 64, 0);
    type Block = sha2::digest::generic_array::GenericArray<u8, sha2::digest::consts::U64>;
    // SAFETY: `GenericArray<u8, U64>` is `repr(transparent)` over a `repr(C)` nest of
    // 64 `u8`s: size 64, alignment 1, any bit pattern valid. `blocks` holds
    // `len / 64` such blocks back to back and outlives the borrow.
    let blocks: &[Block] =
        unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast::<Block>(), blocks.len() / 64) };
    sha2::compress256(state, blocks);
}

/// Compress equally many whole blocks into two states, interleaved where possible.
fn compress2(s1: &mut [u32; 8], b1: &[u8], s2: &mut [u32; 8], b2: &[u8]) {
    debug_assert_eq!(b1.len(), b2.len());
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has the SHA, SSE2, SSSE3 and SSE4.1 extensions (checked above)
        // and both inputs are equally many whole blocks.
        unsafe { x86::compress2(s1, b1, s2, b2) };
        return;
    }
    compress(s1, b1);
    compress(s2, b2);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The two-stream SHA-NI kernel: the Intel reference round sequence (as in the
    //! `sha2` crate's one-stream kernel), run for two messages with their instructions
    //! interleaved.
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub fn available() -> bool {
        static HAVE: OnceLock<bool> = OnceLock::new();
        *HAVE.get_or_init(|| {
            is_x86_feature_detected!("sha")
                && is_x86_feature_detected!("sse2")
                && is_x86_feature_detected!("ssse3")
                && is_x86_feature_detected!("sse4.1")
        })
    }

    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// Big-endian word order within each 16-byte lane.
    #[inline(always)]
    unsafe fn mask() -> __m128i {
        // SAFETY: SSE2, which the callers enable.
        unsafe {
            _mm_set_epi64x(
                0x0C0D_0E0F_0809_0A0Bu64 as i64,
                0x0405_0607_0001_0203u64 as i64,
            )
        }
    }

    /// State words (a..h) into the ABEF/CDGH register layout of `sha256rnds2`.
    #[inline(always)]
    unsafe fn load(state: &[u32; 8]) -> (__m128i, __m128i) {
        // SAFETY: `state` is 32 readable bytes; unaligned loads.
        unsafe {
            let p = state.as_ptr() as *const __m128i;
            let dcba = _mm_loadu_si128(p);
            let efgh = _mm_loadu_si128(p.add(1));
            let cdab = _mm_shuffle_epi32(dcba, 0xB1);
            let efgh = _mm_shuffle_epi32(efgh, 0x1B);
            (
                _mm_alignr_epi8(cdab, efgh, 8),
                _mm_blend_epi16(efgh, cdab, 0xF0),
            )
        }
    }

    #[inline(always)]
    unsafe fn store(state: &mut [u32; 8], abef: __m128i, cdgh: __m128i) {
        // SAFETY: `state` is 32 writable bytes; unaligned stores.
        unsafe {
            let feba = _mm_shuffle_epi32(abef, 0x1B);
            let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
            let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
            let hgef = _mm_alignr_epi8(dchg, feba, 8);
            let p = state.as_mut_ptr() as *mut __m128i;
            _mm_storeu_si128(p, dcba);
            _mm_storeu_si128(p.add(1), hgef);
        }
    }

    /// The message words of one 64-byte block, byte-swapped.
    #[inline(always)]
    unsafe fn words(block: &[u8]) -> [__m128i; 4] {
        // SAFETY: callers pass exactly 64 readable bytes; unaligned loads.
        unsafe {
            let p = block.as_ptr() as *const __m128i;
            let m = mask();
            [
                _mm_shuffle_epi8(_mm_loadu_si128(p), m),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(1)), m),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(2)), m),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(3)), m),
            ]
        }
    }

    /// Message schedule: the next four words from the previous sixteen.
    #[inline(always)]
    unsafe fn schedule(w: &mut [__m128i; 4], r: usize) {
        let j = r % 4;
        let (w0, w1, w2, w3) = (w[j], w[(j + 1) % 4], w[(j + 2) % 4], w[(j + 3) % 4]);
        // SAFETY: SHA and SSSE3, which the callers enable.
        unsafe {
            let t = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4));
            w[j] = _mm_sha256msg2_epu32(t, w3);
        }
    }

    #[inline(always)]
    unsafe fn k4(r: usize) -> __m128i {
        // SAFETY: r < 16, so K[4r..4r+4] is in bounds; unaligned load.
        unsafe { _mm_loadu_si128(K.as_ptr().add(4 * r) as *const __m128i) }
    }

    /// # Safety
    /// The CPU must have SHA, SSE2, SSSE3 and SSE4.1; `b1.len() == b2.len()`, a
    /// multiple of 64.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub unsafe fn compress2(s1: &mut [u32; 8], b1: &[u8], s2: &mut [u32; 8], b2: &[u8]) {
        // SAFETY: the features are enabled by the caller's contract; every slice passed
        // below is one whole 64-byte block.
        unsafe {
            let (mut a1, mut c1) = load(s1);
            let (mut a2, mut c2) = load(s2);
            for (x, y) in b1.chunks_exact(64).zip(b2.chunks_exact(64)) {
                let (sa1, sc1, sa2, sc2) = (a1, c1, a2, c2);
                let mut w = words(x);
                let mut v = words(y);
                for r in 0..16 {
                    if r >= 4 {
                        schedule(&mut w, r);
                        schedule(&mut v, r);
                    }
                    let k = k4(r);
                    let t = _mm_add_epi32(w[r % 4], k);
                    let u = _mm_add_epi32(v[r % 4], k);
                    c1 = _mm_sha256rnds2_epu32(c1, a1, t);
                    c2 = _mm_sha256rnds2_epu32(c2, a2, u);
                    a1 = _mm_sha256rnds2_epu32(a1, c1, _mm_shuffle_epi32(t, 0x0E));
                    a2 = _mm_sha256rnds2_epu32(a2, c2, _mm_shuffle_epi32(u, 0x0E));
                }
                a1 = _mm_add_epi32(a1, sa1);
                c1 = _mm_add_epi32(c1, sc1);
                a2 = _mm_add_epi32(a2, sa2);
                c2 = _mm_add_epi32(c2, sc2);
            }
            store(s1, a1, c1);
            store(s2, a2, c2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn reference(data: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(data).into()
    }

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn known_answers() {
        let h = |d: &[u8]| {
            let mut s = Sha256::new();
            s.update(d);
            hex::encode(s.finalize())
        };
        assert_eq!(
            h(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            h(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// One block at a time through `sha2`, without the slice cast of `compress`.
    fn compress_portable(state: &mut [u32; 8], blocks: &[u8]) {
        for block in blocks.chunks_exact(64) {
            let b = sha2::digest::generic_array::GenericArray::from_slice(block);
            sha2::compress256(state, &[*b]);
        }
    }

    #[test]
    fn kernels_agree_with_the_portable_compression() {
        let d = bytes(64 * 37, 9);
        let e = bytes(64 * 37, 200);
        let (mut p1, mut p2) = (INIT, INIT);
        compress_portable(&mut p1, &d);
        compress_portable(&mut p2, &e);
        let mut c1 = INIT;
        compress(&mut c1, &d);
        assert_eq!(c1, p1);
        let (mut x1, mut x2) = (INIT, INIT);
        compress2(&mut x1, &d, &mut x2, &e);
        assert_eq!((x1, x2), (p1, p2));
    }

    #[test]
    fn every_length_and_split_matches_sha2() {
        for n in (0..300).chain([4095, 4096, 4097, 65_536 + 13]) {
            let d = bytes(n, 7);
            for split in [0, 1, 55, 56, 63, 64, 65, n / 2, n] {
                let split = split.min(n);
                let mut s = Sha256::new();
                s.update(&d[..split]);
                s.update(&d[split..]);
                assert_eq!(s.finalize(), reference(&d), "len {n} split {split}");
            }
        }
    }

    #[test]
    fn paired_updates_match_two_separate_hashes() {
        let x = bytes(10_000, 1);
        let y = bytes(9_000, 2);
        // Different starting offsets, lengths and chunkings for the two streams.
        for (pa, pb) in [(0, 0), (12, 0), (0, 12), (63, 1), (100, 7)] {
            for step in [1usize, 64, 777, 4096] {
                let (mut a, mut b) = (Sha256::new(), Sha256::new());
                a.update(&x[..pa]);
                b.update(&y[..pb]);
                let (mut i, mut j) = (pa, pb);
                while i < x.len() || j < y.len() {
                    let ni = (i + step).min(x.len());
                    let nj = (j + step + 5).min(y.len());
                    update2(&mut a, &x[i..ni], &mut b, &y[j..nj]);
                    (i, j) = (ni, nj);
                }
                assert_eq!(a.finalize(), reference(&x), "a: prefix {pa} step {step}");
                assert_eq!(b.finalize(), reference(&y), "b: prefix {pb} step {step}");
            }
        }
    }
}
