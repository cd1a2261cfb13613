//! AWS shared profiles (`~/.aws/credentials`, `~/.aws/config`), which `object_store`
//! does not read: the small subset h4fs needs, read as the AWS CLI reads it.
//!
//! The profile is `AWS_PROFILE` (else `default`). Keys come from the credentials file's
//! `[NAME]` section, then from the config file's `[profile NAME]` (`[default]` for the
//! default profile); the region and endpoint from the config file. The files are
//! `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` when set. Nothing here is ever
//! printed: [`Profile`]'s `Debug` hides the secret and the token.

use std::collections::HashMap;
use std::path::PathBuf;

/// What a profile gives.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Profile {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<hidden>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<hidden>"),
            )
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .finish()
    }
}

/// Sections of an INI file: name -> key -> value. Keys are lower-cased; `#` and `;`
/// start comments; lines that are not `key = value` are ignored.
fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            out.entry(name.clone()).or_default();
            section = Some(name);
            continue;
        }
        if let (Some(s), Some((k, v))) = (&section, line.split_once('=')) {
            out.entry(s.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

/// The profile `name` from the texts of the credentials and config files.
pub fn from_texts(name: &str, credentials: &str, config: &str) -> Profile {
    let creds = parse_ini(credentials);
    let conf = parse_ini(config);
    let conf_section = if name == "default" {
        conf.get("default").or_else(|| conf.get("profile default"))
    } else {
        conf.get(&format!("profile {name}"))
    };
    let get = |key: &str| {
        creds
            .get(name)
            .and_then(|s| s.get(key))
            .or_else(|| conf_section.and_then(|s| s.get(key)))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    Profile {
        access_key_id: get("aws_access_key_id"),
        secret_access_key: get("aws_secret_access_key"),
        session_token: get("aws_session_token"),
        region: conf_section
            .and_then(|s| s.get("region"))
            .filter(|v| !v.is_empty())
            .cloned(),
        endpoint_url: conf_section
            .and_then(|s| s.get("endpoint_url"))
            .filter(|v| !v.is_empty())
            .cloned(),
    }
}

/// The profile named by `AWS_PROFILE` (else `default`) from the files the environment
/// names (else `~/.aws/credentials` and `~/.aws/config`). Missing files give an empty
/// profile; `Err` when `AWS_PROFILE` names a profile that neither file has.
pub fn from_env() -> std::result::Result<Profile, String> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
    };
    let read = |p: Option<PathBuf>| {
        p.and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let credentials = read(file("AWS_SHARED_CREDENTIALS_FILE", "credentials"));
    let config = read(file("AWS_CONFIG_FILE", "config"));
    match std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()) {
        Some(name) => {
            let known = parse_ini(&credentials).contains_key(&name)
                || parse_ini(&config).contains_key(&format!("profile {name}"))
                || (name == "default" && parse_ini(&config).contains_key("default"));
            if !known {
                return Err(format!(
                    "AWS_PROFILE names the profile \"{name}\", which neither the AWS \
                     credentials file nor the config file has"
                ));
            }
            Ok(from_texts(&name, &credentials, &config))
        }
        None => Ok(from_texts("default", &credentials, &config)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDS: &str = "
# a comment
[default]
aws_access_key_id = AKDEFAULT
aws_secret_access_key = sdefault

[media]
aws_access_key_id=AKMEDIA
aws_secret_access_key=smedia
aws_session_token = tmedia
";
    const CONFIG: &str = "
[default]
region = eu-west-1

[profile media]
region = us-west-2
endpoint_url = http://127.0.0.1:9000
; another comment
[profile only-config]
aws_access_key_id = AKCONF
aws_secret_access_key = sconf
";

    #[test]
    fn reads_profiles_as_the_aws_cli() {
        let d = from_texts("default", CREDS, CONFIG);
        assert_eq!(d.access_key_id.as_deref(), Some("AKDEFAULT"));
        assert_eq!(d.secret_access_key.as_deref(), Some("sdefault"));
        assert_eq!(d.region.as_deref(), Some("eu-west-1"));
        assert_eq!(d.session_token, None);
        let m = from_texts("media", CREDS, CONFIG);
        assert_eq!(m.access_key_id.as_deref(), Some("AKMEDIA"));
        assert_eq!(m.session_token.as_deref(), Some("tmedia"));
        assert_eq!(m.region.as_deref(), Some("us-west-2"));
        assert_eq!(m.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        // Keys in the config file count too.
        let c = from_texts("only-config", CREDS, CONFIG);
        assert_eq!(c.access_key_id.as_deref(), Some("AKCONF"));
        assert_eq!(from_texts("none", CREDS, CONFIG), Profile::default());
    }

    #[test]
    fn debug_hides_secrets() {
        let m = from_texts("media", CREDS, CONFIG);
        let d = format!("{m:?}");
        assert!(d.contains("AKMEDIA"), "{d}");
        assert!(!d.contains("smedia") && !d.contains("tmedia"), "{d}");
    }
}
