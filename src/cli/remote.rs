//! Options for containers on S3 and HTTP(S), and the one place commands open a
//! container by name (a path or a URL).

use crate::reader::{Archive, OpenCheck};
use crate::remote::{Location, RemoteOptions, RemoteSource, RemoteStats, StatsSnapshot};
use anyhow::Context;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// How to reach containers given as `s3://BUCKET/KEY` or `http(s)://` URLs. Credentials
/// are never options: they come from the AWS environment (AWS_ACCESS_KEY_ID,
/// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or the profile files (AWS_PROFILE).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(
    next_help_heading = "Containers on S3 or HTTP (inspect, seek, verify, cat, extract, mount, serve)"
)]
pub struct RemoteArgs {
    /// S3-compatible endpoint for s3:// sources, e.g. http://127.0.0.1:8333 (else
    /// AWS_ENDPOINT_URL, the profile's endpoint_url, or AWS). Implies --path-style.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Region of s3:// sources (else AWS_REGION, AWS_DEFAULT_REGION, the profile's, or
    /// us-east-1).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// Send unsigned requests (public buckets), as `aws --no-sign-request`. Without any
    /// credentials requests are unsigned anyway.
    #[arg(long, global = true)]
    pub no_sign_request: bool,
    /// Path-style S3 addressing (ENDPOINT/BUCKET/KEY), for stores without bucket DNS
    /// names; the default with --endpoint.
    #[arg(long, global = true)]
    pub path_style: bool,
    /// Extra trusted root certificates (PEM) for https:// sources and endpoints, besides
    /// the system's (else AWS_CA_BUNDLE), e.g. a private CA's.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// For s3:// and http(s):// sources, print the requests and bytes fetched on stderr
    /// at the end.
    #[arg(long, global = true)]
    pub verbose: bool,
}

static ARGS: OnceLock<RemoteArgs> = OnceLock::new();
static OPENED: Mutex<Vec<(String, Arc<RemoteStats>)>> = Mutex::new(Vec::new());

/// Remember the options for [`open`] (called once, before the subcommand runs).
pub fn set(args: RemoteArgs) {
    let _ = ARGS.set(args);
}

/// The remote options given on the command line (none when it was not parsed, as in
/// the mount helper forms).
pub fn options() -> RemoteOptions {
    let args = ARGS.get().cloned().unwrap_or_default();
    RemoteOptions {
        endpoint: args.endpoint,
        region: args.region,
        no_sign_request: args.no_sign_request,
        path_style: args.path_style,
        // Absolute, as the mount daemon reads it after leaving the working directory.
        ca_file: args.ca_file.map(|f| std::path::absolute(&f).unwrap_or(f)),
        cache_dir: None,
    }
}

/// The global options before the subcommand in `argv` (without the program name):
/// how many leading arguments they take. `h4fs --endpoint URL mount ...` gives 2.
pub fn leading_global_args(argv: &[std::ffi::OsString]) -> usize {
    let mut i = 0;
    while let Some(a) = argv.get(i).and_then(|a| a.to_str()) {
        match a {
            "--endpoint" | "--region" | "--ca-file" => i += 2,
            "--no-sign-request" | "--path-style" | "--verbose" => i += 1,
            a if ["--endpoint=", "--region=", "--ca-file="]
                .iter()
                .any(|p| a.starts_with(p)) =>
            {
                i += 1
            }
            _ => break,
        }
    }
    i.min(argv.len())
}

/// Open the container `file` names: a local path, or an `s3://` / `http(s)://` URL
/// (read with range GETs, every byte verified as from a file).
pub fn open(file: &Path, check: OpenCheck) -> anyhow::Result<Archive> {
    open_lib(file, check).with_context(|| format!("cannot open {}", shown(file)))
}

/// [`open`] without the "cannot open" context, for callers that look at the error.
pub fn open_lib(file: &Path, check: OpenCheck) -> crate::Result<Archive> {
    let Some(url) = file.to_str().filter(|s| crate::remote::is_remote(s)) else {
        return Archive::open_with(file, check);
    };
    let loc = Location::parse(url)?;
    let opts = options();
    let src = RemoteSource::open(&loc, &opts)?;
    OPENED
        .lock()
        .expect("not poisoned")
        .push((loc.shown(), src.stats()));
    Archive::from_source(Box::new(src), check)
}

/// `file` as messages show it (a URL without query or user name).
pub fn shown(file: &Path) -> String {
    match file.to_str().filter(|s| crate::remote::is_remote(s)) {
        Some(s) => Location::parse(s)
            .map(|l| l.shown())
            .unwrap_or_else(|_| crate::remote::redacted(s)),
        None => file.display().to_string(),
    }
}

/// True when `file` names a remote container.
pub fn is_remote(file: &Path) -> bool {
    file.to_str().is_some_and(crate::remote::is_remote)
}

/// What the remote container `shown` cost so far, if it was opened by [`open`].
pub fn stats_of(shown: &str) -> Option<StatsSnapshot> {
    OPENED
        .lock()
        .expect("not poisoned")
        .iter()
        .rev()
        .find(|(n, _)| n == shown)
        .map(|(_, s)| s.snapshot())
}

/// With `--verbose`, one line per remote container read: requests, bytes, retries and
/// failed requests.
pub fn report() {
    if !ARGS.get().is_some_and(|a| a.verbose) {
        return;
    }
    for (name, s) in OPENED.lock().expect("not poisoned").iter() {
        let s = s.snapshot();
        eprintln!(
            "h4fs: {name}: {} requests, {} bytes fetched, {} retries, {} failed requests",
            s.requests, s.bytes, s.retries, s.errors
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn global_options_before_the_subcommand_are_counted() {
        let v = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(leading_global_args(&v(&["mount", "s3://b/k", "m"])), 0);
        assert_eq!(
            leading_global_args(&v(&["--endpoint", "http://h:1", "--path-style", "mount"])),
            3
        );
        assert_eq!(
            leading_global_args(&v(&["--region=x", "--verbose", "mount"])),
            2
        );
        assert_eq!(leading_global_args(&v(&["--endpoint"])), 1);
        assert_eq!(
            leading_global_args(&v(&["--ca-file", "ca.pem", "--ca-file=b.pem", "mount"])),
            3
        );
    }
}
