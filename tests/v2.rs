//! The v2 layout through the binary: `pack` (v2 by default), the BLAKE3 root against the
//! real `b3sum`, encrypted containers (the tree covers the stored bytes; rekey), thread
//! counts, and `upgrade` from v1.

mod common;

use common::{BIN, arg, h4fs_ok, noise};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn inspect(file: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["inspect", "--json", arg(file)];
    args.extend_from_slice(extra);
    serde_json::from_slice(&h4fs_ok(&args).stdout).unwrap()
}

fn b3sum(file: &Path) -> String {
    let o = Command::new("b3sum")
        .arg(file)
        .output()
        .expect("b3sum is installed (scripts/setup.sh)");
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap()[..64].to_string()
}

#[test]
fn the_root_of_a_plain_v2_container_is_b3sum_of_the_input() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.bin");
    std::fs::write(&input, noise(300_000, 7)).unwrap();
    let out = d.path().join("v2.h4mk");
    let o = h4fs_ok(&[
        "pack",
        arg(&input),
        "--block-size",
        "70000",
        "--format",
        "v2",
        "--json",
        "-o",
        arg(&out),
    ]);
    let want = b3sum(&input);
    let packed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(packed["blake3"], want.as_str());
    assert_eq!(packed["format"], "v2");
    // META records the source's BLAKE3 (not its SHA-256) in v2.
    let meta = &inspect(&out, &[])["meta"]["source"];
    assert_eq!(meta["blake3"], want.as_str());
    assert!(meta.get("sha256").is_none());
    let j = inspect(&out, &[]);
    let tree = &j["integrity"]["hash_tree"];
    assert_eq!(tree["blake3"], want.as_str());
    assert_eq!(tree["group_size"], 16384);
    assert_eq!(j["integrity"]["format"], 2);
    let text = String::from_utf8(h4fs_ok(&["inspect", arg(&out)]).stdout).unwrap();
    assert!(text.contains(&format!("blake3          {want}")), "{text}");
    // v2 is the default; `--format v1` writes no tree.
    let dflt = d.path().join("default.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&input),
        "--block-size",
        "70000",
        "-q",
        "-o",
        arg(&dflt),
    ]);
    assert!(std::fs::read(&dflt).unwrap() == std::fs::read(&out).unwrap());
    let v1 = d.path().join("v1.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&input),
        "--block-size",
        "70000",
        "--format",
        "v1",
        "-q",
        "-o",
        arg(&v1),
    ]);
    assert!(inspect(&v1, &[])["integrity"]["hash_tree"].is_null());
    // Reads and extract give the input back; verify passes.
    h4fs_ok(&["verify", arg(&out)]);
    h4fs_ok(&["verify", "--full", arg(&out)]);
    let back = d.path().join("back.bin");
    h4fs_ok(&["extract", arg(&out), "-o", arg(&back)]);
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&input).unwrap()
    );
    let r = h4fs_ok(&["cat", arg(&out), "--range", "69990-70010"]).stdout;
    assert_eq!(r, std::fs::read(&input).unwrap()[69990..70011]);
}

#[test]
fn an_encrypted_v2_tree_covers_the_stored_bytes_not_the_plaintext() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.bin");
    std::fs::write(&input, noise(100_000, 3)).unwrap();
    let key = d.path().join("k.key");
    h4fs_ok(&["keygen", "-o", arg(&key)]);
    let out = d.path().join("e.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&input),
        "--block-size",
        "30000",
        "--format",
        "v2",
        "--encrypt",
        "--key-file",
        arg(&key),
        "-q",
        "-o",
        arg(&out),
    ]);
    let j = inspect(&out, &[]);
    let root = j["integrity"]["hash_tree"]["blake3"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(root, b3sum(&input), "the plaintext hash is not recorded");
    // The stored stream: every CORE payload, in order.
    let bytes = std::fs::read(&out).unwrap();
    let mut stored = Vec::new();
    let mut pos = 8;
    while &bytes[pos..pos + 4] == b"CORE" {
        let n = u32::from_be_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        stored.extend_from_slice(&bytes[pos + 12..pos + 12 + n]);
        pos += 12 + n;
    }
    let s = d.path().join("stored.bin");
    std::fs::write(&s, &stored).unwrap();
    assert_eq!(root, b3sum(&s));
    // verify needs no key; extract with it gives the input back.
    h4fs_ok(&["verify", arg(&out)]);
    let back = d.path().join("back.bin");
    h4fs_ok(&[
        "extract",
        arg(&out),
        "--key-file",
        arg(&key),
        "-o",
        arg(&back),
    ]);
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&input).unwrap()
    );
}

