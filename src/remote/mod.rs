//! Containers on S3 and HTTP(S): a [`ReadAt`] over range GETs, on the `object_store`
//! crate.
//!
//! # Why `object_store`
//! It is maintained (Apache Arrow), used by arrow-rs, DataFusion and delta-rs, and gives
//! S3 (SigV4, the AWS environment, path and virtual-hosted addressing, S3-compatible
//! endpoints) and plain HTTP(S) behind one interface, on `reqwest` with rustls.
//!
//! # Cost
//! Every request is counted in [`RemoteStats`]. Fetched ranges are kept in one cache
//! for all sources of the process ([`CACHE_BYTES`] together, least recently used
//! dropped first), so the reader's many small preads at open become one to three
//! requests, and a mount of thousands of containers holds no more than one source:
//! * opening fetches the last [`MIN_WINDOW`] bytes in one GET (a suffix range, which
//!   also gives the length and the ETag);
//! * a small read that misses fetches at least [`MIN_WINDOW`] bytes from where it
//!   starts, and the window doubles (up to [`PART`]) while misses go forward in order, so
//!   a reference container's chunk-header walk costs few, large requests;
//! * [`ReadAt::will_read`] hints (the h4fs footer's metadata span, the next blocks of
//!   `extract`, a sequential mount reader's window) are fetched in the background,
//!   coalesced into parts of at most [`PART`] (8 MiB), all in flight together; a read
//!   of bytes in flight waits for their part instead of asking again;
//! * a large read ([`LARGE`] or more) that the cache does not hold is fetched directly,
//!   in [`PART`]-sized parts in parallel, and not cached.
//!
//! # Failures
//! Each part is retried on 5xx, 429 (throttling), connection errors and timeouts, with
//! exponential backoff from 100 ms (doubling, at most 2 s between tries), at most
//! [`MAX_ATTEMPTS`] tries, and never past [`DEADLINE`] (60 s) for one read: a read
//! fails within that time, never hangs. After a read failed for want of an answer, reads
//! fail at once for [`COOLDOWN`] (so a caller that falls back to smaller reads does not
//! wait again for each), then the store is tried again.
//!
//! The first response's ETag (or, without one, its Last-Modified time) is the object's
//! identity: every later GET is conditional on it (`If-Match`), and a response for
//! another version, or a 412, makes this source fail every read from then on: an object
//! replaced on the store is never mixed with the one that was opened.
//!
//! # Runtime
//! `ReadAt` is synchronous; requests run on one process-wide tokio runtime with two
//! worker threads, and callers (rayon workers, FUSE threads) block on them. The runtime
//! is shared, and so is the client of a [`Bucket`], so the thousands of sources of a
//! prefix mount cost one connection pool.

pub mod disk;
mod location;
pub mod profile;

pub use location::{Location, Prefix, is_remote, redacted};

use crate::source::ReadAt;
use crate::{Error, Result};
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, RetryConfig};
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Smallest range a small read fetches (and what opening fetches from the end).
pub const MIN_WINDOW: u64 = 256 << 10;
/// The part size: reads and hints are fetched in ranges of at most this.
pub const PART: u64 = 8 << 20;
/// Reads of at least this many bytes bypass the cache.
pub const LARGE: u64 = 1 << 20;
/// Bytes of fetched ranges kept.
pub const CACHE_BYTES: u64 = 96 << 20;
/// Most bytes one [`ReadAt::will_read`] hint fetches.
pub const HINT_BYTES: u64 = 64 << 20;
/// Tries of one request (the first and the retries).
pub const MAX_ATTEMPTS: u32 = 5;
/// Longest time one read may take, retries included.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// After a read failed for want of an answer, how long later reads fail at once.
pub const COOLDOWN: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters of one remote source: what opening and reading it cost.
#[derive(Debug, Default)]
pub struct RemoteStats {
    /// HTTP requests sent (retries included).
    pub requests: AtomicU64,
    /// Bytes received in response bodies.
    pub bytes: AtomicU64,
    /// Requests that were retries of a failed one.
    pub retries: AtomicU64,
    /// Requests that failed (with or without a retry after them).
    pub errors: AtomicU64,
}

/// A snapshot of [`RemoteStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub bytes: u64,
    pub retries: u64,
    pub errors: u64,
}

impl RemoteStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// How to reach S3. Secrets are not here: they come from the environment or the AWS
/// profile files, never from the command line.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// An S3-compatible endpoint (`http://127.0.0.1:8333`); else `AWS_ENDPOINT_URL`,
    /// the profile's `endpoint_url`, or AWS itself.
    pub endpoint: Option<String>,
    /// The region; else `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's, `us-east-1`.
    pub region: Option<String>,
    /// Send requests unsigned (public buckets), as the AWS CLI's `--no-sign-request`.
    pub no_sign_request: bool,
    /// Path-style addressing (`ENDPOINT/BUCKET/KEY`); always used with an endpoint.
    pub path_style: bool,
    /// Extra trusted root certificates (a PEM file) for `https://` sources and
    /// endpoints; else `AWS_CA_BUNDLE`.
    pub ca_file: Option<std::path::PathBuf>,
    /// Keep fetched ranges on local disk too (`mount --cache-dir`).
    pub cache_dir: Option<Arc<disk::DiskCache>>,
}

