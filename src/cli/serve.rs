//! `h4fs serve`: containers over HTTP, in the foreground.

use super::mount::VerifyArg;
use super::size::parse_size;
use crate::fs::{self, Fs, FsConfig};
use crate::serve::{self, Config, Server};
use anyhow::{Context, bail};
use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Serve containers over HTTP (read-only), in the foreground, until SIGINT or SIGTERM.
///
/// Every container appears under /NAME/ (NAME: the file name without .h4mk) with the
/// files of the mount: meta.json, safe.json, seek.csv, index.csv, veri.json,
/// manifest.json, stream, blocks/N, by-pts/N (a redirect to the keyframe block at or
/// before N microseconds); /containers.json lists them. Every byte sent was verified.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  h4fs serve movie.h4mk                       # http://127.0.0.1:8080/movie/stream
  h4fs serve library/ --listen 127.0.0.1:9000
  h4fs serve s3://media/films/ --endpoint http://127.0.0.1:8333   # every *.h4mk under the prefix
  h4fs serve https://cdn.example/clip.h4mk
  h4fs serve a.h4mk b.h4mk --listen 127.0.0.1:0   # any free port; the URL is printed
  curl -r 0-1023 http://127.0.0.1:8080/movie/stream | xxd | head
  ffprobe http://127.0.0.1:8080/movie/stream
  mpv http://127.0.0.1:8080/clip/index.m3u8   # HLS, for MPEG-TS streams

The first line on stdout is the URL served (useful with port 0); one line per request
goes to stderr in the common log format.")]
pub struct ServeArgs {
    /// Container files, directories whose *.h4mk files are served, or remote sources
    /// as for `mount`: s3://BUCKET/KEY, s3://BUCKET/PREFIX/ (every *.h4mk under it,
    /// all opened at start) and http(s):// URLs.
    #[arg(required = true, value_name = "SOURCE")]
    pub sources: Vec<PathBuf>,
    /// Address and port to listen on (loopback unless told otherwise; port 0: any free
    /// port).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Bytes of verified, decoded blocks kept in memory, shared by all clients (suffixes
    /// K, M, G, T).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256M")]
    pub cache_size: u64,
    /// What to check before serving.
    #[arg(long, value_enum, default_value = "structure")]
    pub verify: VerifyArg,
    /// Refuse to start when any container of a directory SOURCE fails to open or fails
    /// its checks (default: leave it out with a warning).
    #[arg(long)]
    pub strict: bool,
    /// Connections served at once; more wait in the kernel's listen queue.
    #[arg(long, value_name = "N", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,
    /// Seconds a client has to send a complete request head (also the idle time of a
    /// keep-alive connection) before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: u64,
    /// Seconds a client may leave response bytes unread before it is disconnected.
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub send_timeout: u64,
    /// Keys for encrypted containers (without one, their data answers 403).
    #[command(flatten)]
    pub keys: super::keys::KeyArgs,
}

/// A remote SOURCE (`s3://BUCKET/KEY`, `s3://BUCKET/PREFIX/`, `http(s)://`), with the
/// global remote options: a prefix's containers are all opened now (a server answers
/// `/containers.json` with every one), those that fail left out with a warning unless
/// `--strict`.
fn open_remote(
    src: &std::path::Path,
    args: &ServeArgs,
    attach: &fs::SharedAttach,
) -> anyhow::Result<fs::OpenedSources> {
    let url = src.to_str().unwrap_or_default();
    let opened = fs::open_remote(
        url,
        &super::remote::options(),
        args.verify.into(),
        attach.clone(),
        args.strict,
    )
    .context("cannot serve")?;
    Ok(match opened {
        fs::RemoteOpened::One(s) => fs::OpenedSources {
            sources: vec![*s],
            multi: false,
            skipped: Vec::new(),
        },
        fs::RemoteOpened::Prefix { containers, .. } => {
            let mut sources = Vec::new();
            let mut skipped = Vec::new();
            for (pending, done) in containers {
                match done.map_or_else(|| (pending.open)(), Ok) {
                    Ok(s) => sources.push(s),
                    Err(error) if args.strict => {
                        bail!("cannot serve {}: {error}", pending.shown)
                    }
                    Err(error) => skipped.push(fs::SourceError {
                        path: PathBuf::from(&pending.shown),
                        error,
                    }),
                }
            }
            fs::OpenedSources {
                sources,
                multi: true,
                skipped,
            }
        }
    })
}

pub fn run(args: ServeArgs) -> anyhow::Result<u8> {
    let attach: fs::SharedAttach = Arc::new(args.keys.attacher()?);
    let mut sources = Vec::new();
    let mut skipped = Vec::new();
    let mut names = HashSet::new();
    for src in &args.sources {
        let opened = if super::remote::is_remote(src) {
            open_remote(src, &args, &attach)?
        } else {
            fs::open_sources(src, args.verify.into(), &*attach, args.strict)
                .context("cannot serve")?
        };
        for e in &opened.skipped {
            eprintln!(
                "h4fs: warning: {}: {}; not served (--strict refuses to start instead)",
                e.path.display(),
                e.error
            );
        }
        skipped.extend(opened.skipped);
        for s in opened.sources {
            if !names.insert(s.name.clone()) {
                bail!(
                    "two containers are named {:?} ({} and another); serve them from separate directories or rename one",
                    s.name,
                    s.path.display()
                );
            }
            sources.push(s);
        }
    }
    for reserved in ["containers.json", "stats.json", "metrics"] {
        if names.contains(reserved) {
            eprintln!(
                "h4fs: warning: a container named {reserved:?} is hidden by the server's own /{reserved}"
            );
        }
    }
    let log: serve::Log = Arc::new(|m: &str| eprintln!("{m}"));
    let l2 = log.clone();
    let cfg = FsConfig {
        cache_bytes: args.cache_size,
        prefetch_bytes: (16u64 << 20).min(args.cache_size / 4),
        log: Arc::new(move |m| l2(m)),
        ..FsConfig::default()
    };
    let core =
        Arc::new(Fs::new(sources, true, std::time::SystemTime::now(), cfg).with_skipped(&skipped));
    core.start_prefetch(2);
    let server = Arc::new(Server::new(core.clone(), log));
    let cfg = Config {
        max_connections: args.max_connections as usize,
        header_timeout: Duration::from_secs(args.header_timeout),
        send_timeout: Duration::from_secs(args.send_timeout),
        ..Config::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(cfg.blocking_threads)
        .thread_name("h4fs-serve")
        .build()
        .context("cannot start the server's runtime")?;
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr().context("cannot read the bound address")?;
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("cannot handle SIGINT")?;
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot handle SIGTERM")?;
        if !addr.ip().is_loopback() {
            eprintln!(
                "h4fs: note: listening on {addr}, reachable from other machines; there is no authentication"
            );
        }
        eprintln!(
            "h4fs: serving {} container(s) on http://{addr}/ ({})",
            server.names().len(),
            server.names().join(", ")
        );
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "http://{addr}/");
            let _ = out.flush();
        }
        let shutdown = async move {
            let name = tokio::select! {
                _ = sigint.recv() => "SIGINT",
                _ = sigterm.recv() => "SIGTERM",
            };
            eprintln!("h4fs: {name}: stopping");
        };
        serve::run(listener, server.clone(), cfg, shutdown).await;
        anyhow::Ok(())
    });
    core.stop_prefetch();
    rt.shutdown_timeout(Duration::from_secs(1));
    result?;
    Ok(0)
}
