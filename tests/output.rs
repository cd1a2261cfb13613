//! What `pack`, `extract`, `rekey` and `keygen` do to their destination (docs/SECURITY.md §6,
//! "Files h4fs writes"), and what `pack` of a directory reads: devices, FIFOs and sockets are
//! streamed and stay what they are; existing files need `--force`; an output is never
//! one of the inputs; an interrupted run leaves nothing; the plaintext of an encrypted
//! container is 0600; a directory pack never follows a link out of the directory.

mod common;

use common::{BIN, arg, h4fs, h4fs_ok, h4fs_run, noise, ok, run};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Exit code 3 with `want` in the message; nothing on stdout.
fn refused(args: &[&str], want: &str) -> String {
    let o = h4fs_run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(3), "{args:?}: {err}");
    assert!(
        err.contains(want),
        "{args:?} should say {want:?}; it said {err}"
    );
    assert!(o.stdout.is_empty(), "{args:?}");
    err
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A temp dir with `in.bin` (`len` bytes) and its container `c.h4mk`.
struct Fixture {
    dir: tempfile::TempDir,
    data: Vec<u8>,
}

impl Fixture {
    fn new(len: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = noise(len, 7);
        std::fs::write(dir.path().join("in.bin"), &data).unwrap();
        let f = Fixture { dir, data };
        h4fs_ok(&[
            "pack",
            arg(&f.p("in.bin")),
            "--block-size",
            "4K",
            "-q",
            "-o",
            arg(&f.p("c.h4mk")),
        ]);
        f
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn mknod_char(path: &Path, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// `extract -o fakenull` (a copy of /dev/null's device node) streams into it; it stays
/// a character device. FIFOs and sockets are written directly too, and `-o -` is stdout.
#[test]
fn devices_fifos_and_sockets_are_streamed_never_replaced() {
    let f = Fixture::new(50_000);
    let c = f.p("c.h4mk");
    let fake = f.p("fakenull");
    mknod_char(&fake, 1, 3);
    h4fs_ok(&["extract", arg(&c), "-o", arg(&fake)]);
    h4fs_ok(&["extract", arg(&c), "-o", arg(&fake), "--force"]);
    h4fs_ok(&[
        "pack",
        arg(&f.p("in.bin")),
        "--block-size",
        "4K",
        "-o",
        arg(&fake),
    ]);
    let md = std::fs::symlink_metadata(&fake).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), libc::makedev(1, 3));

    // A link to a device is followed (the /dev/stdout case).
    let link = f.p("null-link");
    std::os::unix::fs::symlink(&fake, &link).unwrap();
    h4fs_ok(&["extract", arg(&c), "-o", arg(&link)]);
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());

    let fifo = f.p("fifo");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    h4fs_ok(&["extract", arg(&c), "-o", arg(&fifo)]);
    assert_eq!(reader.join().unwrap(), f.data);
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );

    let sock = f.p("sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut v).unwrap();
        v
    });
    h4fs_ok(&["extract", arg(&c), "-o", arg(&sock)]);
    assert_eq!(reader.join().unwrap(), f.data);
    assert!(
        std::fs::symlink_metadata(&sock)
            .unwrap()
            .file_type()
            .is_socket()
    );

    assert_eq!(h4fs_ok(&["extract", arg(&c), "-o", "-"]).stdout, f.data);
    let packed = h4fs_ok(&[
        "pack",
        arg(&f.p("in.bin")),
        "--block-size",
        "4K",
        "-q",
        "-o",
        "-",
    ]);
    assert_eq!(packed.stdout, std::fs::read(&c).unwrap());
}

/// An existing file is refused without --force (with a hint when the arguments look
/// swapped) and replaced with it; a link to a file is never written through.
#[test]
fn existing_files_need_force_and_links_are_refused() {
    let f = Fixture::new(20_000);
    let (c, input) = (f.p("c.h4mk"), f.p("in.bin"));
    let victim = f.p("victim.mkv");
    let mkv = [&[0x1A, 0x45, 0xDF, 0xA3][..], &noise(300, 1)].concat();
    std::fs::write(&victim, &mkv).unwrap();
    let csv = f.p("in.csv");
    std::fs::write(&csv, "offset,size,pts_us,keyframe\n0,20000,0,1\n").unwrap();
    let pack = [
        "pack",
        arg(&input),
        "--index",
        arg(&csv),
        "-q",
        "-o",
        arg(&victim),
    ];
    let err = refused(&pack, "already exists and is a Matroska/WebM media file");
    assert!(err.contains("swap") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), mkv);

    let other = f.p("other.h4mk");
    std::fs::copy(&c, &other).unwrap();
    let err = refused(
        &["extract", arg(&c), "-o", arg(&other)],
        "already exists and is an H4MK container",
    );
    assert!(err.contains("swap"), "{err}");
    let plain = f.p("plain.bin");
    std::fs::write(&plain, b"old").unwrap();
    refused(&["extract", arg(&c), "-o", arg(&plain)], "already exists");
    assert_eq!(std::fs::read(&plain).unwrap(), b"old");

    h4fs_ok(&["extract", arg(&c), "-o", arg(&plain), "--force"]);
    assert_eq!(std::fs::read(&plain).unwrap(), f.data);
    h4fs_ok(&[&pack[..], &["--force"]].concat());
    h4fs_ok(&["verify", arg(&victim)]);

    let target = f.p("target.bin");
    std::fs::write(&target, b"keep").unwrap();
    let link = f.p("link.bin");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for force in [&[][..], &["--force"][..]] {
        refused(
            &[&["extract", arg(&c), "-o", arg(&link)][..], force].concat(),
            "symbolic link",
        );
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    refused(
        &["extract", arg(&c), "-o", arg(f.dir.path())],
        "is a directory",
    );
}

