//! Tests that really mount: `h4fs mount` on containers built here, read through the
//! kernel with the ordinary tools (ls, cat, cp, find, stat, getfattr, sha256sum, rsync,
//! Python mmap, ffprobe, ffmpeg), concurrently, and under faults.
//!
//! Every mount is held by a [`TestMount`] guard that unmounts on drop, also when the test
//! fails. When FUSE is not usable these tests fail with a message saying so: they never
//! skip silently. Needs fuse3, attr, rsync, python3 and ffmpeg (`.ci/run` installs them).

mod common;

use common::{
    Guard, HANG_LIMIT, Packed, TestMount, alive, daemon_pid, h4fs, mount_flags, mount_stats,
    mountinfo_has, noise, ok, packed, require_fuse, run, run_bounded, sha256_hex, wait_for,
};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(ok(cmd).stdout).expect("UTF-8 output")
}

/// 3 MB in 64 KiB blocks, fps 25, gop 5.
fn standard() -> Packed {
    packed(
        noise(3_000_000, 1),
        &["--block-size", "65536", "--fps", "25", "--gop", "5"],
    )
}

#[test]
fn ls_cat_find_stat_getfattr() {
    let p = standard();
    let m = TestMount::new(&p.container, &[]);
    let ls = stdout(Command::new("ls").arg("-lR").arg(&m.dir));
    for want in [
        "meta.json",
        "index.csv",
        "seek.csv",
        "veri.json",
        "manifest.json",
        "by-pts:",
        "blocks:",
        "000045",
    ] {
        assert!(ls.contains(want), "ls -lR lacks {want}:\n{ls}");
    }
    assert!(ls.contains(" 3000000 "), "stream size not in ls -l:\n{ls}");
    // cat
    let out = ok(Command::new("cat").arg(m.path("stream")));
    assert!(out.stdout == p.data, "cat stream differs from the source");
    let b7 = ok(Command::new("cat").arg(m.path("blocks/000007"))).stdout;
    assert_eq!(b7, p.data[7 * 65536..8 * 65536]);
    // find
    let files = stdout(Command::new("find").arg(&m.dir).args(["-type", "f"]));
    assert_eq!(files.lines().count(), 46 + 7, "{files}");
    let links = stdout(
        Command::new("find")
            .arg(m.path("by-pts"))
            .args(["-type", "l"]),
    );
    assert_eq!(links.lines().count(), 10);
    // stat: exact size, st_blocks from the size, large st_blksize, read-only modes.
    let st = stdout(
        Command::new("stat")
            .args(["-c", "%s %b %B %o %A %h"])
            .arg(m.path("stream")),
    );
    assert_eq!(
        st.trim(),
        format!(
            "3000000 {} 512 1048576 -r--r--r-- 1",
            3_000_000u64.div_ceil(512)
        )
    );
    let st = stdout(
        Command::new("stat")
            .args(["-c", "%s %F"])
            .arg(m.path("blocks/000045")),
    );
    assert_eq!(
        st.trim(),
        format!("{} regular file", 3_000_000 - 45 * 65536)
    );
    let target = std::fs::read_link(m.path("by-pts/999999")).unwrap();
    // 999999 us at 25 fps is frame 24; the keyframe at or before it is block 20.
    assert_eq!(target, Path::new("../blocks/000020"));
    assert_eq!(
        std::fs::read(m.path("by-pts/999999")).unwrap(),
        p.data[20 * 65536..21 * 65536]
    );
    assert_eq!(std::fs::read_dir(m.path("by-pts")).unwrap().count(), 10);
    let fsinfo = stdout(Command::new("stat").args(["-f", "-c", "%S %b"]).arg(&m.dir));
    let df_blocks: u64 = fsinfo.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(df_blocks >= 3_000_000 / 4096, "statfs blocks {df_blocks}");
    // getfattr
    let x = stdout(
        Command::new("getfattr")
            .args(["-d", "-m", "user.h4mk"])
            .arg(m.path("blocks/000005")),
    );
    assert!(x.contains("user.h4mk.pts_us=\"200000\""), "{x}");
    assert!(x.contains("user.h4mk.keyframe=\"1\""), "{x}");
    assert!(
        x.contains(&format!("user.h4mk.offset=\"{}\"", 5 * 65536)),
        "{x}"
    );
    assert!(
        x.contains(&format!(
            "user.h4mk.sha256=\"{}\"",
            sha256_hex(&p.data[5 * 65536..6 * 65536])
        )),
        "{x}"
    );
    let v = stdout(
        Command::new("getfattr")
            .args(["--only-values", "-n", "user.h4mk.veri"])
            .arg(&m.dir),
    );
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["structure"], "ok");
    // Writes of every kind fail with EROFS.
    for (cmd, args) in [
        ("touch", vec![m.path("new").display().to_string()]),
        (
            "chmod",
            vec!["644".into(), m.path("stream").display().to_string()],
        ),
        ("mkdir", vec![m.path("d").display().to_string()]),
        (
            "mv",
            vec![
                m.path("meta.json").display().to_string(),
                m.path("m2").display().to_string(),
            ],
        ),
        (
            "setfattr",
            vec![
                "-n".into(),
                "user.x".into(),
                "-v".into(),
                "1".into(),
                m.path("stream").display().to_string(),
            ],
        ),
    ] {
        let out = run(Command::new(cmd).args(&args));
        assert!(
            !out.status.success(),
            "{cmd} succeeded on a read-only mount"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("stream"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    // JSON files parse and say what they should.
    assert_eq!(m.json("manifest.json")["blocks"], 46);
    assert_eq!(
        m.json("meta.json")["source"]["blake3"],
        blake3::hash(&p.data).to_hex().as_str()
    );
    let index = String::from_utf8(m.read("index.csv").unwrap()).unwrap();
    assert_eq!(index.lines().count(), 47);
    assert!(index.starts_with("block,pts_us,keyframe,track,offset,stored_size,size,sha256,name\n"));
}

#[test]
fn sha256sum_cp_and_rsync_twice() {
    let p = standard();
    let m = TestMount::new(&p.container, &[]);
    let sum = stdout(Command::new("sha256sum").arg(m.path("stream")));
    let src = stdout(Command::new("sha256sum").arg(&p.source));
    assert_eq!(sum.split_whitespace().next(), src.split_whitespace().next());

    let out = tempfile::tempdir().unwrap();
    let cp = out.path().join("cp");
    ok(Command::new("cp").arg("-a").arg(&m.dir).arg(&cp));
    assert_eq!(std::fs::read(cp.join("stream")).unwrap(), p.data);
    assert_eq!(
        std::fs::read(cp.join("blocks/000045")).unwrap(),
        p.data[45 * 65536..]
    );
    assert!(
        std::fs::symlink_metadata(cp.join("by-pts/0"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let mtime = std::fs::metadata(&p.container).unwrap().mtime();
    assert_eq!(
        std::fs::metadata(cp.join("stream")).unwrap().mtime(),
        mtime,
        "cp -a keeps the container's mtime"
    );

    let dst = out.path().join("rsync");
    let first = stdout(
        Command::new("rsync")
            .args(["-a", "--stats"])
            .arg(format!("{}/", m.dir.display()))
            .arg(&dst),
    );
    assert!(
        first.contains("Number of regular files transferred: 53"),
        "{first}"
    );
    assert_eq!(std::fs::read(dst.join("stream")).unwrap(), p.data);
    let second = stdout(
        Command::new("rsync")
            .args(["-a", "-i", "--stats"])
            .arg(format!("{}/", m.dir.display()))
            .arg(&dst),
    );
    assert!(
        second.contains("Number of regular files transferred: 0"),
        "second rsync transferred something:\n{second}"
    );
    let itemized: Vec<&str> = second
        .lines()
        .filter(|l| l.starts_with('>') || l.starts_with("c"))
        .collect();
    assert!(itemized.is_empty(), "{itemized:?}");
}

#[test]
fn python_mmap_of_a_block_file() {
    let p = standard();
    let m = TestMount::new(&p.container, &[]);
    let script = "import mmap,sys,hashlib\n\
                  f=open(sys.argv[1],'rb')\n\
                  mm=mmap.mmap(f.fileno(),0,access=mmap.ACCESS_READ)\n\
                  print(len(mm), hashlib.sha256(mm[:]).hexdigest(), mm[100], mm[-1])\n";
    let out = stdout(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(m.path("blocks/000009")),
    );
    let block = &p.data[9 * 65536..10 * 65536];
    assert_eq!(
        out.trim(),
        format!(
            "65536 {} {} {}",
            sha256_hex(block),
            block[100],
            block[65535]
        )
    );
}

fn make_clip(dir: &Path) -> PathBuf {
    let clip = dir.join("clip.mp4");
    ok(Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-nostdin",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=10:size=320x240:rate=25",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&clip));
    clip
}

fn probe(path: &Path) -> (String, f64) {
    let out = stdout(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=codec_name:format=duration",
                "-of",
                "json",
            ])
            .arg(path),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let codec = v["streams"][0]["codec_name"].as_str().unwrap().to_string();
    let dur: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    (codec, dur)
}

#[test]
fn ffprobe_and_ffmpeg_seek_on_a_packed_mp4() {
    let dir = tempfile::tempdir().unwrap();
    let clip = make_clip(dir.path());
    let csv = dir.path().join("clip.csv");
    let index = ok(Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ffprobe-index.sh"),
    )
    .arg(&clip));
    std::fs::write(&csv, &index.stdout).unwrap();
    let container = dir.path().join("clip.h4mk");
    ok(h4fs()
        .arg("pack")
        .arg(&clip)
        .arg("--index")
        .arg(&csv)
        .arg("-o")
        .arg(&container));
    let m = TestMount::new(&container, &[]);
    let stream = m.path("stream");
    assert_eq!(
        std::fs::read(&stream).unwrap(),
        std::fs::read(&clip).unwrap()
    );
    let (codec, dur) = probe(&clip);
    let (codec2, dur2) = probe(&stream);
    assert_eq!(codec, "h264");
    assert_eq!((codec2.as_str(), dur2), (codec.as_str(), dur));
    assert!((dur - 10.0).abs() < 0.2, "duration {dur}");
    let frame = dir.path().join("frame.png");
    ok(Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y", "-ss", "5", "-i"])
        .arg(&stream)
        .args(["-frames:v", "1"])
        .arg(&frame));
    let png = std::fs::read(&frame).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 1000,
        "no decoded frame"
    );
    // by-pts/5000000 is the keyframe at or before 5 s (gop 25 at 25 fps: exactly 5 s).
    let target = std::fs::read_link(m.path("by-pts/5000000")).unwrap();
    let n: u64 = target
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let pts = stdout(
        Command::new("getfattr")
            .args(["--only-values", "-n", "user.h4mk.pts_us"])
            .arg(m.path(&format!("blocks/{n:06}"))),
    );
    let key = stdout(
        Command::new("getfattr")
            .args(["--only-values", "-n", "user.h4mk.keyframe"])
            .arg(m.path(&format!("blocks/{n:06}"))),
    );
    assert_eq!(key, "1");
    let pts: u64 = pts.parse().unwrap();
    assert!(pts <= 5_000_000 && pts > 4_000_000, "keyframe pts {pts}");
}

#[test]
fn two_containers_at_once_and_a_directory_of_containers() {
    let a = standard();
    let b = packed(
        noise(100_000, 7),
        &["--block-size", "1000", "--fps", "30", "--gop", "10"],
    );
    let ma = TestMount::new(&a.container, &[]);
    let mb = TestMount::new(&b.container, &[]);
    assert_eq!(ma.read("stream").unwrap(), a.data);
    assert_eq!(mb.read("stream").unwrap(), b.data);
    assert_eq!(mb.read("blocks/000099").unwrap(), b.data[99_000..]);

    let lib = tempfile::tempdir().unwrap();
    std::fs::copy(&a.container, lib.path().join("alpha.h4mk")).unwrap();
    std::fs::copy(&b.container, lib.path().join("beta.h4mk")).unwrap();
    std::fs::write(lib.path().join("notes.txt"), "not a container").unwrap();
    let md = TestMount::new(lib.path(), &[]);
    let mut names: Vec<String> = std::fs::read_dir(&md.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(md.read("alpha/stream").unwrap(), a.data);
    assert_eq!(md.read("beta/blocks/000005").unwrap(), b.data[5000..6000]);
    assert_eq!(mount_stats(&md.dir)["containers"], 2);
}

#[test]
fn eight_concurrent_readers_at_random_offsets() {
    // Odd block size so most reads straddle block boundaries.
    let p = packed(
        noise(2_000_003, 3),
        &["--block-size", "10007", "--fps", "25", "--gop", "4"],
    );
    let m = TestMount::new(&p.container, &["--threads", "4", "--cache-size", "1M"]);
    let data = Arc::new(p.data.clone());
    let stream = m.path("stream");
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let data = data.clone();
            let stream = stream.clone();
            std::thread::spawn(move || {
                let f = std::fs::File::open(&stream).unwrap();
                let mut x = 0x1234_5678_9abc_def0u64 ^ (t + 1).wrapping_mul(0x9E37_79B9);
                for _ in 0..300 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let off = x % (data.len() as u64 + 100);
                    let len = 1 + (x >> 40) as usize % 70_000;
                    let mut buf = vec![0u8; len];
                    let mut got = 0;
                    while got < len {
                        let n = f.read_at(&mut buf[got..], off + got as u64).unwrap();
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                    let lo = (off as usize).min(data.len());
                    let hi = (off as usize + len).min(data.len());
                    assert_eq!(&buf[..got], &data[lo..hi], "reader {t} at {off} len {len}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("reader thread");
    }
    // Reads exactly straddling one boundary, through a fresh descriptor each.
    let f = std::fs::File::open(&stream).unwrap();
    for k in [1u64, 2, 50, 199] {
        let b = k * 10007;
        let mut buf = [0u8; 10];
        f.read_exact_at(&mut buf, b - 5).unwrap();
        assert_eq!(&buf, &data[b as usize - 5..b as usize + 5]);
    }
    let stats = mount_stats(&m.dir);
    assert!(stats["cache"]["evictions"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["bytes_served"].as_u64().unwrap() > 0);
}

#[test]
fn sequential_read_prefetches() {
    // v1: blocks are the unit of verification and prefetch (v2 in tests/groups_mount.rs).
    let p = packed(
        noise(8 << 20, 5),
        &[
            "--block-size",
            "262144",
            "--fps",
            "25",
            "--gop",
            "5",
            "--format",
            "v1",
        ],
    );
    let m = TestMount::new(&p.container, &[]);
    let mut f = std::fs::File::open(m.path("stream")).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 128 << 10];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == p.data);
    let s = mount_stats(&m.dir);
    assert!(s["cache"]["prefetches"].as_u64().unwrap() > 0, "{s}");
    assert!(s["blocks_verified"].as_u64().unwrap() >= 32, "{s}");
    // Kernel readahead is raised to 1 MiB at mount, so sequential reads arrive whole.
    assert_eq!(s["largest_read_request"], 1 << 20, "{s}");
    assert!(s["read_requests"].as_u64().unwrap() <= 32, "{s}");
}

#[test]
fn zero_length_and_one_byte_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("frames");
    std::fs::create_dir(&files).unwrap();
    let sizes = [0usize, 1, 0, 5, 1, 0, 300, 1];
    let mut all = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let d = noise(n, 100 + i as u64);
        all.extend_from_slice(&d);
        std::fs::write(files.join(format!("f{i:02}")), d).unwrap();
    }
    let container = dir.path().join("tiny.h4mk");
    ok(h4fs()
        .arg("pack")
        .arg(&files)
        .args(["--fps", "10", "--gop", "2", "-o"])
        .arg(&container));
    let m = TestMount::new(&container, &[]);
    assert_eq!(m.read("stream").unwrap(), all);
    let mut off = 0;
    for (i, &n) in sizes.iter().enumerate() {
        let b = m.read(&format!("blocks/{i:06}")).unwrap();
        assert_eq!(b.len(), n);
        assert_eq!(b, all[off..off + n]);
        assert_eq!(
            std::fs::metadata(m.path(&format!("blocks/{i:06}")))
                .unwrap()
                .len(),
            n as u64
        );
        off += n;
    }
    // One-byte reads across the whole stream.
    let f = std::fs::File::open(m.path("stream")).unwrap();
    for (i, want) in all.iter().enumerate() {
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, i as u64).unwrap();
        assert_eq!(b[0], *want);
    }
}

#[test]
fn reference_multitrack_and_encrypted_samples() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed");
    let m = TestMount::new(&fx.join("a_small10.h4mk"), &[]);
    assert_eq!(
        m.read("stream").unwrap(),
        std::fs::read(fx.join("a_small10.payload")).unwrap()
    );
    assert_eq!(m.json("veri.json")["veri"]["status"], "ok");

    let mc = TestMount::new(&fx.join("d_mt_build_demo.h4mk"), &[]);
    let mut names: Vec<String> = std::fs::read_dir(&mc.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "main",
            "manifest.json",
            "meta.json",
            "safe.json",
            "safety",
            "tracks.json",
            "veri.json"
        ]
    );
    assert_eq!(
        std::fs::read_dir(mc.path("main/blocks")).unwrap().count(),
        5
    );
    assert_eq!(mc.json("main/track.json")["name"], "main");

    let me = TestMount::new(&fx.join("e_encrypted5.h4mk"), &[]);
    let err = me.read("stream").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    assert!(me.json("meta.json")["encryption"].is_object());
}

