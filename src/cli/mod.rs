//! The subcommands, thin: parse what the user gave, call the library, print, exit.
//! `anyhow` lives here and in `main`, nowhere deeper.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, Diagnostic, Severity};

pub mod serve;

pub use serve::serve;

/// Logs go to stderr; `RUST_LOG` refines the level (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

pub(crate) fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
}

/// `dkim-relay check`.
pub fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(snapshot) => {
            print_diagnostics(&snapshot.warnings);
            print!("{}", snapshot.describe());
            eprintln!(
                "{}: configuration is valid ({} domain(s), {} warning(s))",
                path.display(),
                snapshot.domains.len(),
                snapshot.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            print_diagnostics(&diags);
            let errors = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            eprintln!(
                "{}: {errors} error(s); configuration refused",
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// `dkim-relay smtp-password --region R`: secret on stdin, password on stdout.
pub fn smtp_password(region: &str) -> ExitCode {
    let valid_region = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_region {
        eprintln!("error: --region: `{region}` is not an AWS region name (e.g. us-east-1)");
        return ExitCode::from(2);
    }
    let mut secret = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut secret) {
        eprintln!("error: cannot read the secret access key from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let secret = secret.trim();
    if secret.is_empty() {
        eprintln!(
            "error: no secret access key on stdin (pipe it in: `dkim-relay smtp-password --region us-east-1 < secret.txt`)"
        );
        return ExitCode::FAILURE;
    }
    println!("{}", crate::sesauth::smtp_password_v4(secret, region));
    ExitCode::SUCCESS
}

pub fn keygen(
    _domain: &str,
    _selector: &str,
    _algorithm: &str,
    _bits: u32,
    _dir: &Path,
) -> ExitCode {
    eprintln!("keygen: not yet available");
    ExitCode::FAILURE
}

pub fn dns(_config: &Path, _format: &str) -> ExitCode {
    eprintln!("dns: not yet available");
    ExitCode::FAILURE
}

pub fn ses_sim(_config: &Path) -> ExitCode {
    eprintln!("ses-sim: not yet available");
    ExitCode::FAILURE
}

pub fn outbox_list(_dir: &Path, _json: bool) -> ExitCode {
    eprintln!("outbox: not yet available");
    ExitCode::FAILURE
}

pub fn outbox_show(_dir: &Path, _id: &str, _json: bool) -> ExitCode {
    eprintln!("outbox: not yet available");
    ExitCode::FAILURE
}
