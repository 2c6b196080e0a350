//! The end-of-data checks, in the order of ses-smtp.md §8.7, and the account-wide state they
//! need (sending-rate bucket, rolling 24-hour quota, fault script).
//!
//! SES answers `250 Ok` to MAIL and RCPT and decides at end of data, because SMTP fronts
//! SendRawEmail: size (`552 Message is too long.`), more than 50 recipients, header parse errors
//! and duplicates of the must-be-unique headers of §5 (DKIM-Signature included), the paused
//! account, unverified identities (MAIL FROM, From, Sender, Return-Path; every recipient in the
//! sandbox except the mailbox simulator), then the sending rate and the daily quota (§4).
//! Injected faults come before all of these.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;

use super::config::{ScriptStep, SimSettings};
use super::session::Transaction;
use crate::domain_name;
use crate::message::headers::Message;
use crate::smtp::codec::DataError;
use crate::smtp::reply::Reply;

/// The mailbox simulator's domain; its addresses pass the sandbox check.
pub const MAILBOX_SIMULATOR: &str = "simulator.amazonses.com";

/// Headers SES refuses to see twice (ses-smtp.md §5), spelled as SES reports them.
pub const UNIQUE_HEADERS: &[&str] = &[
    "Accept-Language",
    "acceptLanguage",
    "Archived-At",
    "Auto-Submitted",
    "Bounces-to",
    "Comments",
    "Content-Alternative",
    "Content-Base",
    "Content-Class",
    "Content-Description",
    "Content-Disposition",
    "Content-Duration",
    "Content-ID",
    "Content-Language",
    "Content-Length",
    "Content-Location",
    "Content-MD5",
    "Content-Transfer-Encoding",
    "Content-Type",
    "Date",
    "Delivered-To",
    "Disposition-Notification-Options",
    "Disposition-Notification-To",
    "DKIM-Signature",
    "DomainKey-Signature",
    "Errors-To",
    "From",
    "Importance",
    "In-Reply-To",
    "Keywords",
    "List-Archive",
    "List-Help",
    "List-Id",
    "List-Owner",
    "List-Post",
    "List-Subscribe",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Message-Context",
    "Message-ID",
    "MIME-Version",
    "Organization",
    "Original-From",
    "Original-Message-ID",
    "Original-Recipient",
    "Original-Subject",
    "Precedence",
    "Priority",
    "References",
    "Reply-To",
    "Return-Path",
    "Return-Receipt-To",
    "Sender",
    "Solicitation",
    "Sensitivity",
    "Subject",
    "Thread-Index",
    "Thread-Topic",
    "User-Agent",
    "VBR-Info",
];

/// Most identities listed in the not-verified 554 before it ends with `...`.
const MAX_LISTED_IDENTITIES: usize = 10;

/// The decision at end of data.
#[derive(Debug)]
pub enum Decision {
    /// Accept: the parsed message, ready for the delivered form.
    Accept(Message),
    Reject(Reply),
    /// Fault injection: close without a reply.
    Drop,
}

#[derive(Debug)]
struct Counters {
    tokens: f64,
    last: Instant,
    /// (when, recipients) of accepted messages within the last 24 hours.
    day: VecDeque<(Instant, u64)>,
    day_total: u64,
    script: VecDeque<ScriptStep>,
}

