//! `-o` options and the mount helper forms, read through clap the way mountpoint-s3's
//! `fstab.rs` does.
//!
//! An `-o` option that is a setting of `h4fs mount` becomes the long flag it stands
//! for (`cache_size=1G` is `--cache-size=1G`, `nonempty` is `--allow-non-empty`) and is
//! parsed by clap with that flag's own value parser, so both spellings accept the same
//! forms and give the same message for a bad value. Kernel mount flags (`noexec`,
//! `noatime`, `suid`, `dev`, `allow_root`, `max_read=`) and `fsname=` go to the mount;
//! options for mount(8) itself (`noauto`, `nofail`, `user`, `_netdev`, `x-*`, ...) and
//! `ro` are accepted and have no effect; `rw` earns a warning; anything else is refused,
//! naming it, before anything is mounted.
//!
//! The helper forms' command line (`SOURCE MOUNTPOINT -o OPTS -t TYPE ...`, as mount(8)
//! and `mount.fuse3` give it) is parsed by clap too, into the `h4fs mount` arguments it
//! stands for.

use super::args::MountArgs;
use anyhow::{Context, anyhow, bail};
use fuser::MountOption;
use std::ffi::OsString;

/// The mount settings after `-o` options are applied, and the arguments that give
/// them to the daemon.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) args: MountArgs,
    /// The arguments of `h4fs mount` (after the subcommand) as given: the daemon is
    /// started with the same ones, so it reads them exactly as this process did.
    pub(super) argv: Vec<OsString>,
    pub(super) fsname: Option<String>,
    pub(super) extra: Vec<MountOption>,
    pub(super) warnings: Vec<String>,
    /// Global options given before `mount` (`--endpoint URL`, ...), passed on to the
    /// daemon in the same place.
    pub(super) global: Vec<OsString>,
    /// How to reach an `s3://` or `http(s)://` SOURCE: the global options, then
    /// `-o endpoint=`, `region=`, `ca_file=`, `no_sign_request`, `path_style`.
    pub(super) remote: crate::remote::RemoteOptions,
}

/// What one `-o` option means.
#[derive(Debug, PartialEq)]
enum MountOpt {
    /// An `h4fs mount` setting: the long flag it stands for, with its value.
    Flag(String),
    /// A flag for the kernel's mount.
    Kernel(MountOption),
    /// The name shown as the mount's source (`fsname=`).
    FsName(String),
    /// Accepted and without effect (h4fs is always read-only; options for mount(8)).
    Ignored,
    /// `rw`: ignored with a warning.
    ReadWrite,
    /// How to reach a remote SOURCE (`endpoint=`, `region=`, `ca_file=`, `no_sign_request`,
    /// `path_style`).
    Remote(RemoteOpt),
}

#[derive(Debug, PartialEq)]
enum RemoteOpt {
    Endpoint(String),
    Region(String),
    CaFile(String),
    NoSignRequest,
    PathStyle,
}

/// The `-o` options that are settings of `h4fs mount`, and the long flag each stands
/// for. Their values are parsed by clap with that flag's own value parser.
const OPTION_FLAGS: &[(&str, &str)] = &[
    ("cache_size", "--cache-size"),
    ("cache_dir", "--cache-dir"),
    ("cache_dir_size", "--cache-dir-size"),
    ("threads", "--threads"),
    ("verify", "--verify"),
    ("uid", "--uid"),
    ("gid", "--gid"),
    ("strict", "--strict"),
    ("nonempty", "--allow-non-empty"),
    ("allow_other", "--allow-other"),
    ("log_file", "--log-file"),
    ("key_file", "--key-file"),
    ("shared_secret_file", "--shared-secret-file"),
];

