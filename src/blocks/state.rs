//! Per container: what can be served, decided once, and the verification results seen.
//!
//! Whether a container's data can be served at all depends on things known when it is
//! opened (its engine is one h4fs decodes; an encrypted container has its key) and, for
//! reference files (whose blocks carry only a CRC-32), on the whole-file VERI, checked
//! the first time data is asked for and never again. [`Served::check`] is the one place
//! that decides; after the first call it costs a branch.

use super::ReadError;
use crate::engine::EngineChoice;
use crate::error::Error;
use crate::reader::Archive;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A block that failed its check while served. `veri.json` shows all but `count`
/// (which grows with every failed read, and is a live counter).
#[derive(Debug, Clone)]
pub struct Failure {
    /// File offset of the block's chunk.
    pub offset: u64,
    pub error: String,
    /// Unix seconds of the first failure.
    pub first_at: u64,
    pub count: u64,
}

/// Result of the once-per-mount whole-file VERI check of a reference container.
#[derive(Debug, Clone)]
pub struct VeriCheck {
    pub ok: bool,
    pub computed: Option<String>,
    pub detail: String,
    /// Unix seconds.
    pub at: u64,
}

/// Version of a container's verification results: bumped whenever one changes, with an
/// mtime (whole seconds) that moves forward at every bump.
#[derive(Debug, Clone, Copy)]
struct VeriClock {
    generation: u64,
    mtime: u64,
}

/// Why none of a container's data can be served, known at open.
#[derive(Debug, Clone)]
enum Refusal {
    /// Encrypted, and no key is attached.
    Locked { cipher: String },
    /// META names an engine h4fs does not implement.
    UnknownEngine(String),
}

impl Refusal {
    fn error(&self) -> Error {
        match self {
            Refusal::Locked { cipher } => Error::Encrypted {
                cipher: cipher.clone(),
                what: "reading its data".into(),
            },
            Refusal::UnknownEngine(name) => Error::UnknownEngine {
                engine: name.clone(),
            },
        }
    }
}

/// One container as the block layer serves it.
pub struct Served {
    pub archive: Archive,
    /// Path shown in logs and `veri.json`.
    pub path: PathBuf,
    refusal: Option<Refusal>,
    veri: OnceLock<VeriCheck>,
    /// Lock order: `failures` before `veri_clock`.
    failures: Mutex<BTreeMap<(usize, u64), Failure>>,
    veri_clock: Mutex<VeriClock>,
    blocks_verified: AtomicU64,
    groups_verified: AtomicU64,
    /// Whether track 0 is served by hash groups ([`Archive::stream_is_stored`]), decided
    /// on first use.
    by_groups: OnceLock<bool>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("path", &self.path)
            .field("refusal", &self.refusal)
            .finish_non_exhaustive()
    }
}