/// No command writes over one of its own inputs, whatever --force says.
#[test]
fn an_output_is_never_one_of_the_inputs() {
    let f = Fixture::new(20_000);
    let (c, input) = (f.p("c.h4mk"), f.p("in.bin"));
    let container = std::fs::read(&c).unwrap();
    let same = "is the input";
    for force in [&[][..], &["--force"][..]] {
        fn with<'a>(a: &[&'a str], force: &[&'a str]) -> Vec<&'a str> {
            [a, force].concat()
        }
        refused(&with(&["extract", arg(&c), "-o", arg(&c)], force), same);
        let hard = f.p("hard.h4mk");
        let _ = std::fs::remove_file(&hard);
        std::fs::hard_link(&c, &hard).unwrap();
        refused(&with(&["extract", arg(&c), "-o", arg(&hard)], force), same);
        let csv = f.p("idx.csv");
        std::fs::write(&csv, "offset,size,pts_us,keyframe\n0,20000,0,1\n").unwrap();
        refused(
            &with(
                &["pack", arg(&input), "--index", arg(&csv), "-o", arg(&csv)],
                force,
            ),
            same,
        );
        assert!(std::fs::read_to_string(&csv).unwrap().starts_with("offset"));
        refused(
            &with(
                &["pack", arg(&input), "--block-size", "1K", "-o", arg(&input)],
                force,
            ),
            same,
        );
        let mf = f.p("m.json");
        std::fs::write(&mf, "{}").unwrap();
        refused(
            &with(
                &[
                    "pack",
                    arg(&input),
                    "--block-size",
                    "1K",
                    "--meta-file",
                    arg(&mf),
                    "-o",
                    arg(&mf),
                ],
                force,
            ),
            same,
        );
        assert_eq!(std::fs::read(&mf).unwrap(), b"{}");
    }
    assert_eq!(std::fs::read(&c).unwrap(), container);
    assert_eq!(std::fs::read(&input).unwrap(), f.data);

    // Keys: extract and rekey never write over a key file, rekey -o never over FILE.
    let (k1, k2) = (f.p("k1"), f.p("k2"));
    h4fs_ok(&["keygen", "-o", arg(&k1)]);
    h4fs_ok(&["keygen", "-o", arg(&k2)]);
    let e = f.p("e.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&input),
        "--block-size",
        "4K",
        "--encrypt",
        "--key-file",
        arg(&k1),
        "-q",
        "-o",
        arg(&e),
    ]);
    let key1 = std::fs::read(&k1).unwrap();
    refused(
        &[
            "extract",
            arg(&e),
            "--key-file",
            arg(&k1),
            "-o",
            arg(&k1),
            "--force",
        ],
        same,
    );
    let rekey = [
        "rekey",
        arg(&e),
        "--key-file",
        arg(&k1),
        "--new-key-file",
        arg(&k2),
    ];
    refused(&[&rekey[..], &["-o", arg(&k2), "--force"]].concat(), same);
    refused(&[&rekey[..], &["-o", arg(&k1), "--force"]].concat(), same);
    refused(&[&rekey[..], &["-o", arg(&e), "--force"]].concat(), same);
    assert_eq!(std::fs::read(&k1).unwrap(), key1);
    let other = f.p("other.h4mk");
    std::fs::write(&other, b"old").unwrap();
    refused(
        &[&rekey[..], &["-o", arg(&other)]].concat(),
        "already exists",
    );
    h4fs_ok(&[&rekey[..], &["-o", arg(&other), "--force"]].concat());
    h4fs_ok(&["verify", "--key-file", arg(&k2), arg(&other)]);
    // Without -o, replacing FILE is the point.
    h4fs_ok(&rekey);
    h4fs_ok(&["verify", "--key-file", arg(&k2), arg(&e)]);
}

