//! `dkim-relay`: parse the command line, set up logging, run one subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dkim-relay",
    version,
    about = "Outbound DKIM-signing SMTP relay for Amazon SES"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (SIGHUP reloads the configuration; SIGTERM/SIGINT stop gracefully).
    Serve {
        /// Configuration file.
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Load and validate the configuration and keys as `serve` would; print the effective
    /// configuration (secrets masked), or every problem. Exit 0 when valid, 1 otherwise.
    Check {
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Read an IAM secret access key on stdin and print the SES SMTP password for a region
    /// (version 4 derivation).
    SmtpPassword {
        /// SES region, e.g. us-east-1.
        #[arg(long)]
        region: String,
    },
    /// Read a submission user's password on stdin and print an argon2id hash for
    /// `[[server.users]] password_hash`.
    HashPassword,
    /// Generate a DKIM key pair: writes the private key (mode 0600) and prints the DNS record.
    Keygen {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        selector: String,
        #[arg(long, default_value = "rsa-sha256", value_parser = ["rsa-sha256", "ed25519-sha256"])]
        algorithm: String,
        /// RSA key size (2048, 3072 or 4096).
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        /// Folder that holds DOMAIN/SELECTOR.pem.
        #[arg(long, default_value = "keys")]
        keys_dir: PathBuf,
    },
    /// Print the DNS records the configured domains must publish.
    Dns {
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
        #[arg(long, default_value = "zone", value_parser = ["zone", "route53", "json"])]
        format: String,
    },
    /// Look the records the configuration needs up in live DNS (DKIM keys, MAIL FROM MX and
    /// SPF, DMARC, key sizes and ages); one PASS/WARN/FAIL line per check, with the fix.
    /// Exit 0 when nothing failed, 1 on any FAIL, 2 when the configuration is invalid.
    Doctor {
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
        /// Ask this name server (IP:PORT, UDP and TCP) instead of `[dns] nameserver` or the
        /// system resolver.
        #[arg(long)]
        nameserver: Option<std::net::SocketAddr>,
        /// Also ask the SES API v2 (GetEmailIdentity per domain, GetAccount; SigV4-signed with
        /// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY[/AWS_SESSION_TOKEN] or ~/.aws/credentials and
        /// AWS_PROFILE): identity verified, custom MAIL FROM equal to ours, verified and
        /// REJECT_MESSAGE, SES's own DKIM signing, sandbox, sending, send rate.
        #[arg(long)]
        ses: bool,
        /// The SES API endpoint to ask instead of https://email.REGION.amazonaws.com (staging,
        /// tests); plain http:// only to a loopback address.
        #[arg(long, requires = "ses", value_name = "URL")]
        ses_endpoint: Option<String>,
        /// CA certificates (PEM) to trust beside the public roots for the SES API endpoint
        /// (a staging endpoint behind a private CA).
        #[arg(long, requires = "ses", value_name = "PEM")]
        ses_ca_file: Option<PathBuf>,
    },
    /// GET the relay's health endpoint and exit 0 on HTTP 200 (the container image's
    /// HEALTHCHECK: it has no shell and no curl).
    Health {
        #[arg(long, default_value = dkim_relay::cli::health::DEFAULT_URL)]
        url: String,
        /// Seconds to wait for the connection and the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Run the SES SMTP simulator on its own (staging; any SMTP client can use it).
    SesSim {
        #[arg(long, default_value = "sim.toml")]
        config: PathBuf,
    },
    /// Explain DMARC aggregate reports (XML, .gz, .zip or the .eml they came in): per day and
    /// source, messages, DKIM/SPF results and alignment, disposition, and the cause of each
    /// failure in this relay's setup.
    DmarcReport {
        /// Report files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Read the simulator's outbox: what was delivered, with the DKIM/SPF/DMARC verdict.
    Outbox {
        /// The outbox folder.
        #[arg(long, default_value = "outbox", global = true)]
        dir: PathBuf,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: OutboxAction,
    },
    /// Operate the spool (`[spool]`): list, show, retry, delete queued messages; list the
    /// dead-letter folder. Safe while the relay runs.
    Queue {
        #[arg(long, default_value = "config.toml", global = true)]
        config: PathBuf,
        /// The spool folder (instead of `[spool] dir` from the configuration).
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
        #[command(subcommand)]
        action: QueueAction,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// One line per queued message: id, age, size, attempts, next try, envelope, last reply.
    List,
    /// One message: envelope, retry state, headers.
    Show { id: String },
    /// Make a queued message (or, from dead/, a dead-lettered one) due now; `--all`: every
    /// queued message, and lift a pause.
    Retry {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Delete a message from the queue or dead/ (refused while it is being delivered).
    Delete { id: String },
    /// The dead-letter folder (and corrupt spool files) with their reasons.
    Dead,
}

#[derive(Subcommand)]
enum OutboxAction {
    /// One line per delivered message: id, from, to, subject, dkim/spf/dmarc.
    List,
    /// One message in full, with its verdict.
    Show { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` sets logging up once it has read `log_format`.
    if !matches!(cli.command, Command::Serve { .. }) {
        dkim_relay::cli::init_logging();
    }
    match cli.command {
        Command::Serve { config } => dkim_relay::cli::serve(&config),
        Command::Check { config } => dkim_relay::cli::check(&config),
        Command::SmtpPassword { region } => dkim_relay::cli::smtp_password(&region),
        Command::HashPassword => dkim_relay::cli::hash_password(),
        Command::Keygen {
            domain,
            selector,
            algorithm,
            bits,
            keys_dir,
        } => dkim_relay::cli::keygen(&domain, &selector, &algorithm, bits, &keys_dir),
        Command::Dns { config, format } => dkim_relay::cli::dns(&config, &format),
        Command::Doctor {
            config,
            nameserver,
            ses,
            ses_endpoint,
            ses_ca_file,
        } => {
            let request = dkim_relay::cli::doctor_ses::SesRequest {
                endpoint: ses_endpoint,
                ca_file: ses_ca_file,
            };
            dkim_relay::cli::doctor_with(&config, nameserver, ses.then_some(&request))
        }
        Command::Health { url, timeout } => {
            dkim_relay::cli::health::health(&url, std::time::Duration::from_secs(timeout))
        }
        Command::SesSim { config } => dkim_relay::cli::ses_sim(&config),
        Command::DmarcReport { files, json } => dkim_relay::cli::dmarc_report::run(&files, json),
        Command::Outbox { dir, json, action } => match action {
            OutboxAction::List => dkim_relay::cli::outbox::list(&dir, json),
            OutboxAction::Show { id } => dkim_relay::cli::outbox::show(&dir, &id, json),
        },
        Command::Queue {
            config,
            dir,
            action,
        } => {
            use dkim_relay::cli::queue::{Action, run};
            let action = match action {
                QueueAction::List => Action::List,
                QueueAction::Show { id } => Action::Show(id),
                QueueAction::Retry {
                    id: None,
                    all: false,
                } => {
                    eprintln!("error: `queue retry` needs an ID or --all");
                    return ExitCode::from(2);
                }
                QueueAction::Retry { id, .. } => Action::Retry(id),
                QueueAction::Delete { id } => Action::Delete(id),
                QueueAction::Dead => Action::Dead,
            };
            run(&config, dir.as_deref(), action)
        }
    }
}