/// What one `-o` option (`key` or `key=value`) means; an option h4fs does not know is
/// refused, naming it.
fn classify(o: &str) -> anyhow::Result<MountOpt> {
    let (k, v) = match o.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (o, None),
    };
    if let Some((_, flag)) = OPTION_FLAGS.iter().find(|(name, _)| *name == k) {
        return Ok(MountOpt::Flag(match v {
            Some(v) => format!("{flag}={v}"),
            None => flag.to_string(),
        }));
    }
    let value = |what: &str| {
        v.filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("mount option {k} needs a value ({k}={what})"))
    };
    Ok(match k {
        "endpoint" => MountOpt::Remote(RemoteOpt::Endpoint(value("URL")?)),
        "region" => MountOpt::Remote(RemoteOpt::Region(value("REGION")?)),
        "ca_file" => MountOpt::Remote(RemoteOpt::CaFile(value("FILE.pem")?)),
        "no_sign_request" => MountOpt::Remote(RemoteOpt::NoSignRequest),
        "path_style" => MountOpt::Remote(RemoteOpt::PathStyle),
        "fsname" => MountOpt::FsName(
            v.ok_or_else(|| anyhow!("mount option fsname needs a value (fsname=NAME)"))?
                .to_string(),
        ),
        "max_read" | "allow_root" => MountOpt::Kernel(MountOption::CUSTOM(o.to_string())),
        "nosuid" => MountOpt::Kernel(MountOption::NoSuid),
        "nodev" => MountOpt::Kernel(MountOption::NoDev),
        "noexec" => MountOpt::Kernel(MountOption::NoExec),
        "exec" => MountOpt::Kernel(MountOption::Exec),
        "suid" => MountOpt::Kernel(MountOption::Suid),
        "dev" => MountOpt::Kernel(MountOption::Dev),
        "noatime" => MountOpt::Kernel(MountOption::NoAtime),
        "rw" => MountOpt::ReadWrite,
        "ro"
        | "default_permissions"
        | "subtype"
        | "atime"
        | "relatime"
        | "strictatime"
        | "nodiratime"
        | "sync"
        | "async"
        | "dirsync" => MountOpt::Ignored,
        // Options for mount(8) itself (fstab), not for the filesystem.
        "defaults" | "auto" | "noauto" | "user" | "users" | "nouser" | "owner" | "group"
        | "nofail" | "_netdev" | "comment" | "loop" => MountOpt::Ignored,
        k if k.starts_with("x-") => MountOpt::Ignored,
        _ => bail!(
            "unknown mount option \"{o}\" (h4fs takes ro, allow_other, allow_root, cache_size=, cache_dir=, cache_dir_size=, threads=, verify=, strict, nonempty, uid=, gid=, log_file=, key_file=, shared_secret_file=, endpoint=, region=, ca_file=, no_sign_request, path_style, fsname=, max_read=, noexec, noatime, suid, dev)"
        ),
    })
}

/// Apply the `-o` options of `args`. Settings become their long flags and go through
/// clap, so `-o cache_size=1G` is read exactly as `--cache-size 1G` is (the same value
/// parser, the same message for a bad value); an `-o` setting wins over its flag.
pub(super) fn apply_options(mut args: MountArgs, argv: Vec<OsString>) -> anyhow::Result<Settings> {
    let mut s = Settings {
        args: args.clone(),
        argv,
        fsname: None,
        extra: Vec::new(),
        warnings: Vec::new(),
        global: Vec::new(),
        remote: crate::cli::remote::options(),
    };
    let mut flags = Vec::new();
    for o in args
        .options
        .iter()
        .flat_map(|o| o.split(','))
        .map(str::trim)
    {
        if o.is_empty() {
            continue;
        }
        match classify(o)? {
            MountOpt::Flag(f) => flags.push((o.to_string(), f)),
            MountOpt::Kernel(k) => s.extra.push(k),
            MountOpt::FsName(n) => s.fsname = Some(n),
            MountOpt::Ignored => {}
            MountOpt::ReadWrite => s
                .warnings
                .push("h4fs mounts are always read-only; ignoring the \"rw\" option".into()),
            MountOpt::Remote(r) => match r {
                RemoteOpt::Endpoint(e) => s.remote.endpoint = Some(e),
                RemoteOpt::Region(r) => s.remote.region = Some(r),
                RemoteOpt::CaFile(f) => {
                    let f = std::path::PathBuf::from(f);
                    s.remote.ca_file = Some(std::path::absolute(&f).unwrap_or(f));
                }
                RemoteOpt::NoSignRequest => s.remote.no_sign_request = true,
                RemoteOpt::PathStyle => s.remote.path_style = true,
            },
        }
    }
    for (o, flag) in flags {
        apply_flag(&mut args, &flag).with_context(|| format!("mount option \"{o}\""))?;
    }
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    s.args = args;
    Ok(s)
}

