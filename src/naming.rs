//! Names a container records about its source: the file names of a directory pack
//! (META `"names"`) and the source's extension (from META `"source"."name"`), and the
//! rules that make them safe to show as file names in a mount.
//!
//! Names come from META, which a hostile container controls, so nothing here trusts
//! them: a name is shown only when [`valid_name`] accepts it and no earlier block has
//! the same name; the others are left out (the block keeps its number).

use crate::reader::{Archive, Layout};

/// Longest name in bytes (the usual `NAME_MAX`).
pub const MAX_NAME: usize = 255;

/// Whether `name` can be a single file name in a mount and a CSV field: not empty, not
/// `.` or `..`, at most [`MAX_NAME`] bytes, no `/`, no NUL and no control characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= MAX_NAME
        && !name.chars().any(|c| c == '/' || c.is_control())
}

/// The recorded name of each block of a directory pack (track 0), `None` for a block
/// whose name is missing, invalid or a duplicate of an earlier one. `None` when the
/// container records no names, has more than one track, or records a list whose length
/// is not the block count.
pub fn block_names(a: &Archive) -> Option<Vec<Option<String>>> {
    if a.layout == Layout::MultitrackC || a.tracks.len() != 1 {
        return None;
    }
    let list = a.meta.as_ref()?.value.get("names")?.as_array()?;
    if list.len() as u64 != a.tracks[0].blocks.len() {
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    Some(
        list.iter()
            .map(|v| {
                let n = v.as_str().filter(|n| valid_name(n))?;
                seen.insert(n).then(|| n.to_string())
            })
            .collect(),
    )
}

/// The extension of the packed source file (`mp4` for `movie.mp4`), when it is a plain
/// one (1 to 10 ASCII letters and digits) and the container is a single-track pack of
/// one file (not a directory pack).
pub fn stream_extension(a: &Archive) -> Option<String> {
    if a.layout == Layout::MultitrackC || a.tracks.len() != 1 {
        return None;
    }
    let meta = &a.meta.as_ref()?.value;
    if meta.get("names").is_some() {
        return None;
    }
    let name = meta.get("source")?.get("name")?.as_str()?;
    let (stem, ext) = name.rsplit_once('.')?;
    let plain = !stem.is_empty()
        && (1..=10).contains(&ext.len())
        && ext.bytes().all(|b| b.is_ascii_alphanumeric());
    plain.then(|| ext.to_string())
}

/// The MIME type for a file extension (case-insensitive); `application/octet-stream`
/// for one not known.
pub fn mime_type(ext: &str) -> &'static str {
    match ext.to_ascii_lowercase().as_str() {
        "mp4" | "m4v" => "video/mp4",
        "m4a" => "audio/mp4",
        "mov" => "video/quicktime",
        "mkv" => "video/x-matroska",
        "mka" => "audio/x-matroska",
        "webm" => "video/webm",
        "ts" | "m2ts" | "mts" => "video/mp2t",
        "mpg" | "mpeg" => "video/mpeg",
        "avi" => "video/x-msvideo",
        "flv" => "video/x-flv",
        "ogv" => "video/ogg",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "h264" | "264" => "video/h264",
        "h265" | "hevc" | "265" => "video/h265",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_not_valid() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/etc",
            "nul\0byte",
            "new\nline",
            "tab\tname",
            "esc\x1b[2J",
            &"x".repeat(256),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in ["f0001.jpg", "...", "a,b \"c\"", "é.png", &"x".repeat(255)] {
            assert!(valid_name(good), "{good:?}");
        }
    }

    #[test]
    fn mime_types() {
        assert_eq!(mime_type("mp4"), "video/mp4");
        assert_eq!(mime_type("MKV"), "video/x-matroska");
        assert_eq!(mime_type("ts"), "video/mp2t");
        assert_eq!(mime_type("bin"), "application/octet-stream");
    }
}
