//! `h4fs mount --cache-dir`: fetched ranges of remote containers kept on local disk,
//! against a real S3 store (SeaweedFS) and real FUSE mounts. Every server is stopped and
//! every mount unmounted in `Drop`, also when a test fails; every wait is bounded.

mod common;

use common::servers::{ACCESS_KEY, SECRET_KEY, Seaweed, aws_env};
use common::{
    HANG_LIMIT, TestMount, alive, daemon_pid, h4fs, mount_stats, noise, noise_container, ok, run,
    wait_for,
};
use std::path::{Path, PathBuf};
use std::process::Command;

const BUCKET: &str = "media";

/// The AWS environment of a remote mount: the test keys, no profile files of the
/// machine.
fn aws(cmd: &mut Command, home: &Path) {
    aws_env(cmd, home, Some((ACCESS_KEY, SECRET_KEY)));
}

/// Mount `src` from `s3` with a cache directory and extra arguments.
fn mount(s3: &Seaweed, home: &Path, src: &Path, cache: &Path, extra: &[&str]) -> TestMount {
    let endpoint = s3.endpoint();
    let mut args = vec![
        "--endpoint",
        &endpoint,
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    TestMount::new_with(src, &args, |cmd| aws(cmd, home))
}

/// Unmount and wait until the daemon is gone (and so has let go of the cache
/// directory's lock).
fn unmount(m: TestMount) {
    let pid = daemon_pid(&m.dir);
    drop(m);
    if let Some(pid) = pid {
        assert!(
            wait_for(HANG_LIMIT, || !alive(pid)),
            "daemon {pid} still runs"
        );
    }
}

/// The `cache_dir` stats of a mount.
fn cache_stats(mp: &Path) -> serde_json::Value {
    let s = mount_stats(mp);
    s["remote"]["cache_dir"].clone()
}

fn requests(mp: &Path) -> u64 {
    mount_stats(mp)["remote"]["requests"].as_u64().unwrap()
}

/// The chunk files in `dir` and their bytes together.
fn chunk_files(dir: &Path) -> (Vec<PathBuf>, u64) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "chunk"))
        .collect();
    files.sort();
    let bytes = files
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    (files, bytes)
}

