//! Status files and counters: the generated JSON files (`meta.json`, `safe.json`,
//! `manifest.json`, `tracks.json`), `veri.json` (a snapshot per open, as verification
//! results change), the root's `user.h4fs.veri` summary and the live counters of
//! [`STATS_XATTR`].

use super::inode::Local;
use super::sources::VerifyLevel;
use super::{Fs, content};
use crate::blocks::state::unix;
use crate::blocks::{ContainerId, TrackId};
use crate::reader::Layout;
use crate::remote::RemoteStats;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

/// Extended attribute of the mount root whose value is the mount's live counters, as
/// JSON (read by `h4fs stats`). Readable by name only: `listxattr` leaves it out, so
/// tools that copy extended attributes do not copy it.
pub const STATS_XATTR: &str = "user.h4fs.stats";

/// Largest value of [`STATS_XATTR`]: the kernel's limit on one extended attribute
/// (`XATTR_SIZE_MAX`).
pub(super) const STATS_XATTR_MAX: usize = 65536;

/// A remote source's counters as the stats show them. Only counts and the address
/// (which never holds a secret: URLs with user names or queries are refused).
fn remote_json(shown: &str, r: &RemoteStats) -> Value {
    let s = r.snapshot();
    let mut v = json!({
        "requests": s.requests,
        "bytes_fetched": s.bytes,
        "retries": s.retries,
        "failed_requests": s.errors,
    });
    if !shown.is_empty() {
        v["source"] = json!(shown);
    }
    v
}

impl Fs {
    // ---- generated content ----------------------------------------------------------

    pub(super) fn gen_len(&self, c: ContainerId, t: Option<TrackId>, l: Local) -> u64 {
        match l {
            Local::IndexCsv | Local::SeekCsv => {
                let Some(dt) = self.data_track(c, t) else {
                    return 0;
                };
                let tv = &self.container(c).tracks[dt.index()];
                let rf = if l == Local::IndexCsv {
                    &tv.index_csv
                } else {
                    &tv.seek_csv
                };
                rf.len(self.track(c, dt))
            }
            _ => self.generated(c, t, l).len() as u64,
        }
    }

    /// Immutable generated JSON, built on first use.
    pub(super) fn generated(&self, c: ContainerId, t: Option<TrackId>, l: Local) -> Arc<Vec<u8>> {
        let cont = self.container(c);
        let dt = self.data_track(c, t);
        let slot = match t {
            Some(t) => &cont.tracks[t.index()].generated,
            None => &cont.generated,
        };
        if let Some(v) = slot.lock().unwrap_or_else(|p| p.into_inner()).get(&l) {
            return v.clone();
        }
        let a = self.archive(c);
        let bytes = match l {
            Local::Meta => content::meta_json(a, self.served(c).unreadable().as_deref()),
            Local::Safe => content::safe_json(a),
            Local::Manifest => match dt {
                Some(dt) => content::manifest_json(a, &cont.name, self.track(c, dt)),
                None => {
                    let per: Vec<Value> = a
                        .tracks
                        .iter()
                        .map(|tr| {
                            serde_json::from_slice(&content::manifest_json(a, &cont.name, tr))
                                .unwrap_or(Value::Null)
                        })
                        .collect();
                    content::pretty(&json!({"container": cont.name, "tracks": per}))
                }
            },
            Local::Tracks => content::tracks_json(a, t.map(|t| self.track(c, t))),
            // veri.json changes while mounted: snapshot per open, never kept here.
            Local::Veri
            | Local::Dir
            | Local::SeekCsv
            | Local::IndexCsv
            | Local::Stream
            | Local::Blocks
            | Local::ByPts
            | Local::Unused11
            | Local::ByName
            | Local::StreamLink => Vec::new(),
        };
        let v = Arc::new(bytes);
        slot.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(l, v.clone());
        v
    }