#[test]
fn inodes_are_stable_across_remounts() {
    let p = standard();
    let paths = [
        "stream",
        "blocks/000017",
        "by-pts/400000",
        "index.csv",
        "veri.json",
    ];
    let inos = |m: &TestMount| -> Vec<u64> {
        paths
            .iter()
            .map(|r| std::fs::symlink_metadata(m.path(r)).unwrap().ino())
            .collect()
    };
    let first = inos(&TestMount::new(&p.container, &[]));
    let second = inos(&TestMount::new(&p.container, &["--threads", "1"]));
    assert_eq!(first, second);
    let mut uniq = first.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), first.len());
}

#[test]
fn mount_options_uid_gid_and_foreground() {
    let p = standard();
    let m = TestMount::new(
        &p.container,
        &[
            "--uid",
            "4321",
            "--gid",
            "765",
            "-o",
            "cache_size=2M,noatime",
        ],
    );
    let md = std::fs::metadata(m.path("stream")).unwrap();
    assert_eq!((md.uid(), md.gid()), (4321, 765));
    assert_eq!(mount_stats(&m.dir)["cache"]["capacity"], 2 << 20);
    drop(m);

    // -f stays in the foreground until unmounted.
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let mp = tmp.path().join("fg");
    let _guard = Guard(mp.clone());
    std::fs::create_dir(&mp).unwrap();
    let log = tmp.path().join("fg.log");
    let mut child = h4fs()
        .arg("mount")
        .arg("-f")
        .arg("--log-file")
        .arg(&log)
        .arg(&p.container)
        .arg(&mp)
        .spawn()
        .unwrap();
    let mut exited = None;
    let up = wait_for(HANG_LIMIT, || {
        exited = child.try_wait().unwrap();
        exited.is_some() || mountinfo_has(&mp)
    });
    assert!(
        exited.is_none(),
        "foreground mount exited early: {exited:?}"
    );
    assert!(up, "foreground mount never appeared");
    assert_eq!(std::fs::read(mp.join("stream")).unwrap(), p.data);
    assert!(child.try_wait().unwrap().is_none());
    ok(h4fs().arg("umount").arg(&mp));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("mounted") && log.contains("unmounted"),
        "{log}"
    );
}

