//! The one parser for byte sizes on the command line (`pack --block-size`,
//! `mount --cache-size` and `-o cache_size=`).

/// Parse a byte size: a number with an optional K, M, G or T suffix, powers of 1024
/// ("64K", "64k", "64KB" and "64KiB" are the same size; "B" or nothing means bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "\"{s}\" is not a size (expected e.g. 4096, 64K, 512M, 2G)"
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("\"{s}\": number too large"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "\"{s}\": unknown size suffix \"{other}\" (use K, M, G or T)"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("\"{s}\" is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size(" 64 kb "), Ok(64 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1tb"), Ok(1 << 40));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("7b"), Ok(7));
    }

    #[test]
    fn bad_sizes_say_why() {
        for (s, want) in [
            ("", "is not a size"),
            ("M", "is not a size"),
            ("-1", "is not a size"),
            ("12Q", "unknown size suffix \"q\""),
            ("1.5M", "unknown size suffix \".5m\""),
            ("99999999999999999999", "number too large"),
            ("99999999999T", "is too large"),
            ("16777216T", "is too large"),
        ] {
            let e = parse_size(s).unwrap_err();
            assert!(e.contains(want), "{s:?}: {e}");
            assert!(e.contains(&format!("\"{s}\"")), "{s:?} is quoted in: {e}");
        }
    }
}