    pub(super) fn veri_value(&self, c: ContainerId) -> Value {
        let cont = self.container(c);
        let served = self.served(c);
        let a = &served.archive;
        let src = cont;
        let unreadable = served.unreadable();
        let checked_at = unix(src.checked_at);
        let structure = match a.layout {
            Layout::H4fs => json!({
                "algorithm": "sha256 structure root over footer, SEEK, META, SAFE and the block index",
                "expected": a.footer.map(|(_, f)| hex::encode(f.root)),
                "status": if a.root_checked { "ok" } else { "unchecked" },
                "checked_at": a.root_checked.then(|| content::iso8601(checked_at)),
            }),
            Layout::ReferenceA => json!({
                "algorithm": "crc32 of every chunk read at mount",
                "status": if src.level == VerifyLevel::None { "unchecked" } else { "ok" },
                "checked_at": (src.level != VerifyLevel::None).then(|| content::iso8601(checked_at)),
            }),
            Layout::MultitrackC => json!({
                "algorithm": "crc32 of every chunk and of the whole file",
                "status": "ok",
                "checked_at": content::iso8601(checked_at),
            }),
        };
        let veri = match (a.veri, a.layout) {
            (None, Layout::ReferenceA) => json!({
                "status": "absent",
                "detail": "a reference file has no other check of its chunks: its data files return EIO",
            }),
            (None, _) => json!({"status": "absent"}),
            (Some(v), Layout::ReferenceA) => match served.veri() {
                None => json!({
                    "algorithm": "sha256 of every chunk before VERI",
                    "expected": hex::encode(v.expected),
                    "computed": null,
                    "status": "unchecked",
                    "when": "on the first open of a data file",
                }),
                Some(chk) => json!({
                    "algorithm": "sha256 of every chunk before VERI",
                    "expected": hex::encode(v.expected),
                    "computed": chk.computed,
                    "status": if chk.ok { "ok" } else { "mismatch" },
                    "detail": chk.detail,
                    "checked_at": content::iso8601(chk.at),
                }),
            },
            (Some(v), _) => json!({
                "algorithm": "sha256 of every chunk before VERI",
                "expected": hex::encode(v.expected),
                "status": if src.level == VerifyLevel::Full { "ok" } else { "unchecked" },
                "checked_at": (src.level == VerifyLevel::Full).then(|| content::iso8601(checked_at)),
            }),
        };
        let algorithm = match a.layout {
            Layout::H4fs => "sha256 of stored bytes, against the block index",
            Layout::ReferenceA => "crc32 of the CORE payload",
            Layout::MultitrackC => "crc32 of the CORE chunk",
        };
        let failures: Vec<Value> = served
            .failures()
            .iter()
            .map(|&((t, n), ref f)| {
                json!({
                    "track": a.tracks[t].id,
                    "block": n,
                    "file_offset": f.offset,
                    "error": f.error,
                    "first_seen": content::iso8601(f.first_at),
                })
            })
            .collect();
        json!({
            "container": src.path.display().to_string(),
            "layout": a.layout,
            "verify": src.level.name(),
            "structure": structure,
            "veri": veri,
            "blocks": {
                "algorithm": algorithm,
                "when": "each block before its bytes are first served",
                "verified_full_at_mount": src.full_blocks,
                "failures": failures,
            },
            "data": {
                "readable": unreadable.is_none(),
                "reason": unreadable,
            },
        })
    }

    pub(super) fn veri_json(&self, c: ContainerId) -> Vec<u8> {
        content::pretty(&self.veri_value(c))
    }

    pub(super) fn veri_summary(&self, c: ContainerId) -> String {
        let v = self.veri_value(c);
        let failures = v["blocks"]["failures"].as_array().map_or(0, Vec::len);
        json!({
            "structure": v["structure"]["status"],
            "veri": v["veri"]["status"],
            "block_failures": failures,
            "data_readable": v["data"]["readable"],
        })
        .to_string()
    }

