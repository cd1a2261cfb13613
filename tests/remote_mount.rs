//! `h4fs mount` of containers on S3 (SeaweedFS) and HTTP (nginx): real servers on
//! loopback, real FUSE mounts, real clients (ffprobe, ffmpeg, sha256sum, rsync). Every
//! server is stopped and every mount unmounted in `Drop`, also when a test fails; every
//! wait is bounded.

mod common;

use common::servers::{ACCESS_KEY, Nginx, SECRET_KEY, Seaweed, aws_env, test_ca};
use common::{
    HANG_LIMIT, TestMount, daemon_pid, h4fs, mount_stats, mountinfo_has, noise, noise_container,
    ok, run, run_bounded, sha256_hex, wait_for,
};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BUCKET: &str = "media";

/// The AWS environment of a remote mount: the test keys (or `secret` instead of the
/// right one), no profile files of the machine, AWS_CA_BUNDLE as set on the machines
/// this runs on.
fn aws(cmd: &mut Command, home: &Path, secret: &str) {
    aws_env(cmd, home, Some((ACCESS_KEY, secret)));
}

/// A real H.264 MP4 of `secs` seconds made with ffmpeg, and its container packed at
/// its packets (`--media`).
fn movie(dir: &Path, secs: u32) -> (Vec<u8>, Vec<u8>) {
    let clip = dir.join("movie.mp4");
    ok(Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=duration={secs}:size=640x360:rate=25"))
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(["-pix_fmt", "yuv420p"])
        .arg(&clip));
    let out = dir.join("movie.h4mk");
    ok(h4fs()
        .arg("pack")
        .arg(&clip)
        .arg("--media")
        .arg("-o")
        .arg(&out));
    (std::fs::read(&clip).unwrap(), std::fs::read(&out).unwrap())
}

/// The mount's remote counters (`h4fs stats --json`), summed over its sources.
fn remote_requests(mp: &Path) -> u64 {
    mount_stats(mp)["remote"]["requests"].as_u64().unwrap()
}

/// Read `len` bytes at `offset` of a file of the mount.
fn pread(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; len];
    let n = f.read_at(&mut buf, offset)?;
    buf.truncate(n);
    Ok(buf)
}

