//! Key material: the h4fs master key, the reference's shared secret, and their files.
//!
//! Both are 32 secret bytes held in types that zeroize their memory on drop and whose
//! `Debug` prints nothing secret. A key file is either
//!
//! * text: exactly 64 hexadecimal digits (either case), optionally followed by one
//!   newline (`\n` or `\r\n`); this is what [`keygen`] writes, or
//! * raw: exactly 32 bytes.
//!
//! The two are told apart by length alone (32 bytes versus 64-66), so no file can be
//! read both ways. Errors about a malformed file give its length and the offset of the
//! first bad byte, never the bytes themselves.

use crate::error::{Error, Result};
use aes_gcm::aead::rand_core::RngCore;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use zeroize::{Zeroize, Zeroizing};

/// Length of every key this module handles.
pub const KEY_LEN: usize = 32;

/// The largest file looked at: anything longer cannot be a key file.
const MAX_KEY_FILE: u64 = 4096;

/// 32 secret bytes, zeroized on drop.
#[derive(Clone)]
struct Secret32([u8; KEY_LEN]);

impl Drop for Secret32 {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The h4fs master key: 256 bits from which every per-container key is derived.
///
/// Zeroized on drop; `Debug` prints only a fingerprint that cannot be inverted.
#[derive(Clone)]
pub struct MasterKey(Secret32);

impl MasterKey {
    /// Wrap 32 bytes (the caller should zeroize its own copy).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        MasterKey(Secret32(bytes))
    }

    /// A new key from the operating system's random number generator.
    pub fn generate() -> MasterKey {
        let mut k = [0u8; KEY_LEN];
        aes_gcm::aead::OsRng.fill_bytes(&mut k);
        let key = MasterKey::from_bytes(k);
        k.zeroize();
        key
    }

    /// The secret bytes. Use only to derive keys.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0.0
    }

    /// Read a key file (see the module docs for the accepted forms). `warn` receives a
    /// message when the file is readable or writable by group or others.
    pub fn load(path: &Path, warn: &mut dyn FnMut(String)) -> Result<MasterKey> {
        load_secret(path, "key", warn).map(MasterKey)
    }
}

/// Length of the public key identifier.
pub const KEY_ID_LEN: usize = 8;

const MASTER_SALT: &[u8] = b"h4fs/v1/master";
const KEY_ID_LABEL: &[u8] = b"h4fs/v1/key-id";

impl MasterKey {
    /// HKDF-SHA256 extracted from the key: every container key, and the key's id, are
    /// expanded from it (see [`super::container`]).
    pub(super) fn prk(&self) -> Hkdf<Sha256> {
        Hkdf::<Sha256>::new(Some(MASTER_SALT), self.expose())
    }

    /// The public identifier of the key, as lowercase hex (16 digits): recorded in HENC,
    /// so a wrong key is named before any block is read.
    pub fn id_hex(&self) -> String {
        hex::encode(key_id(&self.prk()))
    }
}

/// The key id expanded from a master key's [`MasterKey::prk`].
pub(super) fn key_id(prk: &Hkdf<Sha256>) -> [u8; KEY_ID_LEN] {
    let mut out = [0u8; KEY_ID_LEN];
    prk.expand(KEY_ID_LABEL, &mut out)
        .expect("HKDF-SHA256 can expand up to 8160 bytes");
    out
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id {})", self.id_hex())
    }
}

/// The 32-byte shared secret of the reference's Living Cipher v3.
///
/// Zeroized on drop; `Debug` says only whether it is the public default.
#[derive(Clone)]
pub struct SharedSecret(Secret32);

