//! The subcommands, thin: parse what the user gave, call the library, print, exit.
//! `anyhow` lives here and in `main`, nowhere deeper.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, Diagnostic, Severity};

/// `print!` for the subcommands, through [`write_stdout`]: a closed stdout ends the process
/// quietly instead of panicking.
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::write_stdout(format_args!($($t)*), false) };
}

/// `println!` for the subcommands, through [`write_stdout`].
macro_rules! outln {
    () => { $crate::cli::write_stdout(format_args!(""), true) };
    ($($t:tt)*) => { $crate::cli::write_stdout(format_args!($($t)*), true) };
}

/// The exit status of a command whose output was closed under it (`dkim-relay dns | head`):
/// 128 + SIGPIPE, what a shell reports for a tool killed by the signal.
pub const CLOSED_STDOUT_STATUS: i32 = 141;

/// Writes to stdout (and flushes). `println!` panics when stdout is a pipe whose reader has
/// gone (Rust ignores SIGPIPE, so the write fails with `EPIPE`); here that ends the process
/// at once, quietly, with [`CLOSED_STDOUT_STATUS`] — the reader wanted no more. Any other
/// write error is reported on stderr, exit status 1.
pub fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| o.flush());
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(CLOSED_STDOUT_STATUS)
        }
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(1)
        }
    }
}

pub mod dmarc_report;
pub mod doctor_ses;
pub mod health;
pub mod logging;
pub mod outbox;
pub mod queue;
pub mod serve;

pub use serve::{serve, ses_sim};

/// Logs go to stderr as text; `RUST_LOG` refines the level (default `info`). `serve` sets
/// them up itself, once it has read `log_format` ([`logging`]).
pub fn init_logging() {
    logging::init(config::LogFormat::Text);
}

/// The multi-threaded tokio runtime the long-running commands use.
pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

pub(crate) fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
}

/// A small runtime for the commands that query DNS.
fn small_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// `require_published` as at first start: every active selector of a domain that requires
/// publication must be live in DNS. `nameserver` overrides `[dns] nameserver`.
fn enforce_published(
    snapshot: &mut config::Snapshot,
    nameserver: Option<std::net::SocketAddr>,
) -> Result<(), Vec<Diagnostic>> {
    if !config::rotation::needed(snapshot) {
        return Ok(());
    }
    let error = |message: String| Diagnostic {
        severity: Severity::Error,
        file: snapshot.source.clone(),
        line: None,
        key: "dns".into(),
        message,
    };
    let rt = small_runtime().map_err(|_| vec![error("cannot start the async runtime".into())])?;
    let lookup = crate::dns::lookup::HickoryLookup::with(
        nameserver.or(snapshot.dns.nameserver),
        snapshot.dns.timeout,
    )
    .map_err(|e| vec![error(format!("require_published needs DNS: {e}"))])?;
    rt.block_on(config::rotation::enforce(None, snapshot, &lookup))
        .map(|_| ())
}

