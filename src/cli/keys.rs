//! `h4fs keygen`, and the `--key-file` / `--shared-secret-file` options of the commands
//! that read containers.
//!
//! Keys are only ever read from files (never from the command line, so they do not
//! show up in process titles or shell history); loading one turns core dumps off.

use crate::crypto::{self, MasterKey, SharedSecret};
use crate::output::{Output, OutputOptions};
use crate::reader::{Archive, Layout};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Write a new random 256-bit master key (64 hex digits and a newline, mode 0600).
/// Refuses to overwrite an existing file.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  h4fs keygen -o media.key
  h4fs pack movie.mp4 --index movie.csv --encrypt --key-file media.key -o movie.h4mk
  H4FS_KEY_FILE=media.key h4fs extract movie.h4mk -o movie.mp4")]
pub struct KeygenArgs {
    /// Where to write the key (must not exist).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

pub fn run_keygen(args: KeygenArgs) -> anyhow::Result<u8> {
    let key = crypto::keygen(&args.output)?;
    eprintln!(
        "wrote a new key to {} (mode 0600, key id {}); keep a copy: without it the \
         containers it encrypts cannot be read",
        args.output.display(),
        crypto::container::key_id_hex(&key)
    );
    Ok(0)
}

/// Rotate the key of an encrypted container: re-wrap its data key under a new master
/// key. Blocks, index and metadata are not touched; only HENC, the root and VERI change.
/// The result replaces FILE (or goes to -o OUT) only once it opens with the new key.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  h4fs keygen -o new.key
  h4fs rekey movie.h4mk --key-file old.key --new-key-file new.key
  h4fs rekey movie.h4mk --key-file old.key --new-key-file new.key -o movie.rekeyed.h4mk")]
pub struct RekeyArgs {
    /// The encrypted h4fs container.
    pub file: PathBuf,
    /// The current master key (default: $H4FS_KEY_FILE).
    #[arg(long, value_name = "FILE", env = "H4FS_KEY_FILE")]
    pub key_file: PathBuf,
    /// The new master key.
    #[arg(long, value_name = "FILE")]
    pub new_key_file: PathBuf,
    /// Write the re-keyed container here instead of replacing FILE (an existing file
    /// only with --force; never FILE itself or a key file).
    #[arg(short, long, value_name = "OUT.h4mk")]
    pub output: Option<PathBuf>,
    /// With -o: replace an existing file.
    #[arg(long, requires = "output")]
    pub force: bool,
}

pub fn run_rekey(args: RekeyArgs) -> anyhow::Result<u8> {
    let old = load_key(&args.key_file)?;
    let new = load_key(&args.new_key_file)?;
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?
        .mode()
        & 0o7777;
    let keys = vec![args.key_file.clone(), args.new_key_file.clone()];
    // Without -o the point is to replace FILE; with -o, FILE is an input like the keys.
    let (out, opts) = match &args.output {
        None => (
            &args.file,
            OutputOptions {
                force: true,
                inputs: keys,
                ..OutputOptions::default()
            },
        ),
        Some(o) => (
            o,
            OutputOptions {
                force: args.force,
                inputs: keys.into_iter().chain([args.file.clone()]).collect(),
                ..OutputOptions::default()
            },
        ),
    };
    let output = Output::create(
        out,
        &OutputOptions {
            mode,
            regular_only: true,
            ..opts
        },
    )?;
    let s = crate::rekey::rekey(&args.file, &old, &new, output)
        .with_context(|| format!("cannot re-key {}", args.file.display()))?;
    eprintln!(
        "re-keyed {}: key id {} -> {}, root {}",
        out.display(),
        s.old_key_id,
        s.new_key_id,
        hex::encode(s.root)
    );
    Ok(0)
}

/// Keys for reading encrypted containers.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KeyArgs {
    /// Master key file of an encrypted h4fs container (64 hex digits or 32 raw bytes).
    #[arg(long, value_name = "FILE", env = "H4FS_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Shared secret of a file encrypted by the reference (Living Cipher v3): 32 raw
    /// bytes or 64 hex digits.
    #[arg(long, value_name = "FILE")]
    pub shared_secret_file: Option<PathBuf>,
}

impl KeyArgs {
    /// The key files given, to keep an output from replacing one of them.
    pub fn files(&self) -> impl Iterator<Item = PathBuf> + use<> {
        [self.key_file.clone(), self.shared_secret_file.clone()]
            .into_iter()
            .flatten()
    }
}

fn warn(w: String) {
    eprintln!("h4fs: {w}");
}

/// Load the master key at `path`, warning about loose permissions, and keep it out of
/// core dumps.
pub fn load_key(path: &Path) -> anyhow::Result<MasterKey> {
    let key = MasterKey::load(path, &mut warn)?;
    crypto::disable_core_dumps();
    Ok(key)
}

