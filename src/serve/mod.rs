//! `h4fs serve`: the filesystem core over HTTP.
//!
//! A thin adapter, beside the FUSE one: every request path is resolved with
//! [`Fs::lookup`] from the root, files are opened with [`Fs::open`] and read with
//! [`Fs::read`], so every byte sent was verified by the same code as the mount's and the
//! block cache is shared by all clients. Nothing here imports `fuser`.
//!
//! * Reads are blocking: the path lookup and the first read of a response run with
//!   `block_in_place` on the worker thread (the runtime hands its other tasks to another
//!   thread meanwhile); later chunks run on tokio's blocking pool (bounded by
//!   [`Config::blocking_threads`]). The exception, the common request of players and
//!   of random access: a GET of one range of at most [`CHUNK`] bytes, without
//!   conditions, of a file found before, whose blocks are all in the cache (already
//!   verified), is answered on the async thread with no lookup and no blocking
//!   ([`Fs::try_read_cached`]); it is counted in `/metrics`. A body is produced in chunks of [`CHUNK`] bytes
//!   through a channel of two chunks, so a whole-file GET never buffers the file and a
//!   slow client only holds two chunks.
//! * The first chunk is read before the status line is sent, so a block that fails
//!   verification at the start of a response is a 500; one failing later cuts the
//!   connection (the `Content-Length` is then never reached). Both are logged and
//!   counted.
//! * Bounds: at most [`Config::max_connections`] connections are served at once
//!   (further ones wait in the kernel's listen queue); a connection that does not send
//!   a complete request head within [`Config::header_timeout`] (a new one, or an idle
//!   keep-alive one) is closed; one that does not accept response bytes for
//!   [`Config::send_timeout`] is closed; request heads are limited to
//!   [`MAX_HEAD`] bytes, targets to [`http::MAX_TARGET`].

pub mod hls;
pub mod http;
pub mod metrics;
pub mod reference;

use crate::fs::{ContainerSummary, Fs, FsError, Kind, ReadData};
use ::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use bytes::Bytes;
use http::{PathError, Ranges};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

/// Bytes read from the core per step of a response body.
pub const CHUNK: usize = 256 << 10;

/// Largest request head (request line and headers) read; a bigger one gets 431.
pub const MAX_HEAD: usize = 64 << 10;

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a client has to send a complete request head.
    pub header_timeout: Duration,
    /// Time a client may leave response bytes unread before the connection is closed.
    pub send_timeout: Duration,
    /// How long a shutdown waits for responses in flight.
    pub shutdown_grace: Duration,
    /// Threads for blocking reads.
    pub blocking_threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            blocking_threads: 32,
        }
    }
}

/// The response body type.
pub type RespBody = BoxBody<Bytes, io::Error>;

/// Where log lines go.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// What the server knows and counts; shared by all connections.
pub struct Server {
    fs: Arc<Fs>,
    containers: Vec<ContainerSummary>,
    by_name: HashMap<String, usize>,
    by_identity: HashMap<String, usize>,
    log: Log,
    /// Blocks that failed verification while being served.
    failures: AtomicU64,
    /// Responses whose body was cut after the headers went out.
    cut: AtomicU64,
    metrics: metrics::Metrics,
    /// Files of the tree already found, by path segments (at most [`MAX_KNOWN`]).
    known: std::sync::RwLock<HashMap<Vec<String>, Arc<Known>>>,
}

/// Paths remembered with what a range request for them needs (the tree is fixed while
/// serving; beyond this many, further paths are looked up each time).
const MAX_KNOWN: usize = 4096;

/// A file of the tree found before: enough to answer a range of it without a lookup.
struct Known {
    ino: u64,
    size: u64,
    mtime: SystemTime,
    content_type: &'static str,
    etag: String,
    cache_control: &'static str,
}

/// The web page at `/`.
const INDEX_HTML: &str = include_str!("index.html");