#[test]
fn mounts_are_read_only_nosuid_and_nodev_unless_asked() {
    let p = standard();
    let m = TestMount::new(&p.container, &[]);
    let flags = mount_flags(&m.dir);
    for want in ["ro", "nosuid", "nodev"] {
        assert!(flags.iter().any(|f| f == want), "{want} missing: {flags:?}");
    }
    drop(m);
    // -o suid,dev take the defaults away; the mount stays read-only.
    let m = TestMount::new(&p.container, &["-o", "suid,dev"]);
    let flags = mount_flags(&m.dir);
    assert!(flags.iter().any(|f| f == "ro"), "{flags:?}");
    for unwanted in ["nosuid", "nodev"] {
        assert!(
            !flags.iter().any(|f| f == unwanted),
            "{unwanted}: {flags:?}"
        );
    }
    drop(m);
    // Other flags add to them.
    let m = TestMount::new(&p.container, &["-o", "noexec"]);
    let flags = mount_flags(&m.dir);
    for want in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(flags.iter().any(|f| f == want), "{want} missing: {flags:?}");
    }
}

#[test]
fn sigterm_and_sigint_unmount_cleanly() {
    let p = standard();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let m = TestMount::new(&p.container, &[]);
        let pid = daemon_pid(&m.dir).expect("a daemon serves the mount");
        // SAFETY: signalling a process this test started.
        assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
        assert!(
            wait_for(HANG_LIMIT, || !mountinfo_has(&m.dir) && !alive(pid)),
            "signal {sig} did not unmount"
        );
        assert!(
            std::fs::read_dir(&m.dir).unwrap().next().is_none(),
            "mount point not empty again"
        );
    }
}