pub fn now_unix() -> u64 {
    unix(SystemTime::now())
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Served {
    /// A container to serve. Keys must already be attached. `veri_ok_at`: the whole-file
    /// VERI was already checked (e.g. `--verify=full` at mount), at that time.
    /// `results_since`: the time the verification results shown so far date from.
    pub fn new(
        archive: Archive,
        path: PathBuf,
        veri_ok_at: Option<SystemTime>,
        results_since: SystemTime,
    ) -> Served {
        let locked = archive.encryption.as_ref().filter(|_| !archive.has_key());
        let refusal = match (locked, &archive.engine) {
            (Some(enc), _) => Some(Refusal::Locked {
                cipher: enc.cipher.clone(),
            }),
            (None, EngineChoice::Unknown(name)) => Some(Refusal::UnknownEngine(name.clone())),
            (None, EngineChoice::Known(_)) => None,
        };
        let veri = OnceLock::new();
        if let (Some(at), Some(v)) = (veri_ok_at, archive.veri) {
            let _ = veri.set(VeriCheck {
                ok: true,
                computed: Some(hex::encode(v.expected)),
                detail: "match (checked at mount, --verify=full)".into(),
                at: unix(at),
            });
        }
        Served {
            archive,
            path,
            refusal,
            veri,
            failures: Mutex::new(BTreeMap::new()),
            veri_clock: Mutex::new(VeriClock {
                generation: 0,
                mtime: unix(results_since),
            }),
            blocks_verified: AtomicU64::new(0),
            groups_verified: AtomicU64::new(0),
            by_groups: OnceLock::new(),
        }
    }

    /// Why no data of this container can be served, when that is known without reading
    /// (unknown engine, encrypted without key).
    pub fn unreadable(&self) -> Option<String> {
        self.refusal.as_ref().map(|r| r.error().to_string())
    }

    /// Whether data may be served: the one decision. Runs the whole-file VERI check of a
    /// reference container the first time (logging a mismatch through `log`).
    pub fn check(&self, log: &dyn Fn(&str)) -> Result<(), ReadError> {
        if let Some(r) = &self.refusal {
            return Err(r.error().into());
        }
        if !self.archive.needs_veri() {
            return Ok(());
        }
        let check = self.veri.get_or_init(|| self.check_veri(log));
        if check.ok {
            Ok(())
        } else {
            Err(ReadError::VeriFailed {
                path: self.path.display().to_string(),
                detail: check.detail.clone(),
            })
        }
    }

    fn check_veri(&self, log: &dyn Fn(&str)) -> VeriCheck {
        let a = &self.archive;
        let r = a.check_veri(&|_| {});
        let at = now_unix();
        // veri.json goes from "unchecked" to the result.
        self.results_changed();
        match r {
            Ok(()) => VeriCheck {
                ok: true,
                computed: a.veri.map(|v| hex::encode(v.expected)),
                detail: "match".into(),
                at,
            },
            Err(e) => {
                let computed = match &e {
                    Error::VeriMismatch { computed, .. } => Some(computed.clone()),
                    _ => None,
                };
                let detail = e.to_string();
                log(&format!(
                    "h4fs: {}: whole-file VERI check failed: {detail}; its data files return EIO",
                    self.path.display()
                ));
                VeriCheck {
                    ok: false,
                    computed,
                    detail,
                    at,
                }
            }
        }
    }

    /// The whole-file VERI result, once checked.
    pub fn veri(&self) -> Option<&VeriCheck> {
        self.veri.get()
    }

    /// Count a block that passed its check.
    pub(super) fn verified(&self) {
        self.blocks_verified.fetch_add(1, Ordering::Relaxed);
    }

    /// Count `n` hash groups that passed their check.
    pub(super) fn groups_verified_add(&self, n: u64) {
        self.groups_verified.fetch_add(n, Ordering::Relaxed);
    }

    /// Hash groups that passed their check so far (v2 containers served by groups).
    pub fn groups_verified(&self) -> u64 {
        self.groups_verified.load(Ordering::Relaxed)
    }

    /// Whether reads of track `t` verify and cache hash groups rather than blocks: a v2
    /// container whose decoded stream is its stored stream (plain, identity engine, one
    /// track; see [`Archive::stream_is_stored`]). Encrypted or encoded v2 blocks are
    /// decrypted or decoded whole, so they keep the block path.
    pub fn by_groups(&self, t: usize) -> bool {
        t == 0
            && *self
                .by_groups
                .get_or_init(|| self.archive.stream_is_stored(0))
    }

    /// Record a failed check of block `n` of track `t`; true when it is the first one
    /// for that block (a new verification result).
    pub(super) fn failed(&self, t: usize, n: u64, offset: u64, error: String) -> bool {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = f.entry((t, n)).or_insert_with(|| Failure {
            offset,
            error,
            first_at: now_unix(),
            count: 0,
        });
        entry.count += 1;
        let first = entry.count == 1;
        if first {
            // A new result (under the failures lock, so the generations follow the
            // order of the entries).
            self.results_changed();
        }
        first
    }

    /// Blocks that passed their check so far.
    pub fn blocks_verified(&self) -> u64 {
        self.blocks_verified.load(Ordering::Relaxed)
    }

    /// Blocks that failed, by (track, block), in order.
    pub fn failures(&self) -> Vec<((usize, u64), Failure)> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, f)| (*k, f.clone()))
            .collect()
    }

    /// A verification result changed: new generation, later mtime.
    fn results_changed(&self) {
        let mut c = self.veri_clock.lock().unwrap_or_else(|p| p.into_inner());
        c.generation += 1;
        c.mtime = now_unix().max(c.mtime + 1);
    }

    /// When the verification results last changed.
    pub fn results_mtime(&self) -> SystemTime {
        let c = *self.veri_clock.lock().unwrap_or_else(|p| p.into_inner());
        UNIX_EPOCH + Duration::from_secs(c.mtime)
    }
}
