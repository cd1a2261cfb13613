//! `h4fs serve` against real clients (curl, raw TCP) on 127.0.0.1.

mod common;

use common::{BIN, Served, arg, curl, noise, ok};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A response as curl saw it.
struct Got {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    /// curl's exit code (18: the body ended before Content-Length).
    code: i32,
}

impl Got {
    fn h(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

fn get(url: &str, extra: &[&str]) -> Got {
    let dir = tempfile::tempdir().unwrap();
    let hfile = dir.path().join("h");
    let bfile = dir.path().join("b");
    let mut args: Vec<&str> = vec!["-D", arg(&hfile), "-o", arg(&bfile)];
    args.extend_from_slice(extra);
    args.push(url);
    let out = curl(&args);
    let head = std::fs::read_to_string(&hfile).unwrap_or_default();
    // The last response's head (after any redirects followed with -L).
    let last = head
        .split("\r\n\r\n")
        .filter(|b| b.starts_with("HTTP/"))
        .last()
        .unwrap_or("")
        .to_string();
    let mut lines = last.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Got {
        status,
        headers,
        body: std::fs::read(&bfile).unwrap_or_default(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// A container packed from `len` bytes of noise named `movie.mp4`, with a keyframe
/// every 4 blocks of 10,000 bytes, 40 ms apart.
fn movie(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    movie_as(dir, len, &[])
}

/// [`movie`] in the v1 layout, whose unit of verification is the block: the tests that
/// damage one block and expect its neighbours to be served use it (in v2 the unit is a
/// 16 KiB hash group, which spans neighbouring 10,000-byte blocks).
fn movie_v1(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    movie_as(dir, len, &["--format", "v1"])
}

fn movie_as(dir: &Path, len: usize, extra: &[&str]) -> (PathBuf, Vec<u8>) {
    let data = noise(len, 7);
    let src = dir.join("movie.mp4");
    std::fs::write(&src, &data).unwrap();
    let mut csv = String::from("offset,size,pts_us,keyframe\n");
    let mut off = 0;
    let mut i = 0u64;
    while off < len {
        let n = 10_000.min(len - off);
        csv.push_str(&format!(
            "{off},{n},{},{}\n",
            i * 40_000,
            u8::from(i % 4 == 0)
        ));
        off += n;
        i += 1;
    }
    let csvp = dir.join("movie.csv");
    std::fs::write(&csvp, csv).unwrap();
    let out = dir.join("movie.h4mk");
    ok(Command::new(BIN)
        .args(["pack", arg(&src), "--index", arg(&csvp), "-o", arg(&out)])
        .args(extra));
    (out, data)
}

/// Flip a byte inside block `n` (10,000-byte blocks, identity engine) of `path`.
fn damage_block(path: &Path, n: u64) {
    let o = ok(Command::new(BIN).args(["inspect", "--json", "--chunks", arg(path)]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let chunks = v["chunks"].as_array().expect("chunks");
    let core: Vec<&serde_json::Value> = chunks.iter().filter(|c| c["tag"] == "CORE").collect();
    let off = core[n as usize]["offset"].as_u64().unwrap() + 12 + 100;
    let mut bytes = std::fs::read(path).unwrap();
    bytes[off as usize] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn serves_the_tree_with_types_and_a_log_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let (c, data) = movie(dir.path(), 95_000);
    let s = Served::start(&[arg(&c)]);
    let list = get(&format!("{}containers.json", s.url), &[]);
    assert_eq!(list.status, 200);
    assert_eq!(list.h("content-type"), "application/json");
    let v: serde_json::Value = serde_json::from_slice(&list.body).unwrap();
    let m = &v["containers"][0];
    assert_eq!(m["name"], "movie");
    assert_eq!(m["media_type"], "video/mp4");
    assert_eq!(m["tracks"][0]["stream_len"], 95_000);
    assert_eq!(m["tracks"][0]["blocks"], 10);

    let st = get(&format!("{}movie/stream", s.url), &[]);
    assert_eq!(st.status, 200);
    assert_eq!(st.body, data);
    assert_eq!(st.h("content-type"), "video/mp4");
    assert_eq!(st.h("content-length"), "95000");
    assert_eq!(st.h("accept-ranges"), "bytes");

    let b3 = get(&format!("{}movie/blocks/000003", s.url), &[]);
    assert_eq!(b3.status, 200);
    assert_eq!(b3.body, &data[30_000..40_000]);
    assert_eq!(b3.h("content-type"), "application/octet-stream");

    for (f, ty) in [
        ("meta.json", "application/json"),
        ("safe.json", "application/json"),
        ("veri.json", "application/json"),
        ("manifest.json", "application/json"),
        ("seek.csv", "text/csv; charset=utf-8"),
        ("index.csv", "text/csv; charset=utf-8"),
    ] {
        let g = get(&format!("{}movie/{f}", s.url), &[]);
        assert_eq!(g.status, 200, "{f}");
        assert_eq!(g.h("content-type"), ty, "{f}");
        assert!(!g.body.is_empty(), "{f}");
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&get(&format!("{}movie/meta.json", s.url), &[]).body).unwrap();
    assert_eq!(meta["source"]["name"], "movie.mp4");
    let seek = get(&format!("{}movie/seek.csv", s.url), &[]);
    assert!(String::from_utf8_lossy(&seek.body).contains("160000,4,40000"));

    // HEAD: the headers of GET, no body.
    let h = raw(
        &s.addr,
        b"HEAD /movie/stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&h), 200, "{h}");
    assert!(h.contains("content-length: 95000\r\n"), "{h}");
    assert!(h.contains(&format!("etag: {}\r\n", st.h("etag"))), "{h}");
    assert!(h.ends_with("\r\n\r\n"), "no body after the head: {h}");

    // by-pts: a redirect to the keyframe block at or before the time.
    let r = get(&format!("{}movie/by-pts/300000", s.url), &[]);
    assert_eq!(r.status, 302);
    assert_eq!(r.h("location"), "/movie/blocks/000004");
    let r = get(&format!("{}movie/by-pts/330000", s.url), &["-L"]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, &data[80_000..90_000]);

    // The mount's stream.EXT link: a redirect to stream.
    let r = get(&format!("{}movie/stream.mp4", s.url), &[]);
    assert_eq!(r.status, 302);
    assert_eq!(r.h("location"), "/movie/stream");

    // A directory lists its entries.
    let d = get(&format!("{}movie/", s.url), &[]);
    assert_eq!(d.status, 200);
    let names: Vec<String> =
        serde_json::from_slice::<serde_json::Value>(&d.body).unwrap()["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect();
    assert!(names.contains(&"stream".to_string()), "{names:?}");

    // Writes are refused.
    let p = get(&format!("{}movie/stream", s.url), &["-X", "PUT", "-d", "x"]);
    assert_eq!(p.status, 405);
    assert_eq!(p.h("allow"), "GET, HEAD");

    assert!(s.log_has("\"GET /movie/blocks/000003 HTTP/1.1\" 200 10000"));
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains("\"GET /movie/blocks/000003 HTTP/1.1\" 200 10000"))
        .unwrap_or_else(|| panic!("no log line for the block GET in:\n{log}"));
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains(" +0000] "), "{line}");
}

#[test]
fn ranges_single_multiple_unsatisfiable_and_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let (c, data) = movie(dir.path(), 95_000);
    let s = Served::start(&[arg(&c)]);
    let u = format!("{}movie/stream", s.url);

    // Across a block boundary.
    let g = get(&u, &["-r", "9990-10009"]);
    assert_eq!(g.status, 206);
    assert_eq!(g.h("content-range"), "bytes 9990-10009/95000");
    assert_eq!(g.body, &data[9990..10010]);
    let g = get(&u, &["-r", "-100"]);
    assert_eq!(g.status, 206);
    assert_eq!(g.body, &data[94_900..]);
    let g = get(&u, &["-r", "94000-"]);
    assert_eq!(g.h("content-range"), "bytes 94000-94999/95000");
    assert_eq!(g.body, &data[94_000..]);
    let g = get(&u, &["-r", "94000-99999999999999999999999"]);
    assert_eq!(g.status, 206);
    assert_eq!(g.body, &data[94_000..]);

    // Two ranges: multipart/byteranges with both parts.
    let g = get(&u, &["-r", "0-9,50000-50009"]);
    assert_eq!(g.status, 206);
    let ct = g.h("content-type").to_string();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{ct}"));
    let body = g.body.clone();
    let mut expect = Vec::new();
    for (i, (a, b)) in [(0usize, 9usize), (50_000, 50_009)].iter().enumerate() {
        if i > 0 {
            expect.extend_from_slice(b"\r\n");
        }
        expect.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: video/mp4\r\nContent-Range: bytes {a}-{b}/95000\r\n\r\n"
            )
            .as_bytes(),
        );
        expect.extend_from_slice(&data[*a..=*b]);
    }
    expect.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    assert_eq!(body, expect);
    assert_eq!(g.h("content-length"), expect.len().to_string());

    // Overlapping ranges are merged into one.
    let g = get(&u, &["-r", "0-99,50-199"]);
    assert_eq!(g.status, 206);
    assert_eq!(g.h("content-range"), "bytes 0-199/95000");

    // Unsatisfiable: 416 with the length.
    for r in ["95000-", "99999999999999999999999999-", "-0"] {
        let g = get(&u, &["-H", &format!("Range: bytes={r}")]);
        assert_eq!(g.status, 416, "{r}");
        assert_eq!(g.h("content-range"), "bytes */95000", "{r}");
    }
    // Malformed or too many ranges: ignored, the whole stream with 200.
    let thousands = format!(
        "Range: bytes={}",
        (0..3000)
            .map(|i| format!("{}-{}", i * 2, i * 2))
            .collect::<Vec<_>>()
            .join(",")
    );
    for r in [
        "Range: bytes=5-1",
        "Range: bytes=x-y",
        "Range: pages=1-2",
        &thousands,
    ] {
        let g = get(&u, &["-H", r]);
        assert_eq!(g.status, 200, "{}", &r[..r.len().min(40)]);
        assert_eq!(g.body, data);
    }
    // Ranges on a block file too.
    let g = get(&format!("{}movie/blocks/000001", s.url), &["-r", "5-9"]);
    assert_eq!(g.body, &data[10_005..10_010]);
}

#[test]
fn conditional_requests_etags_and_cache_control() {
    let dir = tempfile::tempdir().unwrap();
    let (c, data) = movie(dir.path(), 30_000);
    let s = Served::start(&[arg(&c)]);
    let u = format!("{}movie/stream", s.url);
    let g = get(&u, &[]);
    let etag = g.h("etag").to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 20,
        "{etag}"
    );
    assert_eq!(g.h("cache-control"), "no-cache");
    let lm = g.h("last-modified").to_string();
    assert!(lm.ends_with(" GMT"), "{lm}");
    // Another file of the same container has another tag.
    let b = get(&format!("{}movie/blocks/000000", s.url), &[]);
    assert_ne!(b.h("etag"), etag);

    let inm = format!("If-None-Match: {etag}");
    let g = get(&u, &["-H", &inm]);
    assert_eq!(g.status, 304);
    assert!(g.body.is_empty());
    assert_eq!(g.h("etag"), etag);
    let g = get(&u, &["-H", "If-None-Match: \"other\""]);
    assert_eq!(g.status, 200);
    let g = get(&u, &["-H", &format!("If-Modified-Since: {lm}")]);
    assert_eq!(g.status, 304);
    let g = get(
        &u,
        &["-H", "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT"],
    );
    assert_eq!(g.status, 200);

    // If-Range: the range only while the tag still matches.
    let g = get(&u, &["-r", "0-9", "-H", &format!("If-Range: {etag}")]);
    assert_eq!(g.status, 206);
    assert_eq!(g.body, &data[..10]);
    let g = get(&u, &["-r", "0-9", "-H", "If-Range: \"stale\""]);
    assert_eq!(g.status, 200);
    assert_eq!(g.body, data);
    let g = get(&u, &["-H", "If-Match: \"stale\""]);
    assert_eq!(g.status, 412);

    // The content-addressed path: same bytes and tag, cacheable forever.
    let v: serde_json::Value =
        serde_json::from_slice(&get(&format!("{}containers.json", s.url), &[]).body).unwrap();
    let imm = v["containers"][0]["immutable_url"].as_str().unwrap();
    assert!(imm.starts_with("/@"));
    let g = get(&format!("http://{}{imm}stream", s.addr), &[]);
    assert_eq!(g.status, 200);
    assert_eq!(g.body, data);
    assert_eq!(g.h("etag"), etag);
    assert_eq!(g.h("cache-control"), "public, max-age=31536000, immutable");
    let r = get(&format!("http://{}{imm}by-pts/0", s.addr), &[]);
    assert_eq!(r.status, 302);
    assert_eq!(r.h("location"), format!("{imm}blocks/000000"));
    let g = get(
        &format!("http://{}/@{}/stream", s.addr, "0".repeat(64)),
        &[],
    );
    assert_eq!(g.status, 404);

    // veri.json changes while serving: never cached, no validator.
    let g = get(&format!("{}movie/veri.json", s.url), &[]);
    assert_eq!(g.h("cache-control"), "no-store");
    assert_eq!(g.h("etag"), "");
}

#[test]
fn a_damaged_block_is_a_500_or_a_cut_never_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (c, data) = movie_v1(dir.path(), 600_000);
    damage_block(&c, 0);
    damage_block(&c, 5);
    // Beyond the first 256 KiB read of a response starting at block 1.
    damage_block(&c, 40);
    let s = Served::start(&[arg(&c)]);
    // The block itself: 500 before any body byte.
    let g = get(&format!("{}movie/blocks/000005", s.url), &[]);
    assert_eq!(g.status, 500);
    assert!(
        String::from_utf8_lossy(&g.body).contains("block 5"),
        "{}",
        String::from_utf8_lossy(&g.body)
    );
    // The stream from its start: block 0 is damaged, so 500 too.
    let g = get(&format!("{}movie/stream", s.url), &[]);
    assert_eq!(g.status, 500);
    // A range whose first read reaches block 5: 500 as well.
    let g = get(&format!("{}movie/stream", s.url), &["-r", "10000-"]);
    assert_eq!(g.status, 500);
    // From block 6 on: headers go out with the first 256 KiB, then the body is cut at
    // block 40, and what arrived is exactly the intact bytes before it.
    let g = get(&format!("{}movie/stream", s.url), &["-r", "60000-"]);
    assert_eq!(g.status, 206);
    assert_eq!(g.code, 18, "curl must see the cut");
    assert!(
        g.body.len() >= 256 << 10 && g.body.len() <= 340_000,
        "{}",
        g.body.len()
    );
    assert_eq!(g.body, &data[60_000..60_000 + g.body.len()]);
    // Intact parts are still served, and the server stays up.
    let g = get(&format!("{}movie/blocks/000006", s.url), &[]);
    assert_eq!(g.body, &data[60_000..70_000]);
    assert!(s.log_has("cut after its headers"), "{}", s.log());
    let veri = get(&format!("{}movie/veri.json", s.url), &[]);
    assert!(String::from_utf8_lossy(&veri.body).contains("\"block\": 5"));
}

#[test]
fn sigterm_and_sigint_stop_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = movie(dir.path(), 10_000);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut s = Served::start(&[arg(&c)]);
        assert_eq!(get(&format!("{}containers.json", s.url), &[]).status, 200);
        s.signal(sig);
        let mut waited = 0;
        while s.alive() && waited < 200 {
            std::thread::sleep(Duration::from_millis(50));
            waited += 1;
        }
        let status = s.stop().expect("the server exited by itself");
        assert!(status.success(), "{status:?}\n{}", s.log());
        assert!(s.log_has(": stopping"), "{}", s.log());
    }
}