#[test]
fn sigkilled_daemon_is_cleared_by_umount() {
    let p = standard();
    let m = TestMount::new(&p.container, &[]);
    let pid = daemon_pid(&m.dir).expect("a daemon serves the mount");
    // SAFETY: killing a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let dead = || {
        matches!(std::fs::metadata(&m.dir),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
    };
    assert!(wait_for(HANG_LIMIT, dead), "mount did not go dead");
    // Mounting over the dead mount is refused (from mountinfo, without touching it)
    // with a hint.
    let out = run(h4fs().arg("mount").arg(&p.container).arg(&m.dir));
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{} is already a mount point (fuse.h4fs from {}); unmount it first with `h4fs umount {}` (which also clears a mount whose daemon died)",
            m.dir.display(),
            p.container.display(),
            m.dir.display()
        )),
        "{err}"
    );
    ok(h4fs().arg("umount").arg(&m.dir));
    assert!(!mountinfo_has(&m.dir));
    assert!(std::fs::metadata(&m.dir).unwrap().is_dir());
    // And the directory can be mounted again.
    let again = run(h4fs().arg("mount").arg(&p.container).arg(&m.dir));
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read(m.path("stream")).unwrap(), p.data);
}

#[test]
fn bad_mount_points_and_sources_fail_clearly() {
    require_fuse();
    let p = standard();
    let tmp = tempfile::tempdir().unwrap();
    // Each refusal comes without waiting on anything: a run that does not finish is
    // stuck (a hang guard, not a measure of speed).
    let check = |mp: &Path, source: &Path, want: &str| {
        let out = run_bounded(h4fs().arg("mount").arg(source).arg(mp), HANG_LIMIT)
            .unwrap_or_else(|| panic!("h4fs mount {} {} hangs", source.display(), mp.display()));
        assert!(!out.status.success(), "mount at {} succeeded", mp.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "expected \"{want}\" in: {err}");
    };
    check(&tmp.path().join("missing"), &p.container, "does not exist");
    assert!(!tmp.path().join("missing").exists());
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    check(&file, &p.container, "is not a directory");
    let m = TestMount::new(&p.container, &[]);
    // Decided from mountinfo (type and source are named), not by looking inside.
    check(
        &m.dir,
        &p.container,
        &format!(
            "{} is already a mount point (fuse.h4fs from {})",
            m.dir.display(),
            p.container.display()
        ),
    );
    // The existing mount is untouched and still serves.
    assert_eq!(m.read("stream").unwrap(), p.data);
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    // Arguments swapped: the hint gives the right order.
    check(
        &p.container,
        &empty,
        &format!(
            "is not a directory; the container comes first: `h4fs mount {} {}`",
            p.container.display(),
            empty.display()
        ),
    );
    check(&empty, &tmp.path().join("nope.h4mk"), "does not exist");
    check(&empty, &p.source, "not an H4MK container");
    assert!(!mountinfo_has(&empty));
    // A damaged structure is not mounted (exit 1), unless --verify=none.
    let bad = tmp.path().join("bad.h4mk");
    let mut bytes = std::fs::read(&p.container).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x40; // inside the footer, covered by its CRC
    std::fs::write(&bad, &bytes).unwrap();
    let out = run(h4fs().arg("mount").arg(&bad).arg(&empty));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!mountinfo_has(&empty));
    // In a directory of containers, a damaged one is left out with a warning naming it
    // (listed by `h4fs stats`); --strict refuses the whole mount instead.
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    std::fs::copy(&p.container, lib.join("good.h4mk")).unwrap();
    std::fs::copy(&bad, lib.join("bad.h4mk")).unwrap();
    let names_and_error = |err: &str| err.contains("bad.h4mk") && err.contains("CRC-32 mismatch");
    for strict in [["--strict"].as_slice(), &["-o", "strict"]] {
        let _guard = Guard(empty.clone());
        let out = run(h4fs().arg("mount").arg(&lib).arg(&empty).args(strict));
        assert_eq!(out.status.code(), Some(1), "{strict:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(names_and_error(&err), "{err}");
        assert!(!mountinfo_has(&empty));
    }
    {
        let _guard = Guard(empty.clone());
        let out = run(h4fs().arg("mount").arg(&lib).arg(&empty));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("warning") && names_and_error(&err), "{err}");
        let mut names: Vec<String> = std::fs::read_dir(&empty)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["good"]);
        assert_eq!(std::fs::read(empty.join("good/stream")).unwrap(), p.data);
        let stats = mount_stats(&empty);
        assert_eq!(stats["containers"], 1);
        assert_eq!(stats["skipped"][0]["file"], "bad.h4mk");
        assert!(
            stats["skipped"][0]["error"]
                .as_str()
                .unwrap()
                .contains("CRC-32 mismatch"),
            "{stats}"
        );
    }
    assert!(!mountinfo_has(&empty));
    // When no container of the directory can be mounted, the mount fails.
    std::fs::remove_file(lib.join("good.h4mk")).unwrap();
    let out = run(h4fs().arg("mount").arg(&lib).arg(&empty));
    assert_eq!(out.status.code(), Some(1));
    assert!(names_and_error(&String::from_utf8_lossy(&out.stderr)));
    assert!(!mountinfo_has(&empty));
    let out = run(h4fs().arg("umount").arg(&empty));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("h4fs: error: {} is not a mount point\n", empty.display())
    );
    let missing = tmp.path().join("nodir");
    let out = run(h4fs().arg("umount").arg(&missing));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("h4fs: error: {} does not exist\n", missing.display())
    );
}

