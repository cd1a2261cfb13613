//! The HarmonyØ4 reference's read routes, answered from the served tree:
//!
//! | route | answers with |
//! |---|---|
//! | `GET /video/manifest` | the container's `manifest.json` |
//! | `GET /video/seek_to_block?pts_us=N` | JSON: the keyframe block at or before N |
//! | `GET /video/block/{index}` | `blocks/{index}`: the decoded, verified block |
//! | `GET /video/range` (+ `Range`) | `stream`, with 206/416 as for any file |
//!
//! Each takes `container=NAME` (optional when one container is served) and `track=ID`
//! (multitrack containers; default the first track). The reference's `h4mk=<hex>`
//! (a whole container in the query) is refused: this server reads only its own
//! containers.

use super::{Refusal, RespBody, Server, plain, refuse};
use crate::fs::{FsError, Kind, XattrReply};
use ::http::{HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use hyper::body::Incoming;
use serde_json::json;
use std::sync::Arc;

/// The routes under `/video/`.
pub const ROUTES: [&str; 4] = ["manifest", "seek_to_block", "block", "range"];

/// `key=value` pairs of a query, percent-decoded (`+` is a space); the first of a
/// repeated key wins.
pub fn query(q: Option<&str>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        let k = dec(k);
        if !out.iter().any(|(x, _)| *x == k) {
            out.push((k, dec(v)));
        }
    }
    out
}

fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
}

