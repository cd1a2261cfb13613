//! The README's two quick-start commands and what they rely on: `scripts/test.sh` sets
//! the machine up itself (`scripts/setup.sh`, only what is missing), CI runs exactly
//! that command, and the demo packs real media.
//!
//! `scripts/setup.sh` is run here against stub `dpkg`, `apt-get`, `rustup` and
//! `cargo-fuzz` on PATH, so the test checks its decisions without installing anything.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap()
}

/// Lines that run something: not comments, not blank, not `set`/`cd` preambles.
fn commands(script: &str) -> Vec<String> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| !l.starts_with("set ") && !l.starts_with("cd "))
        .map(String::from)
        .collect()
}

fn stub(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Run setup.sh with stubs: `missing` packages are unknown to the stub dpkg; every
/// apt-get call is appended to a log, which is returned.
fn setup_with_stubs(missing: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("apt.log");
    let cases: String = missing.iter().map(|p| format!("{p}) exit 1 ;; ")).collect();
    stub(
        &bin,
        "dpkg",
        &format!("case \"$2\" in {cases}*) exit 0 ;; esac"),
    );
    stub(
        &bin,
        "apt-get",
        &format!("echo \"$*\" >> {}", log.display()),
    );
    stub(
        &bin,
        "rustup",
        "[ \"$1 $2 $3\" = \"component list --installed\" ] && printf 'rustfmt-x\\nclippy-x\\n'",
    );
    stub(&bin, "cargo-fuzz", "exit 0");
    // As root, so no sudo gets between setup.sh and the stub apt-get.
    stub(&bin, "id", "echo 0");
    stub(&bin, "cargo", "echo cargo must not be called >&2; exit 9");
    let path = format!("{}:/usr/bin:/bin", bin.display());
    common::ok(
        Command::new("bash")
            .arg(repo("scripts/setup.sh"))
            .env("PATH", path),
    );
    std::fs::read_to_string(&log).unwrap_or_default()
}

#[test]
fn setup_installs_only_what_is_missing() {
    assert_eq!(
        setup_with_stubs(&[]),
        "",
        "nothing missing: no apt-get at all"
    );
    let log = setup_with_stubs(&["attr", "rsync"]);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].ends_with("update"), "{log}");
    assert!(lines[1].ends_with("install -y attr rsync"), "{log}");
}

#[test]
fn test_command_sets_up_and_ci_runs_only_it() {
    let test = commands(&read("scripts/test.sh"));
    assert_eq!(test[0], "scripts/setup.sh", "setup comes first: {test:?}");
    let setup = read("scripts/setup.sh");
    for need in [
        "fuse3",
        "ffmpeg",
        "attr",
        "rsync",
        "python3",
        "util-linux",
        "cargo-fuzz",
    ] {
        assert!(setup.contains(need), "setup.sh does not install {need}");
    }
    assert_eq!(commands(&read(".ci/run")), ["exec scripts/test.sh"]);
    let readme = read("README.md");
    assert!(readme.contains("\n    scripts/test.sh "));
    assert!(readme.contains("\n    scripts/demo.sh "));
    assert!(readme.contains("cargo install --path ."));
    assert!(readme.contains("\n- **SAFE**: "));
    assert!(readme.contains("\n- **Layout C**: "));
    let demo = read("scripts/demo.sh");
    assert!(demo.contains("lavfi -i testsrc") && demo.contains("--media"));
    for script in [
        "scripts/test.sh",
        "scripts/setup.sh",
        "scripts/demo.sh",
        ".ci/run",
    ] {
        common::ok(Command::new("bash").arg("-n").arg(repo(script)));
    }
}

/// The integration tests share one helper module (`tests/common`): the binary, running
/// it, hashing, CRC repair, packing and mounting are defined there once, not copied
/// into each test file; and no test measures time (a hang guard lives in
/// `tests/common` only), since timing belongs in `scripts/bench-*.sh`.
#[test]
fn test_helpers_are_defined_once_and_no_test_measures_time() {
    let shared = [
        "fn h4fs() ",
        "fn sha256(",
        "fn sha256_hex(",
        "fn fix_crc(",
        "fn pack(",
        "fn require_fuse(",
        "fn mountinfo_has(",
        "fn daemon_pid(",
        "struct TestMount",
    ];
    let common = read("tests/common/mod.rs");
    for def in shared {
        assert_eq!(common.matches(def).count(), 1, "tests/common defines {def}");
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .filter(|p| !p.ends_with("scripts.rs"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.display();
        for def in shared {
            assert!(
                !text.contains(def),
                "{name} defines its own {def}: use tests/common"
            );
        }
        for clock in ["Instant::now", ".elapsed()", "SystemTime::now"] {
            assert!(!text.contains(clock), "{name} reads the clock ({clock})");
        }
    }
}