/// Account-wide state shared by every session of one simulator.
#[derive(Debug)]
pub struct AccountState {
    counters: std::sync::Mutex<Counters>,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl AccountState {
    pub fn new(settings: &SimSettings) -> AccountState {
        AccountState {
            counters: std::sync::Mutex::new(Counters {
                tokens: settings.max_send_rate.max(1.0),
                last: Instant::now(),
                day: VecDeque::new(),
                day_total: 0,
                script: settings.faults.script.iter().cloned().collect(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        // A panic while holding the lock leaves plain counters behind: keep using them.
        self.counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn next_script_step(&self) -> Option<ScriptStep> {
        self.lock().script.pop_front()
    }

    /// Rate, then quota; both counted only when both pass.
    fn take(&self, settings: &SimSettings, quota_rcpts: u64) -> Result<(), Reply> {
        let mut c = self.lock();
        let now = Instant::now();
        let capacity = settings.max_send_rate.max(1.0);
        let elapsed = now.duration_since(c.last).as_secs_f64();
        c.tokens = (c.tokens + elapsed * settings.max_send_rate).min(capacity);
        c.last = now;
        while let Some(&(t, n)) = c.day.front() {
            if now.duration_since(t) >= DAY {
                c.day.pop_front();
                c.day_total -= n;
            } else {
                break;
            }
        }
        if c.tokens < 1.0 {
            return Err(Reply::plain(
                454,
                "Throttling failure: Maximum sending rate exceeded.",
            ));
        }
        if c.day_total + quota_rcpts > settings.max_24h {
            return Err(Reply::plain(
                454,
                "Throttling failure: Daily message quota exceeded.",
            ));
        }
        c.tokens -= 1.0;
        c.day.push_back((now, quota_rcpts));
        c.day_total += quota_rcpts;
        Ok(())
    }
}

fn transaction_failed(text: &str) -> Reply {
    Reply::plain(554, format!("Transaction failed: {text}"))
}

/// Whether `address` is covered by a verified identity (an exact address, or its domain or a
/// parent domain of it).
pub fn is_verified(settings: &SimSettings, address: &str) -> bool {
    let address = address.trim().to_ascii_lowercase();
    if settings.identities.contains(&address) {
        return true;
    }
    let Some((_, domain)) = address.rsplit_once('@') else {
        return false;
    };
    // A verified domain covers its subdomains (SES identities).
    domain_name::parents(domain).any(|d| {
        settings
            .identities
            .iter()
            .any(|i| !i.contains('@') && i == d)
    })
}

/// The header value unfolded and trimmed, as SES lists it.
pub fn header_text(message: &Message, name: &str) -> Option<String> {
    let f = message.get(name).next()?;
    let v = String::from_utf8_lossy(f.value());
    Some(
        v.replace("\r\n", "")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The addresses in an address-list header value: `<…>` contents, or bare `a@b` tokens.
pub fn addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut in_quotes = false;
    let mut current = String::new();
    let mut items = Vec::new();
    for c in value.chars() {
        match c {
            '"' if depth == 0 => in_quotes = !in_quotes,
            '(' if !in_quotes => depth += 1,
            ')' if !in_quotes && depth > 0 => depth -= 1,
            ',' if !in_quotes && depth == 0 => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        if depth == 0 && c != ')' {
            current.push(c);
        }
    }
    items.push(current);
    for item in items {
        if let (Some(open), Some(close)) = (item.rfind('<'), item.rfind('>'))
            && open < close
        {
            out.push(item[open + 1..close].trim().to_string());
        } else if let Some(tok) = item.split_whitespace().find(|t| t.contains('@')) {
            out.push(tok.trim_matches('"').to_string());
        }
    }
    out.retain(|a| !a.is_empty());
    out
}

fn failed_header(settings: &SimSettings, message: &Message, name: &str) -> Option<String> {
    let text = header_text(message, name)?;
    let addrs = addresses(&text);
    if addrs.is_empty() || addrs.iter().any(|a| !is_verified(settings, a)) {
        Some(text)
    } else {
        None
    }
}

/// Runs the end-of-data checks. `data` is the DATA reader's result, `size` its byte count.
pub fn decide(
    settings: &SimSettings,
    state: &AccountState,
    tx: &Transaction,
    data: Result<Vec<u8>, DataError>,
    size: usize,
) -> Decision {
    // Injected faults first: a script step, forced throttling, random failures.
    match state.next_script_step() {
        Some(ScriptStep::Reply(r)) => return Decision::Reject(r),
        Some(ScriptStep::Drop) => return Decision::Drop,
        Some(ScriptStep::Normal) | None => {}
    }
    if settings.faults.throttle {
        return Decision::Reject(Reply::plain(
            454,
            "Throttling failure: Maximum sending rate exceeded.",
        ));
    }
    if settings.faults.failure_rate > 0.0
        && rand::rng().random_bool(settings.faults.failure_rate.clamp(0.0, 1.0))
    {
        return Decision::Reject(
            settings
                .faults
                .failure_reply
                .clone()
                .unwrap_or_else(|| Reply::plain(451, "Temporary service failure")),
        );
    }

    if size > settings.max_message_size || data == Err(DataError::TooBig) {
        return Decision::Reject(Reply::plain(552, "Message is too long."));
    }
    if tx.rcpts.len() > 50 {
        return Decision::Reject(transaction_failed("Recipient count exceeds 50."));
    }
    let bytes = match data {
        Ok(b) => b,
        Err(DataError::LineTooLong) => {
            return Decision::Reject(transaction_failed("Line length exceeds 1000 characters."));
        }
        Err(DataError::BareNewline) => {
            return Decision::Reject(transaction_failed("Bare CR or LF in message."));
        }
        Err(DataError::Nul) => {
            return Decision::Reject(transaction_failed("NUL byte in message."));
        }
        Err(DataError::HeaderTooBig) | Err(DataError::TooBig) => {
            return Decision::Reject(Reply::plain(552, "Message is too long."));
        }
        // The simulator runs without a bytes-in-flight budget; worded for completeness.
        Err(DataError::OverBudget) => {
            return Decision::Reject(Reply::new(452, "4.3.1", "Insufficient system storage"));
        }
    };
    let message = match Message::parse(&bytes) {
        Ok(m) => m,
        Err(e) => return Decision::Reject(transaction_failed(&format!("{e}."))),
    };
    for (i, f) in message.fields.iter().enumerate() {
        let Some(name) = UNIQUE_HEADERS.iter().find(|u| f.is(u)) else {
            continue;
        };
        if message.fields[..i].iter().any(|g| g.is(name)) {
            return Decision::Reject(transaction_failed(&format!("Duplicate header '{name}'.")));
        }
    }
    if settings.paused {
        return Decision::Reject(Reply::plain(
            554,
            "Message rejected: Sending paused for this account. For more information, please \
             check the inbox of the email address associated with your AWS account.",
        ));
    }

    let mut failed: Vec<String> = Vec::new();
    if !is_verified(settings, &tx.mail_from) {
        failed.push(tx.mail_from.clone());
    }
    for name in ["From", "Sender", "Return-Path"] {
        if let Some(t) = failed_header(settings, &message, name) {
            failed.push(t);
        }
    }
    if settings.sandbox {
        for r in &tx.rcpts {
            let sim = r
                .rsplit_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(MAILBOX_SIMULATOR));
            if !sim && !is_verified(settings, r) {
                failed.push(r.clone());
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    failed.retain(|f| seen.insert(f.to_ascii_lowercase()));
    if !failed.is_empty() {
        let truncated = failed.len() > MAX_LISTED_IDENTITIES;
        failed.truncate(MAX_LISTED_IDENTITIES);
        let mut list = failed.join(", ");
        if truncated {
            list.push_str("...");
        }
        return Decision::Reject(Reply::plain(
            554,
            format!(
                "Message rejected: Email address is not verified. The following identities \
                 failed the check in region {}: {list}",
                settings.region.to_ascii_uppercase()
            ),
        ));
    }

    // A custom MAIL FROM whose MX check failed, under BehaviorOnMXFailure=RejectMessage. SES's
    // exact SMTP text is not known (ses-smtp.md §9); this follows the API's error message.
    let from_addr = header_text(&message, "From").and_then(|f| addresses(&f).into_iter().next());
    if let Some(m) = settings.custom_mail_from(from_addr.as_deref(), &tx.mail_from)
        && !m.mx_ok
        && m.reject_on_mx_failure
    {
        return Decision::Reject(Reply::plain(
            554,
            format!(
                "Message rejected: The MAIL FROM domain {} is not verified.",
                m.domain
            ),
        ));
    }

    // Mailbox-simulator recipients count against the rate but not the daily quota (§4).
    let quota_rcpts = tx
        .rcpts
        .iter()
        .filter(|r| {
            !r.rsplit_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(MAILBOX_SIMULATOR))
        })
        .count() as u64;
    if let Err(r) = state.take(settings, quota_rcpts) {
        return Decision::Reject(r);
    }
    Decision::Accept(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings() -> SimSettings {
        let mut s = SimSettings::resolve(None, Path::new("/tmp")).unwrap();
        s.identities = vec!["example.org".into(), "ops@example.net".into()];
        s
    }

    #[test]
    fn verification() {
        let s = settings();
        assert!(is_verified(&s, "a@example.org"));
        assert!(is_verified(&s, "a@b.c.example.org"));
        assert!(!is_verified(&s, "a@badexample.org"));
        assert!(is_verified(&s, "OPS@example.net"));
        assert!(!is_verified(&s, "dev@example.net"));
    }

    #[test]
    fn address_lists() {
        assert_eq!(
            addresses("\"Doe, J\" <j@x.org>, k@y.org (K)"),
            vec!["j@x.org".to_string(), "k@y.org".to_string()]
        );
    }

    fn tx(from: &str, rcpts: &[&str]) -> Transaction {
        Transaction {
            mail_from: from.into(),
            rcpts: rcpts.iter().map(|s| s.to_string()).collect(),
            user: "AKIA".into(),
        }
    }

    fn reject_text(d: Decision) -> String {
        match d {
            Decision::Reject(r) => r.one_line(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn order_and_texts() {
        let s = settings();
        let st = AccountState::new(&s);
        let msg = b"From: a@example.org\r\nSubject: x\r\nSubject: y\r\n\r\nhi\r\n".to_vec();
        let n = msg.len();
        assert_eq!(
            reject_text(decide(
                &s,
                &st,
                &tx("a@example.org", &["r@x.org"]),
                Ok(msg),
                n
            )),
            "554 Transaction failed: Duplicate header 'Subject'."
        );
        let msg = b"From: Bad <a@other.org>\r\n\r\nhi\r\n".to_vec();
        assert_eq!(
            reject_text(decide(
                &s,
                &st,
                &tx("b@nope.org", &["r@x.org"]),
                Ok(msg),
                10
            )),
            "554 Message rejected: Email address is not verified. The following identities \
             failed the check in region US-EAST-1: b@nope.org, Bad <a@other.org>"
        );
        assert_eq!(
            reject_text(decide(
                &s,
                &st,
                &tx("a@example.org", &["r@x.org"]),
                Ok(vec![]),
                50_000_000
            )),
            "552 Message is too long."
        );
        let many: Vec<String> = (0..51).map(|i| format!("r{i}@x.org")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            reject_text(decide(&s, &st, &tx("a@example.org", &many), Ok(vec![]), 10)),
            "554 Transaction failed: Recipient count exceeds 50."
        );
        let msg = b"From: a@example.org\r\n\r\nhi\r\n".to_vec();
        assert!(matches!(
            decide(&s, &st, &tx("a@example.org", &["r@x.org"]), Ok(msg), 10),
            Decision::Accept(_)
        ));
    }
}