impl SharedSecret {
    /// Wrap 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> SharedSecret {
        SharedSecret(Secret32(bytes))
    }

    /// The secret the reference's export uses when none is given:
    /// `sha256(b"Harmony4_default_shared_secret")`. It is public, so files encrypted
    /// with it are not confidential.
    pub fn reference_default() -> SharedSecret {
        SharedSecret::from_bytes(Sha256::digest(b"Harmony4_default_shared_secret").into())
    }

    /// True when this is the reference's public default secret (callers should warn).
    pub fn is_reference_default(&self) -> bool {
        let d = SharedSecret::reference_default();
        // Not secret-dependent timing worth guarding: the default is public, but compare
        // without early exit anyway.
        d.expose()
            .iter()
            .zip(self.expose())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// The secret bytes. Use only to derive keys.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0.0
    }

    /// Read a shared-secret file: 32 raw bytes or 64 hex digits (and a newline).
    pub fn load(path: &Path, warn: &mut dyn FnMut(String)) -> Result<SharedSecret> {
        load_secret(path, "shared secret", warn).map(SharedSecret)
    }
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_reference_default() {
            f.write_str("SharedSecret(the reference's public default)")
        } else {
            f.write_str("SharedSecret(..)")
        }
    }
}

fn key_file_error(path: &Path, msg: impl Into<String>) -> Error {
    Error::KeyFile {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Parse the contents of a key file. `what` names the kind of secret for messages.
fn parse_secret(bytes: &[u8], path: &Path, what: &str) -> Result<Secret32> {
    if bytes.len() == KEY_LEN {
        let mut k = [0u8; KEY_LEN];
        k.copy_from_slice(bytes);
        let s = Secret32(k);
        k.zeroize();
        return Ok(s);
    }
    let text = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes);
    if text.len() != 2 * KEY_LEN {
        return Err(key_file_error(
            path,
            format!(
                "{} bytes is not a {what}: expected 64 hexadecimal digits (optionally \
                 followed by a newline) or exactly 32 raw bytes",
                bytes.len()
            ),
        ));
    }
    if let Some(bad) = text.iter().position(|b| !b.is_ascii_hexdigit()) {
        return Err(key_file_error(
            path,
            format!(
                "byte {bad} is not a hexadecimal digit: expected 64 hexadecimal digits \
                 (optionally followed by a newline) or exactly 32 raw bytes"
            ),
        ));
    }
    let mut k = [0u8; KEY_LEN];
    hex::decode_to_slice(text, &mut k).map_err(|_| key_file_error(path, "invalid hexadecimal"))?;
    let s = Secret32(k);
    k.zeroize();
    Ok(s)
}

fn load_secret(path: &Path, what: &str, warn: &mut dyn FnMut(String)) -> Result<Secret32> {
    let io = |action: &str, e: std::io::Error| key_file_error(path, format!("{action}: {e}"));
    let (mut f, md) = crate::input::open_file(path).map_err(|e| io("cannot open", e))?;
    if !md.is_file() {
        return Err(key_file_error(path, "not a regular file"));
    }
    if md.len() > MAX_KEY_FILE {
        return Err(key_file_error(
            path,
            format!(
                "{} bytes is far too long for a {what} (64 hexadecimal digits or 32 raw bytes)",
                md.len()
            ),
        ));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = md.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        warn(format!(
            "warning: {what} file {} is accessible by group or others (mode {mode:04o}); \
             restrict it with chmod 600",
            path.display()
        ));
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE as usize + 1));
    Read::by_ref(&mut f)
        .take(MAX_KEY_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io("cannot read", e))?;
    parse_secret(&buf, path, what)
}

/// Write a new random master key to `path` as 64 hex digits and a newline, with mode
/// 0600 (less the umask), through [`crate::output`]: refuses to overwrite an existing
/// file (of any kind, including a symbolic link), and a file appears only complete.
pub fn keygen(path: &Path) -> Result<MasterKey> {
    use crate::output::{Output, OutputOptions};
    let key = MasterKey::generate();
    let mut out = Output::create(
        path,
        &OutputOptions {
            force_flag: false,
            mode: 0o600,
            regular_only: true,
            ..OutputOptions::default()
        },
    )?;
    let mut text = Zeroizing::new(vec![0u8; 2 * KEY_LEN + 1]);
    hex::encode_to_slice(key.expose(), &mut text[..2 * KEY_LEN]).expect("64 hex digits fit");
    text[2 * KEY_LEN] = b'\n';
    out.write_all(&text)
        .map_err(|e| key_file_error(path, format!("cannot write: {e}")))?;
    out.commit()?;
    Ok(key)
}

