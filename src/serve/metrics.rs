//! `/metrics`: counters in the Prometheus text format (version 0.0.4).
//!
//! Route labels are a fixed set (a file name of the tree, `blocks`, `by-pts`, a
//! reference route, ...), never a raw path, so the number of series stays bounded
//! whatever clients send.

use crate::blocks::CacheStats;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// What the server counts.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Body bytes handed to connections.
    pub bytes: AtomicU64,
    /// Range requests answered from cached, verified blocks without a blocking read.
    pub fast_ranges: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

/// The route label of a request path (its decoded segments).
pub fn route(segs: &[String]) -> &'static str {
    let first = segs.first().map(String::as_str);
    match (first, segs.len()) {
        (None, _) => "/",
        (Some("containers.json"), 1) => "containers.json",
        (Some("metrics"), 1) => "metrics",
        (Some("stats.json"), 1) => "stats.json",
        (Some("video"), n) if n >= 2 => match segs[1].as_str() {
            "manifest" => "video/manifest",
            "seek_to_block" => "video/seek_to_block",
            "block" => "video/block",
            "range" => "video/range",
            _ => "other",
        },
        (Some(_), 1) => "container",
        (Some(_), n) => {
            // The file within the container (or track) directory.
            let last = segs[n - 1].as_str();
            let parent = segs[n - 2].as_str();
            match (parent, last) {
                ("blocks", _) => "blocks",
                ("by-pts", _) => "by-pts",
                (_, "meta.json") => "meta.json",
                (_, "safe.json") => "safe.json",
                (_, "seek.csv") => "seek.csv",
                (_, "index.csv") => "index.csv",
                (_, "veri.json") => "veri.json",
                (_, "manifest.json") => "manifest.json",
                (_, "tracks.json" | "track.json") => "tracks.json",
                (_, "stream") => "stream",
                (_, "stream.ts") => "stream.ts",
                (_, "index.m3u8") => "index.m3u8",
                (_, "blocks" | "by-pts") => "directory",
                _ => "other",
            }
        }
    }
}

impl Metrics {
    /// Count a response of `status` on `route`, its headers ready after `latency`.
    pub fn record(&self, route: &'static str, status: u16, latency: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route, status))
            .or_insert(0) += 1;
        let secs = latency.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, cache: &CacheStats, failures: u64, cut: u64) -> String {
        let mut s = String::new();
        s.push_str(
            "# HELP h4fs_http_requests_total HTTP requests answered, by route and status.\n",
        );
        s.push_str("# TYPE h4fs_http_requests_total counter\n");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                s,
                "h4fs_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let counter = |s: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        counter(
            &mut s,
            "h4fs_http_response_body_bytes_total",
            "Response body bytes handed to connections.",
            self.bytes.load(Ordering::Relaxed),
        );
        counter(
            &mut s,
            "h4fs_http_fast_ranges_total",
            "Range requests answered from cached, verified blocks without a blocking read.",
            self.fast_ranges.load(Ordering::Relaxed),
        );
        counter(
            &mut s,
            "h4fs_cache_hits_total",
            "Block reads answered from the verified-block cache.",
            cache.hits,
        );
        counter(
            &mut s,
            "h4fs_cache_misses_total",
            "Block reads that read and verified the block.",
            cache.misses,
        );
        counter(
            &mut s,
            "h4fs_cache_evictions_total",
            "Blocks dropped from the cache to stay within its bound.",
            cache.evictions,
        );
        counter(
            &mut s,
            "h4fs_verification_failures_total",
            "Responses refused or cut because a block failed verification or could not be read.",
            failures,
        );
        counter(
            &mut s,
            "h4fs_http_responses_cut_total",
            "Responses whose body was cut after the headers were sent.",
            cut,
        );
        let _ = write!(
            s,
            "# HELP h4fs_cache_bytes Decoded bytes held in the cache.\n# TYPE h4fs_cache_bytes gauge\nh4fs_cache_bytes {}\n",
            cache.bytes
        );
        s.push_str(
            "# HELP h4fs_http_request_duration_seconds Time from request to response headers.\n",
        );
        s.push_str("# TYPE h4fs_http_request_duration_seconds histogram\n");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "h4fs_http_request_duration_seconds_bucket{{le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "h4fs_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            s,
            "h4fs_http_request_duration_seconds_sum {}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "h4fs_http_request_duration_seconds_count {count}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn routes_are_a_fixed_set() {
        assert_eq!(route(&segs("/")), "/");
        assert_eq!(route(&segs("/m/blocks/000001")), "blocks");
        assert_eq!(route(&segs("/m/by-pts/5")), "by-pts");
        assert_eq!(route(&segs("/m/stream")), "stream");
        assert_eq!(route(&segs("/m/track/stream")), "stream");
        assert_eq!(route(&segs("/video/block/3")), "video/block");
        assert_eq!(route(&segs("/m/anything-else")), "other");
        assert_eq!(route(&segs("/m")), "container");
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.record("stream", 200, Duration::from_micros(700));
        m.record("stream", 200, Duration::from_secs(10));
        m.record("blocks", 404, Duration::from_millis(3));
        let t = m.render(&CacheStats::default(), 1, 0);
        assert!(t.contains("h4fs_http_requests_total{route=\"stream\",status=\"200\"} 2\n"));
        assert!(t.contains("h4fs_http_requests_total{route=\"blocks\",status=\"404\"} 1\n"));
        assert!(t.contains("h4fs_http_request_duration_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(t.contains("h4fs_http_request_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(t.contains("h4fs_http_request_duration_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(t.contains("h4fs_http_request_duration_seconds_bucket{le=\"2.5\"} 2\n"));
        assert!(t.contains("h4fs_http_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(t.contains("h4fs_verification_failures_total 1\n"));
    }
}