    /// The mount's live counters (the value of [`STATS_XATTR`]).
    pub fn stats(&self) -> Value {
        let s = self.blocks.stats();
        let per_container: Vec<Value> = self
            .opened()
            .map(|(id, c)| {
                let served = self.served(id);
                let failures = served.failures();
                let mut v = json!({
                    "name": c.name,
                    "blocks_verified": served.blocks_verified(),
                    "groups_verified": served.groups_verified(),
                    "verification_failures": failures.len(),
                    "failed_reads": failures.iter().map(|(_, f)| f.count).sum::<u64>(),
                });
                if let Some(r) = &c.remote {
                    v["remote"] = remote_json(&c.path.display().to_string(), r);
                }
                v
            })
            .collect();
        // Containers of a prefix that failed to open (their directories give EIO).
        let failed_to_open: Vec<Value> = self
            .containers
            .iter()
            .filter_map(|slot| {
                let f = slot.failed.lock().unwrap_or_else(|e| e.into_inner());
                let (_, why) = f.as_ref()?;
                Some(json!({"name": slot.name, "error": why}))
            })
            .collect();
        let remote_sum = |key: &str| {
            per_container
                .iter()
                .map(|c| c["remote"][key].as_u64().unwrap_or(0))
                .sum::<u64>()
                + self.listing.as_ref().map_or(0, |l| {
                    let s = l.snapshot();
                    match key {
                        "requests" => s.requests,
                        "bytes_fetched" => s.bytes,
                        "retries" => s.retries,
                        _ => s.errors,
                    }
                })
        };
        let is_remote = self.listing.is_some() || self.opened().any(|(_, c)| c.remote.is_some());
        let sum = |key: &str| {
            per_container
                .iter()
                .map(|c| c[key].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        let mut v = json!({
            "cache": {
                "hits": s.hits,
                "misses": s.misses,
                "evictions": s.evictions,
                "prefetches": s.prefetches,
                "blocks": s.blocks,
                "bytes": s.bytes,
                "capacity": s.capacity,
            },
            "bytes_served": self.bytes_served.load(Ordering::Relaxed),
            "read_requests": self.read_requests.load(Ordering::Relaxed),
            "largest_read_request": self.largest_read.load(Ordering::Relaxed),
            "blocks_verified": sum("blocks_verified"),
            "groups_verified": sum("groups_verified"),
            "verification_failures": sum("verification_failures"),
            "failed_reads": sum("failed_reads"),
            "containers": self.containers.len(),
            "per_container": per_container,
            "skipped": self.skipped.iter().map(|(file, error)| json!({"file": file, "error": error})).collect::<Vec<_>>(),
            "uptime_s": SystemTime::now().duration_since(self.started).unwrap_or(Duration::ZERO).as_secs(),
        });
        if is_remote {
            v["containers_opened"] = json!(self.opened().count());
            v["failed_to_open"] = json!(failed_to_open);
            v["remote"] = json!({
                "requests": remote_sum("requests"),
                "bytes_fetched": remote_sum("bytes_fetched"),
                "retries": remote_sum("retries"),
                "failed_requests": remote_sum("failed_requests"),
            });
            if let Some(l) = &self.listing {
                v["remote"]["listing"] = remote_json("", l);
            }
            if let Some(d) = &self.cache_dir {
                v["remote"]["cache_dir"] = json!(d.stats());
            }
        }
        v
    }

    /// [`Fs::stats`] as compact JSON within the kernel's limit for one extended
    /// attribute: with very many containers, the per-container list and then the
    /// skipped list are cut, and `"omitted"` says how many entries of each were left out.
    pub(super) fn stats_xattr(&self) -> Vec<u8> {
        let mut v = self.stats();
        let mut bytes = v.to_string().into_bytes();
        for list in ["per_container", "skipped"] {
            let mut omitted = 0u64;
            while bytes.len() > STATS_XATTR_MAX {
                let Some(items) = v[list].as_array_mut() else {
                    break;
                };
                if items.is_empty() {
                    break;
                }
                // Halve until it fits: a bounded number of passes.
                let keep = items.len() / 2;
                omitted += (items.len() - keep) as u64;
                items.truncate(keep);
                v["omitted"][list] = json!(omitted);
                bytes = v.to_string().into_bytes();
            }
        }
        bytes
    }
}
