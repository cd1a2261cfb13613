//! Where a remote container lives: `s3://BUCKET/KEY` or an `http://` / `https://` URL.

use crate::{Error, Result};

/// A remote container's address, parsed and checked before any request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An object in an S3 (or S3-compatible) bucket.
    S3 { bucket: String, key: String },
    /// A file on an HTTP server: `base` is `scheme://host[:port]`, `path` the URL path
    /// (still percent-encoded, as given).
    Http {
        base: String,
        path: String,
        https: bool,
    },
}

/// True when `s` names a remote container (`s3://`, `http://`, `https://`) rather than a
/// local path.
pub fn is_remote(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("s3://") || lower.starts_with("http://") || lower.starts_with("https://")
}

impl Location {
    /// Parse a remote address. URLs carrying a user name, a password or a query string
    /// are refused: secrets are never taken on the command line, where `ps` shows them.
    pub fn parse(s: &str) -> Result<Location> {
        let bad = |why: &str| Error::BadInput(format!("{}: {why}", redacted(s)));
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| bad("not an s3:// or http(s):// address"))?;
        let scheme = scheme.to_ascii_lowercase();
        if rest.contains('?') || rest.contains('#') {
            return Err(bad(
                "a query string or fragment is not supported (signed URLs carry secrets, \
                 which h4fs never takes as arguments)",
            ));
        }
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.contains('@') {
            return Err(bad(
                "user names and passwords in the URL are not supported (h4fs never takes \
                 secrets as arguments; for S3 use the AWS environment or profile)",
            ));
        }
        if host.is_empty() {
            return Err(bad("no host (or bucket) name"));
        }
        match scheme.as_str() {
            "s3" => {
                if path.is_empty() || path.ends_with('/') {
                    return Err(bad(
                        "names a bucket or prefix; give the key of one container \
                         (s3://BUCKET/KEY)",
                    ));
                }
                Ok(Location::S3 {
                    bucket: host.to_string(),
                    key: path.to_string(),
                })
            }
            "http" | "https" => {
                if path.is_empty() || path.ends_with('/') {
                    return Err(bad("names a directory; give the URL of one container"));
                }
                Ok(Location::Http {
                    base: format!("{scheme}://{host}"),
                    path: path.to_string(),
                    https: scheme == "https",
                })
            }
            _ => Err(bad("not an s3:// or http(s):// address")),
        }
    }

    /// Parse `s3://BUCKET/PREFIX/` (or `s3://BUCKET`): every `*.h4mk` directly under
    /// the prefix. `None` when `s` names one object (then [`Location::parse`] it).
    /// Refuses what `parse` refuses (secrets in the URL), and HTTP directories, which
    /// cannot be listed.
    pub fn parse_prefix(s: &str) -> Result<Option<Prefix>> {
        let bad = |why: &str| Error::BadInput(format!("{}: {why}", redacted(s)));
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(None);
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let is_dir = path.is_empty() || path.ends_with('/');
        if !is_dir || rest.contains(['?', '#', '@']) || host.is_empty() {
            // One object, or something `parse` refuses with its own message.
            return Ok(None);
        }
        match scheme.to_ascii_lowercase().as_str() {
            "s3" => Ok(Some(Prefix {
                bucket: host.to_string(),
                prefix: path.to_string(),
            })),
            "http" | "https" => Err(bad(
                "names a directory; an HTTP server cannot be listed, so give the URL of \
                 one container (or put the containers in an S3 bucket and mount \
                 s3://BUCKET/PREFIX/)",
            )),
            _ => Ok(None),
        }
    }

    /// The address as shown in messages.
    pub fn shown(&self) -> String {
        match self {
            Location::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
            Location::Http { base, path, .. } => format!("{base}/{path}"),
        }
    }
}

/// `s3://BUCKET/PREFIX/`: the containers directly under a prefix of a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    pub bucket: String,
    /// Empty (the whole bucket) or ending in `/`.
    pub prefix: String,
}

impl Prefix {
    /// The address as shown in messages.
    pub fn shown(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// `s` as it may appear in a message: without anything after `?`, `#` or before `@`.
pub fn redacted(s: &str) -> String {
    let s = s.split(['?', '#']).next().unwrap_or("");
    match s.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, after)) if !rest.split('/').next().unwrap_or("").is_empty() => {
                format!("{scheme}://…@{after}")
            }
            _ => s.to_string(),
        },
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_and_http() {
        assert_eq!(
            Location::parse("s3://media/a/b.h4mk").unwrap(),
            Location::S3 {
                bucket: "media".into(),
                key: "a/b.h4mk".into()
            }
        );
        assert_eq!(
            Location::parse("https://cdn.example:8443/x/y%20z.h4mk").unwrap(),
            Location::Http {
                base: "https://cdn.example:8443".into(),
                path: "x/y%20z.h4mk".into(),
                https: true
            }
        );
        assert!(is_remote("S3://b/k") && is_remote("http://h/x") && !is_remote("./s3:/x"));
        assert_eq!(redacted("https://u:p@h/x?sig=1"), "https://…@h/x");
    }

    #[test]
    fn parses_prefixes() {
        let p = Location::parse_prefix("s3://media/films/")
            .unwrap()
            .unwrap();
        assert_eq!((p.bucket.as_str(), p.prefix.as_str()), ("media", "films/"));
        assert_eq!(p.shown(), "s3://media/films/");
        let p = Location::parse_prefix("s3://media").unwrap().unwrap();
        assert_eq!((p.bucket.as_str(), p.prefix.as_str()), ("media", ""));
        assert_eq!(Location::parse_prefix("s3://media/a.h4mk").unwrap(), None);
        assert_eq!(Location::parse_prefix("/local/dir/").unwrap(), None);
        // Secrets are left to `parse`, which refuses them by name.
        assert_eq!(Location::parse_prefix("s3://media/x/?sig=1").unwrap(), None);
        let e = Location::parse_prefix("http://h/dir/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be listed"), "{e}");
    }

    #[test]
    fn refuses_prefixes_queries_and_secrets() {
        for (s, needle) in [
            ("s3://media/", "prefix"),
            ("s3://media", "prefix"),
            ("http://h/dir/", "directory"),
            ("https://h/x.h4mk?X-Amz-Signature=SECRET", "query"),
            ("http://user:SECRET@h/x.h4mk", "passwords"),
            ("ftp://h/x", "not an s3://"),
        ] {
            let e = Location::parse(s).unwrap_err().to_string();
            assert!(e.contains(needle), "{s}: {e}");
            assert!(!e.contains("SECRET"), "{s}: {e}");
        }
    }
}