/// A seeded sequence of pseudo-random numbers (no clock, no extra crate).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// `threads` readers at random offsets of `path`, each compared with `want`; the
/// number of mismatches (reads that failed or returned other bytes).
fn random_readers(path: &Path, want: &[u8], threads: u64, reads: u64) -> u64 {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut rng = Lcg(t + 1);
                    let f = std::fs::File::open(path).unwrap();
                    let mut bad = 0;
                    for _ in 0..reads {
                        let off = rng.next() % want.len() as u64;
                        let len = (1 + rng.next() % (256 << 10)) as usize;
                        let end = (off as usize + len).min(want.len());
                        let mut buf = vec![0u8; end - off as usize];
                        match f.read_exact_at(&mut buf, off) {
                            Ok(()) if buf == want[off as usize..end] => {}
                            _ => bad += 1,
                        }
                    }
                    bad
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

#[test]
fn s3_mount_with_sigv4_keys_serves_a_movie_to_real_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (mp4, container) = movie(dir.path(), 30);
    let s3 = Seaweed::start();
    s3.put(BUCKET, "films/movie.h4mk", &container);
    let endpoint = s3.endpoint();
    let log = dir.path().join("daemon.log");
    let src = PathBuf::from(format!("s3://{BUCKET}/films/movie.h4mk"));

    // Wrong credentials: a clear error, exit 3, nothing mounted, no secret shown.
    let bad_mp = dir.path().join("bad");
    std::fs::create_dir(&bad_mp).unwrap();
    for source in [src.clone(), PathBuf::from(format!("s3://{BUCKET}/films/"))] {
        let mut cmd = h4fs();
        aws(&mut cmd, dir.path(), "not-the-secret-42");
        let out = run(cmd
            .args(["mount", "--endpoint", &endpoint])
            .arg(&source)
            .arg(&bad_mp));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{}: {err}", source.display());
        assert!(
            err.contains("access denied") && err.contains("credentials"),
            "{err}"
        );
        assert!(!err.contains("not-the-secret-42"), "{err}");
        assert!(!mountinfo_has(&bad_mp));
    }

    // The endpoint as a global option before `mount`, as the other commands take it.
    let m = TestMount::new_with(
        &src,
        &["--log-file", log.to_str().unwrap()],
        |cmd: &mut Command| {
            aws(cmd, dir.path(), SECRET_KEY);
            cmd.args(["--endpoint", &endpoint]);
        },
    );
    let stream = m.path("stream");
    assert_eq!(
        std::fs::metadata(&stream).unwrap().len(),
        mp4.len() as u64,
        "exact size"
    );

    // A seek (a by-pts link, then the block it names) costs one request; going back to
    // a block already read costs none.
    let before = remote_requests(&m.dir);
    let middle = m.read("by-pts/15s").unwrap();
    assert!(!middle.is_empty());
    let after_seek = remote_requests(&m.dir);
    assert_eq!(after_seek - before, 1, "one range request for one seek");
    let later = m.read("by-pts/25s").unwrap();
    assert!(!later.is_empty());
    assert_eq!(remote_requests(&m.dir) - after_seek, 1);
    let again = remote_requests(&m.dir);
    assert_eq!(m.read("by-pts/15s").unwrap(), middle);
    assert_eq!(
        remote_requests(&m.dir),
        again,
        "a block read before is kept"
    );

    // The whole stream, verified, equals the source file; read in order, it is
    // fetched in a few large ranges, not one request per block.
    let before = remote_requests(&m.dir);
    let out = ok(Command::new("sha256sum").arg(&stream));
    let sum = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        sum.split_whitespace().next(),
        Some(sha256_hex(&mp4).as_str())
    );
    let blocks = std::fs::read_dir(m.path("blocks")).unwrap().count() as u64;
    let sequential = remote_requests(&m.dir) - before;
    assert!(
        sequential * 20 < blocks,
        "{sequential} requests for {blocks} blocks"
    );

    // ffprobe and ffmpeg -ss at several times read it as the MP4 it is.
    let probe = ok(Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(m.path("stream.mp4")));
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "h264");
    for t in ["1", "9.5", "17", "28"] {
        let png = dir.path().join(format!("frame-{t}.png"));
        let out = run_bounded(
            Command::new("ffmpeg")
                .args(["-v", "error", "-nostdin", "-y", "-ss", t, "-i"])
                .arg(m.path("stream.mp4"))
                .args(["-frames:v", "1"])
                .arg(&png),
            HANG_LIMIT,
        )
        .unwrap_or_else(|| panic!("ffmpeg -ss {t} hangs"));
        assert!(out.status.success(), "ffmpeg -ss {t}: {out:?}");
        assert!(std::fs::metadata(&png).unwrap().len() > 0);
    }

    // 8 concurrent random readers: no mismatch.
    assert_eq!(random_readers(&stream, &mp4, 8, 40), 0);

    // rsync -a of the whole mount: the stream comes out whole.
    let copy = dir.path().join("copy");
    let out = run_bounded(
        Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", m.dir.display()))
            .arg(&copy),
        HANG_LIMIT * 3,
    )
    .expect("rsync -a of the mount hangs");
    assert!(out.status.success(), "rsync: {out:?}");
    assert_eq!(std::fs::read(copy.join("stream")).unwrap(), mp4);

    // Live counters per source; no secret in the stats, the log or the command line.
    let stats = mount_stats(&m.dir);
    let per = &stats["per_container"][0]["remote"];
    assert_eq!(per["source"], src.to_str().unwrap());
    assert!(per["requests"].as_u64().unwrap() >= 3, "{stats}");
    assert!(per["bytes_fetched"].as_u64().unwrap() >= container.len() as u64 / 2);
    assert_eq!(per["retries"], 0);
    assert_eq!(stats["remote"]["requests"], per["requests"]);
    let stats_text = stats.to_string();
    let log_text = std::fs::read_to_string(&log).unwrap();
    let pid = daemon_pid(&m.dir).expect("the daemon runs");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    for (what, text) in [
        ("stats", stats_text),
        ("log", log_text),
        (
            "command line",
            String::from_utf8_lossy(&cmdline).into_owned(),
        ),
    ] {
        assert!(
            !text.contains(SECRET_KEY),
            "the secret is in the {what}: {text}"
        );
    }
    assert!(String::from_utf8_lossy(&cmdline).contains("--endpoint"));
}