/// Parse one long flag (`--cache-size=1G`) with the `h4fs mount` command's clap
/// definition and set it in `args`.
fn apply_flag(args: &mut MountArgs, flag: &str) -> anyhow::Result<()> {
    use clap::{Args, FromArgMatches, parser::ValueSource};
    let cmd = MountArgs::augment_args(clap::Command::new("h4fs mount"))
        .no_binary_name(true)
        .disable_help_flag(true);
    let argv = [
        args.source.as_os_str(),
        args.mountpoint.as_os_str(),
        flag.as_ref(),
    ];
    let m = cmd
        .try_get_matches_from(argv)
        .map_err(|e| anyhow!("{}", clap_message(&e)))?;
    let o = MountArgs::from_arg_matches(&m).map_err(|e| anyhow!("{}", clap_message(&e)))?;
    let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    if given("cache_size") {
        args.cache_size = o.cache_size;
    }
    if given("cache_dir") {
        args.cache_dir = o.cache_dir;
    }
    if given("cache_dir_size") {
        args.cache_dir_size = o.cache_dir_size;
    }
    if given("threads") {
        args.threads = o.threads;
    }
    if given("verify") {
        args.verify = o.verify;
    }
    if given("uid") {
        args.uid = o.uid;
    }
    if given("gid") {
        args.gid = o.gid;
    }
    if given("strict") {
        args.strict = o.strict;
    }
    if given("allow_non_empty") {
        args.allow_non_empty = o.allow_non_empty;
    }
    if given("allow_other") {
        args.allow_other = o.allow_other;
    }
    if given("log_file") {
        args.log_file = o.log_file;
    }
    if given("key_file") {
        args.keys.key_file = o.keys.key_file;
    }
    if given("shared_secret_file") {
        args.keys.shared_secret_file = o.keys.shared_secret_file;
    }
    Ok(())
}

/// A clap error as one line, without clap's "error: " prefix and usage hint.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// The command line mount(8) and `mount.fuse3` give a mount helper:
/// `SOURCE MOUNTPOINT [-o OPTS]... [-t TYPE] [-f] [-s] [-n] [-v] [-r] [-w] [-N NS]`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "mount.fuse.h4fs",
    no_binary_name = true,
    disable_help_flag = true
)]
struct HelperArgs {
    source: OsString,
    mountpoint: OsString,
    /// Mount options, comma-separated, as `h4fs mount -o` takes them.
    #[arg(short = 'o', value_name = "OPTS")]
    options: Vec<OsString>,
    /// Stay in the foreground.
    #[arg(short = 'f')]
    foreground: bool,
    /// The filesystem type (`fuse.h4fs`); ignored.
    #[arg(short = 't', value_name = "TYPE")]
    _fstype: Option<String>,
    /// A mount namespace; ignored.
    #[arg(short = 'N', value_name = "NS")]
    _namespace: Option<String>,
    /// Sloppy, no mtab, verbose, read-only, read-write: mount(8)'s flags; ignored.
    #[arg(short = 's')]
    _sloppy: bool,
    #[arg(short = 'n')]
    _no_mtab: bool,
    #[arg(short = 'v')]
    _verbose: bool,
    #[arg(short = 'r')]
    _read_only: bool,
    #[arg(short = 'w')]
    _read_write: bool,
}

/// A mount helper's command line as the `h4fs mount` arguments it stands for, read by
/// clap into [`MountArgs`] like any `h4fs mount` command line.
pub(super) fn helper_args(rest: &[OsString]) -> anyhow::Result<(MountArgs, Vec<OsString>)> {
    use clap::{FromArgMatches, Parser};
    let h = HelperArgs::try_parse_from(rest).map_err(|e| anyhow!("{}", clap_message(&e)))?;
    let mut argv = vec![h.source, h.mountpoint];
    if h.foreground {
        argv.push("-f".into());
    }
    for o in h.options {
        argv.push("-o".into());
        argv.push(o);
    }
    let cmd = <MountArgs as clap::Args>::augment_args(clap::Command::new("h4fs mount"))
        .no_binary_name(true);
    let m = cmd
        .try_get_matches_from(&argv)
        .map_err(|e| anyhow!("{}", clap_message(&e)))?;
    let args = MountArgs::from_arg_matches(&m).map_err(|e| anyhow!("{}", clap_message(&e)))?;
    Ok((args, argv))
}

#[cfg(test)]
mod tests {
    use super::super::args::VerifyArg;
    use super::*;
    use std::path::{Path, PathBuf};

