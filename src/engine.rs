//! Compression engines: how a block's stored bytes become its decoded bytes.
//!
//! The engine is named by META's `compression.engine`. h4fs never guesses: a name it
//! does not know yields [`Error::UnknownEngine`] when a block is decoded, and the stored
//! bytes stay available raw.

use crate::error::{Error, Result};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Largest decoded block h4fs reads or writes: 1 GiB. A hostile run-length block could
/// otherwise claim up to 127 times its stored size.
pub const MAX_BLOCK: u64 = 1 << 30;

/// A compression engine h4fs can encode and decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Stored bytes are the decoded bytes.
    Identity,
    /// The reference's run-length coding: (value u8, run u8) pairs, run 1..=255.
    GeometricReference,
}

/// What META says about the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineChoice {
    Known(Engine),
    Unknown(String),
}

impl EngineChoice {
    /// The engine named by a META value. A META without a `compression` section means
    /// identity (layout C files and hand-built containers carry raw blobs).
    pub fn from_meta(meta: &Value) -> EngineChoice {
        match meta.get("compression").and_then(|c| c.get("engine")) {
            None => EngineChoice::Known(Engine::Identity),
            Some(Value::String(s)) => match Engine::from_name(s) {
                Some(e) => EngineChoice::Known(e),
                None => EngineChoice::Unknown(s.clone()),
            },
            Some(other) => EngineChoice::Unknown(other.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            EngineChoice::Known(e) => e.name(),
            EngineChoice::Unknown(s) => s,
        }
    }

    pub fn known(&self) -> Result<Engine> {
        match self {
            EngineChoice::Known(e) => Ok(*e),
            EngineChoice::Unknown(s) => Err(Error::UnknownEngine { engine: s.clone() }),
        }
    }
}

impl Engine {
    pub const ALL: [Engine; 2] = [Engine::Identity, Engine::GeometricReference];

    pub fn name(&self) -> &'static str {
        match self {
            Engine::Identity => "identity",
            Engine::GeometricReference => "geometric-reference",
        }
    }

    pub fn from_name(s: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == s)
    }

    /// The engine identifier h4fs records: name and version of this implementation.
    pub fn engine_id(&self) -> String {
        format!("h4fs-{}-1", self.name())
    }

    /// A fingerprint of the engine: SHA-256 of its identifier. It changes whenever the
    /// encoding changes, so a container records exactly which coder produced it.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.engine_id().as_bytes()))
    }

    /// META's `compression` section, with the reference's keys in the reference's order.
    /// `sealed` is true: the h4fs root hash binds META, so the engine record cannot be
    /// changed without the container failing verification.
    pub fn compression_meta(&self) -> Value {
        json!({
            "engine": self.name(),
            "engine_id": self.engine_id(),
            "fingerprint": self.fingerprint(),
            "deterministic": true,
            "identity_safe": true,
            "opaque": false,
            "sealed": true,
        })
    }

    /// Append the encoding of `data` to `out`.
    pub fn encode_into(&self, data: &[u8], out: &mut Vec<u8>) {
        match self {
            Engine::Identity => out.extend_from_slice(data),
            Engine::GeometricReference => {
                out.reserve(data.len() / 64 + 2);
                let mut i = 0;
                while i < data.len() {
                    let v = data[i];
                    let mut run = 1;
                    while run < 255 && i + run < data.len() && data[i + run] == v {
                        run += 1;
                    }
                    out.push(v);
                    out.push(run as u8);
                    i += run;
                }
            }
        }
    }

    /// Length of the decoded form of `stored`, without decoding it.
    pub fn decoded_len(&self, stored: &[u8]) -> std::result::Result<u64, String> {
        match self {
            Engine::Identity => Ok(stored.len() as u64),
            Engine::GeometricReference => {
                if stored.len() % 2 != 0 {
                    return Err(format!(
                        "geometric-reference data has odd length {}",
                        stored.len()
                    ));
                }
                Ok(stored.chunks_exact(2).map(|p| p[1] as u64).sum())
            }
        }
    }

    /// Decode `stored`, which must decode to exactly `expect_len` bytes. Never allocates
    /// more than `expect_len` (or the largest length `stored` could decode to).
    pub fn decode(&self, stored: Vec<u8>, expect_len: u64) -> std::result::Result<Vec<u8>, String> {
        match self {
            Engine::Identity => {
                if stored.len() as u64 != expect_len {
                    return Err(format!(
                        "decoded length {} differs from the recorded {expect_len}",
                        stored.len()
                    ));
                }
                Ok(stored)
            }
            Engine::GeometricReference => {
                let actual = self.decoded_len(&stored)?;
                if actual > MAX_BLOCK {
                    return Err(format!(
                        "decodes to {actual} bytes, over the {MAX_BLOCK}-byte block limit"
                    ));
                }
                if actual != expect_len {
                    return Err(format!(
                        "decodes to {actual} bytes, the index records {expect_len}"
                    ));
                }
                let mut out = Vec::with_capacity(actual as usize);
                for p in stored.chunks_exact(2) {
                    out.resize(out.len() + p[1] as usize, p[0]);
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reference_example() {
        let mut out = Vec::new();
        Engine::GeometricReference.encode_into(&[0u8; 256], &mut out);
        assert_eq!(out, [0, 255, 0, 1]);
        assert_eq!(
            Engine::GeometricReference.decode(out, 256).unwrap(),
            vec![0; 256]
        );
    }

    #[test]
    fn unknown_engine_is_reported_by_name() {
        let meta = json!({"compression": {"engine": "core"}});
        let c = EngineChoice::from_meta(&meta);
        assert_eq!(c, EngineChoice::Unknown("core".into()));
        assert!(c.known().unwrap_err().to_string().contains("\"core\""));
        assert_eq!(
            EngineChoice::from_meta(&json!({})),
            EngineChoice::Known(Engine::Identity)
        );
    }

    #[test]
    fn decode_rejects_odd_and_wrong_length() {
        let e = Engine::GeometricReference;
        assert!(e.decode(vec![1, 2, 3], 2).is_err());
        assert!(e.decode(vec![1, 2], 3).is_err());
        assert!(Engine::Identity.decode(vec![1], 2).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..2000)) {
            for e in Engine::ALL {
                let mut enc = Vec::new();
                e.encode_into(&data, &mut enc);
                prop_assert_eq!(e.decoded_len(&enc).unwrap(), data.len() as u64);
                prop_assert_eq!(e.decode(enc, data.len() as u64).unwrap(), data.clone());
            }
        }
    }
}