/// `pack d5 -o d5/out.h4mk` is refused before anything is written into d5.
#[test]
fn pack_never_writes_inside_the_directory_it_packs() {
    let d = tempfile::tempdir().unwrap();
    let d5 = d.path().join("d5");
    std::fs::create_dir_all(d5.join("sub")).unwrap();
    std::fs::write(d5.join("a.bin"), noise(1000, 1)).unwrap();
    for out in ["out.h4mk", "sub/out.h4mk"] {
        refused(
            &["pack", arg(&d5), "-o", arg(&d5.join(out))],
            "inside the input directory",
        );
    }
    assert_eq!(names(&d5), ["a.bin", "sub"]);
    assert!(names(&d5.join("sub")).is_empty());
}

/// Mode of a file written by `sh -c 'umask U; exec h4fs ARGS'`.
fn run_with_umask(umask: &str, args: &[&str]) {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args);
    ok(&mut c);
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The plaintext of an encrypted container is 0600 (less the umask, and never wider
/// than the container); other outputs follow the umask.
#[test]
fn plaintext_of_an_encrypted_container_is_private() {
    let f = Fixture::new(20_000);
    let (c, input, key) = (f.p("c.h4mk"), f.p("in.bin"), f.p("k"));
    h4fs_ok(&["keygen", "-o", arg(&key)]);
    let e = f.p("e.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&input),
        "--block-size",
        "4K",
        "--encrypt",
        "--key-file",
        arg(&key),
        "-q",
        "-o",
        arg(&e),
    ]);
    let cases: [(&Path, u32, &str, u32); 6] = [
        (&e, 0o644, "022", 0o600),
        (&e, 0o666, "000", 0o600),
        (&e, 0o640, "077", 0o600),
        (&e, 0o400, "022", 0o400),
        (&c, 0o644, "022", 0o644),
        (&c, 0o644, "027", 0o640),
    ];
    for (i, (src, src_mode, umask, want)) in cases.into_iter().enumerate() {
        std::fs::set_permissions(src, std::fs::Permissions::from_mode(src_mode)).unwrap();
        let out = f.p(&format!("out{i}"));
        let mut args = vec!["extract", arg(src), "-q", "-o", arg(&out)];
        if src == e.as_path() {
            args.extend(["--key-file", arg(&key)]);
        }
        run_with_umask(umask, &args);
        assert_eq!(std::fs::read(&out).unwrap(), f.data);
        assert_eq!(
            mode(&out),
            want,
            "case {i}: source {src_mode:o}, umask {umask}"
        );
    }
    // Key files and packs follow the umask too.
    let k2 = f.p("k2");
    run_with_umask("077", &["keygen", "-o", arg(&k2)]);
    assert_eq!(mode(&k2), 0o600);
    let p = f.p("p.h4mk");
    run_with_umask(
        "027",
        &[
            "pack",
            arg(&input),
            "--block-size",
            "4K",
            "-q",
            "-o",
            arg(&p),
        ],
    );
    assert_eq!(mode(&p), 0o640);
}

/// The fds of `pid` that point at an unnamed file being written in `dir`, with their
/// current sizes.
fn unnamed_outputs(pid: u32, dir: &Path) -> Vec<u64> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| {
                let t = t.to_string_lossy().into_owned();
                t.starts_with(&dir.to_string_lossy().into_owned()) && t.ends_with(" (deleted)")
            })
        })
        .filter_map(|e| std::fs::metadata(e.path()).ok().map(|m| m.len()))
        .collect()
}

/// Start `args`, wait until it has written part of its output, stop it, send `sig`,
/// let it go, and check it died of the signal with `out_dir` left empty.
fn interrupt(args: &[&str], out_dir: &Path, out: &Path, sig: i32) {
    let mut cmd = h4fs();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The signal's default action, whatever this runner inherited: h4fs leaves a signal
    // that was ignored when it started ignored (as under `nohup`, or SIGINT for a
    // command started in the background by a shell without job control).
    // SAFETY: signal(2) is async-signal-safe, and nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(sig, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("{args:?} ended ({st}) before it could be interrupted; use a larger input");
        }
        if unnamed_outputs(pid, out_dir).iter().any(|&n| n >= 1 << 20) {
            break;
        }
        std::thread::yield_now();
    }
    // SAFETY: signals to our own child, which has not been reaped.
    unsafe {
        libc::kill(pid as i32, libc::SIGSTOP);
        let mut status = 0;
        assert_eq!(
            libc::waitpid(pid as i32, &mut status, libc::WUNTRACED),
            pid as i32
        );
        assert!(libc::WIFSTOPPED(status), "{args:?}: not stopped");
        assert!(!out.exists(), "{args:?}: the output is in place already");
        libc::kill(pid as i32, sig);
        libc::kill(pid as i32, libc::SIGCONT);
    }
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(sig), "{args:?}: {st}");
    assert!(
        names(out_dir).is_empty(),
        "{args:?} after signal {sig}: {:?}",
        names(out_dir)
    );
}