#[test]
fn v2_output_does_not_depend_on_the_thread_count_and_group_size_is_checked() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.bin");
    std::fs::write(&input, noise(2_000_000, 11)).unwrap();
    let mut files = Vec::new();
    for t in ["1", "2", "4"] {
        let out = d.path().join(format!("t{t}.h4mk"));
        h4fs_ok(&[
            "pack",
            arg(&input),
            "--block-size",
            "5000",
            "--format",
            "v2",
            "--group-size",
            "4KiB",
            "--threads",
            t,
            "-q",
            "-o",
            arg(&out),
        ]);
        files.push(std::fs::read(&out).unwrap());
    }
    assert!(files.windows(2).all(|w| w[0] == w[1]));
    for bad in ["3000", "512", "32MiB"] {
        let o = Command::new(BIN)
            .args([
                "pack",
                arg(&input),
                "--format",
                "v2",
                "--group-size",
                bad,
                "-o",
            ])
            .arg(d.path().join("x.h4mk"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "--group-size {bad}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("power of two"));
        assert!(!d.path().join("x.h4mk").exists());
    }
}

/// Pack `input` with `args` as v1 and as v2; upgrade the v1 file; the upgrade must be
/// byte-identical to the v2 pack.
fn upgrade_matches_pack(d: &Path, name: &str, input: &Path, args: &[&str]) {
    let v1 = d.join(format!("{name}.v1.h4mk"));
    let v2 = d.join(format!("{name}.v2.h4mk"));
    let up = d.join(format!("{name}.up.h4mk"));
    let pack = |out: &Path, format: &str| {
        let mut a = vec!["pack", arg(input), "-q", "--format", format, "-o", arg(out)];
        a.extend_from_slice(args);
        h4fs_ok(&a);
    };
    pack(&v1, "v1");
    pack(&v2, "v2");
    h4fs_ok(&["upgrade", arg(&v1), "-o", arg(&up), "-q"]);
    let (u, p) = (std::fs::read(&up).unwrap(), std::fs::read(&v2).unwrap());
    assert!(u == p, "{name}: upgrade differs from pack --format v2");
    assert_ne!(u, std::fs::read(&v1).unwrap());
}

#[test]
fn upgrade_gives_the_bytes_of_packing_as_v2() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let input = p.join("in.bin");
    std::fs::write(&input, noise(200_000, 5)).unwrap();
    upgrade_matches_pack(
        p,
        "fixed",
        &input,
        &["--block-size", "33333", "--meta", "x=1.5"],
    );
    upgrade_matches_pack(
        p,
        "georef",
        &input,
        &[
            "--block-size",
            "4096",
            "--engine",
            "geometric-reference",
            "--created",
            "t0",
        ],
    );
    let csv = p.join("in.csv");
    std::fs::write(
        &csv,
        "# start_time_us=1400000\noffset,size,pts_us,keyframe\n0,100000,0,1\n100000,0,40000,0\n\
         100000,100000,40000,0\n",
    )
    .unwrap();
    upgrade_matches_pack(p, "csv", &input, &["--index", arg(&csv)]);
    let dir = p.join("frames");
    std::fs::create_dir(&dir).unwrap();
    for (n, len) in [("a", 10), ("b", 0), ("c é", 70_000)] {
        std::fs::write(dir.join(n), noise(len, len as u64)).unwrap();
    }
    upgrade_matches_pack(p, "dir", &dir, &["--fps", "25"]);
    // With a group size other than the default, too.
    let v1 = p.join("fixed.v1.h4mk");
    let up = p.join("g.h4mk");
    let v2 = p.join("g2.h4mk");
    h4fs_ok(&[
        "upgrade",
        arg(&v1),
        "-o",
        arg(&up),
        "--group-size",
        "1KiB",
        "-q",
    ]);
    h4fs_ok(&[
        "pack",
        arg(&input),
        "-q",
        "--format",
        "v2",
        "--group-size",
        "1KiB",
        "--block-size",
        "33333",
        "--meta",
        "x=1.5",
        "-o",
        arg(&v2),
    ]);
    assert!(std::fs::read(&up).unwrap() == std::fs::read(&v2).unwrap());
}