/// A body that counts the bytes it hands out.
struct Counted {
    inner: RespBody,
    server: Arc<Server>,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.server
                    .metrics
                    .bytes
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A file found by a request path.
struct Found {
    container: Option<usize>,
    /// Path inside the container (for the ETag).
    inner: String,
    content_addressed: bool,
    what: Target,
}

enum Target {
    /// A directory listing (JSON).
    Listing(Vec<u8>),
    /// A `by-pts/` link: where to redirect.
    Redirect(String),
    /// A file whose content changes while served (`veri.json`, `stats.json`): a snapshot.
    Snapshot(Bytes, SystemTime),
    /// A file of the tree, opened.
    File {
        ino: u64,
        fh: u64,
        size: u64,
        mtime: SystemTime,
        content_type: &'static str,
        pre: Option<(u64, Bytes)>,
    },
}

/// A plain response, not yet with its common headers.
pub(crate) fn plain(status: StatusCode, text: impl Into<String>) -> Response<RespBody> {
    let mut body = text.into();
    body.push('\n');
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A request the tree cannot answer with content: status and message.
pub(crate) struct Refusal(StatusCode, String);

pub(crate) fn refuse(status: StatusCode, text: impl Into<String>) -> Refusal {
    Refusal(status, text.into())
}

pub(crate) fn full(b: Bytes) -> RespBody {
    http_body_util::Full::new(b)
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn empty() -> RespBody {
    full(Bytes::new())
}

/// The status and message for an error of the core.
pub(crate) fn fs_status(e: &FsError) -> StatusCode {
    match e.errno() {
        libc::ENOENT | libc::ENOTDIR => StatusCode::NOT_FOUND,
        libc::EACCES => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Bytes of a read, kept alive without a copy.
struct Chunk(ReadData);

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// A body fed by a producer task through a channel; an `Err` item aborts the
/// connection.
struct ChanBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    left: u64,
    /// An error held back briefly, so that the bytes before it leave the server first
    /// (hyper drops what it has buffered when a body fails).
    failing: Option<(io::Error, Pin<Box<tokio::time::Sleep>>)>,
}

/// How long a failing body waits, after its last good bytes, before the connection is
/// cut: time for hyper to flush those bytes.
const CUT_DELAY: Duration = Duration::from_millis(200);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        if let Some((_, delay)) = self.failing.as_mut() {
            if delay.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let (e, _) = self.failing.take().expect("set above");
            return Poll::Ready(Some(Err(e)));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.left = self.left.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => {
                let mut delay = Box::pin(tokio::time::sleep(CUT_DELAY));
                if delay.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(e)));
                }
                self.failing = Some((e, delay));
                Poll::Pending
            }
            Poll::Ready(None) if self.left > 0 => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "response body ended early",
            )))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// One part of a response body.
enum Piece {
    Bytes(Bytes),
    /// `len` bytes of the opened file at `offset`.
    File(u64, u64),
}