/// Best effort to keep key material out of core dumps: sets this process's core-file
/// size limit to zero. Call once a key has been loaded. Returns whether it succeeded.
pub fn disable_core_dumps() -> bool {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads one properly initialised struct; no memory is retained.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn no_warn() -> impl FnMut(String) {
        |w| panic!("unexpected warning: {w}")
    }

    #[test]
    fn keygen_writes_hex_0600_and_refuses_to_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        let k = keygen(&p).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read(&p).unwrap();
        assert_eq!(text.len(), 65);
        assert_eq!(text[64], b'\n');
        let back = MasterKey::load(&p, &mut no_warn()).unwrap();
        assert_eq!(back.expose(), k.expose());
        let err = keygen(&p).unwrap_err().to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), text, "existing key untouched");
        // Two keys differ.
        let k2 = keygen(&d.path().join("k2")).unwrap();
        assert_ne!(k.expose(), k2.expose());
    }

    #[test]
    fn accepts_raw_hex_upper_and_crlf() {
        let d = tempfile::tempdir().unwrap();
        let raw: [u8; 32] = std::array::from_fn(|i| (i * 7 + 1) as u8);
        let hexs = hex::encode(raw);
        for (name, bytes) in [
            ("raw", raw.to_vec()),
            ("hex", hexs.clone().into_bytes()),
            ("hexnl", format!("{hexs}\n").into_bytes()),
            ("upper", format!("{}\r\n", hexs.to_uppercase()).into_bytes()),
        ] {
            let p = write(d.path(), name, &bytes, 0o600);
            assert_eq!(
                MasterKey::load(&p, &mut no_warn()).unwrap().expose(),
                &raw,
                "{name}"
            );
            assert_eq!(
                SharedSecret::load(&p, &mut no_warn()).unwrap().expose(),
                &raw
            );
        }
    }

    #[test]
    fn malformed_files_are_rejected_without_echoing_bytes() {
        let d = tempfile::tempdir().unwrap();
        let secretish = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-z";
        assert_eq!(secretish.len(), 64);
        for (name, bytes, want) in [
            ("short", b"abcd\n".to_vec(), "5 bytes is not a key"),
            (
                "nonhex",
                secretish.as_bytes().to_vec(),
                "byte 0 is not a hexadecimal digit",
            ),
            ("empty", Vec::new(), "0 bytes"),
            ("long", vec![b'a'; 5000], "far too long"),
            (
                "twonl",
                format!("{}\n\n", "a".repeat(64)).into_bytes(),
                "66 bytes",
            ),
        ] {
            let p = write(d.path(), name, &bytes, 0o600);
            let err = MasterKey::load(&p, &mut no_warn()).unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
            assert!(err.contains(&p.display().to_string()), "{err}");
            assert!(!err.contains("s3cr3t"), "{err}");
        }
        let err = MasterKey::load(&d.path().join("missing"), &mut no_warn()).unwrap_err();
        assert!(matches!(err, Error::KeyFile { .. }));
        let err = MasterKey::load(d.path(), &mut no_warn())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn group_readable_file_warns() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "k", &[5u8; 32], 0o640);
        let mut warnings = Vec::new();
        MasterKey::load(&p, &mut |w| warnings.push(w)).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("0640") && warnings[0].contains("chmod 600"));
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let k = MasterKey::from_bytes([0xab; 32]);
        let s = format!("{k:?}");
        assert!(!s.contains("abab") && !s.contains("171"), "{s}");
        let ss = SharedSecret::from_bytes([0xcd; 32]);
        assert_eq!(format!("{ss:?}"), "SharedSecret(..)");
        assert!(SharedSecret::reference_default().is_reference_default());
        assert!(!ss.is_reference_default());
        assert_eq!(
            hex::encode(SharedSecret::reference_default().expose()),
            "1154c312078cf50cee166c9b2479c949dc4ebbc7e3668ce549aa45bb34cf629c"
        );
    }
}