#[test]
fn upgrade_refuses_damaged_encrypted_and_v2_input_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let input = p.join("in.bin");
    std::fs::write(&input, noise(50_000, 9)).unwrap();
    let v1 = p.join("v1.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&input),
        "--block-size",
        "10000",
        "--format",
        "v1",
        "-q",
        "-o",
        arg(&v1),
    ]);
    let mut bad = std::fs::read(&v1).unwrap();
    bad[8 + 12 + 10_000 + 12 + 500] ^= 1; // block 1
    let badf = p.join("bad.h4mk");
    std::fs::write(&badf, &bad).unwrap();
    let v2 = p.join("v2.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&input),
        "--block-size",
        "10000",
        "--format",
        "v2",
        "-q",
        "-o",
        arg(&v2),
    ]);
    let key = p.join("k.key");
    h4fs_ok(&["keygen", "-o", arg(&key)]);
    let enc = p.join("e.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&input),
        "--block-size",
        "10000",
        "--format",
        "v1",
        "--encrypt",
        "--key-file",
        arg(&key),
        "-q",
        "-o",
        arg(&enc),
    ]);
    for (file, code, needle) in [
        (&badf, 1, "block 1"),
        (&v2, 3, "already an h4fs v2 container"),
        (&enc, 3, "is encrypted"),
    ] {
        let out = p.join("out.h4mk");
        let o = Command::new(BIN)
            .args(["upgrade", arg(file), "-o", arg(&out)])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(!out.exists());
    }
}

#[test]
fn rekey_of_a_v2_container_keeps_its_tree_and_blocks() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let input = p.join("in.bin");
    std::fs::write(&input, noise(60_000, 4)).unwrap();
    let (k1, k2) = (p.join("1.key"), p.join("2.key"));
    h4fs_ok(&["keygen", "-o", arg(&k1)]);
    h4fs_ok(&["keygen", "-o", arg(&k2)]);
    let f = p.join("e.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&input),
        "--block-size",
        "7000",
        "--group-size",
        "1KiB",
        "--encrypt",
        "--key-file",
        arg(&k1),
        "-q",
        "-o",
        arg(&f),
    ]);
    let before = std::fs::read(&f).unwrap();
    let j = inspect(&f, &[]);
    let tree = j["integrity"]["hash_tree"].clone();
    assert!(!tree.is_null());
    h4fs_ok(&[
        "rekey",
        arg(&f),
        "--key-file",
        arg(&k1),
        "--new-key-file",
        arg(&k2),
    ]);
    let after = std::fs::read(&f).unwrap();
    assert_eq!(inspect(&f, &[])["integrity"]["hash_tree"], tree);
    // Blocks and the HB3T chunk unchanged: the first difference is in HENC.
    let chunk = |t: &str| {
        j["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["tag"] == t)
            .unwrap()["offset"]
            .as_u64()
            .unwrap() as usize
    };
    let first_diff = before.iter().zip(&after).position(|(a, b)| a != b).unwrap();
    assert!(first_diff >= chunk("HENC"));
    let (ob, idx) = (chunk("HB3T"), chunk("HIDX"));
    assert_eq!(before[ob..idx], after[ob..idx]);
    h4fs_ok(&["verify", arg(&f)]);
    let back = p.join("back.bin");
    h4fs_ok(&["extract", arg(&f), "--key-file", arg(&k2), "-o", arg(&back)]);
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&input).unwrap()
    );
}