/// A mount point that holds files is refused (the mount would hide them) unless
/// `--allow-non-empty` or `-o nonempty` says so; its files are back after unmounting.
#[test]
fn a_non_empty_mount_point_needs_allow_non_empty() {
    require_fuse();
    let p = standard();
    let tmp = tempfile::tempdir().unwrap();
    let mp = tmp.path().join("full");
    std::fs::create_dir(&mp).unwrap();
    std::fs::write(mp.join("mine.txt"), "keep").unwrap();
    let out = run(h4fs().arg("mount").arg(&p.container).arg(&mp));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "h4fs: error: mount point {} is not empty (it holds \"mine.txt\"); the mount would \
             hide its files: use an empty directory, or --allow-non-empty (-o nonempty)\n",
            mp.display()
        )
    );
    assert!(!mountinfo_has(&mp));
    let foreground = run(h4fs().arg("mount").arg("-f").arg(&p.container).arg(&mp));
    assert_eq!(foreground.status.code(), Some(3));
    assert!(!mountinfo_has(&mp));
    for allow in [["--allow-non-empty"].as_slice(), &["-o", "ro,nonempty"]] {
        let _guard = Guard(mp.clone());
        let out = run(h4fs().arg("mount").arg(&p.container).arg(&mp).args(allow));
        assert!(
            out.status.success(),
            "{allow:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(mp.join("stream")).unwrap(), p.data);
        assert!(!mp.join("mine.txt").exists());
        ok(h4fs().arg("umount").arg(&mp));
        assert_eq!(std::fs::read(mp.join("mine.txt")).unwrap(), b"keep");
    }
}

/// Flip one byte of a file in place.
fn flip(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x55;
    f.write_all_at(&b, at).unwrap();
    f.sync_all().unwrap();
}

/// Every read either fails with EIO or returns the source's bytes.
fn eio_or_right(m: &TestMount, rel: &str, want: &[u8]) -> bool {
    match m.read(rel) {
        Ok(got) => {
            assert!(got == want, "{rel}: wrong bytes served");
            true
        }
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "{rel}: {e}");
            false
        }
    }
}

#[test]
fn container_modified_truncated_or_deleted_while_mounted() {
    let block =
        |p: &Packed, n: usize| p.data[n * 65536..((n + 1) * 65536).min(p.data.len())].to_vec();

    // Modified in place: a block never read before fails; blocks read before stay right.
    let p = standard();
    let m = TestMount::new(&p.container, &[]);
    assert!(eio_or_right(&m, "blocks/000000", &block(&p, 0)));
    // Block 10's stored bytes start at 8 + 10 * (12 + 65536) + 12.
    flip(&p.container, 8 + 10 * 65548 + 12 + 1000);
    assert!(
        !eio_or_right(&m, "blocks/000010", &block(&p, 10)),
        "a modified block was served"
    );
    assert!(eio_or_right(&m, "blocks/000000", &block(&p, 0)));
    assert!(!eio_or_right(&m, "stream", &p.data));
    let v = m.json("veri.json");
    assert_eq!(v["blocks"]["failures"][0]["block"], 10, "{v}");
    assert_eq!(
        v["blocks"]["failures"][0]["file_offset"],
        8 + 10 * 65548,
        "{v}"
    );
    assert_eq!(mount_stats(&m.dir)["verification_failures"], 1);
    drop(m);

    // Truncated: blocks past the cut fail with EIO, earlier ones are served right.
    let p = standard();
    let m = TestMount::new(&p.container, &[]);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&p.container)
        .unwrap();
    f.set_len(20 * 65548).unwrap();
    drop(f);
    assert!(eio_or_right(&m, "blocks/000003", &block(&p, 3)));
    assert!(!eio_or_right(&m, "blocks/000040", &block(&p, 40)));
    for n in [5usize, 19, 20, 30] {
        eio_or_right(&m, &format!("blocks/{n:06}"), &block(&p, n));
    }
    drop(m);

    // Deleted: the open container keeps serving its verified bytes.
    let p = standard();
    let m = TestMount::new(&p.container, &[]);
    std::fs::remove_file(&p.container).unwrap();
    assert_eq!(m.read("stream").unwrap(), p.data);
    drop(m);
    drop(p.dir);
}

/// A reference container whose META names an engine h4fs does not know.
fn unknown_engine_container(dir: &Path) -> PathBuf {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed/a_small10.h4mk");
    let mut b = std::fs::read(fx).unwrap();
    let mut pos = 8;
    let mut veri_at = None;
    while pos + 12 <= b.len() {
        let tag = b[pos..pos + 4].to_vec();
        let len = u32::from_be_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let payload = pos + 12..pos + 12 + len;
        if tag == b"META" {
            let s = String::from_utf8(b[payload.clone()].to_vec()).unwrap();
            let t = s.replace("geometric-reference", "quantum-fractal-v9!");
            assert_eq!(t.len(), s.len());
            b[payload.clone()].copy_from_slice(t.as_bytes());
            let crc = crc32fast::hash(&b[payload.clone()]);
            b[pos + 8..pos + 12].copy_from_slice(&crc.to_be_bytes());
        }
        if tag == b"VERI" {
            veri_at = Some(pos);
        }
        pos = payload.end;
    }
    // Recompute VERI so only the engine is unknown.
    let v = veri_at.unwrap();
    use sha2::Digest;
    let h = sha2::Sha256::digest(&b[8..v]);
    b[v + 12..v + 44].copy_from_slice(&h);
    let crc = crc32fast::hash(&b[v + 12..v + 44]);
    b[v + 8..v + 12].copy_from_slice(&crc.to_be_bytes());
    let out = dir.join("unknown.h4mk");
    std::fs::write(&out, b).unwrap();
    out
}

