//! AWS credentials for doctor's SES API calls, from the standard places.
//!
//! The sources supported, in the AWS CLI's order: the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`), then the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`), profile `AWS_PROFILE` or
//! `default`. Roles, SSO, `credential_process` and instance metadata are not (the fix text says
//! how to export such credentials). Secrets stay in [`Secret`] (masked in `Debug`/`Display`);
//! errors name the source, never a key. A half-set environment is an error, not a fallback to
//! the file (the AWS CLI refuses partial credentials too): a silent fallback would ask SES as
//! another identity than the operator meant.

use crate::secret::Secret;

/// AWS credentials, the secret parts masked.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    /// Where they came from, for messages: `environment` or `~/.aws/credentials [default]`.
    pub source: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put them in \
         {file} under [{profile}] (AWS_PROFILE picks another profile)"
    )]
    Missing { file: String, profile: String },
    #[error("{set} is set but {missing} is not: set both (or neither, to use {file})")]
    Half {
        set: &'static str,
        missing: &'static str,
        file: String,
    },
    #[error("{file}: profile [{profile}] {problem}")]
    Profile {
        file: String,
        profile: String,
        problem: String,
    },
    #[error("cannot read {file}: {reason}")]
    Unreadable { file: String, reason: String },
}

impl Credentials {
    /// Resolves credentials from the process environment and the shared credentials file.
    pub fn from_environment() -> Result<Credentials, CredentialError> {
        Credentials::resolve(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// The resolution, with the environment as a function (tests pass a map).
    pub fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, CredentialError> {
        let file = env("AWS_SHARED_CREDENTIALS_FILE").unwrap_or_else(|| {
            env("HOME").map_or_else(
                || "~/.aws/credentials".to_string(),
                |h| format!("{h}/.aws/credentials"),
            )
        });
        let id = env("AWS_ACCESS_KEY_ID");
        let secret = env("AWS_SECRET_ACCESS_KEY");
        match (id, secret) {
            (Some(id), Some(secret)) => {
                return Ok(Credentials {
                    access_key_id: id,
                    secret_access_key: Secret::new(secret),
                    session_token: env("AWS_SESSION_TOKEN").map(Secret::new),
                    source: "environment".to_string(),
                });
            }
            (Some(_), None) => {
                return Err(CredentialError::Half {
                    set: "AWS_ACCESS_KEY_ID",
                    missing: "AWS_SECRET_ACCESS_KEY",
                    file,
                });
            }
            (None, Some(_)) => {
                return Err(CredentialError::Half {
                    set: "AWS_SECRET_ACCESS_KEY",
                    missing: "AWS_ACCESS_KEY_ID",
                    file,
                });
            }
            (None, None) => {}
        }
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".to_string());
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CredentialError::Missing { file, profile });
            }
            Err(e) => {
                return Err(CredentialError::Unreadable {
                    file,
                    reason: e.to_string(),
                });
            }
        };
        let Some(section) = ini_section(&text, &profile) else {
            return Err(CredentialError::Missing { file, profile });
        };
        let get = |k: &str| {
            section
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let (Some(id), Some(secret)) = (get("aws_access_key_id"), get("aws_secret_access_key"))
        else {
            return Err(CredentialError::Profile {
                file,
                profile,
                problem: "lacks aws_access_key_id or aws_secret_access_key (roles, SSO and \
                          credential_process are not supported here: export the keys, e.g. \
                          `eval $(aws configure export-credentials --format env)`)"
                    .to_string(),
            });
        };
        Ok(Credentials {
            access_key_id: id,
            secret_access_key: Secret::new(secret),
            session_token: get("aws_session_token").map(Secret::new),
            source: format!("{file} [{profile}]"),
        })
    }
}

/// The `key = value` lines of `[name]` in an INI file (`#` and `;` comments).
fn ini_section(text: &str, name: &str) -> Option<Vec<(String, String)>> {
    let mut current: Option<bool> = None;
    let mut found = None::<Vec<(String, String)>>;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let here = header.trim() == name;
            if here && found.is_none() {
                found = Some(Vec::new());
            }
            current = Some(here);
            continue;
        }
        if current == Some(true)
            && let Some((k, v)) = line.split_once('=')
            && let Some(section) = found.as_mut()
        {
            section.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn environment_credentials_win() {
        let c = Credentials::resolve(&env(&[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
            ("AWS_SESSION_TOKEN", "tok"),
        ]))
        .unwrap();
        assert_eq!(c.access_key_id, "AKIDEXAMPLE");
        assert_eq!(c.secret_access_key.expose(), "wJalrXUtnFEMI");
        assert!(!format!("{c:?}").contains("wJalrXUtnFEMI"));
        assert_eq!(c.source, "environment");
    }

    #[test]
    fn half_set_environment_is_an_error() {
        let e = Credentials::resolve(&env(&[("AWS_ACCESS_KEY_ID", "AKID")])).unwrap_err();
        assert!(
            e.to_string().contains("AWS_SECRET_ACCESS_KEY is not"),
            "{e}"
        );
    }

    #[test]
    fn shared_file_profile() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n\
             # comment\n[ops]\naws_access_key_id=AKIDOPS\naws_secret_access_key=s2\n\
             aws_session_token = t2\n[empty]\nregion = eu-west-1\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = Credentials::resolve(&env(&[("AWS_SHARED_CREDENTIALS_FILE", f)])).unwrap();
        assert_eq!(c.access_key_id, "AKIDDEFAULT");
        let c = Credentials::resolve(&env(&[
            ("AWS_SHARED_CREDENTIALS_FILE", f),
            ("AWS_PROFILE", "ops"),
        ]))
        .unwrap();
        assert_eq!(c.access_key_id, "AKIDOPS");
        assert_eq!(c.session_token.unwrap().expose(), "t2");
        assert!(c.source.ends_with("[ops]"));
        let e = Credentials::resolve(&env(&[
            ("AWS_SHARED_CREDENTIALS_FILE", f),
            ("AWS_PROFILE", "empty"),
        ]))
        .unwrap_err();
        assert!(matches!(e, CredentialError::Profile { .. }), "{e}");
        let e = Credentials::resolve(&env(&[
            ("AWS_SHARED_CREDENTIALS_FILE", f),
            ("AWS_PROFILE", "nope"),
        ]))
        .unwrap_err();
        assert!(matches!(e, CredentialError::Missing { .. }), "{e}");
    }

    #[test]
    fn no_credentials_anywhere() {
        let e = Credentials::resolve(&env(&[("HOME", "/nonexistent-h9")])).unwrap_err();
        assert_eq!(
            e,
            CredentialError::Missing {
                file: "/nonexistent-h9/.aws/credentials".into(),
                profile: "default".into()
            }
        );
    }
}
