//! Containers on S3 (SeaweedFS) and HTTP (nginx): real servers on loopback, no mocks.

mod common;

use common::servers::{ACCESS_KEY, Nginx, SECRET_KEY, Seaweed, aws_env, test_ca};
use common::{BIN, arg, noise, ok, run};
use h4fs::remote::{Location, RemoteOptions, RemoteSource};
use h4fs::source::ReadAt;
use std::path::Path;
use std::process::{Command, Output};

/// A 3 MB container of 64 KiB blocks (47 blocks) packed from `noise`, and its input.
fn container(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let input = noise(3_000_000, 11);
    let inp = dir.join("in.bin");
    std::fs::write(&inp, &input).unwrap();
    let out = dir.join("c.h4mk");
    ok(Command::new(BIN)
        .args(["pack", "--block-size", "64K", "-o"])
        .arg(&out)
        .arg(&inp));
    (input, std::fs::read(&out).unwrap())
}

/// `h4fs` with a clean AWS environment: keys `key`/`secret` (when given), no profile
/// files of the machine, and AWS_CA_BUNDLE set, as on the machines this runs on.
fn h4fs(home: &Path, keys: Option<(&str, &str)>) -> Command {
    let mut c = Command::new(BIN);
    aws_env(&mut c, home, keys);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The request count of the `--verbose` line on stderr.
fn requests(out: &Output) -> u64 {
    let err = text(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains(" requests, "))
        .unwrap_or_else(|| panic!("no --verbose line in: {err}"));
    let n = line.split(": ").nth(2).expect("h4fs: NAME: N requests");
    n.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn s3_with_sigv4_inspect_seek_verify_cat_extract() {
    let dir = tempfile::tempdir().unwrap();
    let (input, packed) = container(dir.path());
    let s3 = Seaweed::start();
    s3.put("media-test", "films/c.h4mk", &packed);
    let url = "s3://media-test/films/c.h4mk";
    let ep = s3.endpoint();
    let keys = Some((ACCESS_KEY, SECRET_KEY));

    // Opening costs at most 3 requests.
    let out = ok(h4fs(dir.path(), keys).args(["inspect", "--json", "--endpoint", &ep, url]));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let opened = &doc["remote_open"];
    let n = opened["requests"].as_u64().unwrap();
    assert!((1..=3).contains(&n), "opening took {n} requests: {opened}");
    assert_eq!(opened["errors"], 0);

    // Options may come after the subcommand too; seek answers from the index.
    let out = ok(h4fs(dir.path(), keys).args(["seek", url, "0", "--json", "--endpoint", &ep]));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["pts_us"], 0);

    // verify reads the blocks in a few large requests, not one per block.
    let out = ok(h4fs(dir.path(), keys).args(["verify", "--verbose", "--endpoint", &ep, url]));
    assert!(text(&out.stdout).starts_with("ok s3://media-test/films/c.h4mk"));
    let n = requests(&out);
    assert!(n <= 4, "verify of 47 blocks took {n} requests");

    let out = ok(h4fs(dir.path(), keys).args([
        "cat",
        "--endpoint",
        &ep,
        url,
        "--range",
        "1000000-1000999",
    ]));
    assert_eq!(out.stdout, &input[1_000_000..1_001_000]);

    let copy = dir.path().join("copy.bin");
    let out = ok(h4fs(dir.path(), keys)
        .args(["extract", "--verbose", "--endpoint", &ep, url, "-o"])
        .arg(&copy));
    assert_eq!(std::fs::read(&copy).unwrap(), input);
    let n = requests(&out);
    assert!(n <= 4, "extract of 47 blocks took {n} requests");

    // Keys from an AWS profile, named by AWS_PROFILE.
    let aws = dir.path().join(".aws");
    std::fs::create_dir(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        format!(
            "[media]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        aws.join("config"),
        format!("[profile media]\nregion = us-east-1\nendpoint_url = {ep}\n"),
    )
    .unwrap();
    let out = ok(h4fs(dir.path(), None)
        .env("AWS_PROFILE", "media")
        .args(["verify", url]));
    assert!(text(&out.stdout).starts_with("ok "));

    // AWS_CA_BUNDLE is for https endpoints: a plain-http endpoint works whatever it says.
    ok(h4fs(dir.path(), keys)
        .env("AWS_CA_BUNDLE", dir.path().join("no-such-bundle.pem"))
        .args(["inspect", "--endpoint", &ep, url]));

    // Wrong credentials: a clear error naming the object and the status, no secret.
    let out = run(
        h4fs(dir.path(), Some((ACCESS_KEY, "wrong-secret-XYZZY"))).args([
            "inspect",
            "--endpoint",
            &ep,
            url,
        ]),
    );
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains(url) && err.contains("403") && err.contains("SignatureDoesNotMatch"),
        "{err}"
    );
    assert!(!err.contains("XYZZY") && !err.contains(SECRET_KEY), "{err}");

    // A missing key and a missing bucket.
    let out = run(h4fs(dir.path(), keys).args([
        "inspect",
        "--endpoint",
        &ep,
        "s3://media-test/films/none.h4mk",
    ]));
    assert!(
        text(&out.stderr).contains("not found (HTTP 404"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn s3_damaged_objects_and_reference_containers() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = container(dir.path());
    let s3 = Seaweed::start();
    let ep = s3.endpoint();
    let keys = Some((ACCESS_KEY, SECRET_KEY));

    // A byte of block 5 changed on the store: verify names the block.
    let a = h4fs::Archive::open(&dir.path().join("c.h4mk")).unwrap();
    let e = a.entry(0, 5).unwrap();
    let mut bad = packed.clone();
    bad[e.data_offset as usize + 100] ^= 0x40;
    s3.put("media-test", "bad.h4mk", &bad);
    let out =
        run(h4fs(dir.path(), keys).args(["verify", "--endpoint", &ep, "s3://media-test/bad.h4mk"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("BAD") && stdout.contains("block 5"),
        "{stdout}"
    );
    // and extract refuses to write it.
    let copy = dir.path().join("bad.out");
    let out = run(h4fs(dir.path(), keys)
        .args([
            "extract",
            "--endpoint",
            &ep,
            "s3://media-test/bad.h4mk",
            "-o",
        ])
        .arg(&copy));
    assert_eq!(out.status.code(), Some(1));
    assert!(!copy.exists());

    // A truncated object.
    s3.put("media-test", "cut.h4mk", &packed[..packed.len() - 1000]);
    let out = run(h4fs(dir.path(), keys).args([
        "inspect",
        "--endpoint",
        &ep,
        "s3://media-test/cut.h4mk",
    ]));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("s3://media-test/cut.h4mk") && err.contains("truncated"),
        "{err}"
    );

    // A reference (layout A) container reads and verifies, in few requests.
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed");
    let reference = std::fs::read(seed.join("a_small10.h4mk")).unwrap();
    s3.put("media-test", "ref/a.h4mk", &reference);
    let url = "s3://media-test/ref/a.h4mk";
    let out = ok(h4fs(dir.path(), keys).args(["verify", "--verbose", "--endpoint", &ep, url]));
    assert!(
        text(&out.stdout).starts_with("ok "),
        "{}",
        text(&out.stdout)
    );
    assert!(requests(&out) <= 2, "{}", text(&out.stderr));
    let out = ok(h4fs(dir.path(), keys).args(["cat", "--endpoint", &ep, url]));
    assert_eq!(
        out.stdout,
        std::fs::read(seed.join("a_small10.payload")).unwrap()
    );
}

#[test]
fn http_from_nginx_inspect_verify_cat_extract() {
    let dir = tempfile::tempdir().unwrap();
    let (input, packed) = container(dir.path());
    let web = Nginx::start();
    std::fs::write(web.root.join("c.h4mk"), &packed).unwrap();
    let url = web.url("c.h4mk");

    let before = web.requests().len();
    let out = ok(h4fs(dir.path(), None).args(["inspect", "--json", &url]));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let log = web.requests()[before..].to_vec();
    assert!(
        log.len() <= 3,
        "opening took {} requests: {log:?}",
        log.len()
    );
    assert_eq!(
        doc["remote_open"]["requests"].as_u64().unwrap(),
        log.len() as u64
    );
    assert!(log.iter().all(|l| l.contains("\" 206 ")), "{log:?}");

    let out = ok(h4fs(dir.path(), None).args(["verify", "--full", &url]));
    assert!(text(&out.stdout).contains("VERI ok"));
    let out = ok(h4fs(dir.path(), None).args(["cat", &url, "--block", "3"]));
    assert_eq!(out.stdout, &input[3 * 65536..4 * 65536]);
    let copy = dir.path().join("copy.bin");
    ok(h4fs(dir.path(), None)
        .args(["extract", &url, "-o"])
        .arg(&copy));
    assert_eq!(std::fs::read(&copy).unwrap(), input);

    // A URL that carries a secret is refused before any request, without echoing it.
    let before = web.requests().len();
    let out = run(h4fs(dir.path(), None).args(["inspect", &format!("{url}?sig=SECRET1")]));
    assert_eq!(out.status.code(), Some(3));
    assert!(!text(&out.stderr).contains("SECRET1"));
    assert_eq!(web.requests().len(), before);
}

#[test]
fn replaced_object_is_detected_and_never_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = container(dir.path());
    let web = Nginx::start();
    let file = web.root.join("c.h4mk");
    std::fs::write(&file, &packed).unwrap();
    let loc = Location::parse(&web.url("c.h4mk")).unwrap();
    let src = RemoteSource::open(&loc, &RemoteOptions::default()).unwrap();
    let mut buf = vec![0u8; 1000];
    src.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, packed[..1000]);

    // Replaced by another version (another length, so another ETag).
    let mut other = packed.clone();
    other.extend_from_slice(b"appended");
    std::fs::write(&file, &other).unwrap();
    let err = src
        .read_exact_at(&mut buf, 1_500_000)
        .unwrap_err()
        .to_string();
    assert!(err.contains("changed on the store"), "{err}");
    // Every later read fails too, even of bytes fetched before.
    let err = src.read_exact_at(&mut buf, 0).unwrap_err().to_string();
    assert!(err.contains("changed on the store"), "{err}");
}

#[test]
fn stopped_server_gives_an_error_after_bounded_retries() {
    let dir = tempfile::tempdir().unwrap();
    let (_, packed) = container(dir.path());
    let web = Nginx::start();
    std::fs::write(web.root.join("c.h4mk"), &packed).unwrap();
    let loc = Location::parse(&web.url("c.h4mk")).unwrap();
    let src = RemoteSource::open(&loc, &RemoteOptions::default()).unwrap();
    drop(web);
    let mut buf = vec![0u8; 1000];
    let err = src
        .read_exact_at(&mut buf, 1_000_000)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot connect"), "{err}");
    assert!(err.contains("gave up after 5 tries"), "{err}");
    let s = src.stats().snapshot();
    assert_eq!(s.retries, 4, "{s:?}");
    // Then reads fail at once for a while instead of waiting again.
    let err = src
        .read_exact_at(&mut buf, 2_000_000)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not trying again"), "{err}");
    assert_eq!(src.stats().snapshot().requests, s.requests);
}

/// An https:// source behind a private CA (nginx with TLS, a test CA made by openssl):
/// refused as untrusted, saying how to trust it, until `--ca-file` (or AWS_CA_BUNDLE)
/// names the CA; then read and verified as over HTTP.
#[test]
fn https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (input, packed) = container(dir.path());
    let (ca, cert, key) = test_ca(dir.path());
    let web = Nginx::start_tls(&cert, &key);
    std::fs::write(web.root.join("c.h4mk"), &packed).unwrap();
    let url = web.url("c.h4mk");
    assert!(url.starts_with("https://"), "{url}");

    // The system's roots (AWS_CA_BUNDLE as on the machines this runs on) do not hold it.
    let out = run(h4fs(dir.path(), None).args(["inspect", &url]));
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains("TLS certificate is not trusted") && err.contains("--ca-file"),
        "{err}"
    );
    let out = ok(h4fs(dir.path(), None)
        .arg("--ca-file")
        .arg(&ca)
        .args(["verify", "--full", &url]));
    assert!(
        text(&out.stdout).contains("VERI ok"),
        "{}",
        text(&out.stdout)
    );
    let out = ok(h4fs(dir.path(), None)
        .env("AWS_CA_BUNDLE", &ca)
        .args(["cat", &url, "--block", "5"]));
    assert_eq!(out.stdout, &input[5 * 65536..6 * 65536]);
    // A file with no certificate in it is an error that names it, before any request.
    let before = web.requests().len();
    let out = run(h4fs(dir.path(), None)
        .args(["inspect", "--ca-file"])
        .arg(&key)
        .arg(&url));
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains("--ca-file") && err.contains("holds no PEM certificate"),
        "{err}"
    );
    assert_eq!(web.requests().len(), before);
}