fn runtime() -> io::Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("h4fs-remote")
        .enable_all()
        .build()?;
    Ok(RT.get_or_init(|| rt))
}

/// A failed request, classified.
#[derive(Debug)]
enum Failure {
    /// Worth another try (5xx, 429, connection, timeout).
    Transient(String),
    /// Will not get better by trying again (403, 404, 400, ...).
    Permanent(String),
    /// The object is not the one opened.
    Changed(String),
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Failure::Transient(m) | Failure::Permanent(m) | Failure::Changed(m) => m,
        }
    }
}

/// The HTTP status an `object_store` error carries, from its text (its status lives in
/// a private type): "... status code: 503 Service Unavailable ...".
fn status_of(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// The S3 error code in a response body quoted in `text` (`<Code>NoSuchKey</Code>`).
fn s3_code(text: &str) -> Option<&str> {
    let at = text.find("<Code>")? + "<Code>".len();
    let end = text[at..].find("</Code>")? + at;
    Some(&text[at..end]).filter(|c| c.len() < 64 && c.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Classify an `object_store` error into a message that names the object, the status
/// and the S3 error code, and nothing else: no URL query, no header, no credential.
fn classify(name: &str, what: &str, e: &object_store::Error) -> Failure {
    use object_store::Error as E;
    let mut chain = e.to_string();
    let mut src = std::error::Error::source(e);
    let mut http_kind = None;
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        if let Some(h) = s.downcast_ref::<object_store::client::HttpError>() {
            http_kind = Some(h.kind());
        }
        src = s.source();
    }
    let code = s3_code(&chain)
        .map(|c| format!(", {c}"))
        .unwrap_or_default();
    let status = match e {
        E::NotFound { .. } => Some(404),
        E::PermissionDenied { .. } => Some(403),
        E::Unauthenticated { .. } => Some(401),
        E::Precondition { .. } => Some(412),
        _ => status_of(&chain),
    };
    match status {
        Some(412) => Failure::Changed(format!(
            "{name} changed on the store after it was opened (HTTP 412 to a request \
             conditional on its ETag): refusing to mix two versions"
        )),
        Some(s @ (401 | 403)) => Failure::Permanent(format!(
            "{what} of {name}: access denied (HTTP {s}{code}); check the credentials \
             (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE) or use \
             --no-sign-request for a public object"
        )),
        Some(404) => Failure::Permanent(format!("{what} of {name}: not found (HTTP 404{code})")),
        Some(s) if s >= 500 || s == 429 => Failure::Transient(format!(
            "{what} of {name}: the store answered HTTP {s}{code}"
        )),
        Some(s) => Failure::Permanent(format!(
            "{what} of {name}: the store answered HTTP {s}{code}"
        )),
        None if chain.contains("invalid peer certificate") => {
            let why = chain
                .split("invalid peer certificate: ")
                .nth(1)
                .and_then(|r| r.split(": ").next())
                .unwrap_or("not trusted");
            Failure::Permanent(format!(
                "{what} of {name}: the server's TLS certificate is not trusted \
                 ({why}); give the certificate of its CA with --ca-file FILE.pem \
                 (or AWS_CA_BUNDLE)",
                why = why.chars().take(120).collect::<String>()
            ))
        }
        None => {
            use object_store::client::HttpErrorKind as K;
            let why = match http_kind {
                Some(K::Connect) => "cannot connect to the store",
                Some(K::Timeout) => "the store did not answer in time",
                Some(K::Interrupted) => "the connection was cut",
                Some(K::Request) => "the request failed",
                Some(K::Decode) => "the response could not be read",
                _ => "",
            };
            if why.is_empty() {
                Failure::Permanent(format!("{what} of {name}: {}", first_line(&chain)))
            } else {
                Failure::Transient(format!("{what} of {name}: {why}"))
            }
        }
    }
}

/// The first `: `-separated part of an error text that holds no URL (URLs may carry
/// more than the user typed).
fn first_line(chain: &str) -> String {
    chain
        .split(": ")
        .find(|p| !p.contains("://"))
        .unwrap_or("request failed")
        .chars()
        .take(200)
        .collect()
}

/// The object's identity as first seen.
#[derive(Debug, Clone)]
struct Identity {
    e_tag: Option<String>,
    /// Last-Modified (RFC 3339), compared when the store gives no ETag.
    last_modified: String,
    modified: std::time::SystemTime,
    len: u64,
}

/// Ranges already fetched, of every remote source of the process together, bounded by
/// [`CACHE_BYTES`] (least recently used dropped first), so a mount of thousands of
/// containers holds no more than one source does. Entries are tagged with their
/// source's id.
#[derive(Default)]
struct Cache {
    entries: Vec<Entry>,
    bytes: u64,
    tick: u64,
}

struct Entry {
    src: u64,
    start: u64,
    data: Bytes,
    used: u64,
}

/// The process's one [`Cache`].
fn shared_cache() -> std::sync::MutexGuard<'static, Cache> {
    static CACHE: Mutex<Cache> = Mutex::new(Cache {
        entries: Vec::new(),
        bytes: 0,
        tick: 0,
    });
    CACHE.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cache {
    fn find(&self, src: u64, pos: u64) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.src == src && e.start <= pos && pos < e.start + e.data.len() as u64)
    }

    /// Copy into `buf` what the cache holds of source `src` from `offset` on,
    /// contiguously; returns how many bytes it copied.
    fn copy_from(&mut self, src: u64, buf: &mut [u8], offset: u64) -> usize {
        let mut done = 0usize;
        self.tick += 1;
        while done < buf.len() {
            let pos = offset + done as u64;
            let Some(i) = self.find(src, pos) else {
                break;
            };
            let e = &mut self.entries[i];
            e.used = self.tick;
            let from = (pos - e.start) as usize;
            let n = (e.data.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&e.data[from..from + n]);
            done += n;
        }
        done
    }

    fn covers(&self, src: u64, r: &Range<u64>) -> bool {
        let mut pos = r.start;
        while pos < r.end {
            match self.find(src, pos) {
                Some(i) => pos = self.entries[i].start + self.entries[i].data.len() as u64,
                None => return false,
            }
        }
        true
    }

    fn insert(&mut self, src: u64, start: u64, data: Bytes) {
        if data.is_empty() || data.len() as u64 > CACHE_BYTES {
            return;
        }
        self.tick += 1;
        self.bytes += data.len() as u64;
        self.entries.push(Entry {
            src,
            start,
            data,
            used: self.tick,
        });
        while self.bytes > CACHE_BYTES {
            let (i, _) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used)
                .expect("over capacity means not empty");
            let e = self.entries.swap_remove(i);
            self.bytes -= e.data.len() as u64;
        }
    }

    /// Drop the entries of source `src` that hold bytes of `r`; whether there were any.
    fn forget_range(&mut self, src: u64, r: &Range<u64>) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| {
            !(e.src == src && e.start < r.end && r.start < e.start + e.data.len() as u64)
        });
        self.bytes = self.entries.iter().map(|e| e.data.len() as u64).sum();
        self.entries.len() != before
    }

    /// Drop every entry of source `src`.
    fn forget(&mut self, src: u64) {
        self.entries.retain(|e| e.src != src);
        self.bytes = self.entries.iter().map(|e| e.data.len() as u64).sum();
    }
}