#[test]
fn http_mount_from_nginx_with_faults() {
    let dir = tempfile::tempdir().unwrap();
    let (input, container) = noise_container(dir.path(), 12_000_000, 3);
    let mut web = Nginx::start();
    std::fs::write(web.root.join("c.h4mk"), &container).unwrap();
    let log = dir.path().join("daemon.log");
    let src = PathBuf::from(web.url("c.h4mk"));
    let m = TestMount::new(&src, &["--log-file", log.to_str().unwrap()]);
    let stream = m.path("stream");

    // The server stopped mid-read: EIO within the bound, the mount stays; the server
    // back: the same read works.
    let first = m.read("blocks/000010").unwrap();
    web.stop();
    let block = m.path("blocks/000150");
    let gone = run_bounded(
        Command::new("dd")
            .arg(format!("if={}", block.display()))
            .args(["of=/dev/null", "bs=64K"]),
        Duration::from_secs(120),
    )
    .expect("a read from a stopped server hangs");
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("Input/output error"),
        "{gone:?}"
    );
    assert!(mountinfo_has(&m.dir));
    assert_eq!(
        m.read("blocks/000010").unwrap(),
        first,
        "blocks read before stay"
    );
    web.start_again();
    assert!(
        wait_for(HANG_LIMIT, || m.read("blocks/000150").is_ok()),
        "reads work again once the server is back"
    );
    assert_eq!(
        m.read("blocks/000150").unwrap(),
        input[150 * 65536..151 * 65536]
    );
    let stats = mount_stats(&m.dir);
    assert!(stats["remote"]["retries"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["verification_failures"], 0, "no answer is no verdict");

    // Whole and random reads are the source's bytes.
    assert_eq!(m.read("stream").unwrap(), input);
    assert_eq!(random_readers(&stream, &input, 8, 30), 0);

    // Replaced on the server while mounted: detected, never mixed.
    std::fs::write(web.root.join("r.h4mk"), &container).unwrap();
    let rlog = dir.path().join("replaced.log");
    let r = TestMount::new(
        &PathBuf::from(web.url("r.h4mk")),
        &["--log-file", rlog.to_str().unwrap()],
    );
    assert_eq!(r.read("blocks/000001").unwrap(), input[65536..2 * 65536]);
    let (_, other) = noise_container(dir.path(), 11_000_000, 4);
    std::fs::write(web.root.join("r.h4mk.tmp"), &other).unwrap();
    std::fs::rename(web.root.join("r.h4mk.tmp"), web.root.join("r.h4mk")).unwrap();
    let e = pread(&r.path("blocks/000100"), 0, 65536).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(
        std::fs::read_to_string(&rlog)
            .unwrap()
            .contains("changed on the store")
    );
    assert!(mountinfo_has(&r.dir));
}

/// A mount of an https:// container behind a private CA: `-o ca_file=` given relative
/// to the directory `h4fs mount` ran in (the daemon reads it after leaving it), every
/// byte of `stream` served and verified; without it the mount fails, saying why.
#[test]
fn https_mount_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (input, container) = noise_container(dir.path(), 3_000_000, 9);
    let (_, cert, key) = test_ca(dir.path());
    let web = Nginx::start_tls(&cert, &key);
    std::fs::write(web.root.join("c.h4mk"), &container).unwrap();
    let src = PathBuf::from(web.url("c.h4mk"));
    let m = TestMount::new_with(&src, &["-o", "ca_file=ca.pem"], |c| {
        aws_env(c, dir.path(), None).current_dir(dir.path());
    });
    assert_eq!(sha256_hex(&m.read("stream").unwrap()), sha256_hex(&input));
    drop(m);

    let mp = dir.path().join("mp");
    std::fs::create_dir(&mp).unwrap();
    let mut cmd = h4fs();
    aws_env(&mut cmd, dir.path(), None);
    let out = run_bounded(
        cmd.arg("mount").arg(&src).arg(&mp),
        Duration::from_secs(120),
    )
    .expect("h4fs mount of an untrusted server hangs");
    assert!(!out.status.success());
    assert!(!mountinfo_has(&mp));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS certificate is not trusted"), "{err}");
}