#[test]
fn ca_bundle_is_read_for_https_endpoints_only() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-bundle.pem");
    let out = run(h4fs(dir.path(), None).env("AWS_CA_BUNDLE", &missing).args([
        "inspect",
        "--endpoint",
        "https://127.0.0.1:9",
        "s3://bucket/key.h4mk",
    ]));
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains("AWS_CA_BUNDLE") && err.contains(arg(&missing)),
        "{err}"
    );
}

/// A slow server: it accepts connections and reads requests but never answers. A read
/// gives up within the bounded time (src/remote: 60 s per read, each request timed out
/// after 30 s), exit 3, saying so: never a hang.
#[test]
fn silent_server_times_out_within_the_bound() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    let home = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/c.h4mk");
    let out = common::run_bounded(
        h4fs(home.path(), None).args(["inspect", &url]),
        std::time::Duration::from_secs(150),
    )
    .expect("h4fs gave up within 150 s");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("no answer within 60 s (gave up after"),
        "{err}"
    );
}

/// `h4fs serve` takes remote SOURCEs as `mount` does: an `http://` container from
/// nginx, and an S3 prefix (its containers all opened at start; a junk `.h4mk` left
/// out with a warning), answering curl with the verified stream.
#[test]
fn serve_takes_remote_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (input, packed) = container(dir.path());
    let web = Nginx::start();
    std::fs::write(web.root.join("c.h4mk"), &packed).unwrap();
    let home = tempfile::tempdir().unwrap();
    let s = common::Served::start_with(&[&web.url("c.h4mk")], |c| {
        aws_env(c, home.path(), None);
    });
    let got = common::curl(&["-f", &format!("{}c/stream", s.url)]);
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert!(got.stdout == input, "the stream served from nginx differs");
    drop(s);

    let s3 = Seaweed::start();
    s3.put("served", "lib/a.h4mk", &packed);
    s3.put("served", "lib/b.h4mk", &packed);
    s3.put("served", "lib/junk.h4mk", b"not a container");
    let endpoint = s3.endpoint();
    let s = common::Served::start_with(&["--endpoint", &endpoint, "s3://served/lib/"], |c| {
        aws_env(c, home.path(), Some((ACCESS_KEY, SECRET_KEY)));
    });
    let list = common::curl(&["-f", &format!("{}containers.json", s.url)]);
    let list = text(&list.stdout);
    assert!(list.contains("\"a\"") && list.contains("\"b\""), "{list}");
    assert!(!list.contains("junk"), "{list}");
    assert!(
        s.log().contains("junk"),
        "no warning for junk.h4mk: {}",
        s.log()
    );
    let got = common::curl(&["-f", "-r", "1000-1999", &format!("{}b/stream", s.url)]);
    assert!(
        got.stdout == input[1000..2000],
        "the range served from S3 differs"
    );
}