#[test]
fn unknown_engine_mounts_with_data_files_eio() {
    let dir = tempfile::tempdir().unwrap();
    let c = unknown_engine_container(dir.path());
    let m = TestMount::new(&c, &[]);
    assert_eq!(std::fs::read_dir(m.path("blocks")).unwrap().count(), 10);
    for rel in ["stream", "blocks/000000", "by-pts/0"] {
        let e = m.read(rel).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{rel}: {e}");
    }
    let meta = m.json("meta.json");
    assert!(
        meta["h4fs_status"]["reason"]
            .as_str()
            .unwrap()
            .contains("quantum-fractal-v9!"),
        "{meta}"
    );
    let veri = m.json("veri.json");
    assert_eq!(veri["data"]["readable"], false);
    assert!(
        veri["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("quantum-fractal-v9!")
    );
    assert!(m.read("index.csv").is_ok() && m.read("manifest.json").is_ok());
}

#[test]
fn mount_helper_forms() {
    require_fuse();
    let p = standard();
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_h4fs"), bin.join("h4fs")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_h4fs"), bin.join("mount.fuse.h4fs")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // What mount(8) runs for `-t fuse.h4fs` when no mount.fuse.h4fs is installed:
    // mount.fuse3, which runs `h4fs SRC DIR -o OPTS` from PATH.
    let mp1 = tmp.path().join("m1");
    let _g1 = Guard(mp1.clone());
    std::fs::create_dir(&mp1).unwrap();
    ok(Command::new("/sbin/mount.fuse3")
        .env("PATH", &path)
        .arg(&p.container)
        .arg(&mp1)
        .args(["-t", "fuse.h4fs", "-o", "ro,noauto,cache_size=32M"]));
    assert!(mountinfo_has(&mp1));
    assert_eq!(std::fs::read(mp1.join("stream")).unwrap(), p.data);
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        info.lines()
            .any(|l| l.contains(mp1.to_str().unwrap()) && l.contains(" - fuse.h4fs ")),
        "{info}"
    );
    ok(h4fs().arg("umount").arg(&mp1));

    // What mount(8) runs when /sbin/mount.fuse.h4fs is installed: argv[0] is the helper.
    let mp2 = tmp.path().join("m2");
    let _g2 = Guard(mp2.clone());
    std::fs::create_dir(&mp2).unwrap();
    ok(Command::new(bin.join("mount.fuse.h4fs"))
        .arg(&p.container)
        .arg(&mp2)
        .args(["-o", "rw,allow_other,verify=full"]));
    assert!(mountinfo_has(&mp2));
    assert_eq!(
        std::fs::read(mp2.join("blocks/000001")).unwrap(),
        p.data[65536..131072]
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(mp2.join("veri.json")).unwrap())
            .unwrap()["verify"],
        "full"
    );
    ok(h4fs().arg("umount").arg(&mp2));
    // An unknown option is refused before anything is mounted.
    let out = run(Command::new(bin.join("mount.fuse.h4fs"))
        .arg(&p.container)
        .arg(&mp2)
        .args(["-o", "bogus_opt"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus_opt"));
    assert!(!mountinfo_has(&mp2));
}

/// An unprivileged user (nobody) mounts through the setuid `fusermount3` where
/// /dev/fuse is open to all users (its usual mode, 0666), reads and unmounts; where it
/// is closed to them (mode 0600, as on some build machines), `h4fs mount` says so and
/// what to do.
#[test]
fn unprivileged_user_mounts_through_fusermount_or_is_told_why() {
    use std::os::unix::fs::PermissionsExt;
    require_fuse();
    let p = standard();
    let tmp = tempfile::Builder::new()
        .prefix("h4fs-user-")
        .tempdir()
        .unwrap();
    let perm = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    // nobody must reach the binary and the container, and own the mount point.
    perm(tmp.path(), 0o755);
    let bin = tmp.path().join("h4fs");
    std::fs::copy(env!("CARGO_BIN_EXE_h4fs"), &bin).unwrap();
    perm(&bin, 0o755);
    let container = tmp.path().join("c.h4mk");
    std::fs::copy(&p.container, &container).unwrap();
    perm(&container, 0o644);
    let mp = tmp.path().join("m");
    std::fs::create_dir(&mp).unwrap();
    std::os::unix::fs::chown(&mp, Some(65534), Some(65534)).unwrap();
    let as_nobody = |prog: &Path, args: &[&Path]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(prog)
            .args(args);
        run(&mut c)
    };
    let _guard = Guard(mp.clone());
    let open_to_all = std::fs::metadata("/dev/fuse").unwrap().mode() & 0o006 == 0o006;
    let out = as_nobody(&bin, &[Path::new("mount"), &container, &mp]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if open_to_all {
        assert!(out.status.success(), "{err}");
        assert!(mountinfo_has(&mp));
        // Only the user who mounted may read it (no allow_other).
        let cat = as_nobody(Path::new("cat"), &[&mp.join("stream")]);
        assert!(cat.status.success() && cat.stdout == p.data);
        assert!(std::fs::read(mp.join("stream")).is_err());
        let out = as_nobody(&bin, &[Path::new("umount"), &mp]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!mountinfo_has(&mp));
    } else {
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(
            err.contains("/dev/fuse cannot be opened by this user")
                && err.contains("chmod 0666 /dev/fuse"),
            "{err}"
        );
        assert!(!mountinfo_has(&mp));
    }
}

/// Errors met while the daemon starts name the file they concern (here as the user
/// nobody, who may not read what root made private).
#[test]
fn daemon_start_errors_name_their_file() {
    use std::os::unix::fs::PermissionsExt;
    let p = standard();
    let tmp = tempfile::Builder::new()
        .prefix("h4fs-perm-")
        .tempdir()
        .unwrap();
    let perm = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    perm(tmp.path(), 0o755);
    let bin = tmp.path().join("h4fs");
    std::fs::copy(env!("CARGO_BIN_EXE_h4fs"), &bin).unwrap();
    perm(&bin, 0o755);
    let mp = tmp.path().join("m");
    std::fs::create_dir(&mp).unwrap();
    std::os::unix::fs::chown(&mp, Some(65534), Some(65534)).unwrap();
    let private = tmp.path().join("private.h4mk");
    std::fs::copy(&p.container, &private).unwrap();
    perm(&private, 0o600);
    let closed = tmp.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    let inside = closed.join("c.h4mk");
    std::fs::copy(&p.container, &inside).unwrap();
    perm(&closed, 0o700);
    let readable = tmp.path().join("c.h4mk");
    std::fs::copy(&p.container, &readable).unwrap();
    perm(&readable, 0o644);
    let unlistable = tmp.path().join("unlistable");
    std::fs::create_dir(&unlistable).unwrap();
    perm(&unlistable, 0o333);
    let log = closed.join("h4fs.log");
    let denied = "Permission denied (os error 13)";
    let cases: [(Vec<&Path>, String); 5] = [
        (
            vec![&private, &mp],
            format!("cannot mount: cannot open {}: {denied}", private.display()),
        ),
        (
            vec![&private, &mp, Path::new("-f")],
            format!("cannot mount: cannot open {}: {denied}", private.display()),
        ),
        (
            vec![&inside, &mp],
            format!("cannot use source {}: {denied}", inside.display()),
        ),
        (
            vec![&readable, &unlistable],
            format!("cannot list mount point {}: {denied}", unlistable.display()),
        ),
        (
            vec![&readable, &mp, Path::new("--log-file"), &log],
            format!("cannot open log file {}: {denied}", log.display()),
        ),
    ];
    for (args, want) in cases {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .arg("mount")
            .args(&args);
        let out = run(&mut c);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("h4fs: error: {want}\n"),
            "{args:?}"
        );
        assert!(!mountinfo_has(&mp));
    }
}

/// `rsync` of the mount with itemized changes and statistics.
fn rsync(m: &TestMount, dst: &Path, flags: &str) -> String {
    stdout(
        Command::new("rsync")
            .args([flags, "-i", "--stats"])
            .arg(format!("{}/", m.dir.display()))
            .arg(dst),
    )
}

/// Files an itemized rsync run transferred.
fn transferred(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with(">f")).collect()
}