/// A TCP stream that fails a write the client has not accepted for `limit`.
struct Guarded {
    inner: TcpStream,
    limit: Duration,
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Guarded {
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let s = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if s.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx),
            r => {
                self.stall = None;
                r
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.pending(cx),
            r => {
                self.stall = None;
                r
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending(cx),
            r => {
                self.stall = None;
                r
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request target as it may appear in a log line: quotes, backslashes and control
/// bytes escaped, at most 512 characters.
fn log_safe(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars().take(512) {
        match ch {
            '"' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    if s.chars().count() > 512 {
        out.push_str("...");
    }
    out
}

/// The strong ETag of the file at `inner` (path inside the container) of the container
/// with `identity`: it changes exactly when the container's content does.
fn etag(identity: &[u8; 32], inner: &str) -> String {
    let mut h = Vec::with_capacity(32 + inner.len());
    h.extend_from_slice(identity);
    h.extend_from_slice(inner.as_bytes());
    format!("\"{}\"", &hexs(&crate::integrity::sha256(&h))[..40])
}

fn hexs(b: &[u8]) -> String {
    hex::encode(b)
}

impl Server {
    /// A server over `fs` (built with `multi` set, so containers are directories of
    /// the root).
    pub fn new(fs: Arc<Fs>, log: Log) -> Server {
        let containers = fs.summaries();
        let by_name = containers
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let by_identity = containers
            .iter()
            .enumerate()
            .map(|(i, c)| (hexs(&c.identity), i))
            .collect();
        Server {
            fs,
            containers,
            by_name,
            by_identity,
            log,
            failures: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            metrics: metrics::Metrics::default(),
            known: Default::default(),
        }
    }

    /// Names of the containers served, in order.
    pub fn names(&self) -> Vec<String> {
        self.containers.iter().map(|c| c.name.clone()).collect()
    }

    /// Blocks that failed verification while being served.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn log(&self, line: &str) {
        (self.log)(line)
    }

    /// Answer one request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<RespBody> {
        let target = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().to_string(), |p| p.as_str().to_string());
        let method = req.method().clone();
        let version = req.version();
        let started = std::time::Instant::now();
        let route = http::segments(req.uri().path()).map_or("bad", |s| metrics::route(&s));
        let mut resp = self.clone().respond(&req).await;
        self.metrics
            .record(route, resp.status().as_u16(), started.elapsed());
        let status = resp.status();
        if !resp.headers().contains_key(header::CONTENT_LENGTH)
            && status != StatusCode::NOT_MODIFIED
            && !status.is_informational()
            && status != StatusCode::NO_CONTENT
        {
            if let Some(n) = resp.body().size_hint().exact() {
                resp.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
        if method == Method::HEAD {
            *resp.body_mut() = empty();
        } else {
            let inner = std::mem::replace(resp.body_mut(), empty());
            *resp.body_mut() = Counted {
                inner,
                server: self.clone(),
            }
            .boxed();
        }
        let h = resp.headers_mut();
        h.entry(header::SERVER)
            .or_insert(HeaderValue::from_static("h4fs"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        let bytes = if method == Method::HEAD {
            "-".to_string()
        } else {
            resp.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| "-".to_string(), str::to_string)
        };
        self.log(&format!(
            "{} - - [{}] \"{} {} {:?}\" {} {}",
            peer.ip(),
            http::clf_time(SystemTime::now()),
            log_safe(method.as_str()),
            log_safe(&target),
            version,
            resp.status().as_u16(),
            bytes
        ));
        resp
    }

    async fn respond(self: Arc<Self>, req: &Request<Incoming>) -> Response<RespBody> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "method {} not allowed; this server is read-only",
                    req.method()
                ),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let path = req.uri().path();
        let segs = match http::segments(path) {
            Ok(s) => s,
            Err(PathError::TooLong) => {
                return plain(
                    StatusCode::URI_TOO_LONG,
                    format!(
                        "the request target is longer than {} bytes",
                        http::MAX_TARGET
                    ),
                );
            }
            Err(PathError::Bad(why)) => {
                return plain(StatusCode::BAD_REQUEST, format!("bad path: {why}"));
            }
        };
        match segs.first().map(String::as_str) {
            None => {
                let mut r = Response::new(full(Bytes::from_static(INDEX_HTML.as_bytes())));
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                h.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                    ),
                );
                r
            }
            Some("stats.json") if segs.len() == 1 => {
                let mut v = serde_json::to_vec_pretty(&self.fs.stats()).unwrap_or_default();
                v.push(b'\n');
                let mut r = Response::new(full(Bytes::from(v)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            Some("metrics") if segs.len() == 1 => {
                let text = self.metrics.render(
                    &self.fs.cache_stats(),
                    self.failures.load(Ordering::Relaxed),
                    self.cut.load(Ordering::Relaxed),
                );
                let mut r = Response::new(full(Bytes::from(text)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            Some("containers.json") if segs.len() == 1 => {
                let mut r = Response::new(full(Bytes::from(self.containers_json())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                r
            }
            Some("video") if segs.len() >= 2 && reference::ROUTES.contains(&segs[1].as_str()) => {
                self.clone().reference(req, &segs).await
            }
            Some(_) if segs.len() >= 2 && segs.last().is_some_and(|l| l == "index.m3u8") => {
                self.clone().hls_route(req, segs).await
            }
            Some(_) if segs.len() >= 2 && segs.last().is_some_and(|l| l == "stream.ts") => {
                // The playlist's name for `stream`: HLS clients want a segment extension.
                let mut segs = segs;
                let container = segs[0].strip_prefix('@').map_or_else(
                    || self.by_name.get(&segs[0]).copied(),
                    |id| self.by_identity.get(id).copied(),
                );
                let media = container.map(|c| {
                    http::media_type(self.containers[c].source_name.as_deref().unwrap_or(""))
                });
                if !matches!(media, Some("video/mp2t" | "application/octet-stream")) {
                    return plain(StatusCode::NOT_FOUND, "no such file or directory");
                }
                if let Some(l) = segs.last_mut() {
                    *l = "stream".into();
                }
                self.clone().serve_tree(req, segs).await
            }
            Some(_) => self.clone().serve_tree(req, segs).await,
        }
    }

    /// `/NAME[/TRACK]/index.m3u8` (also under `/@IDENTITY/`).
    async fn hls_route(
        self: Arc<Self>,
        req: &Request<Incoming>,
        mut segs: Vec<String>,
    ) -> Response<RespBody> {
        let mut content_addressed = false;
        if let Some(id) = segs[0].strip_prefix('@') {
            match self.by_identity.get(id) {
                Some(&c) => {
                    segs[0] = self.containers[c].name.clone();
                    content_addressed = true;
                }
                None => {
                    return plain(
                        StatusCode::NOT_FOUND,
                        format!("no container with identity {id}"),
                    );
                }
            }
        }
        let Some(&c) = self.by_name.get(&segs[0]) else {
            return plain(StatusCode::NOT_FOUND, "no such file or directory");
        };
        let media = http::media_type(self.containers[c].source_name.as_deref().unwrap_or(""));
        let me = self.clone();
        let dir = segs[..segs.len() - 1].to_vec();
        let text = match tokio::task::spawn_blocking(move || me.hls(&dir, media)).await {
            Ok(Ok(t)) => t,
            Ok(Err(r)) => return plain(r.0, r.1),
            Err(e) => {
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error: {e}"),
                );
            }
        };
        let cont = &self.containers[c];
        let tag = etag(&cont.identity, &segs[1..].join("/"));
        let mtime = cont.mtime;
        let mut r = self
            .clone()
            .ranged(
                req,
                Source::Mem(Bytes::from(text)),
                Some(&tag),
                mtime,
                "application/vnd.apple.mpegurl",
            )
            .await;
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(if content_addressed {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            }),
        );
        r
    }

    fn containers_json(&self) -> Vec<u8> {
        let list: Vec<serde_json::Value> = self
            .containers
            .iter()
            .map(|c| {
                let id = hexs(&c.identity);
                let tracks: Vec<serde_json::Value> = c
                    .tracks
                    .iter()
                    .map(|t| {
                        let dir = if c.multitrack {
                            format!("/{}/{}", enc(&c.name), enc(&t.dir_name))
                        } else {
                            format!("/{}", enc(&c.name))
                        };
                        json!({
                            "id": t.id,
                            "name": t.dir_name,
                            "blocks": t.blocks,
                            "stream_len": t.stream_len,
                            "keyframes": t.keyframes,
                            "stream": format!("{dir}/stream"),
                        })
                    })
                    .collect();
                json!({
                    "name": c.name,
                    "url": format!("/{}/", enc(&c.name)),
                    "immutable_url": format!("/@{id}/"),
                    "identity": id,
                    "layout": c.layout,
                    "source_name": c.source_name,
                    "media_type": http::media_type(c.source_name.as_deref().unwrap_or("")),
                    "readable": c.unreadable.is_none(),
                    "unreadable_reason": c.unreadable,
                    "last_modified": http::http_date(c.mtime),
                    "tracks": tracks,
                })
            })
            .collect();
        let mut v = serde_json::to_vec_pretty(&json!({ "containers": list })).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Resolve a path of the tree (blocking: runs on the blocking pool).
    /// `read_ahead`: the request's `Range` header (`Some("")` without one) when the first
    /// bytes of a file may be read right away (a GET without conditions).
    fn find(&self, segs: &[String], read_ahead: Option<&str>) -> Result<Found, Refusal> {
        let not_found = || refuse(StatusCode::NOT_FOUND, "no such file or directory");
        let mut segs: Vec<String> = segs.to_vec();
        let mut content_addressed = false;
        let mut prefix = segs[0].clone();
        if let Some(id) = segs[0].clone().strip_prefix('@') {
            let c = *self.by_identity.get(id).ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    format!("no container with identity {id} (see /containers.json)"),
                )
            })?;
            segs[0] = self.containers[c].name.clone();
            content_addressed = true;
            prefix = format!("@{id}");
        }
        let container = self.by_name.get(&segs[0]).copied();
        let fs = &self.fs;
        let mut ino = fs.root_ino();
        let mut attr = fs
            .getattr(ino)
            .map_err(|e| refuse(fs_status(&e), e.to_string()))?;
        for (i, s) in segs.iter().enumerate() {
            if attr.kind != Kind::Dir {
                return Err(not_found());
            }
            attr = fs.lookup(ino, s).map_err(|e| match e {
                FsError::NotFound | FsError::NotDir => not_found(),
                e => refuse(fs_status(&e), e.to_string()),
            })?;
            ino = attr.ino;
            if attr.kind == Kind::Symlink && i + 1 != segs.len() {
                return Err(not_found());
            }
        }
        let inner = segs[1..].join("/");
        let what = match attr.kind {
            Kind::Dir => Target::Listing(self.listing(ino)?),
            Kind::Symlink => {
                let to = fs
                    .readlink(ino)
                    .map_err(|e| refuse(fs_status(&e), e.to_string()))?;
                let mut url: Vec<String> = std::iter::once(prefix)
                    .chain(segs[1..segs.len() - 1].iter().cloned())
                    .collect();
                for part in to.split('/') {
                    match part {
                        ".." => {
                            url.pop();
                        }
                        "." | "" => {}
                        p => url.push(p.to_string()),
                    }
                }
                let url: Vec<String> = url.iter().map(|s| enc(s)).collect();
                Target::Redirect(format!("/{}", url.join("/")))
            }
            Kind::File if attr.dynamic => {
                let o = fs
                    .open(ino, false)
                    .map_err(|e| refuse(fs_status(&e), e.to_string()))?;
                let mut buf = Vec::new();
                let res = loop {
                    match fs.read(ino, o.fh, buf.len() as u64, CHUNK as u32) {
                        Ok(d) if d.as_slice().is_empty() => break Ok(()),
                        Ok(d) => buf.extend_from_slice(d.as_slice()),
                        Err(e) => break Err(e),
                    }
                };
                fs.release(o.fh);
                res.map_err(|e| refuse(fs_status(&e), e.to_string()))?;
                Target::Snapshot(Bytes::from(buf), SystemTime::now())
            }
            Kind::File => {
                let o = fs.open(ino, false).map_err(|e| {
                    self.log(&format!("h4fs serve: /{}: {e}", segs.join("/")));
                    refuse(fs_status(&e), format!("/{}: {e}", segs.join("/")))
                })?;
                let name = segs.last().map_or("", String::as_str);
                let content_type = if name.ends_with(".json") {
                    "application/json"
                } else if name.ends_with(".csv") {
                    "text/csv; charset=utf-8"
                } else if name == "stream" {
                    let src = container.and_then(|c| self.containers[c].source_name.as_deref());
                    http::media_type(src.unwrap_or(""))
                } else {
                    "application/octet-stream"
                };
                // The first bytes the response will need, read now (a failure here is
                // left for the body to meet and report).
                let pre = read_ahead
                    .and_then(|r| first_read(r, attr.size))
                    .and_then(|(at, n)| {
                        let d = fs.read(ino, o.fh, at, n as u32).ok()?;
                        Some((at, Bytes::from_owner(Chunk(d))))
                    });
                Target::File {
                    ino,
                    fh: o.fh,
                    size: attr.size,
                    mtime: attr.mtime,
                    content_type,
                    pre,
                }
            }
        };
        Ok(Found {
            container,
            inner,
            content_addressed,
            what,
        })
    }

    /// A directory's entries as JSON (at most 100,000 of them).
    fn listing(&self, ino: u64) -> Result<Vec<u8>, Refusal> {
        const MAX: usize = 100_000;
        let mut names = Vec::new();
        let mut truncated = false;
        self.fs
            .readdir(ino, 2, &mut |e| {
                if names.len() == MAX {
                    truncated = true;
                    return true;
                }
                let dir = e.kind == Kind::Dir;
                names.push(json!({"name": e.name, "dir": dir}));
                false
            })
            .map_err(|e| refuse(fs_status(&e), e.to_string()))?;
        let mut v = serde_json::to_vec_pretty(&json!({"entries": names, "truncated": truncated}))
            .unwrap_or_default();
        v.push(b'\n');
        Ok(v)
    }

    async fn serve_tree(
        self: Arc<Self>,
        req: &Request<Incoming>,
        segs: Vec<String>,
    ) -> Response<RespBody> {
        let me = self.clone();
        let conditional = [
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
        ]
        .iter()
        .any(|h| req.headers().contains_key(h));
        let read_ahead = (req.method() == Method::GET && !conditional).then(|| {
            req.headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        });
        if let Some(r) = self
            .clone()
            .cached_range(req, &segs, read_ahead.as_deref())
            .await
        {
            return r;
        }
        // On this worker thread (the runtime moves its other tasks elsewhere meanwhile):
        // a lookup and a read of a cached block are too short to pay for a hand-off to
        // the blocking pool.
        let found = match tokio::task::block_in_place(|| me.find(&segs, read_ahead.as_deref())) {
            Ok(f) => f,
            Err(r) => return plain(r.0, r.1),
        };
        let cache_control = if found.content_addressed {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        match found.what {
            Target::Listing(v) => {
                let mut r = Response::new(full(Bytes::from(v)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Target::Redirect(to) => {
                let mut r = Response::new(empty());
                *r.status_mut() = StatusCode::FOUND;
                if let Ok(v) = HeaderValue::from_str(&to) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static(cache_control),
                );
                r
            }
            Target::Snapshot(bytes, now) => {
                let mut r = self
                    .ranged(req, Source::Mem(bytes), None, now, "application/json")
                    .await;
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            Target::File {
                ino,
                fh,
                size,
                mtime,
                content_type,
                pre,
            } => {
                let identity = found
                    .container
                    .map_or([0u8; 32], |c| self.containers[c].identity);
                let etag = etag(&identity, &found.inner);
                self.remember(
                    &segs,
                    Known {
                        ino,
                        size,
                        mtime,
                        content_type,
                        etag: etag.clone(),
                        cache_control,
                    },
                );
                let mut r = self
                    .ranged(
                        req,
                        Source::Fs { ino, fh, size, pre },
                        Some(&etag),
                        mtime,
                        content_type,
                    )
                    .await;
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static(cache_control),
                );
                r
            }
        }
    }

    fn remember(&self, segs: &[String], k: Known) {
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        if known.len() < MAX_KNOWN && !known.contains_key(segs) {
            known.insert(segs.to_vec(), Arc::new(k));
        }
    }

    /// The fast path of a GET of one range of at most [`CHUNK`] bytes (`range`: its
    /// `Range` header, `None` when the request has conditions) of a file found before
    /// whose bytes are all in verified, cached blocks: answered on this thread, with no
    /// lookup, no file handle and no blocking. `None`: take the ordinary path.
    async fn cached_range(
        self: Arc<Self>,
        req: &Request<Incoming>,
        segs: &[String],
        range: Option<&str>,
    ) -> Option<Response<RespBody>> {
        let range = range.filter(|r| !r.is_empty())?;
        let k = self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(segs)
            .cloned()?;
        let Ranges::One(a, b) = http::parse_range(range, k.size) else {
            return None;
        };
        let n = b - a + 1;
        if n > CHUNK as u64 {
            return None;
        }
        let d = self.fs.try_read_cached(k.ino, a, n as u32)?.ok()?;
        if d.as_slice().len() as u64 != n {
            return None;
        }
        let src = Source::Fs {
            ino: k.ino,
            fh: 0,
            size: k.size,
            pre: Some((a, Bytes::from_owner(Chunk(d)))),
        };
        self.metrics.fast_ranges.fetch_add(1, Ordering::Relaxed);
        let mut r = self
            .ranged(req, src, Some(&k.etag), k.mtime, k.content_type)
            .await;
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(k.cache_control),
        );
        Some(r)
    }

    /// Conditional requests, ranges, the body.
    async fn ranged(
        self: Arc<Self>,
        req: &Request<Incoming>,
        src: Source,
        etag: Option<&str>,
        mtime: SystemTime,
        content_type: &'static str,
    ) -> Response<RespBody> {
        let len = src.len();
        let hdr = |n: header::HeaderName| req.headers().get(n).and_then(|v| v.to_str().ok());
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(e) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
            headers.insert(header::ETAG, e);
        }
        let lm = http::truncate(mtime);
        if etag.is_some() {
            if let Ok(v) = HeaderValue::from_str(&http::http_date(mtime)) {
                headers.insert(header::LAST_MODIFIED, v);
            }
        }
        let status_only = |status: StatusCode, headers: HeaderMap, src: &Source| {
            src.release(&self.fs);
            let mut r = Response::new(empty());
            *r.status_mut() = status;
            *r.headers_mut() = headers;
            r
        };
        // RFC 9110 §13.2.2, in order.
        if let Some(v) = hdr(header::IF_MATCH) {
            if !etag.is_some_and(|e| http::strong_match(v, e)) {
                return status_only(StatusCode::PRECONDITION_FAILED, headers, &src);
            }
        } else if let Some(d) = hdr(header::IF_UNMODIFIED_SINCE).and_then(http::parse_date) {
            if etag.is_some() && lm > d {
                return status_only(StatusCode::PRECONDITION_FAILED, headers, &src);
            }
        }
        if let Some(v) = hdr(header::IF_NONE_MATCH) {
            if etag.is_some_and(|e| http::none_match(v, e)) {
                return status_only(StatusCode::NOT_MODIFIED, headers, &src);
            }
        } else if let Some(d) = hdr(header::IF_MODIFIED_SINCE).and_then(http::parse_date) {
            if etag.is_some() && lm <= d {
                return status_only(StatusCode::NOT_MODIFIED, headers, &src);
            }
        }
        let ranges = match hdr(header::RANGE) {
            None => Ranges::Full,
            Some(r) => match hdr(header::IF_RANGE) {
                Some(ir) if !http::if_range_holds(ir, etag, mtime) => Ranges::Full,
                _ => http::parse_range(r, len),
            },
        };
        // A Range header that is not valid text is ignored like a malformed one.
        let (status, pieces, body_len) = match ranges {
            Ranges::Full => {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                (StatusCode::OK, vec![Piece::File(0, len)], len)
            }
            Ranges::One(a, b) => {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                if let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                (
                    StatusCode::PARTIAL_CONTENT,
                    vec![Piece::File(a, b - a + 1)],
                    b - a + 1,
                )
            }
            Ranges::Many(list) => {
                let boundary = format!(
                    "h4fs-{}",
                    &hexs(&crate::integrity::sha256(etag.unwrap_or("-").as_bytes()))[..24]
                );
                if let Ok(v) =
                    HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
                {
                    headers.insert(header::CONTENT_TYPE, v);
                }
                let mut pieces = Vec::with_capacity(2 * list.len() + 1);
                let mut total = 0u64;
                for (i, (a, b)) in list.iter().enumerate() {
                    let lead = if i == 0 { "" } else { "\r\n" };
                    let part = format!(
                        "{lead}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {a}-{b}/{len}\r\n\r\n"
                    );
                    total += part.len() as u64 + (b - a + 1);
                    pieces.push(Piece::Bytes(Bytes::from(part)));
                    pieces.push(Piece::File(*a, b - a + 1));
                }
                let end = format!("\r\n--{boundary}--\r\n");
                total += end.len() as u64;
                pieces.push(Piece::Bytes(Bytes::from(end)));
                (StatusCode::PARTIAL_CONTENT, pieces, total)
            }
            Ranges::Unsatisfiable => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                src.release(&self.fs);
                let mut r = plain(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("no requested range overlaps the {len} bytes"),
                );
                r.headers_mut().extend(headers);
                return r;
            }
        };
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
        if req.method() == Method::HEAD {
            return status_only(status, headers, &src);
        }
        let body = match self
            .clone()
            .stream(src, pieces, body_len, req.uri().path())
            .await
        {
            Ok(b) => b,
            Err(e) => {
                let st = fs_status(&e);
                return plain(st, format!("{}: {e}", req.uri().path()));
            }
        };
        let mut r = Response::new(body);
        *r.status_mut() = status;
        *r.headers_mut() = headers;
        r
    }

    /// Start a body: read its first chunk now (an error becomes the status), then the
    /// rest in a task.
    async fn stream(
        self: Arc<Self>,
        src: Source,
        pieces: Vec<Piece>,
        total: u64,
        what: &str,
    ) -> Result<RespBody, FsError> {
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(2);
        let mut pieces: std::collections::VecDeque<Piece> = pieces.into();
        // The first bytes that need a read, read before the headers go out.
        let mut first: Vec<Bytes> = Vec::new();
        while let Some(p) = pieces.pop_front() {
            match p {
                Piece::Bytes(b) => first.push(b),
                Piece::File(_, 0) => {}
                Piece::File(off, len) => {
                    let n = len.min(CHUNK as u64);
                    match self.clone().read(&src, off, n).await {
                        Ok(b) => {
                            let got = b.len() as u64;
                            first.push(b);
                            if got < len {
                                pieces.push_front(Piece::File(off + got, len - got));
                            }
                        }
                        Err(e) => {
                            self.failed(what, &e, false);
                            src.release(&self.fs);
                            return Err(e);
                        }
                    }
                    break;
                }
            }
        }
        if pieces.is_empty() {
            // Everything is read: no task, no channel.
            src.release(&self.fs);
            let body = if first.len() == 1 {
                first.pop().unwrap_or_default()
            } else {
                Bytes::from(first.concat())
            };
            return Ok(full(body));
        }
        let what = what.to_string();
        tokio::spawn(async move {
            let me = self;
            'all: {
                for b in first {
                    if tx.send(Ok(b)).await.is_err() {
                        break 'all;
                    }
                }
                while let Some(p) = pieces.pop_front() {
                    match p {
                        Piece::Bytes(b) => {
                            if tx.send(Ok(b)).await.is_err() {
                                break 'all;
                            }
                        }
                        Piece::File(mut off, mut len) => {
                            while len > 0 {
                                let n = len.min(CHUNK as u64);
                                match me.clone().read(&src, off, n).await {
                                    Ok(b) => {
                                        off += b.len() as u64;
                                        len -= b.len() as u64;
                                        if tx.send(Ok(b)).await.is_err() {
                                            break 'all;
                                        }
                                    }
                                    Err(e) => {
                                        me.failed(&what, &e, true);
                                        let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                                        break 'all;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            src.release(&me.fs);
        });
        Ok(ChanBody {
            rx,
            left: total,
            failing: None,
        }
        .boxed())
    }

    fn failed(&self, what: &str, e: &FsError, cut: bool) {
        if fs_status(e) == StatusCode::INTERNAL_SERVER_ERROR {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if cut {
            self.cut.fetch_add(1, Ordering::Relaxed);
            self.log(&format!(
                "h4fs serve: {what}: {e}; the response was cut after its headers"
            ));
        } else {
            self.log(&format!("h4fs serve: {what}: {e}"));
        }
    }

    /// Read up to `len` bytes at `off` of `src`, on the blocking pool. Never empty
    /// unless `len` is 0.
    async fn read(self: Arc<Self>, src: &Source, off: u64, len: u64) -> Result<Bytes, FsError> {
        match src {
            Source::Mem(b) => Ok(b.slice(off as usize..(off + len) as usize)),
            Source::Fs {
                pre: Some((at, b)), ..
            } if *at == off && !b.is_empty() => Ok(b.slice(..(len as usize).min(b.len()))),
            &Source::Fs { ino, fh, .. } => {
                let fs = self.fs.clone();
                let r = tokio::task::spawn_blocking(move || fs.read(ino, fh, off, len as u32))
                    .await
                    .map_err(|e| {
                        FsError::Archive(crate::Error::io(
                            "the read task failed",
                            io::Error::other(e.to_string()),
                        ))
                    })??;
                if r.as_slice().is_empty() {
                    return Err(FsError::Archive(crate::Error::io(
                        format!("read at offset {off} returned no bytes"),
                        io::Error::from(io::ErrorKind::UnexpectedEof),
                    )));
                }
                Ok(Bytes::from_owner(Chunk(r)))
            }
        }
    }
}

/// Offset and length of the first read a response to `range` (`""`: none) needs from a
/// file of `size` bytes.
fn first_read(range: &str, size: u64) -> Option<(u64, u64)> {
    let ranges = if range.is_empty() {
        Ranges::Full
    } else {
        http::parse_range(range, size)
    };
    let (a, b) = match ranges {
        Ranges::Full if size > 0 => (0, size - 1),
        Ranges::One(a, b) => (a, b),
        Ranges::Many(v) => *v.first()?,
        Ranges::Full | Ranges::Unsatisfiable => return None,
    };
    Some((a, (b - a + 1).min(CHUNK as u64)))
}

/// What a body is read from.
enum Source {
    Mem(Bytes),
    /// An opened file; `pre`: bytes already read at an offset, in the same trip to the
    /// blocking pool as the path lookup.
    Fs {
        ino: u64,
        fh: u64,
        size: u64,
        pre: Option<(u64, Bytes)>,
    },
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Mem(b) => b.len() as u64,
            Source::Fs { size, .. } => *size,
        }
    }

    fn release(&self, fs: &Fs) {
        if let Source::Fs { fh, .. } = self {
            fs.release(*fh);
        }
    }
}

/// A path segment percent-encoded for a URL.
pub(crate) fn enc(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'@');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// Serve on `listener` until `shutdown` completes; then stop accepting, let responses
/// in flight finish for at most [`Config::shutdown_grace`], and return.
pub async fn run(
    listener: TcpListener,
    server: Arc<Server>,
    cfg: Config,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: wait a little rather than spin.
                    server.log(&format!("h4fs serve: accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Guarded {
            inner: stream,
            limit: cfg.send_timeout,
            stall: None,
        });
        let srv = server.clone();
        let svc = hyper::service::service_fn(move |req| {
            let srv = srv.clone();
            async move { Ok::<_, Infallible>(srv.handle(req, peer).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_timeout)
            .max_header_size(MAX_HEAD)
            .keep_alive(true);
        let conn = graceful.watch(builder.serve_connection(io, svc));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        server.log(&format!(
            "h4fs serve: stopping; waiting up to {:?} for {open} connection(s)",
            cfg.shutdown_grace
        ));
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(cfg.shutdown_grace) => {
            server.log("h4fs serve: connections still open at the end of the grace period are closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_cannot_be_forged() {
        assert_eq!(log_safe("/a\"b\\c\n"), "/a\\\"b\\\\c\\x0a");
        let long = "x".repeat(600);
        let l = log_safe(&long);
        assert!(l.ends_with("...") && l.len() == 515);
    }

    #[test]
    fn the_first_read_is_what_the_body_starts_with() {
        assert_eq!(first_read("", 100), Some((0, 100)));
        assert_eq!(first_read("", 0), None);
        assert_eq!(first_read("", 1 << 30), Some((0, CHUNK as u64)));
        assert_eq!(first_read("bytes=10-19", 100), Some((10, 10)));
        assert_eq!(first_read("bytes=-5", 100), Some((95, 5)));
        assert_eq!(first_read("bytes=50-59,0-1", 100), Some((0, 2)));
        assert_eq!(first_read("bytes=200-", 100), None);
        assert_eq!(first_read("bytes=x", 100), Some((0, 100)));
    }

    #[test]
    fn url_segments_are_encoded() {
        assert_eq!(enc("a b/c@d"), "a%20b%2Fc@d");
        assert_eq!(enc("movie-1_x.y~"), "movie-1_x.y~");
    }
}