#[test]
fn http_corrupted_and_truncated_objects() {
    let dir = tempfile::tempdir().unwrap();
    let (input, container) = noise_container(dir.path(), 3_000_000, 5);
    let web = Nginx::start();

    // A corrupted block: EIO for it, logged and listed; the others are served.
    let mut bad = container.clone();
    let at = bad
        .windows(4096)
        .position(|w| w == &input[20 * 65536..20 * 65536 + 4096])
        .expect("block 20 stored as is");
    bad[at + 100] ^= 0x40;
    std::fs::write(web.root.join("bad.h4mk"), &bad).unwrap();
    let log = dir.path().join("bad.log");
    let m = TestMount::new(
        &PathBuf::from(web.url("bad.h4mk")),
        &["--log-file", log.to_str().unwrap()],
    );
    let e = m.read("blocks/000020").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert_eq!(
        m.read("blocks/000021").unwrap(),
        input[21 * 65536..22 * 65536]
    );
    assert_eq!(
        m.read("blocks/000019").unwrap(),
        input[19 * 65536..20 * 65536]
    );
    let veri = m.json("veri.json");
    assert!(veri.to_string().contains("\"block\":20"), "{veri}");
    assert!(std::fs::read_to_string(&log).unwrap().contains("block 20"));
    drop(m);

    // A truncated object does not mount: the error names it, nothing stays mounted.
    std::fs::write(
        web.root.join("cut.h4mk"),
        &container[..container.len() - 1000],
    )
    .unwrap();
    let mp = dir.path().join("cut");
    std::fs::create_dir(&mp).unwrap();
    let out = run(h4fs().arg("mount").arg(web.url("cut.h4mk")).arg(&mp));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cut.h4mk"), "{err}");
    assert!(!mountinfo_has(&mp));

    // Truncated while mounted: the blocks past the cut give EIO, never other bytes.
    std::fs::write(web.root.join("later.h4mk"), &container).unwrap();
    let m = TestMount::new(&PathBuf::from(web.url("later.h4mk")), &[]);
    assert_eq!(m.read("blocks/000001").unwrap(), input[65536..2 * 65536]);
    std::fs::write(web.root.join("later.h4mk"), &container[..1_000_000]).unwrap();
    let e = m.read("blocks/000040").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert_eq!(m.read("blocks/000001").unwrap(), input[65536..2 * 65536]);
}

#[test]
fn s3_prefix_mount_opens_containers_lazily() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = Seaweed::start();
    let endpoint = s3.endpoint();
    let (input, container) = noise_container(dir.path(), 300_000, 7);
    for i in 0..200 {
        s3.put(BUCKET, &format!("lib/c{i:03}.h4mk"), &container);
    }
    // Not containers: left out (another name) or failing on lookup (junk named .h4mk).
    s3.put(BUCKET, "lib/notes.txt", b"not a container");
    s3.put(BUCKET, "lib/junk.h4mk", &noise(5000, 9));
    s3.put(BUCKET, "lib/deeper/d.h4mk", &container);
    let log = dir.path().join("prefix.log");
    let src = PathBuf::from(format!("s3://{BUCKET}/lib/"));
    let m = TestMount::new_with(
        &src,
        &["--endpoint", &endpoint, "--log-file", log.to_str().unwrap()],
        |cmd: &mut Command| aws(cmd, dir.path(), SECRET_KEY),
    );

    // `ls` of the root lists every container and opens none: the listing is all.
    let out = ok(Command::new("ls").arg(&m.dir));
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), 201, "{names:?}");
    assert!(names.contains(&"c000".to_string()) && names.contains(&"junk".to_string()));
    assert!(!names.iter().any(|n| n.contains("notes") || n == "deeper"));
    let stats = mount_stats(&m.dir);
    assert_eq!(stats["containers"], 201);
    assert_eq!(stats["containers_opened"], 0, "{stats}");
    assert_eq!(
        stats["remote"]["requests"],
        stats["remote"]["listing"]["requests"]
    );

    // The first lookup opens one container, and only that one.
    assert_eq!(m.read("c123/stream").unwrap(), input);
    let stats = mount_stats(&m.dir);
    assert_eq!(stats["containers_opened"], 1, "{stats}");
    assert_eq!(stats["per_container"][0]["name"], "c123");

    // The junk object fails on lookup, logged; the mount and the others go on.
    let e = std::fs::metadata(m.path("junk")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(std::fs::read_to_string(&log).unwrap().contains("junk.h4mk"));
    assert_eq!(m.read("c007/stream").unwrap(), input);
    let stats = mount_stats(&m.dir);
    assert_eq!(stats["containers_opened"], 2);
    assert_eq!(stats["failed_to_open"][0]["name"], "junk");
    let text = ok(h4fs().arg("stats").arg(&m.dir));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("2 of 201 containers opened"), "{text}");
    assert!(text.contains("not opened   junk: "), "{text}");
}