/// Drop a file of the mount from the kernel's page cache, so its next read asks the
/// daemon.
fn drop_page_cache(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: an open descriptor; advice only.
    let r = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(r, 0);
}

/// A mirror of the mount stays in step: after reads, a second `rsync -a` and an
/// `rsync -ac` copy nothing; a block that fails changes veri.json alone (size and a
/// later mtime), which the next `rsync -a` copies, and only it.
#[test]
fn mirrors_of_the_mount_are_stable() {
    let p = standard();
    // A cache of 16 blocks: by the end of the first rsync, block 10 has left it.
    let m = TestMount::new(&p.container, &["--cache-size", "1M"]);
    let out = tempfile::tempdir().unwrap();
    let dst = out.path().join("mirror");
    let first = rsync(&m, &dst, "-a");
    assert!(
        first.contains("Number of regular files transferred: 53"),
        "{first}"
    );
    // Reads of data (whole stream, single blocks, through by-pts) in between.
    assert_eq!(m.read("stream").unwrap(), p.data);
    assert_eq!(
        m.read("blocks/000003").unwrap(),
        p.data[3 * 65536..4 * 65536]
    );
    assert_eq!(
        m.read("by-pts/999999").unwrap(),
        p.data[20 * 65536..21 * 65536]
    );
    let stats = mount_stats(&m.dir);
    assert!(
        stats["bytes_served"].as_u64().unwrap() > 3_000_000,
        "{stats}"
    );
    for flags in ["-a", "-ac"] {
        let again = rsync(&m, &dst, flags);
        assert!(
            again.contains("Number of regular files transferred: 0"),
            "rsync {flags} copied again:\n{again}"
        );
        assert!(transferred(&again).is_empty(), "{again}");
    }
    let mirrored = std::fs::read(dst.join("veri.json")).unwrap();
    assert_eq!(m.read("veri.json").unwrap(), mirrored);

    // Block 10 leaves the daemon's cache for certain: the whole stream is read through
    // the daemon (out of the page cache first, which may have dropped and reloaded
    // block 10 by itself under memory pressure), so the cache ends with the last blocks.
    drop_page_cache(&m.path("stream"));
    assert_eq!(m.read("stream").unwrap(), p.data);

    // A block fails: veri.json changes, with its size and a later mtime.
    let before = std::fs::metadata(m.path("veri.json")).unwrap();
    flip(&p.container, 8 + 10 * 65548 + 12 + 1000);
    // Out of the kernel's page cache too, so the next read asks the daemon.
    drop_page_cache(&m.path("blocks/000010"));
    let err = m.read("blocks/000010").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let after = std::fs::metadata(m.path("veri.json")).unwrap();
    assert_ne!(after.len(), before.len());
    assert!(after.mtime() > before.mtime());
    let veri = m.read("veri.json").unwrap();
    assert_eq!(veri.len() as u64, after.len());
    let v: serde_json::Value = serde_json::from_slice(&veri).unwrap();
    assert_eq!(v["blocks"]["failures"][0]["block"], 10, "{v}");
    // The same failure again, and good reads: no further change.
    assert!(m.read("blocks/000010").is_err());
    assert_eq!(
        m.read("blocks/000003").unwrap(),
        p.data[3 * 65536..4 * 65536]
    );
    let still = std::fs::metadata(m.path("veri.json")).unwrap();
    assert_eq!((still.len(), still.mtime()), (after.len(), after.mtime()));
    assert_eq!(m.read("veri.json").unwrap(), veri);
    // The mirror picks up veri.json, and nothing else.
    let next = rsync(&m, &dst, "-a");
    assert_eq!(
        transferred(&next)
            .iter()
            .map(|l| l.split_whitespace().last().unwrap())
            .collect::<Vec<_>>(),
        ["veri.json"],
        "{next}"
    );
    assert_eq!(std::fs::read(dst.join("veri.json")).unwrap(), veri);
    let last = rsync(&m, &dst, "-a");
    assert!(transferred(&last).is_empty(), "{last}");
}

/// `h4fs stats` reads the counters from the daemon; the tree holds no counter file,
/// and copying extended attributes leaves the counters behind.
#[test]
fn stats_command_reads_the_daemon() {
    let p = standard();
    let m = TestMount::new(&p.container, &[]);
    assert!(!m.path("stats.json").exists());
    let s0 = mount_stats(&m.dir);
    assert_eq!(s0["bytes_served"], 0, "{s0}");
    assert_eq!(m.read("blocks/000001").unwrap(), p.data[65536..2 * 65536]);
    let s1 = mount_stats(&m.dir);
    assert_eq!(s1["bytes_served"], 65536, "{s1}");
    // A v2 container (the default): the block's four 16 KiB hash groups, no block.
    assert_eq!(s1["blocks_verified"], 0, "{s1}");
    assert_eq!(s1["groups_verified"], 4, "{s1}");
    assert_eq!(s1["per_container"][0]["name"], "demo", "{s1}");
    let human = stdout(h4fs().arg("stats").arg(&m.dir));
    assert!(
        human.contains("served       65536 bytes")
            && human.contains("verified     0 blocks, 4 hash groups"),
        "{human}"
    );
    // The same JSON by name with getfattr; not listed, so not copied with xattrs.
    let raw = ok(Command::new("getfattr")
        .args(["-n", "user.h4fs.stats", "--only-values"])
        .arg(&m.dir))
    .stdout;
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["bytes_served"], 65536);
    let listed = stdout(Command::new("getfattr").args(["-d", "-m", "-"]).arg(&m.dir));
    assert!(!listed.contains("h4fs.stats"), "{listed}");
    // Not an h4fs mount, not a mount, not there.
    let tmp = tempfile::tempdir().unwrap();
    for (path, want) in [
        (
            tmp.path().to_path_buf(),
            format!(
                "{} is not a mount point (give the directory an h4fs mount is mounted on)",
                tmp.path().display()
            ),
        ),
        (
            tmp.path().join("nope"),
            format!("{} does not exist", tmp.path().join("nope").display()),
        ),
    ] {
        let out = run(h4fs().arg("stats").arg(&path));
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("h4fs: error: {want}\n")
        );
    }
    let proc_out = run(h4fs().arg("stats").arg("/proc"));
    assert_eq!(proc_out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&proc_out.stderr).contains("is a proc mount, not an h4fs mount")
    );
}