/// `dkim-relay check`: the validation `serve` and a reload do, including `require_published`
/// (looked up in DNS), without touching a running relay.
pub fn check(path: &Path) -> ExitCode {
    let loaded = config::load(path).and_then(|mut s| enforce_published(&mut s, None).map(|_| s));
    match loaded {
        Ok(snapshot) => {
            print_diagnostics(&snapshot.warnings);
            out!("{}", snapshot.describe());
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

/// `dkim-relay doctor`: looks every record the configuration needs up in live DNS and prints
/// one PASS/WARN/FAIL line per check. Exit 1 on any FAIL, 2 when the configuration is invalid.
pub fn doctor(path: &Path, nameserver: Option<std::net::SocketAddr>) -> ExitCode {
    doctor_with(path, nameserver, None)
}

/// `dkim-relay doctor [--ses [--ses-endpoint URL] [--ses-ca-file PEM]]`: the DNS checks, then
/// the SES API's ([`doctor_ses`]) when `ses` is given.
pub fn doctor_with(
    path: &Path,
    nameserver: Option<std::net::SocketAddr>,
    ses: Option<&doctor_ses::SesRequest>,
) -> ExitCode {
    let snapshot = match config::load(path) {
        Ok(s) => s,
        Err(diags) => {
            print_diagnostics(&diags);
            eprintln!("{}: configuration refused", path.display());
            return ExitCode::from(2);
        }
    };
    let rt = match small_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let lookup = match crate::dns::lookup::HickoryLookup::with(
        nameserver.or(snapshot.dns.nameserver),
        snapshot.dns.timeout,
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let region = region_of(&snapshot);
    let mut checks = rt.block_on(crate::doctor::diagnose(
        &snapshot.domains,
        snapshot.reload.key_max_age,
        &region,
        &lookup,
        std::time::SystemTime::now(),
    ));
    if let Some(request) = ses {
        checks.extend(rt.block_on(doctor_ses::checks(&snapshot, request)));
    }
    for c in &checks {
        outln!("{c}");
    }
    let count = |s: crate::doctor::Status| checks.iter().filter(|c| c.status == s).count();
    eprintln!(
        "{} pass, {} warn, {} fail",
        count(crate::doctor::Status::Pass),
        count(crate::doctor::Status::Warn),
        count(crate::doctor::Status::Fail)
    );
    if crate::doctor::any_failed(&checks) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
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
    outln!("{}", crate::ses_password::smtp_password_v4(secret, region));
    ExitCode::SUCCESS
}

/// `dkim-relay hash-password`: reads one password on stdin (first line; the line end is not
/// part of it) and prints an argon2id hash for `[[server.users]] password_hash`. The password
/// itself is never printed or logged.
pub fn hash_password() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut input) {
        eprintln!("error: cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = input.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("error: no password on stdin (e.g. `dkim-relay hash-password < password.txt`)");
        return ExitCode::FAILURE;
    }
    match crate::users::hash_password(password.as_bytes()) {
        Ok(h) => {
            outln!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: hashing failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `dkim-relay keygen`: writes `KEYS_DIR/DOMAIN/SELECTOR.pem` (0600, never overwritten) and
/// prints the DNS record and the config lines to add.
pub fn keygen(domain: &str, selector: &str, algorithm: &str, bits: u32, dir: &Path) -> ExitCode {
    use crate::dkim::{Algorithm, keygen};
    let Some(domain) = crate::domain_name::normalize(domain) else {
        eprintln!("error: --domain: `{domain}` is not a domain name");
        return ExitCode::from(2);
    };
    let selector_ok = !selector.is_empty()
        && selector.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !selector_ok {
        eprintln!("error: --selector: `{selector}` is not a valid selector (letters, digits, -)");
        return ExitCode::from(2);
    }
    let algorithm = if algorithm == "ed25519-sha256" {
        Algorithm::Ed25519Sha256
    } else {
        Algorithm::RsaSha256
    };
    let key = match keygen::generate(algorithm, bits) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = dir.join(&domain).join(format!("{selector}.pem"));
    if let Err(e) = keygen::write_private_key(&path, &key.pkcs8_pem) {
        eprintln!("error: {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    let value = keygen::dkim_txt_value(algorithm, &key.public_key);
    let record = crate::dns::Record {
        name: format!("{selector}._domainkey.{domain}"),
        data: crate::dns::RecordData::Txt(value),
        comment: Some(format!("{algorithm} key {selector} for {domain}")),
    };
    eprintln!("wrote {} (mode 0600)", path.display());
    outln!("; Publish this record, then check it with `dkim-relay doctor` before signing with it:");
    out!("{}", crate::dns::format_zone(std::slice::from_ref(&record)));
    outln!();
    outln!("# Add to the configuration (and to sign = [...] once the record is live):");
    outln!("[domains.\"{domain}\".selectors.{selector}]");
    outln!("algorithm = \"{algorithm}\"");
    outln!("key_file = \"{}\"", path.display());
    ExitCode::SUCCESS
}

/// `dkim-relay dns`: every record the configured domains must publish.
pub fn dns(path: &Path, format: &str) -> ExitCode {
    let snapshot = match config::load(path) {
        Ok(s) => s,
        Err(diags) => {
            print_diagnostics(&diags);
            return ExitCode::FAILURE;
        }
    };
    let records = records_for(&snapshot);
    let text = match format {
        "route53" => crate::dns::format_route53(&records),
        "json" => crate::dns::format_json(&records),
        _ => crate::dns::format_zone(&records),
    };
    out!("{text}");
    if !text.ends_with('\n') {
        outln!();
    }
    ExitCode::SUCCESS
}

/// The SES region the configuration sends through (for the feedback MX).
pub fn region_of(snapshot: &config::Snapshot) -> String {
    match &snapshot.upstream.target {
        config::UpstreamTarget::Simulator(sim) => sim.region.clone(),
        config::UpstreamTarget::Remote(e) => {
            crate::dns::region_from_host(&e.host).unwrap_or_else(|| "us-east-1".to_string())
        }
    }
}

/// The records of every configured domain: DKIM (active and published selectors), the MAIL
/// FROM domain's MX and SPF, and DMARC.
pub fn records_for(snapshot: &config::Snapshot) -> Vec<crate::dns::Record> {
    let region = region_of(snapshot);
    let mut out = Vec::new();
    for d in snapshot.domains.values() {
        let selectors = crate::sim::embedded::selector_infos(d);
        out.extend(crate::dns::domain_records(
            &crate::dns::DomainRecordsInput {
                domain: d.name.clone(),
                mail_from: d.envelope.mail_from.clone(),
                region: region.clone(),
                selectors,
                dmarc: d.dmarc.clone(),
            },
        ));
    }
    out
}

fn print_or_fail(result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(text) => {
            out!("{text}");
            if !text.is_empty() && !text.ends_with('\n') {
                outln!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