/// The growing read-ahead window of one source.
#[derive(Default)]
struct Window {
    window: u64,
    last_end: u64,
}

impl Window {
    /// The read-ahead window for a miss at `offset`: doubles while misses go forward,
    /// back to [`MIN_WINDOW`] after a jump back or far ahead.
    fn window_for(&mut self, offset: u64) -> u64 {
        let sequential =
            offset >= self.last_end && offset - self.last_end <= self.window.max(MIN_WINDOW);
        self.window = match sequential && self.window > 0 {
            true => (self.window * 2).min(PART),
            false => MIN_WINDOW,
        };
        self.window
    }
}

/// A part being fetched for a hint: readers of its bytes wait for it rather than ask
/// the store a second time.
#[derive(Default)]
struct Landing {
    done: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Landing {
    fn land(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Wait until the part landed (in the cache, or failed), at most `limit`.
    fn wait(&self, limit: Duration) {
        let until = Instant::now() + limit;
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            done = self
                .cv
                .wait_timeout(done, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A container read with range GETs from S3 or an HTTP server. A clone reads the same
/// object through the same caches and counters.
#[derive(Clone)]
pub struct RemoteSource {
    inner: Arc<Inner>,
}

struct Inner {
    /// Tags this source's entries in the shared cache.
    id: u64,
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    name: String,
    identity: Identity,
    stats: Arc<RemoteStats>,
    window: Mutex<Window>,
    /// Parts fetched for hints, not landed yet.
    inflight: Mutex<Vec<(Range<u64>, Arc<Landing>)>>,
    /// Set once the object was seen to change: every read fails with this.
    changed: OnceLock<String>,
    /// When and why a read last failed for want of an answer.
    down: Mutex<Option<(Instant, String)>>,
    /// The disk cache and this object's key in it (`mount --cache-dir`).
    disk: Option<(Arc<disk::DiskCache>, String)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        shared_cache().forget(self.id);
    }
}

impl std::fmt::Debug for RemoteSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSource")
            .field("name", &self.inner.name)
            .field("len", &self.inner.identity.len)
            .finish_non_exhaustive()
    }
}

fn io_err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// The S3 client for `bucket`, from the options, the environment and the profile.
fn s3_store(bucket: &str, opts: &RemoteOptions) -> Result<Arc<dyn ObjectStore>> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    // The AWS CLI's precedence: environment keys, else the profile's.
    let env_keys = env("AWS_ACCESS_KEY_ID").is_some() && env("AWS_SECRET_ACCESS_KEY").is_some();
    let profile = if env_keys && env("AWS_PROFILE").is_none() {
        profile::Profile::default()
    } else {
        profile::from_env().map_err(Error::BadInput)?
    };
    let mut signed = env_keys;
    if !env_keys {
        if let (Some(id), Some(secret)) = (&profile.access_key_id, &profile.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(t) = &profile.session_token {
                b = b.with_token(t);
            }
            signed = true;
        }
    }
    let region = opts
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or(profile.region.clone());
    if let Some(r) = region {
        b = b.with_region(r);
    }
    let endpoint = opts
        .endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or(profile.endpoint_url.clone());
    let https = endpoint
        .as_deref()
        .is_none_or(|e| e.to_ascii_lowercase().starts_with("https://"));
    if let Some(e) = &endpoint {
        if !is_remote(e) || e.to_ascii_lowercase().starts_with("s3://") {
            return Err(Error::BadInput(format!(
                "endpoint \"{e}\" is not an http:// or https:// URL"
            )));
        }
        b = b.with_endpoint(e.trim_end_matches('/'));
    }
    let path_style = opts.path_style || endpoint.is_some();
    b = b.with_virtual_hosted_style_request(!path_style);
    // Without credentials, requests go unsigned (public buckets) rather than to the
    // instance-metadata service, which is not there off EC2 and would only time out.
    b = b.with_skip_signature(opts.no_sign_request || !signed);
    // Only the session-token form of a key from the environment needs this.
    if let Some(t) = env("AWS_SESSION_TOKEN").filter(|_| env_keys) {
        b = b.with_config(AmazonS3ConfigKey::Token, t);
    }
    let client = client_options(!https, opts)?;
    let store = b
        .with_client_options(client)
        .with_retry(no_retries())
        .build()
        .map_err(|e| {
            Error::BadInput(format!(
                "cannot set up S3 access to bucket {bucket}: {}",
                first_line(&e.to_string())
            ))
        })?;
    Ok(Arc::new(store))
}

/// The HTTP client's options: timeouts, and for an `https://` server (`!allow_http`)
/// the extra roots of `--ca-file` or `AWS_CA_BUNDLE` (as the AWS CLI reads it; a plain
/// `http://` server has no use for them and they are not read).
fn client_options(allow_http: bool, opts: &RemoteOptions) -> Result<ClientOptions> {
    let mut client = ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT);
    let bundle = match &opts.ca_file {
        Some(f) => Some((format!("--ca-file ({})", f.display()), f.clone())),
        None => std::env::var("AWS_CA_BUNDLE")
            .ok()
            .filter(|b| !b.is_empty())
            .map(|b| (format!("AWS_CA_BUNDLE ({b})"), b.into())),
    };
    let Some((what, file)) = bundle.filter(|_| !allow_http) else {
        return Ok(client);
    };
    let pem = std::fs::read(&file).map_err(|e| Error::io(format!("cannot read {what}"), e))?;
    let certs = object_store::Certificate::from_pem_bundle(&pem)
        .map_err(|e| Error::BadInput(format!("{what} is not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(Error::BadInput(format!("{what} holds no PEM certificate")));
    }
    for c in certs {
        client = client.with_root_certificate(c);
    }
    Ok(client)
}

/// Retries are done here, counted, within [`DEADLINE`]; the client makes one try.
fn no_retries() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 0,
        retry_timeout: DEADLINE,
    }
}