/// SIGINT, SIGTERM, SIGHUP (and SIGKILL) in the middle of a pack or an extract of a
/// 96 MiB input leave nothing in the destination directory.
#[test]
fn an_interrupted_pack_or_extract_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("big.bin");
    std::fs::File::create(&input)
        .unwrap()
        .set_len(96 << 20)
        .unwrap();
    let c = d.path().join("big.h4mk");
    h4fs_ok(&[
        "pack",
        arg(&input),
        "--block-size",
        "1M",
        "-q",
        "-o",
        arg(&c),
    ]);
    let out_dir = d.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("x");
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGKILL] {
        interrupt(
            &[
                "pack",
                arg(&input),
                "--block-size",
                "1M",
                "-q",
                "--threads",
                "1",
                "-o",
                arg(&out),
            ],
            &out_dir,
            &out,
            sig,
        );
        interrupt(
            &["extract", arg(&c), "-q", "-o", arg(&out)],
            &out_dir,
            &out,
            sig,
        );
    }
    assert_eq!(names(d.path()), ["big.bin", "big.h4mk", "out"]);
}

/// `ln -s /etc/shadow lib/b.bin; h4fs pack lib -o lib.h4mk` is refused naming the
/// link; `--follow-symlinks` opts in. FIFOs, sockets and devices are refused by path.
#[test]
fn directory_packs_stay_inside_the_directory() {
    let d = tempfile::tempdir().unwrap();
    let lib = d.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    std::fs::write(lib.join("a.bin"), b"aaaa").unwrap();
    let secret = d.path().join("secret");
    std::fs::write(&secret, b"outside the tree").unwrap();
    std::os::unix::fs::symlink(&secret, lib.join("b.bin")).unwrap();
    let out = d.path().join("lib.h4mk");
    let pack = ["pack", arg(&lib), "-q", "-o", arg(&out)];
    let err = refused(&pack, "symbolic link");
    assert!(
        err.contains(&lib.join("b.bin").display().to_string()),
        "{err}"
    );
    assert!(err.contains("--follow-symlinks"), "{err}");
    assert!(!out.exists());
    h4fs_ok(&[&pack[..], &["--follow-symlinks"]].concat());
    assert_eq!(
        h4fs_ok(&["cat", arg(&out), "--block", "1"]).stdout,
        b"outside the tree"
    );
    std::fs::remove_file(lib.join("b.bin")).unwrap();
    std::fs::remove_file(&out).unwrap();

    let fifo = lib.join("f");
    mkfifo(&fifo);
    refused(&pack, &format!("{} is a FIFO", fifo.display()));
    std::fs::remove_file(&fifo).unwrap();
    let sock = lib.join("s");
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    refused(&pack, &format!("{} is a socket", sock.display()));
    std::fs::remove_file(&sock).unwrap();
    let dev = lib.join("null");
    mknod_char(&dev, 1, 3);
    refused(&pack, &format!("{} is a character device", dev.display()));
    for follow in [&[][..], &["--follow-symlinks"][..]] {
        // Also when reached through a followed link.
        std::fs::remove_file(&dev).ok();
        std::os::unix::fs::symlink("/dev/null", &dev).unwrap();
        let want = if follow.is_empty() {
            "symbolic link"
        } else {
            "is a character device"
        };
        refused(&[&pack[..], follow].concat(), want);
    }
    std::fs::remove_file(&dev).unwrap();
    assert!(!out.exists());
    h4fs_ok(&pack);
    assert_eq!(h4fs_ok(&["cat", arg(&out), "--block", "0"]).stdout, b"aaaa");
}

/// A file the user cannot read is an error naming it (run as `nobody` via setpriv, since
/// root reads everything).
#[test]
fn an_unreadable_file_in_a_directory_pack_is_named() {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = d.path().join("h4fs");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lib = d.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(lib.join("a.bin"), b"a").unwrap();
    let hidden = lib.join("b.bin");
    std::fs::write(&hidden, b"b").unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(lib.join("a.bin"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = d.path().join("lib.h4mk");
    let o = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["pack", arg(&lib), "-q", "-o", arg(&out)]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("cannot open input {}", hidden.display()))
            && err.contains("Permission denied"),
        "{err}"
    );
    assert!(!out.exists());
}