    #[test]
    fn helper_argv_and_options() {
        let helper = |args: &[&str]| {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            helper_args(&args).and_then(|(a, argv)| apply_options(a, argv))
        };
        let s = helper(&[
            "/data/x.h4mk",
            "/mnt/x",
            "-t",
            "fuse.h4fs",
            "-o",
            "ro,allow_other,cache_size=1G,noauto,x-systemd.automount,verify=full",
            "-n",
        ])
        .unwrap();
        assert_eq!(s.args.source, PathBuf::from("/data/x.h4mk"));
        assert_eq!(s.args.mountpoint, PathBuf::from("/mnt/x"));
        assert!(s.args.allow_other);
        assert_eq!(s.args.cache_size, 1 << 30);
        assert_eq!(s.args.verify, VerifyArg::Full);
        assert!(!s.args.foreground);
        // The daemon is started with the `h4fs mount` arguments the helper stands for.
        assert_eq!(
            s.argv,
            [
                "/data/x.h4mk",
                "/mnt/x",
                "-o",
                "ro,allow_other,cache_size=1G,noauto,x-systemd.automount,verify=full"
            ]
        );
        let bad = helper(&["a", "b", "-o", "frobnicate"]).unwrap_err();
        assert!(bad.to_string().contains("frobnicate"), "{bad}");
        assert!(helper(&["only-one"]).is_err());
        assert!(helper(&["a", "b", "c"]).is_err());
        assert!(helper(&["a", "b", "-x"]).is_err());
        let rw = helper(&["a", "b", "-orw", "-f"]).unwrap();
        assert_eq!(rw.warnings.len(), 1);
        assert!(rw.args.foreground);
        // How to reach a remote SOURCE, as fstab gives it.
        let r = helper(&[
            "s3://media/films/",
            "/mnt/f",
            "-o",
            "ro,endpoint=http://127.0.0.1:8333,region=eu-west-1,path_style,no_sign_request",
        ])
        .unwrap();
        assert_eq!(r.remote.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(r.remote.region.as_deref(), Some("eu-west-1"));
        assert!(r.remote.path_style && r.remote.no_sign_request);
        let e = helper(&["a", "b", "-o", "endpoint="]).unwrap_err();
        assert!(e.to_string().contains("endpoint=URL"), "{e}");
    }

    fn mount_args(args: &[&str]) -> anyhow::Result<Settings> {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: MountArgs,
        }
        let cli = Cli::try_parse_from(std::iter::once("mount").chain(args.iter().copied()))?;
        apply_options(cli.args, args.iter().map(OsString::from).collect())
    }

    /// `-o` settings are read by clap with the value parser of the flag they stand for:
    /// the same forms, the same messages; they win over the flag; the flags given
    /// without -o are kept; kernel flags and ignored ones are sorted out.
    #[test]
    fn o_settings_go_through_the_flags_parsers() {
        let s = mount_args(&[
            "s",
            "m",
            "--threads",
            "7",
            "--strict",
            "--cache-size",
            "1M",
            "-o",
            "cache_size=2G,uid=12,nonempty,noexec,fsname=movie",
            "-o",
            "log_file=/tmp/x.log,key_file=k,defaults",
        ])
        .unwrap();
        let a = &s.args;
        assert_eq!((a.threads, a.strict, a.cache_size), (7, true, 2 << 30));
        assert_eq!((a.uid, a.gid), (Some(12), None));
        assert!(a.allow_non_empty && !a.allow_other);
        assert_eq!(a.log_file.as_deref(), Some(Path::new("/tmp/x.log")));
        assert_eq!(a.keys.key_file.as_deref(), Some(Path::new("k")));
        assert_eq!(s.extra, [MountOption::NoExec]);
        assert_eq!(s.fsname.as_deref(), Some("movie"));
        assert!(s.warnings.is_empty());

        let err = |args: &[&str]| format!("{:#}", mount_args(args).unwrap_err());
        let flag = err(&["s", "m", "--cache-size", "12Q"]);
        let opt = err(&["s", "m", "-o", "cache_size=12Q"]);
        let want = "\"12Q\": unknown size suffix \"q\" (use K, M, G or T)";
        assert!(flag.contains(want) && opt.contains(want), "{flag}\n{opt}");
        assert!(
            opt.starts_with("mount option \"cache_size=12Q\": "),
            "{opt}"
        );
        assert!(err(&["s", "m", "-o", "verify=most"]).contains("most"));
        assert!(err(&["s", "m", "-o", "uid=me"]).contains("uid=me"));
        assert!(err(&["s", "m", "-o", "strict=1"]).contains("strict=1"));
        assert!(err(&["s", "m", "-o", "cache_size"]).contains("--cache-size"));
        assert!(err(&["s", "m", "-o", "threads=0"]).contains("at least 1"));
        assert!(err(&["s", "m", "-o", "fsname"]).contains("needs a value"));
        assert!(err(&["s", "m", "-o", "foreground"]).contains("unknown mount option"));
    }
}