/// A non-negative decimal integer, no sign, no spaces.
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Server {
    /// The tree path (container and track directory) a reference request names.
    fn reference_dir(
        &self,
        q: &[(String, String)],
    ) -> Result<(Vec<String>, usize, usize), Refusal> {
        if param(q, "h4mk").is_some() {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "h4mk= (a container in the query) is not accepted: this server serves its own \
                 containers; name one with container=NAME (see /containers.json)",
            ));
        }
        let c = match param(q, "container") {
            Some(name) => *self.by_name.get(name).ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    format!("no container named {name:?} (see /containers.json)"),
                )
            })?,
            None if self.containers.len() == 1 => 0,
            None => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{} containers are served: name one with container=NAME (see /containers.json)",
                        self.containers.len()
                    ),
                ));
            }
        };
        let cont = &self.containers[c];
        let t = match param(q, "track") {
            None => 0,
            Some(id) => cont
                .tracks
                .iter()
                .position(|t| t.id.to_string() == id || t.dir_name == id)
                .ok_or_else(|| {
                    refuse(
                        StatusCode::NOT_FOUND,
                        format!("container {:?} has no track {id:?}", cont.name),
                    )
                })?,
        };
        if cont.tracks.is_empty() {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                format!("container {:?} has no tracks", cont.name),
            ));
        }
        let mut dir = vec![cont.name.clone()];
        if cont.multitrack {
            dir.push(cont.tracks[t].dir_name.clone());
        }
        Ok((dir, c, t))
    }

    /// Answer `/video/ROUTE[/ARG]`.
    pub(super) async fn reference(
        self: Arc<Self>,
        req: &Request<Incoming>,
        segs: &[String],
    ) -> Response<RespBody> {
        let q = query(req.uri().query());
        let (mut dir, c, t) = match self.reference_dir(&q) {
            Ok(x) => x,
            Err(r) => return plain(r.0, r.1),
        };
        let route = segs[1].as_str();
        let extra = segs.len() - 2;
        match (route, extra) {
            ("manifest", 0) => {
                dir.push("manifest.json".into());
                self.serve_tree(req, dir).await
            }
            ("range", 0) => {
                dir.push("stream".into());
                self.serve_tree(req, dir).await
            }
            ("block", 1) => {
                let Some(n) = decimal(&segs[2]) else {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        format!("block index {:?} is not a non-negative integer", segs[2]),
                    );
                };
                let count = self.containers[c].tracks[t].blocks;
                if n >= count {
                    return plain(
                        StatusCode::NOT_FOUND,
                        format!("block {n} is past the end: the track has {count} blocks"),
                    );
                }
                let width = (count.saturating_sub(1).to_string().len()).max(6);
                dir.push("blocks".into());
                dir.push(format!("{n:0width$}"));
                self.serve_tree(req, dir).await
            }
            ("seek_to_block", 0) => {
                let Some(raw) = param(&q, "pts_us").or_else(|| param(&q, "pts")) else {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        "seek_to_block needs pts_us=MICROSECONDS",
                    );
                };
                let Some(pts) = decimal(raw) else {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        format!("pts_us {raw:?} is not a non-negative integer of microseconds"),
                    );
                };
                let me = self.clone();
                let name = self.containers[c].name.clone();
                match tokio::task::spawn_blocking(move || me.seek_to_block(dir, pts, &name)).await {
                    Ok(Ok(v)) => {
                        let mut body = serde_json::to_vec_pretty(&v).unwrap_or_default();
                        body.push(b'\n');
                        let mut r = Response::new(super::full(Bytes::from(body)));
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        r.headers_mut()
                            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                        r
                    }
                    Ok(Err(r)) => plain(r.0, r.1),
                    Err(e) => plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("internal error: {e}"),
                    ),
                }
            }
            _ => plain(
                StatusCode::NOT_FOUND,
                format!(
                    "no route /video/{}; the reference routes are /video/manifest, \
                     /video/seek_to_block?pts_us=N, /video/block/INDEX, /video/range",
                    segs[1..].join("/")
                ),
            ),
        }
    }

    /// The keyframe block at or before `pts` (blocking).
    fn seek_to_block(
        &self,
        dir: Vec<String>,
        pts: u64,
        name: &str,
    ) -> Result<serde_json::Value, Refusal> {
        let fs = &self.fs;
        let err = |e: FsError| refuse(super::fs_status(&e), e.to_string());
        let mut track_dir = fs.root_ino();
        for s in &dir {
            track_dir = fs.lookup(track_dir, s).map_err(err)?.ino;
        }
        let by_pts = fs.lookup(track_dir, "by-pts").map_err(err)?.ino;
        let link = match fs.lookup(by_pts, &pts.to_string()) {
            Ok(a) if a.kind == Kind::Symlink => a,
            Ok(_) | Err(FsError::NotFound) => {
                return Err(refuse(
                    StatusCode::NOT_FOUND,
                    format!("no keyframe at or before {pts} us"),
                ));
            }
            Err(e) => return Err(err(e)),
        };
        let target = fs.readlink(link.ino).map_err(err)?;
        let block_name = target.rsplit('/').next().unwrap_or("").to_string();
        let block_no = decimal(&block_name).ok_or_else(|| {
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("bad link {target}"),
            )
        })?;
        let bdir = fs.lookup(track_dir, "blocks").map_err(err)?.ino;
        let block = fs.lookup(bdir, &block_name).map_err(err)?;
        let x = |k: &str| -> Option<String> {
            match fs.getxattr(block.ino, k, 4096) {
                Ok(XattrReply::Data(v)) => String::from_utf8(v).ok(),
                _ => None,
            }
        };
        let num = |k: &str| x(k).and_then(|v| v.parse::<u64>().ok());
        let url_dir: Vec<String> = dir.iter().map(|s| super::enc(s)).collect();
        Ok(json!({
            "container": name,
            "pts_us": pts,
            "block": block_no,
            "block_pts_us": num("user.h4mk.pts_us"),
            "keyframe": x("user.h4mk.keyframe").as_deref() == Some("1"),
            "offset": num("user.h4mk.offset"),
            "size": block.size,
            "url": format!("/{}/blocks/{block_name}", url_dir.join("/")),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let q = query(Some("container=a%20b&pts_us=5&pts_us=6&flag&x=1+2"));
        assert_eq!(param(&q, "container"), Some("a b"));
        assert_eq!(param(&q, "pts_us"), Some("5"));
        assert_eq!(param(&q, "flag"), Some(""));
        assert_eq!(param(&q, "x"), Some("1 2"));
        assert_eq!(param(&q, "none"), None);
        assert!(query(None).is_empty());
        assert_eq!(decimal("12"), Some(12));
        for bad in ["", "-1", "+1", "1e3", " 1", "99999999999999999999999"] {
            assert_eq!(decimal(bad), None, "{bad}");
        }
    }
}