/// A directory pack mounted: `by-name/` links each recorded file name to its block,
/// blocks carry `user.h4mk.name`, and index.csv has a name column.
#[test]
fn directory_pack_names_in_by_name_xattr_and_index_csv() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let files = [("f0001.jpg", 1u64), ("f0002.jpg", 2), ("with space.jpg", 3)];
    for (n, seed) in files {
        std::fs::write(frames.join(n), noise(5000, seed)).unwrap();
    }
    let container = dir.path().join("frames.h4mk");
    ok(h4fs()
        .arg("pack")
        .arg(&frames)
        .arg("-q")
        .arg("-o")
        .arg(&container));
    let m = TestMount::new(&container, &[]);
    let ls = stdout(Command::new("ls").arg(m.path("by-name")));
    assert_eq!(ls, "f0001.jpg\nf0002.jpg\nwith space.jpg\n");
    for (k, (n, seed)) in files.iter().enumerate() {
        let link = m.path(&format!("by-name/{n}"));
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from(format!("../blocks/{k:06}"))
        );
        assert_eq!(std::fs::read(&link).unwrap(), noise(5000, *seed), "{n}");
        let name = stdout(
            Command::new("getfattr")
                .args(["--only-values", "-n", "user.h4mk.name"])
                .arg(m.path(&format!("blocks/{k:06}"))),
        );
        assert_eq!(name, *n);
    }
    let index = String::from_utf8(m.read("index.csv").unwrap()).unwrap();
    let lines: Vec<&str> = index.lines().collect();
    assert!(lines[0].ends_with(",sha256,name"), "{}", lines[0]);
    assert!(lines[3].ends_with(",with space.jpg"), "{}", lines[3]);
    // A name that is not there.
    assert!(!m.path("by-name/f0003.jpg").exists());
}

/// `stream.mp4` (a link to `stream` named with the source's extension) is what tools
/// that go by name need: ffprobe and mediainfo-style detection see an MP4; `stream`
/// carries `user.h4mk.mime`.
#[test]
fn stream_with_the_source_extension_for_ffprobe() {
    let dir = tempfile::tempdir().unwrap();
    let clip = make_clip(dir.path());
    let container = dir.path().join("clip.h4mk");
    ok(h4fs()
        .arg("pack")
        .arg(&clip)
        .args(["--media", "-q", "-o"])
        .arg(&container));
    let m = TestMount::new(&container, &[]);
    let link = m.path("stream.mp4");
    assert_eq!(std::fs::read_link(&link).unwrap(), PathBuf::from("stream"));
    let (codec, dur) = probe(&link);
    assert_eq!(codec, "h264");
    assert!((dur - 10.0).abs() < 0.2, "duration {dur}");
    let fmt = stdout(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "format=format_name"])
            .args(["-of", "default=nw=1:nk=1"])
            .arg(&link),
    );
    assert!(fmt.contains("mp4"), "{fmt}");
    let mime = stdout(
        Command::new("getfattr")
            .args(["--only-values", "-n", "user.h4mk.mime"])
            .arg(m.path("stream")),
    );
    assert_eq!(mime, "video/mp4");
    assert_eq!(std::fs::read(&link).unwrap(), std::fs::read(&clip).unwrap());
}

/// Blocks larger than `--cache-size` are read, checked and decoded once per open file
/// that reads them, not once per FUSE request (issue: a file of 256 MiB blocks read at
/// 5.4 MB/s). Identity blocks of 4 MiB and geometric-reference blocks that decode to
/// 4 MiB from a few KiB each, under a 1 MiB cache.
#[test]
fn blocks_larger_than_the_cache_load_once_per_open_file() {
    // v1: a plain v2 container is read by hash groups, never as whole blocks.
    let p = packed(
        noise(16 << 20, 9),
        &["--block-size", "4194304", "--format", "v1"],
    );
    let m = TestMount::new(&p.container, &["--cache-size", "1M"]);
    assert!(m.read("stream").unwrap() == p.data, "stream differs");
    let s = mount_stats(&m.dir);
    assert_eq!(s["blocks_verified"], 4, "{s}");
    assert_eq!(s["cache"]["blocks"], 0, "{s}");
    assert!(m.read("blocks/000002").unwrap() == p.data[8 << 20..12 << 20]);
    assert_eq!(mount_stats(&m.dir)["blocks_verified"], 5);
    drop(m);

    let zeros = packed(
        vec![0u8; 16 << 20],
        &["--block-size", "4194304", "--engine", "geometric-reference"],
    );
    assert!(std::fs::metadata(&zeros.container).unwrap().len() < 1 << 20);
    let m = TestMount::new(&zeros.container, &["--cache-size", "1M"]);
    let mut f = std::fs::File::open(m.path("stream")).unwrap();
    let mut buf = vec![0u8; 128 << 10];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == 0));
        total += n;
    }
    assert_eq!(total, 16 << 20);
    let s = mount_stats(&m.dir);
    assert_eq!(s["blocks_verified"], 4, "{s}");
}

/// Names that are not UTF-8 name nothing: ENOENT for a file, ENODATA for an attribute
/// (both answered through the errno map).
#[test]
fn names_that_are_not_utf8_are_not_found() {
    use std::os::unix::ffi::OsStrExt;
    let p = standard();
    let m = TestMount::new(&p.container, &[]);
    let bad = std::ffi::OsStr::from_bytes(b"stream\xff");
    let e = std::fs::metadata(m.dir.join(bad)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    let path = std::ffi::CString::new(m.path("stream").as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(&b"user.h4mk.mime\xff"[..]).unwrap();
    let mut v = [0u8; 64];
    // SAFETY: valid C strings and a buffer of the given size.
    let r = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENODATA)
    );
}