/// A bucket of an S3 store: lists a prefix, and opens the objects found there with one
/// client (one connection pool) for all of them.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    /// What listing cost.
    stats: Arc<RemoteStats>,
    cache_dir: Option<Arc<disk::DiskCache>>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// An object found by [`Bucket::list`].
#[derive(Debug, Clone)]
pub struct Listed {
    /// The whole key.
    pub key: String,
    /// The last part of the key (the "file name").
    pub file_name: String,
    pub size: u64,
    pub last_modified: std::time::SystemTime,
    /// The key as the store gave it, for [`Bucket::open_listed`].
    location: ObjectPath,
}

/// Most objects one listing returns (more is an error, not a long wait).
pub const MAX_LISTED: usize = 1_000_000;

impl Bucket {
    /// A client for `bucket` (no request yet).
    pub fn connect(bucket: &str, opts: &RemoteOptions) -> Result<Bucket> {
        Ok(Bucket {
            store: s3_store(bucket, opts)?,
            bucket: bucket.to_string(),
            stats: Arc::new(RemoteStats::default()),
            cache_dir: opts.cache_dir.clone(),
        })
    }

    /// The counters of the listing requests.
    pub fn stats(&self) -> Arc<RemoteStats> {
        Arc::clone(&self.stats)
    }

