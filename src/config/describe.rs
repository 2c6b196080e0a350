//! `dkim-relay check`: the effective configuration — every default filled in
//! ([`super::defaults`]) — as TOML-like text, with secrets masked (passwords, password hashes
//! and key files' contents never appear; only where they came from).

use super::*;
use crate::message::EnvelopeLocalPart;

impl Snapshot {
    /// The effective configuration as TOML-like text, secrets masked (`dkim-relay check`).
    pub fn describe(&self) -> String {
        let s = &self.server;
        let mut out = String::new();
        let format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        out.push_str(&format!("log_format = \"{format}\"\n"));
        if let Some(h) = &self.http {
            out.push_str(&format!("[http]\nlisten = \"{}\"\n", h.listen));
        }
        out.push_str("[server]\n");
        out.push_str(&format!(
            "listen = [{}]\n",
            s.listen
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push_str(&format!("hostname = \"{}\"\n", s.hostname));
        out.push_str(&format!("max_message_size = {}\n", s.max_message_size));
        out.push_str(&format!("max_recipients = {}\n", s.max_recipients));
        out.push_str(&format!("max_header_size = {}\n", s.max_header_size));
        out.push_str(&format!(
            "max_bytes_in_flight = {}\n",
            s.max_bytes_in_flight
        ));
        out.push_str(&format!("max_connections = {}\n", s.max_connections));
        out.push_str(&format!(
            "max_connections_per_ip = {}\n",
            s.max_connections_per_ip
        ));
        out.push_str(&format!("max_errors = {}\n", s.max_errors));
        out.push_str(&format!(
            "command_timeout_secs = {}\ndata_timeout_secs = {}\nsession_timeout_secs = {}\nshutdown_grace_secs = {}\n",
            s.command_timeout.as_secs(),
            s.data_timeout.as_secs(),
            s.session_timeout.as_secs(),
            s.shutdown_grace.as_secs()
        ));
        out.push_str(&format!(
            "bare_newline = \"{}\"\n",
            match s.bare_newline {
                BareNewline::Reject => "reject",
                BareNewline::Normalize => "normalize",
            }
        ));
        out.push_str(&format!("self_verify = \"{}\"\n", s.self_verify.as_str()));
        out.push_str(&format!(
            "allow_networks = [{}]\n",
            s.allow_networks
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push_str(&format!(
            "data_total_timeout_secs = {}\ngreeting_delay_ms = {}\nauth_plaintext_loopback = {}\nauth_failure_delay_ms = {}\nmax_auth_failures = {}\n",
            s.data_total_timeout.as_secs(),
            s.greeting_delay.as_millis(),
            s.auth_plaintext_loopback,
            s.auth_failure_delay.as_millis(),
            s.max_auth_failures
        ));
        let (rate, window) = s
            .min_data_rate
            .map(|r| (r.bytes_per_sec, r.window.as_secs()))
            .unwrap_or((0, defaults::server::MIN_DATA_RATE_WINDOW_SECS.default));
        out.push_str(&format!(
            "max_auth_failures_per_ip = {}
min_data_rate = {rate}
min_data_rate_window_secs = {window}
",
            s.max_auth_failures_per_ip
        ));
        if let Some(t) = &s.tls {
            out.push_str(&format!(
                "[server.tls]\ncert_file = \"{}\"\nkey_file = \"********\"\nimplicit_listen = [{}]\nhandshake_timeout_secs = {}\n",
                t.cert_file.display(),
                t.implicit_listen
                    .iter()
                    .map(|a| format!("\"{a}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                t.handshake_timeout.as_secs()
            ));
        }
        for u in &s.users {
            out.push_str(&format!(
                "[[server.users]]\nname = \"{}\"\npassword_hash = \"********\"\ndomains = [{}]\n",
                u.name,
                u.domains
                    .iter()
                    .map(|d| format!("\"{}\"", d.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let u = &self.upstream;
        out.push_str("\n[upstream]\n");
        match &u.target {
            UpstreamTarget::Simulator(sim) => {
                out.push_str("simulator = true\n");
                out.push_str(&format!(
                    "# simulator: region {}, outbox {}\n",
                    sim.region,
                    sim.outbox.display()
                ));
            }
            UpstreamTarget::Remote(e) => {
                out.push_str(&format!("host = \"{}\"\nport = {}\n", e.host, e.port));
                out.push_str(&format!(
                    "tls = \"{}\"\n",
                    match e.tls {
                        TlsMode::StartTls => "starttls",
                        TlsMode::Implicit => "implicit",
                    }
                ));
                if let Some(ca) = &e.ca_file {
                    out.push_str(&format!("ca_file = \"{}\"\n", ca.display()));
                }
                out.push_str(&format!("username = \"{}\"\n", e.username));
                out.push_str("password = \"********\"\n");
            }
        }
        out.push_str(&format!("# credentials: {}\n", u.credential_source));
        out.push_str(&format!(
            "profile = \"{}\"\n",
            match u.profile {
                Profile::Ses => "ses",
                Profile::Generic => "generic",
            }
        ));
        out.push_str(&format!(
            "pool_size = {}\nmax_messages_per_connection = {}\nmax_connection_age_secs = {}\nidle_close_secs = {}\n",
            u.pool.pool_size,
            u.pool.max_messages_per_connection,
            u.pool.max_connection_age.as_secs(),
            u.pool.idle_close.as_secs()
        ));
        out.push_str(&format!(
            "max_send_rate = {}\nmax_wait_secs = {}\n",
            u.pool.max_send_rate.map_or(0.0, |r| r.0),
            u.pool.max_wait.as_secs()
        ));
        out.push_str(&format!(
            "connect_timeout_secs = {}\ntls_timeout_secs = {}\ncommand_timeout_secs = {}\ndata_timeout_secs = {}\n",
            u.pool.connect_timeout.as_secs(),
            u.pool.tls_timeout.as_secs(),
            u.pool.command_timeout.as_secs(),
            u.pool.data_timeout.as_secs()
        ));
        let r = &self.reload;
        out.push_str(&format!(
            "\n[reload]\nwatch = {}\nwatch_interval_secs = {}\nrequire_published = {}\nkey_max_age_days = {}\n",
            r.watch,
            r.watch_interval.as_secs(),
            r.require_published,
            r.key_max_age.as_secs() / 86_400
        ));
        out.push_str("\n[dns]\n");
        match self.dns.nameserver {
            Some(ns) => out.push_str(&format!("nameserver = \"{ns}\"\n")),
            None => out.push_str("# nameserver: the system resolver (resolv.conf)\n"),
        }
        out.push_str(&format!("timeout_secs = {}\n", self.dns.timeout.as_secs()));
        out.push_str(&format!(
            "check_interval_secs = {}\n",
            self.dns.check_interval.as_secs()
        ));
        match &self.spool {
            None => out.push_str("\n# [spool]: none (pass-through)\n"),
            Some(s) => out.push_str(&format!(
                "\n[spool]\ndir = \"{}\"\nmode = \"{}\"\nmin_free_mb = {}\nretry_initial_ms = {}\n\
                 retry_max_ms = {}\nmax_age_secs = {}\npause_probe_ms = {}\n",
                s.dir.display(),
                s.mode.name(),
                s.min_free_bytes / (1024 * 1024),
                s.retry_initial.as_millis(),
                s.retry_max.as_millis(),
                s.max_age.as_secs(),
                s.pause_probe.as_millis()
            )),
        }
        for d in self.domains.values() {
            out.push_str(&format!("\n[domains.\"{}\"]\n", d.name));
            out.push_str(&format!("mail_from = \"{}\"\n", d.envelope.mail_from));
            out.push_str(&format!(
                "sign = [{}]\n",
                d.active
                    .iter()
                    .map(|k| format!("\"{}\"", k.selector))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            out.push_str(&format!(
                "envelope_local_part = \"{}\"\nnull_sender_local_part = \"{}\"\nsubdomains = {}\n",
                match &d.envelope.envelope_local_part {
                    EnvelopeLocalPart::Keep => "keep",
                    EnvelopeLocalPart::Fixed(s) => s,
                },
                d.envelope.null_sender_local_part,
                d.subdomains
            ));
            out.push_str(&format!(
                "headers = {:?}\noversign = {:?}\n",
                d.headers, d.oversign
            ));
            if let Some(cs) = &d.configuration_set {
                out.push_str(&format!("configuration_set = \"{cs}\"\n"));
            }
            if let Some(x) = d.expiration {
                out.push_str(&format!("expiration_secs = {x}\n"));
            }
            out.push_str(&format!("require_published = {}\n", d.require_published));
            for k in d.selectors.values() {
                out.push_str(&format!(
                    "[domains.\"{}\".selectors.{}]  # {}{}\nalgorithm = \"{}\"\nkey_file = \"{}\"\n",
                    d.name,
                    k.selector,
                    if d.active.iter().any(|a| a.selector == k.selector) {
                        "active"
                    } else {
                        "published only"
                    },
                    k.bits.map(|b| format!(", {b} bits")).unwrap_or_default(),
                    k.algorithm,
                    k.key_file.display()
                ));
            }
        }
        out
    }
}