/// Send raw bytes, read the whole answer (until the server closes or 30 s pass).
fn raw(addr: &str, req: &[u8]) -> String {
    let mut t = TcpStream::connect(addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = t.write_all(req);
    let mut out = Vec::new();
    let _ = t.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn bad_paths_get_clear_statuses_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = movie(dir.path(), 30_000);
    let mut s = Served::start(&[arg(&c)]);
    for (path, status) in [
        ("/movie/../../etc/passwd", 400),
        ("/../movie/stream", 400),
        ("/movie/%2e%2e/%2e%2e/etc/passwd", 400),
        ("/movie/%2E%2E/stream", 400),
        ("/movie/./stream", 400),
        ("//etc/passwd", 400),
        ("/movie/%2fetc%2fpasswd", 400),
        ("/movie/stream%00", 400),
        ("/movie/%ff", 400),
        ("/etc/passwd", 404),
        ("/movie/blocks/000003", 404),
        ("/movie/blocks/3", 404),
        ("/movie/blocks/99999999999999999999999", 404),
        ("/movie/blocks/-1", 404),
        ("/movie/by-pts/-5", 404),
        ("/movie/by-pts/abc", 404),
        ("/movie/by-pts/1e6", 404),
        ("/movie/stream/x", 404),
        ("/nothing/stream", 404),
    ] {
        let g = get(&format!("http://{}{path}", s.addr), &["--path-as-is"]);
        assert_eq!(
            g.status,
            status,
            "{path}: {}",
            String::from_utf8_lossy(&g.body)
        );
        assert!(!g.body.is_empty(), "{path}: a clear message");
    }
    // Raw NUL and control bytes in the request line: a 400 from the parser.
    let r = raw(&s.addr, b"GET /movie/\0stream HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&r), 400, "{r}");
    // An absolute-form target names the same path.
    let r = raw(
        &s.addr,
        b"GET http://x/movie/../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 400, "{r}");
    // Very long targets: 414 up to the head limit, 431 beyond it.
    let long = format!("/movie/{}", "a".repeat(5000));
    assert_eq!(get(&format!("http://{}{long}", s.addr), &[]).status, 414);
    let huge = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(200_000));
    let r = raw(&s.addr, huge.as_bytes());
    assert!(
        matches!(status_of(&r), 414 | 431) || r.is_empty(),
        "{}",
        &r[..r.len().min(200)]
    );
    // A huge Range header (beyond the 64 KiB head limit).
    let big = format!("Range: bytes={}", "0-0,".repeat(20_000));
    let g = get(&format!("{}movie/stream", s.url), &["-H", &big]);
    assert_eq!(g.status, 431);
    assert!(s.alive());
    assert_eq!(get(&format!("{}movie/stream", s.url), &[]).status, 200);
}

#[test]
fn slow_and_idle_clients_do_not_pin_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // Larger than what the kernel's socket buffers on both ends can hold.
    let (c, _) = movie(dir.path(), 24_000_000);
    let mut s = Served::start(&[
        arg(&c),
        "--max-connections",
        "8",
        "--header-timeout",
        "1",
        "--send-timeout",
        "1",
    ]);
    // Slowloris: a head sent a byte at a time is cut at the header timeout.
    let mut slow = TcpStream::connect(&s.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let closed = std::thread::spawn(move || {
        for b in b"GET /movie/stream HTTP/1.1\r\nX-Slow: " {
            if slow.write_all(&[*b]).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut buf = [0u8; 512];
        loop {
            if slow.write_all(b"a").is_err() {
                return true;
            }
            match slow.read(&mut buf) {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    });
    // Idle connections, more than the bound: they are closed after the header timeout,
    // and a real request is served.
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&s.addr).unwrap())
        .collect();
    let g = get(&format!("{}containers.json", s.url), &[]);
    assert_eq!(g.status, 200);
    assert!(closed.join().unwrap());
    for mut t in idle {
        t.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut b = [0u8; 16];
        // Closed by the server (EOF) or reset, never left waiting forever.
        assert!(matches!(t.read(&mut b), Ok(0) | Err(_)));
    }
    // A client that stops reading a big response is disconnected at the send timeout.
    let mut lazy = TcpStream::connect(&s.addr).unwrap();
    lazy.write_all(b"GET /movie/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut waited = 0;
    while !s
        .log()
        .contains("\"GET /movie/stream HTTP/1.1\" 200 24000000")
        && waited < 600
    {
        std::thread::sleep(Duration::from_millis(50));
        waited += 1;
    }
    std::thread::sleep(Duration::from_secs(3));
    lazy.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match lazy.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(
        got < 24_000_000,
        "the stalled response was cut ({got} bytes)"
    );
    assert!(s.alive());
    assert_eq!(
        get(&format!("{}movie/blocks/000000", s.url), &[]).status,
        200
    );
}

#[test]
fn encrypted_without_key_is_403_and_bad_sources_fail_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    ok(Command::new(BIN).args(["keygen", "-o", arg(&key)]));
    let src = dir.path().join("secret.mp4");
    std::fs::write(&src, noise(30_000, 3)).unwrap();
    let enc = dir.path().join("secret.h4mk");
    ok(Command::new(BIN).args([
        "pack",
        arg(&src),
        "--encrypt",
        "--key-file",
        arg(&key),
        "--block-size",
        "10000",
        "-o",
        arg(&enc),
    ]));
    {
        let s = Served::start(&[arg(&enc)]);
        let g = get(&format!("{}secret/stream", s.url), &[]);
        assert_eq!(g.status, 403);
        assert!(String::from_utf8_lossy(&g.body).contains("encrypted"));
        assert_eq!(get(&format!("{}secret/meta.json", s.url), &[]).status, 200);
    }
    {
        let s = Served::start(&[arg(&enc), "--key-file", arg(&key)]);
        let g = get(&format!("{}secret/stream", s.url), &[]);
        assert_eq!(g.status, 200);
        assert_eq!(g.body, noise(30_000, 3));
    }
    // A missing source, two containers with one name: no server, exit 3.
    let o = common::run(Command::new(BIN).args([
        "serve",
        "/nonexistent.h4mk",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent.h4mk"));
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(&enc, other.path().join("secret.h4mk")).unwrap();
    let o = common::run(Command::new(BIN).args([
        "serve",
        arg(&enc),
        arg(other.path()),
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("two containers are named"));
}

/// A client of the reference's video API, as its README describes it: read the
/// manifest (SEEK table and metadata), map a timestamp to a block, fetch blocks by
/// index, fetch byte ranges with 206.
struct RefClient {
    base: String,
    query: String,
}

impl RefClient {
    fn json(&self, route: &str, extra: &str) -> serde_json::Value {
        let g = get(
            &format!("{}video/{route}?{}{extra}", self.base, self.query),
            &[],
        );
        assert_eq!(
            g.status,
            200,
            "{route}: {}",
            String::from_utf8_lossy(&g.body)
        );
        serde_json::from_slice(&g.body).unwrap()
    }
    fn manifest(&self) -> serde_json::Value {
        self.json("manifest", "")
    }
    fn seek_to_block(&self, pts_us: u64) -> u64 {
        self.json("seek_to_block", &format!("&pts_us={pts_us}"))["block"]
            .as_u64()
            .unwrap()
    }
    fn block(&self, i: u64) -> Vec<u8> {
        let g = get(&format!("{}video/block/{i}?{}", self.base, self.query), &[]);
        assert_eq!(g.status, 200);
        g.body
    }
    fn range(&self, a: u64, b: u64) -> Got {
        get(
            &format!("{}video/range?{}", self.base, self.query),
            &["-H", &format!("Range: bytes={a}-{b}")],
        )
    }
}

#[test]
fn the_reference_routes_answer_a_client_written_from_its_description() {
    let dir = tempfile::tempdir().unwrap();
    let (c, data) = movie(dir.path(), 95_000);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed/a_small10.h4mk");
    let payload = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed/a_small10.payload"),
    )
    .unwrap();
    let s = Served::start(&[arg(&c), arg(&fixture)]);
    for (name, data, block_size) in [("movie", &data, 10_000usize), ("a_small10", &payload, 256)] {
        let cl = RefClient {
            base: s.url.clone(),
            query: format!("container={name}"),
        };
        let m = cl.manifest();
        assert_eq!(m["container"], name);
        let blocks = m["blocks"].as_u64().unwrap();
        assert_eq!(blocks as usize, data.len().div_ceil(block_size));
        assert_eq!(m["stream_size"].as_u64().unwrap() as usize, data.len());
        let seek = m["seek"].as_array().unwrap();
        assert!(!seek.is_empty());
        // Every SEEK entry's time maps to its block; a time between keyframes maps to
        // the keyframe before it.
        for e in seek {
            let pts = e["pts_us"].as_u64().unwrap();
            assert_eq!(cl.seek_to_block(pts), e["block"].as_u64().unwrap());
            assert_eq!(cl.seek_to_block(pts + 1), e["block"].as_u64().unwrap());
        }
        // All blocks by index are the stream.
        let mut all = Vec::new();
        for i in 0..blocks {
            all.extend(cl.block(i));
        }
        assert_eq!(&all, data);
        let r = cl.range(0, 1024);
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &data[..1025.min(data.len())]);
        let r = cl.range(data.len() as u64, data.len() as u64 + 5);
        assert_eq!(r.status, 416);
    }
    let sk = RefClient {
        base: s.url.clone(),
        query: "container=movie".into(),
    }
    .json("seek_to_block", "&pts_us=330000");
    assert_eq!(sk["block"], 8);
    assert_eq!(sk["block_pts_us"], 320_000);
    assert_eq!(sk["keyframe"], true);
    assert_eq!(sk["offset"], 80_000);
    assert_eq!(sk["url"], "/movie/blocks/000008");

    // Bad requests: a clear status each.
    for (q, status) in [
        ("video/manifest", 400), // two containers: which?
        ("video/manifest?container=nope", 404),
        ("video/manifest?h4mk=48344d4b", 400),
        ("video/block/10?container=movie", 404),
        ("video/block/-1?container=movie", 400),
        ("video/block/x?container=movie", 400),
        ("video/block/99999999999999999999999?container=movie", 400),
        ("video/seek_to_block?container=movie", 400),
        ("video/seek_to_block?container=movie&pts_us=-5", 400),
        ("video/seek_to_block?container=movie&pts_us=abc", 400),
        ("video/seek_to_block?container=movie&pts_us=1.5", 400),
        ("video/manifest?container=movie&track=7", 404),
        ("video/block?container=movie", 404),
    ] {
        let g = get(&format!("{}{q}", s.url), &[]);
        assert_eq!(
            g.status,
            status,
            "{q}: {}",
            String::from_utf8_lossy(&g.body)
        );
        assert!(!g.body.is_empty());
    }
}

fn ffmpeg_out(args: &[&str]) -> String {
    let o = ok(Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin"])
        .args(args));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn ffprobe_ffmpeg_seeking_and_hls_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let ts = dir.path().join("clip.ts");
    ffmpeg_out(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "10",
        "-c:v",
        "libx264",
        "-g",
        "25",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-f",
        "mpegts",
        "-y",
        arg(&ts),
    ]);
    let csv = ok(Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ffprobe-index.sh"),
    )
    .arg(&ts))
    .stdout;
    let csvp = dir.path().join("clip.csv");
    std::fs::write(&csvp, csv).unwrap();
    let c = dir.path().join("clip.h4mk");
    ok(Command::new(BIN).args(["pack", arg(&ts), "--index", arg(&csvp), "-o", arg(&c)]));
    let (mp4c, _) = movie(dir.path(), 30_000);
    let s = Served::start(&[arg(&c), arg(&mp4c)]);
    let stream = format!("{}clip/stream", s.url);

    let st = get(&stream, &["-I"]);
    assert_eq!(st.h("content-type"), "video/mp2t");
    let probe = ok(Command::new("ffprobe").args([
        "-v",
        "error",
        "-show_entries",
        "format=duration:stream=codec_name",
        "-of",
        "json",
        &stream,
    ]));
    let v: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    let codecs: Vec<&str> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap())
        .collect();
    assert_eq!(codecs, ["h264", "aac"]);
    let dur: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((9.5..10.5).contains(&dur), "{dur}");

    // ffmpeg -ss over HTTP decodes the same frame as from the file.
    let frame =
        |input: &str| ffmpeg_out(&["-ss", "5", "-i", input, "-frames:v", "1", "-f", "md5", "-"]);
    let over_http = frame(&stream);
    assert!(over_http.starts_with("MD5="), "{over_http}");
    assert_eq!(over_http, frame(arg(&ts)));
    assert!(
        s.log_has("\"GET /clip/stream HTTP/1.1\" 206"),
        "ffmpeg seeks with ranges"
    );

    // HLS: one byte-range segment per keyframe (a keyframe a second), the whole video.
    let pl = get(&format!("{}clip/index.m3u8", s.url), &[]);
    assert_eq!(pl.status, 200);
    assert_eq!(pl.h("content-type"), "application/vnd.apple.mpegurl");
    let text = String::from_utf8(pl.body).unwrap();
    assert!(text.starts_with("#EXTM3U\n"));
    assert_eq!(text.matches("#EXT-X-BYTERANGE:").count(), 10, "{text}");
    assert!(text.contains("#EXT-X-BYTERANGE:") && text.contains("\nstream.ts\n"));
    let playlist = format!("{}clip/index.m3u8", s.url);
    let all_video = |input: &str| ffmpeg_out(&["-i", input, "-map", "0:v", "-f", "md5", "-"]);
    assert_eq!(all_video(&playlist), all_video(arg(&ts)));
    let seek_hls = ffmpeg_out(&[
        "-ss",
        "5",
        "-i",
        &playlist,
        "-frames:v",
        "1",
        "-f",
        "md5",
        "-",
    ]);
    assert!(seek_hls.starts_with("MD5="));
    assert!(s.log_has("\"GET /clip/stream.ts HTTP/1.1\" 206"));

    // Not MPEG-TS: no playlist, no .ts alias.
    let g = get(&format!("{}movie/index.m3u8", s.url), &[]);
    assert_eq!(g.status, 404);
    assert!(String::from_utf8_lossy(&g.body).contains("MPEG-TS"));
    assert_eq!(get(&format!("{}movie/stream.ts", s.url), &[]).status, 404);
}

#[test]
fn metrics_count_requests_bytes_cache_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = movie_v1(dir.path(), 95_000);
    damage_block(&c, 2);
    let s = Served::start(&[arg(&c)]);
    assert_eq!(
        get(&format!("{}movie/blocks/000001", s.url), &[]).status,
        200
    );
    assert_eq!(
        get(&format!("{}movie/blocks/000001", s.url), &[]).status,
        200
    );
    assert_eq!(
        get(&format!("{}movie/blocks/000002", s.url), &[]).status,
        500
    );
    assert_eq!(
        get(&format!("{}movie/blocks/000099", s.url), &[]).status,
        404
    );
    let m = get(&format!("{}metrics", s.url), &[]);
    assert_eq!(m.status, 200);
    assert!(m.h("content-type").starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(m.body).unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        value("h4fs_http_requests_total{route=\"blocks\",status=\"200\"}"),
        2.0
    );
    assert_eq!(
        value("h4fs_http_requests_total{route=\"blocks\",status=\"500\"}"),
        1.0
    );
    assert_eq!(
        value("h4fs_http_requests_total{route=\"blocks\",status=\"404\"}"),
        1.0
    );
    assert_eq!(value("h4fs_verification_failures_total"), 1.0);
    assert!(value("h4fs_cache_hits_total") >= 1.0);
    assert!(value("h4fs_cache_misses_total") >= 1.0);
    // Two 10,000-byte blocks and the error messages.
    assert!(value("h4fs_http_response_body_bytes_total") >= 20_000.0);
    assert_eq!(value("h4fs_http_request_duration_seconds_count"), 4.0);
    assert_eq!(
        value("h4fs_http_request_duration_seconds_bucket{le=\"+Inf\"}"),
        4.0
    );
    assert!(text.contains("# TYPE h4fs_http_request_duration_seconds histogram"));
}

/// The value of one series in `/metrics`.
fn metric(url: &str, series: &str) -> f64 {
    let m = get(&format!("{url}metrics"), &[]);
    let text = String::from_utf8(m.body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// A range whose blocks are cached is answered on the fast path (no lookup, no
/// blocking read) with the same bytes and headers as the first, ordinary answer; a
/// damaged block never reaches it.
#[test]
fn cached_ranges_take_the_fast_path_with_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (c, data) = movie_v1(dir.path(), 95_000);
    damage_block(&c, 5);
    let s = Served::start(&[arg(&c)]);
    let u = format!("{}movie/stream", s.url);
    let fast = || metric(&s.url, "h4fs_http_fast_ranges_total");
    assert_eq!(fast(), 0.0);
    let first = get(&u, &["-r", "12000-12999"]);
    assert_eq!(first.status, 206);
    assert_eq!(first.body, &data[12_000..13_000]);
    assert_eq!(fast(), 0.0, "the first read loads and verifies the block");
    let again = get(&u, &["-r", "12000-12999"]);
    assert_eq!(fast(), 1.0);
    assert_eq!(again.status, 206);
    assert_eq!(again.body, first.body);
    for h in [
        "content-range",
        "content-length",
        "content-type",
        "etag",
        "last-modified",
        "cache-control",
        "accept-ranges",
    ] {
        assert!(!first.h(h).is_empty(), "{h}");
        assert_eq!(again.h(h), first.h(h), "{h}");
    }
    // Another range of the same block, then one across blocks 1 and 2 once both are
    // cached.
    let g = get(&u, &["-r", "10000-10099"]);
    assert_eq!((g.status, &g.body[..]), (206, &data[10_000..10_100]));
    assert_eq!(fast(), 2.0);
    assert_eq!(get(&u, &["-r", "20000-20000"]).status, 206);
    let g = get(&u, &["-r", "19990-20009"]);
    assert_eq!((g.status, &g.body[..]), (206, &data[19_990..20_010]));
    assert_eq!(fast(), 3.0);
    // The same path by identity: content-addressed, so immutable.
    let ident = get(&format!("{}containers.json", s.url), &[]);
    let v: serde_json::Value = serde_json::from_slice(&ident.body).unwrap();
    let imm = v["containers"][0]["immutable_url"].as_str().unwrap();
    let iu = format!("http://{}{imm}stream", s.addr);
    for n in [3.0, 4.0] {
        let g = get(&iu, &["-r", "12000-12999"]);
        assert_eq!((g.status, &g.body[..]), (206, &data[12_000..13_000]));
        assert!(g.h("cache-control").contains("immutable"));
        assert_eq!(fast(), n);
    }
    // Conditions or several ranges: the ordinary path.
    let etag = first.h("etag").to_string();
    let g = get(
        &u,
        &["-r", "12000-12999", "-H", &format!("If-Range: {etag}")],
    );
    assert_eq!((g.status, &g.body[..]), (206, &data[12_000..13_000]));
    let g = get(&u, &["-r", "12000-12009,12100-12109"]);
    assert_eq!(g.status, 206);
    assert_eq!(fast(), 4.0);
    // The damaged block, asked twice: a 500 each time, never the fast path.
    for _ in 0..2 {
        assert_eq!(get(&u, &["-r", "50000-50099"]).status, 500);
    }
    assert_eq!(fast(), 4.0);
    assert_eq!(metric(&s.url, "h4fs_verification_failures_total"), 2.0);
}

#[test]
fn the_web_page_plays_and_seeks_the_video_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let webm = dir.path().join("clip.webm");
    ffmpeg_out(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-t",
        "10",
        "-c:v",
        "libvpx",
        "-g",
        "25",
        "-b:v",
        "500k",
        "-deadline",
        "realtime",
        "-y",
        arg(&webm),
    ]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let csv = ok(Command::new(root.join("scripts/ffprobe-index.sh")).arg(&webm)).stdout;
    let csvp = dir.path().join("clip.csv");
    std::fs::write(&csvp, csv).unwrap();
    let c = dir.path().join("clip.h4mk");
    ok(Command::new(BIN).args(["pack", arg(&webm), "--index", arg(&csvp), "-o", arg(&c)]));
    let s = Served::start(&[arg(&c)]);
    let page = get(&s.url, &[]);
    assert_eq!(page.status, 200);
    assert_eq!(page.h("content-type"), "text/html; charset=utf-8");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("web-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("node")
        .arg(root.join("tests/browser/play.mjs"))
        .args([&s.url, arg(&shot)])
        .current_dir(root.join("tests/browser"))
        .output()
        .expect("node is needed (.ci/run installs nodejs, npm and playwright-core)");
    assert!(
        out.status.success(),
        "the browser test failed (playwright-core comes from `npm ci` in tests/browser, chromium from Debian):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sections"], serde_json::json!(["clip"]));
    assert_eq!(v["keyframes"], 10, "{v}");
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    assert!(
        v["integrity"].as_str().unwrap().contains("structure: ok"),
        "{v}"
    );
    assert_eq!(v["width"], 320);
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert!((9.5..10.5).contains(&f("duration")), "{v}");
    assert!(f("played") > f("start"), "playback moves: {v}");
    assert!(f("afterSeek") >= 5.0, "seeked to 60 %: {v}");
    assert!(f("later") > f("afterSeek"), "plays on after the seek: {v}");
    assert!(f("lit") > 100.0, "a frame was drawn: {v}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot at {}",
        shot.display()
    );
    assert!(
        s.log_has("\"GET /clip/stream HTTP/1.1\" 206"),
        "{}",
        s.log()
    );
}

#[test]
fn a_container_failing_its_checks_is_left_out_or_refused_with_strict() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    let (c, data) = movie(dir.path(), 30_000);
    std::fs::copy(&c, lib.join("good.h4mk")).unwrap();
    let bytes = std::fs::read(&c).unwrap();
    std::fs::write(lib.join("cut.h4mk"), &bytes[..bytes.len() - 40]).unwrap();
    let s = Served::start(&[arg(&lib)]);
    let v: serde_json::Value =
        serde_json::from_slice(&get(&format!("{}containers.json", s.url), &[]).body).unwrap();
    let names: Vec<&str> = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["good"]);
    assert_eq!(get(&format!("{}good/stream", s.url), &[]).body, data);
    assert_eq!(get(&format!("{}cut/stream", s.url), &[]).status, 404);
    assert!(
        s.log_has("cut.h4mk") && s.log_has("not served"),
        "{}",
        s.log()
    );
    let stats = get(&format!("{}stats.json", s.url), &[]);
    assert!(String::from_utf8_lossy(&stats.body).contains("cut.h4mk"));
    let o = common::run(Command::new(BIN).args([
        "serve",
        arg(&lib),
        "--strict",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("cut.h4mk"));
}