    /// The objects directly under `prefix` (empty, or ending in `/`), sorted by key; not
    /// those under deeper prefixes. Retried as reads are, within [`DEADLINE`].
    pub fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let shown = format!("s3://{}/{prefix}", self.bucket);
        let at = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.trim_end_matches('/')));
        let rt = runtime().map_err(|e| Error::io("starting the network runtime", e))?;
        let start = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0u32;
        let result = loop {
            attempt += 1;
            if attempt > 1 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let left = DEADLINE.saturating_sub(start.elapsed());
            let listed = rt.block_on(async {
                tokio::time::timeout(left, self.store.list_with_delimiter(at.as_ref())).await
            });
            let failure = match listed {
                Ok(Ok(r)) => break r,
                Ok(Err(e)) => classify(&shown, "LIST", &e),
                Err(_) => Failure::Transient(format!(
                    "LIST of {shown}: no answer within {} s",
                    DEADLINE.as_secs()
                )),
            };
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            let Failure::Transient(msg) = failure else {
                return Err(Error::io(
                    format!("cannot list {shown}"),
                    io_err(failure.message()),
                ));
            };
            if attempt >= MAX_ATTEMPTS || start.elapsed() + backoff >= DEADLINE {
                return Err(Error::io(
                    format!("cannot list {shown}"),
                    io_err(format!("{msg} (gave up after {attempt} tries)")),
                ));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        };
        if result.objects.len() > MAX_LISTED {
            return Err(Error::Limit(format!(
                "{shown} holds {} objects; h4fs lists at most {MAX_LISTED}",
                result.objects.len()
            )));
        }
        let mut out: Vec<Listed> = result
            .objects
            .into_iter()
            .map(|m| Listed {
                key: m.location.to_string(),
                file_name: m.location.filename().unwrap_or_default().to_string(),
                size: m.size,
                last_modified: m.last_modified.into(),
                location: m.location,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Open an object found by [`Bucket::list`], by the key the store gave (as
    /// [`RemoteSource::open`] does: one GET of its end).
    pub fn open_listed(&self, obj: &Listed) -> Result<RemoteSource> {
        let name = format!("s3://{}/{}", self.bucket, obj.key);
        RemoteSource::open_in(
            Arc::clone(&self.store),
            obj.location.clone(),
            name,
            self.cache_dir.clone(),
        )
    }

    /// Open the object `key` (as [`RemoteSource::open`] does: one GET of its end).
    pub fn open(&self, key: &str) -> Result<RemoteSource> {
        let name = format!("s3://{}/{key}", self.bucket);
        let path = ObjectPath::parse(key)
            .map_err(|e| Error::BadInput(format!("{name}: not a valid object key: {e}")))?;
        RemoteSource::open_in(Arc::clone(&self.store), path, name, self.cache_dir.clone())
    }
}

impl RemoteSource {
    /// Open `loc`: one GET of its last [`MIN_WINDOW`] bytes, which gives its length and
    /// identity (ETag) too.
    pub fn open(loc: &Location, opts: &RemoteOptions) -> Result<RemoteSource> {
        let name = loc.shown();
        match loc {
            Location::S3 { bucket, key } => Bucket::connect(bucket, opts)?.open(key),
            Location::Http { base, path, https } => {
                let store = object_store::http::HttpBuilder::new()
                    .with_url(base.clone())
                    .with_client_options(client_options(!https, opts)?)
                    .with_retry(no_retries())
                    .build()
                    .map_err(|e| {
                        Error::BadInput(format!("{name}: {}", first_line(&e.to_string())))
                    })?;
                let p = ObjectPath::from_url_path(path)
                    .map_err(|e| Error::BadInput(format!("{name}: not a valid URL path: {e}")))?;
                RemoteSource::open_in(Arc::new(store), p, name, opts.cache_dir.clone())
            }
        }
    }

    fn open_in(
        store: Arc<dyn ObjectStore>,
        path: ObjectPath,
        name: String,
        cache_dir: Option<Arc<disk::DiskCache>>,
    ) -> Result<RemoteSource> {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let mut inner = Inner {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            store,
            path,
            name,
            identity: Identity {
                e_tag: None,
                last_modified: String::new(),
                modified: std::time::UNIX_EPOCH,
                len: 0,
            },
            stats: Arc::new(RemoteStats::default()),
            window: Mutex::new(Window::default()),
            inflight: Mutex::new(Vec::new()),
            changed: OnceLock::new(),
            down: Mutex::new(None),
            disk: None,
        };
        let rt = runtime().map_err(|e| Error::io("starting the network runtime", e))?;
        let (identity, range, data) = rt
            .block_on(inner.fetch_first())
            .map_err(|m| Error::io(format!("cannot open {}", inner.name), io_err(m)))?;
        inner.disk = cache_dir.map(|d| {
            let key = disk::object_key(
                &inner.name,
                identity.e_tag.as_deref(),
                &identity.last_modified,
                identity.len,
            );
            (d, key)
        });
        inner.identity = identity;
        shared_cache().insert(inner.id, range.start, data);
        inner.window.get_mut().expect("not shared yet").last_end = range.end;
        Ok(RemoteSource {
            inner: Arc::new(inner),
        })
    }

    /// The counters of this source (shared: they go on counting).
    pub fn stats(&self) -> Arc<RemoteStats> {
        Arc::clone(&self.inner.stats)
    }

    /// The object's Last-Modified time, as first seen.
    pub fn last_modified(&self) -> std::time::SystemTime {
        self.inner.identity.modified
    }
}

impl Inner {
    /// The first GET: the last bytes of the object, unconditional.
    async fn fetch_first(&self) -> std::result::Result<(Identity, Range<u64>, Bytes), String> {
        let opts = || GetOptions {
            range: Some(GetRange::Suffix(MIN_WINDOW)),
            ..GetOptions::default()
        };
        let r = self.with_retries("GET the end", |_| opts()).await?;
        let (meta, range, data) = r;
        let identity = Identity {
            e_tag: meta.e_tag.clone(),
            last_modified: meta.last_modified.to_rfc3339(),
            modified: meta.last_modified.into(),
            len: meta.size,
        };
        Ok((identity, range, data))
    }

    /// One request with retries; `make` builds its options (given the try number).
    async fn with_retries(
        &self,
        what: &str,
        make: impl Fn(u32) -> GetOptions,
    ) -> std::result::Result<(object_store::ObjectMeta, Range<u64>, Bytes), String> {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if attempt > 1 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let left = DEADLINE.saturating_sub(start.elapsed());
            let once = async {
                let r = self.store.get_opts(&self.path, make(attempt)).await?;
                let meta = r.meta.clone();
                let range = r.range.clone();
                let data = r.bytes().await?;
                Ok::<_, object_store::Error>((meta, range, data))
            };
            let failure = match tokio::time::timeout(left, once).await {
                Ok(Ok((meta, range, data))) => {
                    self.stats
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    if data.len() as u64 != range.end - range.start {
                        Failure::Transient(format!(
                            "{what} of {}: the response ended after {} of {} bytes",
                            self.name,
                            data.len(),
                            range.end - range.start
                        ))
                    } else {
                        return Ok((meta, range, data));
                    }
                }
                Ok(Err(e)) => classify(&self.name, what, &e),
                Err(_) => Failure::Transient(format!(
                    "{what} of {}: no answer within {} s",
                    self.name,
                    DEADLINE.as_secs()
                )),
            };
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            let Failure::Transient(msg) = failure else {
                return Err(failure.message().to_string());
            };
            if attempt >= MAX_ATTEMPTS || start.elapsed() + backoff >= DEADLINE {
                let msg = format!(
                    "{msg} (gave up after {attempt} tries in {:.1} s)",
                    start.elapsed().as_secs_f64()
                );
                *self.down.lock().expect("not poisoned") = Some((Instant::now(), msg.clone()));
                return Err(msg);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// The bytes `r`: from the disk cache when it holds every chunk they lie in, else
    /// from the store, the chunks they lie in (aligned to [`disk::CHUNK`]) fetched whole
    /// and kept on disk. Without a disk cache, straight from the store.
    async fn fetch(&self, r: Range<u64>) -> std::result::Result<Bytes, String> {
        let Some((d, key)) = &self.disk else {
            return self.fetch_store(r).await;
        };
        let len = self.identity.len;
        let chunk = |i: u64| i * disk::CHUNK..((i + 1) * disk::CHUNK).min(len);
        let (first, last) = (r.start / disk::CHUNK, (r.end - 1) / disk::CHUNK);
        let mut out = Vec::with_capacity((r.end - r.start) as usize);
        let mut held = Vec::new();
        if (first..=last).all(|i| d.contains(key, i)) {
            for i in first..=last {
                let c = chunk(i);
                match d.get(key, i, c.end - c.start) {
                    Some(b) => held.push((c, b)),
                    None => break,
                }
            }
        }
        if held.len() as u64 != last - first + 1 {
            let span = chunk(first).start..chunk(last).end;
            let data = self.fetch_store(span.clone()).await?;
            held.clear();
            d.count_misses((first..=last).filter(|&i| !d.contains(key, i)).count() as u64);
            for i in first..=last {
                let c = chunk(i);
                let b = &data[(c.start - span.start) as usize..(c.end - span.start) as usize];
                if !d.contains(key, i) {
                    d.put(key, i, b);
                }
                held.push((c, b.to_vec()));
            }
        }
        for (c, b) in &held {
            let from = r.start.max(c.start);
            let to = r.end.min(c.end);
            out.extend_from_slice(&b[(from - c.start) as usize..(to - c.start) as usize]);
        }
        Ok(Bytes::from(out))
    }

    /// Fetch `r` from the store (conditional on the object's identity) and check what
    /// came back is the object opened.
    async fn fetch_store(&self, r: Range<u64>) -> std::result::Result<Bytes, String> {
        let what = format!("GET bytes {}-{}", r.start, r.end - 1);
        let id = &self.identity;
        let (meta, got, data) = self
            .with_retries(&what, |_| GetOptions {
                range: Some(GetRange::Bounded(r.clone())),
                if_match: id.e_tag.clone(),
                ..GetOptions::default()
            })
            .await
            .inspect_err(|m| self.note_changed(m))?;
        let same = meta.size == id.len
            && match &id.e_tag {
                Some(t) => meta.e_tag.as_ref() == Some(t),
                None => meta.last_modified.to_rfc3339() == id.last_modified,
            };
        if !same {
            let m = format!(
                "{} changed on the store after it was opened (now {} bytes, ETag {}; \
                 opened: {} bytes, ETag {}): refusing to mix two versions",
                self.name,
                meta.size,
                meta.e_tag.as_deref().unwrap_or("none"),
                id.len,
                id.e_tag.as_deref().unwrap_or("none")
            );
            let _ = self.changed.set(m.clone());
            return Err(m);
        }
        if got != r {
            return Err(format!(
                "{what} of {}: the store answered bytes {}-{}",
                self.name,
                got.start,
                got.end.saturating_sub(1)
            ));
        }
        Ok(data)
    }

    fn note_changed(&self, msg: &str) {
        if msg.contains("changed on the store") {
            let _ = self.changed.set(msg.to_string());
        }
    }

    /// Fetch ranges (each at most [`PART`]) all at once.
    fn fetch_all(&self, parts: &[Range<u64>]) -> io::Result<Vec<Bytes>> {
        let rt = runtime()?;
        rt.block_on(futures::future::try_join_all(
            parts.iter().map(|r| self.fetch(r.clone())),
        ))
        .map_err(io_err)
    }

    /// Fail at once when the object changed or the store just failed to answer.
    fn check_usable(&self) -> io::Result<()> {
        if let Some(m) = self.changed.get() {
            return Err(io_err(m.clone()));
        }
        let down = self.down.lock().expect("not poisoned");
        if let Some((at, msg)) = down.as_ref() {
            if at.elapsed() < COOLDOWN {
                return Err(io_err(format!(
                    "{msg}; not trying again for {} s",
                    COOLDOWN.as_secs()
                )));
            }
        }
        Ok(())
    }

    /// Wait for the hinted parts in flight that overlap `r` to land (each bounded by
    /// [`DEADLINE`]: its fetch gives up by then).
    fn wait_inflight(&self, r: &Range<u64>) {
        let waiting: Vec<Arc<Landing>> = self
            .inflight
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(p, _)| p.start < r.end && r.start < p.end)
            .map(|(_, l)| Arc::clone(l))
            .collect();
        for l in waiting {
            l.wait(DEADLINE + Duration::from_secs(5));
        }
    }

    /// Whether `r` is being fetched already.
    fn in_flight(&self, r: &Range<u64>) -> bool {
        self.inflight
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|(p, _)| p.start <= r.start && r.end <= p.end)
    }
}

/// `r` cut into consecutive parts of at most [`PART`] bytes.
fn split(r: Range<u64>) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut pos = r.start;
    while pos < r.end {
        let end = (pos + PART).min(r.end);
        out.push(pos..end);
        pos = end;
    }
    out
}

/// Sort and merge ranges whose gap is at most `gap` bytes, then cut them into parts
/// of at most [`PART`].
fn coalesce(ranges: &[(u64, u64)], gap: u64) -> Vec<Range<u64>> {
    let mut rs: Vec<Range<u64>> = ranges
        .iter()
        .filter(|(_, len)| *len > 0)
        .map(|&(o, len)| o..o.saturating_add(len))
        .collect();
    rs.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::new();
    for r in rs {
        match merged.last_mut() {
            Some(m) if r.start <= m.end.saturating_add(gap) => m.end = m.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged.into_iter().flat_map(split).collect()
}

impl ReadAt for RemoteSource {
    fn len(&self) -> u64 {
        self.inner.identity.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let me = &*self.inner;
        let len = me.identity.len;
        if offset.checked_add(buf.len() as u64).is_none_or(|e| e > len) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        me.check_usable()?;
        let mut done = shared_cache().copy_from(me.id, buf, offset);
        if done < buf.len() {
            // Bytes a hint is fetching now: wait for them rather than ask again.
            me.wait_inflight(&(offset + done as u64..offset + buf.len() as u64));
            let pos = offset + done as u64;
            done += shared_cache().copy_from(me.id, &mut buf[done..], pos);
        }
        if done == buf.len() {
            return Ok(());
        }
        let pos = offset + done as u64;
        let rest = &mut buf[done..];
        if (rest.len() as u64) < LARGE {
            let w = me.window.lock().expect("not poisoned").window_for(pos);
            let end = (pos + (rest.len() as u64).max(w)).min(len);
            let parts = split(pos..end);
            let got = me.fetch_all(&parts)?;
            let mut at = 0usize;
            let mut cache = shared_cache();
            for (r, data) in parts.iter().zip(got) {
                // Copied from what came back, not from the cache: another source's
                // insert may have evicted it already.
                let from = at.min(rest.len());
                let n = (data.len()).min(rest.len() - from);
                rest[from..from + n].copy_from_slice(&data[..n]);
                at += data.len();
                cache.insert(me.id, r.start, data);
            }
            drop(cache);
            me.window.lock().expect("not poisoned").last_end = end;
        } else {
            let parts = split(pos..pos + rest.len() as u64);
            let got = me.fetch_all(&parts)?;
            let mut at = 0;
            for data in got {
                rest[at..at + data.len()].copy_from_slice(&data);
                at += data.len();
            }
        }
        Ok(())
    }

    /// Fetch the ranges in the background, coalesced into parts of at most [`PART`]
    /// (at most [`HINT_BYTES`] per call), all in flight together; returns at once. A
    /// read of bytes in flight waits for their part instead of sending a request.
    fn will_read(&self, ranges: &[(u64, u64)]) {
        let me = &self.inner;
        if me.check_usable().is_err() {
            return;
        }
        let Ok(rt) = runtime() else { return };
        let len = me.identity.len;
        let clipped: Vec<(u64, u64)> = ranges
            .iter()
            .filter(|(o, _)| *o < len)
            .map(|&(o, n)| (o, n.min(len - o)))
            .collect();
        let mut budget = HINT_BYTES;
        let parts: Vec<Range<u64>> = {
            let c = shared_cache();
            coalesce(&clipped, 64 << 10)
                .into_iter()
                .filter(|r| !c.covers(me.id, r) && !me.in_flight(r))
                .take_while(|r| {
                    let n = r.end - r.start;
                    let fits = n <= budget;
                    budget = budget.saturating_sub(n);
                    fits
                })
                .collect()
        };
        for r in parts {
            let landing = Arc::new(Landing::default());
            me.inflight
                .lock()
                .expect("not poisoned")
                .push((r.clone(), Arc::clone(&landing)));
            let inner = Arc::clone(me);
            rt.spawn(async move {
                // A failed hint costs nothing more: the read that needs the bytes
                // fetches (and reports) again.
                if let Ok(data) = inner.fetch(r.clone()).await {
                    shared_cache().insert(inner.id, r.start, data);
                }
                inner
                    .inflight
                    .lock()
                    .expect("not poisoned")
                    .retain(|(_, l)| !Arc::ptr_eq(l, &landing));
                landing.land();
            });
        }
    }

    /// Drop what the caches (memory and disk) hold of `range`, so the next read of it
    /// asks the store; true when anything was dropped.
    fn invalidate(&self, range: Range<u64>) -> bool {
        let me = &self.inner;
        let mut dropped = shared_cache().forget_range(me.id, &range);
        if let Some((d, key)) = &me.disk {
            dropped |= d.drop_range(key, range) > 0;
        }
        dropped
    }

    fn name(&self) -> String {
        self.inner.name.clone()
    }

    fn wants_hints(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_code_are_read_from_error_text() {
        let t = "Generic S3 error: Error performing GET http://h/b/k in 2ms - Server \
                 returned non-2xx status code: 503 Service Unavailable: <Error><Code>SlowDown</Code></Error>";
        assert_eq!(status_of(t), Some(503));
        assert_eq!(s3_code(t), Some("SlowDown"));
        assert_eq!(status_of("no status here"), None);
        assert_eq!(s3_code("<Code>a b</Code>"), None);
    }

    #[test]
    fn coalesces_adjacent_ranges_into_parts() {
        // Adjacent and near ranges merge; a far one stays apart; long runs are cut.
        let rs = coalesce(&[(100, 50), (0, 100), (150, 10), (1 << 30, 5)], 64);
        assert_eq!(rs, vec![0..160, (1 << 30)..(1 << 30) + 5]);
        let rs = coalesce(&[(0, 3 * PART + 1)], 0);
        assert_eq!(rs.len(), 4);
        assert!(rs.iter().all(|r| r.end - r.start <= PART));
        assert_eq!(rs[3], 3 * PART..3 * PART + 1);
    }

    #[test]
    fn cache_copies_across_entries_and_stays_bounded() {
        let mut c = Cache::default();
        c.insert(1, 0, Bytes::from(vec![1u8; 10]));
        c.insert(1, 10, Bytes::from(vec![2u8; 10]));
        c.insert(2, 0, Bytes::from(vec![3u8; 40]));
        let mut buf = [0u8; 15];
        assert_eq!(c.copy_from(1, &mut buf, 5), 15);
        assert_eq!(&buf[..5], &[1; 5]);
        assert_eq!(&buf[5..], &[2; 10]);
        assert_eq!(c.copy_from(1, &mut buf, 20), 0);
        assert!(c.covers(1, &(3..20)) && !c.covers(1, &(3..21)));
        // Another source's bytes are its own.
        assert!(c.covers(2, &(0..40)) && !c.covers(3, &(0..1)));
        c.forget(2);
        assert!(!c.covers(2, &(0..1)) && c.bytes == 20);
        // Filling past the bound, from any source, drops the least recently used.
        for i in 0..4u64 {
            c.insert(3 + i, 100, Bytes::from(vec![0u8; 40 << 20]));
        }
        assert!(c.bytes <= CACHE_BYTES);
        assert!(!c.covers(1, &(0..10)));
    }

    #[test]
    fn window_grows_while_reads_go_forward() {
        let mut c = Window::default();
        assert_eq!(c.window_for(0), MIN_WINDOW);
        c.last_end = MIN_WINDOW;
        assert_eq!(c.window_for(MIN_WINDOW + 100), 2 * MIN_WINDOW);
        c.last_end = 3 * MIN_WINDOW;
        let mut w = 0;
        for _ in 0..10 {
            w = c.window_for(c.last_end);
            c.last_end += w;
        }
        assert_eq!(w, PART);
        // A jump back starts small again.
        assert_eq!(c.window_for(0), MIN_WINDOW);
    }
}