impl KeyArgs {
    /// Attach whatever key the container needs and the user gave. An unencrypted
    /// container ignores keys (so `H4FS_KEY_FILE` can stay set); an encrypted one without
    /// its key stays locked (metadata readable, blocks refused). A wrong key is an error.
    pub fn apply(&self, a: &mut Archive) -> anyhow::Result<()> {
        let Some(enc) = &a.encryption else {
            // A key named on the command line for a plain container is refused: an
            // attacker who strips the encryption records and recomputes every unkeyed
            // hash would otherwise have ciphertext served as plaintext. A key from
            // H4FS_KEY_FILE, which may well stay set, only earns a note.
            let from_env = self.key_file.as_deref().map(|p| p.as_os_str())
                == std::env::var_os("H4FS_KEY_FILE").as_deref();
            if (self.key_file.is_some() && !from_env) || self.shared_secret_file.is_some() {
                anyhow::bail!(
                    "{} is not encrypted, although a key was given: refusing to read it as \
                     plain data (if you expected it to be encrypted, it may have been \
                     replaced or stripped of its encryption); run without the key to read \
                     it as an unencrypted container",
                    a.name()
                );
            }
            if self.key_file.is_some() {
                warn(format!(
                    "note: {} is not encrypted; the key from H4FS_KEY_FILE is not used",
                    a.name()
                ));
            }
            return Ok(());
        };
        let name = a.name();
        match a.layout {
            Layout::H4fs => {
                if let Some(p) = &self.key_file {
                    let key = load_key(p)?;
                    a.attach_key(&key).with_context(|| {
                        format!("cannot decrypt {name} with key file {}", p.display())
                    })?;
                } else if self.shared_secret_file.is_some() {
                    anyhow::bail!(
                        "{name} is an h4fs encrypted container: it takes --key-file, not \
                         --shared-secret-file"
                    );
                }
            }
            Layout::ReferenceA if enc.cipher == crypto::living::CIPHER => {
                if let Some(p) = &self.shared_secret_file {
                    let ss = SharedSecret::load(p, &mut warn)?;
                    crypto::disable_core_dumps();
                    a.attach_shared_secret(&ss).with_context(|| {
                        format!(
                            "cannot decrypt {name} with shared secret file {}",
                            p.display()
                        )
                    })?;
                    if ss.is_reference_default() {
                        warn_default(&name);
                    }
                } else if opens_with_default(a) {
                    warn(format!(
                        "note: {name} is encrypted with the reference's public default secret \
                         (anyone can decrypt it); to read it, pass --shared-secret-file with a \
                         file holding {}",
                        hex::encode(SharedSecret::reference_default().expose())
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether block 0 authenticates under the reference's public default secret.
fn opens_with_default(a: &Archive) -> bool {
    let Ok(e) = a.entry(0, 0) else {
        return false;
    };
    let Ok(stored) = a.read_stored_entry(&e) else {
        return false;
    };
    crypto::LivingCipher::new(&SharedSecret::reference_default())
        .decrypt_block(0, e.chunk_offset, &stored)
        .is_ok()
}

impl KeyArgs {
    /// Load the keys given (once) and return a hook that attaches them to every
    /// container opened later (a mount of a directory of containers): the master key to
    /// h4fs-encrypted ones, the shared secret to reference ones; others are untouched.
    /// A wrong key is an error for that container.
    pub fn attacher(&self) -> anyhow::Result<impl Fn(&mut Archive) -> crate::Result<()> + use<>> {
        let key = self.key_file.as_deref().map(load_key).transpose()?;
        let secret = match &self.shared_secret_file {
            Some(p) => {
                let ss = SharedSecret::load(p, &mut warn)?;
                crypto::disable_core_dumps();
                Some(ss)
            }
            None => None,
        };
        Ok(move |a: &mut Archive| -> crate::Result<()> {
            let Some(enc) = &a.encryption else {
                return Ok(());
            };
            match a.layout {
                Layout::H4fs => {
                    if let Some(k) = &key {
                        a.attach_key(k)?;
                    }
                }
                Layout::ReferenceA if enc.cipher == crypto::living::CIPHER => {
                    if let Some(ss) = &secret {
                        a.attach_shared_secret(ss)?;
                        if ss.is_reference_default() {
                            warn_default(&a.name());
                        }
                    }
                }
                _ => {}
            }
            Ok(())
        })
    }
}

fn warn_default(name: &str) {
    warn(format!(
        "warning: {name} is encrypted with the reference's public default secret \
         (sha256 of \"Harmony4_default_shared_secret\"): anyone can decrypt it; it was \
         never confidential"
    ));
}
