//! v2 containers through a real FUSE mount: reads verify only the hash groups they
//! touch (the `groups_verified` counter of `user.h4fs.stats`), a damaged group fails
//! exactly the reads that touch it, and `stream` carries the tree root as
//! `user.h4mk.blake3`, equal to `b3sum` of the source.

mod common;

use common::{BIN, TestMount, arg, mount_stats, noise, ok};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;
const GROUP: u64 = 16 << 10;

/// `data` packed as v2 (the default) in 1 MiB blocks: (temp dir, source, container).
fn pack_groups(data: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("source.bin");
    std::fs::write(&src, data).unwrap();
    let out = d.path().join("demo.h4mk");
    ok(Command::new(BIN).args([
        "pack",
        arg(&src),
        "--block-size",
        "1048576",
        "-o",
        arg(&out),
    ]));
    (d, src, out)
}

/// `stream` of a mount, opened with readahead off (POSIX_FADV_RANDOM), so each read
/// reaches the daemon as the pages it covers and nothing more.
fn open_random(m: &TestMount) -> std::fs::File {
    let f = std::fs::File::open(m.path("stream")).unwrap();
    // SAFETY: a valid open descriptor.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    assert_eq!(r, 0);
    f
}

fn stats(m: &TestMount) -> (u64, u64) {
    let s = mount_stats(&m.path(""));
    (
        s["groups_verified"].as_u64().unwrap(),
        s["blocks_verified"].as_u64().unwrap(),
    )
}

fn b3sum(file: &Path) -> String {
    let o = ok(Command::new("b3sum").arg(file));
    String::from_utf8(o.stdout).unwrap()[..64].to_string()
}

#[test]
fn a_small_read_verifies_only_its_group_and_stream_carries_the_root() {
    let data = noise(8 << 20, 13);
    let (_d, src, container) = pack_groups(&data);
    let m = TestMount::new(&container, &[]);
    let root = ok(Command::new("getfattr")
        .args(["--only-values", "-n", "user.h4mk.blake3"])
        .arg(m.path("stream")));
    assert_eq!(String::from_utf8(root.stdout).unwrap(), b3sum(&src));
    let f = open_random(&m);
    // 4 KiB at an arbitrary page inside block 5: one group, no block.
    let at = 5 * MIB + 37 * GROUP + 3 * 4096;
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, at).unwrap();
    assert_eq!(buf, &data[at as usize..at as usize + 4096]);
    assert_eq!(stats(&m), (1, 0));
    // Across a block boundary: the two groups either side of it.
    let at = 3 * MIB - 4096;
    let mut buf = vec![0u8; 8192];
    f.read_exact_at(&mut buf, at).unwrap();
    assert_eq!(buf, &data[at as usize..at as usize + 8192]);
    assert_eq!(stats(&m), (3, 0));
}

#[test]
fn a_damaged_group_fails_exactly_the_reads_that_touch_it() {
    let data = noise(4 << 20, 14);
    let (_d, _src, container) = pack_groups(&data);
    // Flip a byte of group 6 of block 2 (stream offset 2 MiB + 6 groups + 100), found
    // by its unique neighbourhood in the container.
    let bad = 2 * MIB + 6 * GROUP + 100;
    let mut bytes = std::fs::read(&container).unwrap();
    let probe = &data[bad as usize..bad as usize + 64];
    let pos = bytes.windows(64).position(|w| w == probe).unwrap();
    bytes[pos] ^= 0x40;
    std::fs::write(&container, &bytes).unwrap();
    let m = TestMount::new(&container, &[]);
    let f = open_random(&m);
    let group = bad & !(GROUP - 1);
    let mut buf = vec![0u8; 4096];
    for page in (2 * MIB..3 * MIB).step_by(4096) {
        let r = f.read_exact_at(&mut buf, page);
        if (group..group + GROUP).contains(&page) {
            let e = r.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "page {page}: {e}");
        } else {
            r.unwrap_or_else(|e| panic!("page {page}: {e}"));
            assert_eq!(
                buf,
                &data[page as usize..page as usize + 4096],
                "page {page}"
            );
        }
    }
    let s = mount_stats(&m.path(""));
    assert_eq!(s["verification_failures"], 1, "{s}");
    // The 252 pages outside the group were served; every other request (the 4 pages
    // of the group, and whatever retries the kernel made of them) failed.
    assert_eq!(s["bytes_served"], 252 * 4096, "{s}");
    let failed = s["failed_reads"].as_u64().unwrap();
    assert!(failed >= 4, "{s}");
    assert_eq!(s["read_requests"].as_u64().unwrap(), 252 + failed, "{s}");
    // Every other group of the block was verified (runs ahead may have been too).
    assert!(s["groups_verified"].as_u64().unwrap() >= 63, "{s}");
}

#[test]
fn a_sequential_read_verifies_every_group_once_in_runs() {
    let data = noise(6 << 20, 15);
    let (_d, _src, container) = pack_groups(&data);
    let m = TestMount::new(&container, &[]);
    assert!(std::fs::read(m.path("stream")).unwrap() == data);
    let s = mount_stats(&m.path(""));
    assert_eq!(s["groups_verified"], (6 * MIB / GROUP), "{s}");
    assert_eq!(s["blocks_verified"], 0, "{s}");
    assert!(s["cache"]["prefetches"].as_u64().unwrap() > 0, "{s}");
}