#[test]
fn a_remount_reads_from_the_cache_dir_and_damaged_files_are_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let (input, container) = noise_container(dir.path(), 6_000_000, 11);
    let s3 = Seaweed::start();
    s3.put(BUCKET, "c.h4mk", &container);
    let src = PathBuf::from(format!("s3://{BUCKET}/c.h4mk"));
    let cache = dir.path().join("cache");

    // First mount: the directory is created (0700) and filled as the stream is read.
    let a = mount(&s3, dir.path(), &src, &cache, &[]);
    assert_eq!(a.read("stream").unwrap(), input);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let st = cache_stats(&a.dir);
    assert!(st["misses"].as_u64().unwrap() > 0, "{st}");
    let (files, bytes) = chunk_files(&cache);
    assert!(!files.is_empty());
    assert_eq!(st["bytes"].as_u64().unwrap(), bytes, "{st}");
    for f in &files {
        let mode = std::fs::metadata(f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", f.display());
    }

    // A second mount on the same directory, while the first runs: refused, clearly.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let mut cmd = h4fs();
    aws(&mut cmd, dir.path());
    let out = run(cmd
        .args(["mount", "--endpoint", &s3.endpoint(), "--cache-dir"])
        .arg(&cache)
        .arg(&src)
        .arg(&other));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("in use by another h4fs mount"), "{err}");
    unmount(a);

    // Remounted: opening costs the one GET that pins the object's ETag, and reading
    // the whole stream again costs no request at all.
    let b = mount(&s3, dir.path(), &src, &cache, &[]);
    let opened = requests(&b.dir);
    assert_eq!(opened, 1, "{}", mount_stats(&b.dir));
    assert_eq!(b.read("stream").unwrap(), input);
    assert_eq!(requests(&b.dir), opened, "{}", mount_stats(&b.dir));
    let st = cache_stats(&b.dir);
    assert!(st["hits"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(st["dropped_corrupt"], 0, "{st}");
    // The text form says it too.
    let text = ok(h4fs().arg("stats").arg(&b.dir)).stdout;
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.lines().any(|l| l.starts_with("cache dir")
            && l.contains(" hits,")
            && l.contains("dropped as damaged")),
        "{text}"
    );
    unmount(b);

    // A byte flipped in a chunk file between mounts: the bytes fail verification, the
    // file is dropped and its range fetched again; the read gives the right bytes.
    let victim = &files[1];
    let orig = std::fs::read(victim).unwrap();
    let mut bytes = orig.clone();
    bytes[4321] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();
    let c = mount(&s3, dir.path(), &src, &cache, &[]);
    assert_eq!(c.read("stream").unwrap(), input);
    let stats = mount_stats(&c.dir);
    let st = &stats["remote"]["cache_dir"];
    assert!(st["dropped_corrupt"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["remote"]["requests"].as_u64().unwrap() > 1, "{stats}");
    assert_eq!(stats["verification_failures"], 0, "{stats}");
    assert_eq!(stats["failed_reads"], 0, "{stats}");
    unmount(c);
    // What was fetched again was written again, whole.
    assert_eq!(std::fs::read(victim).unwrap(), orig);
}

#[test]
fn the_cache_dir_stays_within_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let (input, container) = noise_container(dir.path(), 7_000_000, 12);
    let s3 = Seaweed::start();
    s3.put(BUCKET, "c.h4mk", &container);
    let src = PathBuf::from(format!("s3://{BUCKET}/c.h4mk"));
    let cache = dir.path().join("cache");
    let m = mount(&s3, dir.path(), &src, &cache, &["-o", "cache_dir_size=2M"]);
    assert_eq!(m.read("stream").unwrap(), input);
    let st = cache_stats(&m.dir);
    let (_, bytes) = chunk_files(&cache);
    assert!(
        bytes <= 2 << 20,
        "{bytes} bytes in the cache directory; {st}"
    );
    assert!(bytes > 0, "{st}");
    assert_eq!(st["limit"], 2 << 20, "{st}");
    assert!(st["evictions"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(st["bytes"].as_u64().unwrap(), bytes, "{st}");
    unmount(m);
}

#[test]
fn a_replaced_object_does_not_use_the_old_cache_files() {
    let dir = tempfile::tempdir().unwrap();
    let (first, container) = noise_container(dir.path(), 3_000_000, 13);
    let (second, replaced) = noise_container(dir.path(), 3_000_000, 14);
    let s3 = Seaweed::start();
    s3.put(BUCKET, "c.h4mk", &container);
    let src = PathBuf::from(format!("s3://{BUCKET}/c.h4mk"));
    let cache = dir.path().join("cache");
    let a = mount(&s3, dir.path(), &src, &cache, &[]);
    assert_eq!(a.read("stream").unwrap(), first);
    unmount(a);
    let (old_files, _) = chunk_files(&cache);
    assert!(!old_files.is_empty());
    // A file read from the cache gets a new mtime (its place in the LRU order).
    let mtimes = |files: &[PathBuf]| -> Vec<std::time::SystemTime> {
        files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
            .collect()
    };
    let old_mtimes = mtimes(&old_files);

    s3.put(BUCKET, "c.h4mk", &replaced);
    let b = mount(&s3, dir.path(), &src, &cache, &[]);
    assert_eq!(b.read("stream").unwrap(), second);
    let st = cache_stats(&b.dir);
    assert!(st["misses"].as_u64().unwrap() > 0, "{st}");
    unmount(b);
    assert_eq!(mtimes(&old_files), old_mtimes, "an old file was read");
    // The new version has files of its own, beside the old ones.
    let (files, _) = chunk_files(&cache);
    assert!(files.len() > old_files.len());
}

#[test]
fn bad_cache_directories_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, container) = noise_container(dir.path(), 100_000, 15);
    let s3 = Seaweed::start();
    s3.put(BUCKET, "c.h4mk", &container);
    let src = PathBuf::from(format!("s3://{BUCKET}/c.h4mk"));
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let mp = dir.path().join("mp");
    std::fs::create_dir(&mp).unwrap();
    for (cache, size, want) in [
        (&file, "1G", "is not a directory"),
        (&dir.path().join("c"), "0", "must be more than 0"),
        (&dir.path().join("c"), "lots", "--cache-dir-size"),
    ] {
        let mut cmd = h4fs();
        aws(&mut cmd, dir.path());
        let out = run(cmd
            .args(["mount", "--endpoint", &s3.endpoint(), "--cache-dir"])
            .arg(cache)
            .args(["--cache-dir-size", size])
            .arg(&src)
            .arg(&mp));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        if size != "lots" {
            assert_eq!(out.status.code(), Some(3), "{err}");
        }
        assert!(err.contains(want), "{want}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!common::mountinfo_has(&mp));
    }
}

#[test]
fn a_full_disk_is_logged_once_and_reads_go_on_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (input, container) = noise_container(dir.path(), 6_000_000, 16);
    let s3 = Seaweed::start();
    s3.put(BUCKET, "c.h4mk", &container);
    let src = PathBuf::from(format!("s3://{BUCKET}/c.h4mk"));
    // A 2 MiB file system for the cache directory (bound at 1G): it fills up.
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    ok(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2M,mode=0700", "tmpfs"])
        .arg(&small));
    let _tmpfs = common::Guard(small.clone());
    let log = dir.path().join("daemon.log");
    let m = mount(
        &s3,
        dir.path(),
        &src,
        &small.join("cache"),
        &[
            "--cache-dir-size",
            "1G",
            "--log-file",
            log.to_str().unwrap(),
        ],
    );
    assert_eq!(m.read("stream").unwrap(), input);
    let st = cache_stats(&m.dir);
    assert!(st["write_errors"].as_u64().unwrap() > 0, "{st}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("the disk is full").count(), 1, "{text}");
    // No temp file is left behind.
    let left: Vec<_> = std::fs::read_dir(small.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    unmount(m);
}

#[test]
fn a_damaged_index_in_the_cache_dir_is_fetched_again_at_open() {
    let dir = tempfile::tempdir().unwrap();
    // Small blocks: an index of more than the 256 KiB the opening GET fetches, so part
    // of it is read through the cache directory.
    let input = noise(12_000_000, 17);
    let inp = dir.path().join("in.bin");
    std::fs::write(&inp, &input).unwrap();
    let out = dir.path().join("c.h4mk");
    ok(h4fs()
        .args(["pack", "--block-size", "1K", "-o"])
        .arg(&out)
        .arg(&inp));
    let container = std::fs::read(&out).unwrap();
    let s3 = Seaweed::start();
    s3.put(BUCKET, "c.h4mk", &container);
    let src = PathBuf::from(format!("s3://{BUCKET}/c.h4mk"));
    let cache = dir.path().join("cache");
    let a = mount(&s3, dir.path(), &src, &cache, &[]);
    unmount(a);
    // The chunk 512 KiB before the end: index bytes, not in the opening GET.
    let (files, _) = chunk_files(&cache);
    let index = (container.len() as u64 - (512 << 10)) >> 20;
    let victim = files
        .iter()
        .find(|f| {
            f.to_string_lossy()
                .ends_with(&format!("-{index:010x}.chunk"))
        })
        .unwrap_or_else(|| panic!("no chunk {index} in {files:?}"));
    let mut bytes = std::fs::read(victim).unwrap();
    let at = ((container.len() as u64 - (512 << 10)) & ((1 << 20) - 1)) as usize;
    bytes[at] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();
    let b = mount(&s3, dir.path(), &src, &cache, &[]);
    let stats = mount_stats(&b.dir);
    assert!(
        stats["remote"]["cache_dir"]["dropped_corrupt"]
            .as_u64()
            .unwrap()
            >= 1,
        "{stats}"
    );
    assert_eq!(b.read("stream").unwrap(), input);
    unmount(b);
}
