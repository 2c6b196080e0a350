//! One simulator connection on the shared server shell: [`SimProtocol`] accepts (reading the
//! live greeting faults into the session's policy and numbering the connection for the
//! recorder), [`SimHandler`] runs the sans-IO SES session of [`super::session`], applies the
//! configured and live faults ([`super::fault`]) where SES would fail — at a stage, at MAIL past
//! the TLS/AUTH gates, at end of data — reports what it saw to the recorder
//! ([`super::record`]), and runs the end-of-data pipeline (rules → delivered form → verdict →
//! outbox). Split from [`super::server`] (settings and start-up) along that seam; the socket,
//! TLS, timers and framing are the shell's.

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Utc;

use super::config::DropStage;
use super::deliver;
use super::fault::{Eod, Greeting, MailFault};
use super::outbox::{self, SimOutcome};
use super::record::{MessageSeen, Recorder};
use super::rules::{self, Decision};
use super::server::Shared;
use super::session::{self, Session, Transaction};
use super::verdict;
use crate::server::{self, Action, Notice, Peer};
use crate::smtp::codec::{DataError, LineError};
use crate::smtp::reply::Reply;

fn drop_stage_of(verb: &str) -> Option<DropStage> {
    Some(match verb {
        "EHLO" | "HELO" => DropStage::Ehlo,
        "STARTTLS" => DropStage::StartTls,
        "AUTH" => DropStage::Auth,
        "MAIL" => DropStage::Mail,
        "RCPT" => DropStage::Rcpt,
        "DATA" => DropStage::Data,
        _ => return None,
    })
}

/// The simulator as a protocol of the server shell.
pub(super) struct SimProtocol {
    pub(super) shared: Arc<Shared>,
}

impl server::Protocol for SimProtocol {
    type Handler = SimHandler;

    fn settings(&self) -> Arc<server::Settings> {
        Arc::clone(&self.shared.shell)
    }

    fn accept(&self, peer: Peer) -> (Arc<server::Settings>, SimHandler) {
        let greeting = self.shared.faults.greeting();
        let mut policy = self.shared.policy.clone();
        policy.greeting = greeting.clone();
        let record = self
            .shared
            .recorder
            .get()
            .map(|r| (r.clone(), r.connection()));
        let handler = SimHandler {
            session: Session::new(policy, false),
            shared: Arc::clone(&self.shared),
            peer: peer.addr,
            greeting,
            record,
        };
        (Arc::clone(&self.shared.shell), handler)
    }
}

/// One simulator connection: the SES session plus the end-of-data pipeline.
pub(super) struct SimHandler {
    shared: Arc<Shared>,
    session: Session,
    peer: SocketAddr,
    /// This connection's scripted greeting faults (the STARTTLS trailer is written by `wire`).
    greeting: Greeting,
    /// The recorder and this connection's number, while recording.
    record: Option<(Recorder, usize)>,
}

impl SimHandler {
    fn faults_drop_at(&self, stage: DropStage) -> bool {
        self.shared.settings.faults.drop_at == Some(stage)
    }

    /// Reports a handled end of data to the recorder, if one is on.
    fn note(
        &self,
        tx: Transaction,
        data: Option<Vec<u8>>,
        reply: Option<&Reply>,
        stored: Option<String>,
    ) {
        if let Some((recorder, conn)) = &self.record {
            let reply = reply
                .map(|r| {
                    String::from_utf8_lossy(&session::wire(r))
                        .trim_end()
                        .to_string()
                })
                .unwrap_or_default();
            recorder.message(MessageSeen {
                conn: *conn,
                mail_from: tx.mail_from,
                rcpts: tx.rcpts,
                data: data.unwrap_or_default(),
                tls: self.session.is_tls(),
                auth_user: self.session.user().map(str::to_string),
                reply,
                stored,
            });
        }
    }
}

impl server::Handler for SimHandler {
    fn greeting(&mut self) -> Action {
        if self.faults_drop_at(DropStage::Connect) {
            return Action::Drop;
        }
        Action::Reply(session::banner())
    }

    async fn command(&mut self, line: Result<Vec<u8>, LineError>) -> Action {
        let action = match line {
            Ok(line) => {
                let in_auth = self.session.in_auth();
                if let Some((recorder, conn)) = &self.record {
                    recorder.command(*conn, self.session.is_tls(), &line, in_auth);
                }
                let stage = if in_auth {
                    None
                } else {
                    drop_stage_of(&session::verb(&line))
                };
                if let Some(stage) = stage
                    && self.faults_drop_at(stage)
                {
                    tracing::debug!(peer = %self.peer, ?stage, "fault injection: dropping connection");
                    return Action::Drop;
                }
                // Scripted MAIL faults apply where SES's would: past the TLS and AUTH gates.
                if stage == Some(DropStage::Mail)
                    && self.session.is_tls()
                    && self.session.user().is_some()
                    && let Some(fault) = self.shared.faults.on_mail()
                {
                    tracing::debug!(peer = %self.peer, ?fault, "fault injection at MAIL");
                    return match fault {
                        MailFault::Drop => Action::Drop,
                        MailFault::ReplyThenClose(r) => Action::Close(r),
                    };
                }
                self.session.on_line(&line)
            }
            Err(e) => self.session.on_line_error(e),
        };
        match action {
            session::Action::Reply(r) => Action::Reply(r),
            session::Action::Close(r) => Action::Close(r),
            session::Action::StartTls(r) => Action::StartTls(r),
            session::Action::Data(r) => Action::StartData(r),
        }
    }

    async fn data(&mut self, data: Result<Vec<u8>, DataError>, size: usize) -> Action {
        let tx = self.session.end_of_data();
        // The bytes as received, copied only while recording.
        let seen = self
            .record
            .as_ref()
            .map(|_| data.as_ref().ok().cloned().unwrap_or_default());
        let eod = self.shared.faults.next_eod();
        match eod {
            Eod::Reply(r) => {
                self.note(tx, seen, Some(&r), None);
                return Action::Reply(r);
            }
            Eod::Drop => {
                self.note(tx, seen, None, None);
                return Action::Drop;
            }
            Eod::Silent => {
                self.note(tx, seen, None, None);
                // Never answer: hold the connection until the peer (or the shutdown) ends it.
                return std::future::pending().await;
            }
            Eod::Normal | Eod::AnswerThenClose => {}
        }
        if self.faults_drop_at(DropStage::Eod) {
            self.note(tx, seen, None, None);
            return Action::Drop;
        }
        let shared = Arc::clone(&self.shared);
        let peer = self.peer;
        let (reply, stored) = match rules::decide(&shared.settings, &shared.state, &tx, data, size)
        {
            Decision::Drop => {
                self.note(tx, seen, None, None);
                return Action::Drop;
            }
            Decision::Reject(r) => {
                tracing::info!(%peer, reply = %r.one_line(), "message refused");
                (r, None)
            }
            Decision::Accept(message) => match accept(&shared, peer, &tx, message).await {
                Ok(id) => {
                    self.session.accepted();
                    (Reply::plain(250, format!("Ok {id}")), Some(id))
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "cannot store message");
                    (Reply::plain(451, "Temporary service failure"), None)
                }
            },
        };
        self.note(tx, seen, Some(&reply), stored);
        if eod == Eod::AnswerThenClose {
            Action::Close(reply)
        } else {
            Action::Reply(reply)
        }
    }

    fn tls_started(&mut self) {
        self.session.tls_started();
    }

    fn in_transaction(&self) -> bool {
        self.session.in_transaction()
    }

    fn notice(&mut self, notice: Notice) -> Option<Reply> {
        match notice {
            Notice::TooManyConnections => Some(session::too_many_connections()),
            Notice::CommandTimeout | Notice::DataTimeout | Notice::DataTooSlow => {
                Some(session::idle_timeout())
            }
            // SES has no greeting delay; at shutdown an idle session just closes.
            Notice::Pregreet | Notice::ShuttingDown => None,
        }
    }

    /// SES's wire form; a scripted STARTTLS trailer rides in the same packet as the `220`.
    fn wire(&self, reply: &Reply) -> Vec<u8> {
        let mut bytes = session::wire(reply);
        if reply.code == 220
            && !self.session.is_tls()
            && reply.lines == ["Ready to start TLS"]
            && let Some(trailer) = &self.greeting.starttls_trailer
        {
            bytes.extend_from_slice(trailer);
        }
        bytes
    }
}

/// Produces the delivered form, asks for a verdict and stores both. Returns the SES ID.
async fn accept(
    shared: &Shared,
    peer: SocketAddr,
    tx: &Transaction,
    message: crate::message::headers::Message,
) -> anyhow::Result<String> {
    let settings = &shared.settings;
    let now = Utc::now();
    let id = deliver::new_message_id(now);
    let header_from = rules::header_text(&message, "From");
    let from_addr = header_from
        .as_deref()
        .and_then(|f| rules::addresses(f).into_iter().next());
    let subject = rules::header_text(&message, "Subject");
    let delivered = deliver::deliver(
        settings,
        &shared.key,
        message,
        &id,
        now,
        from_addr.as_deref(),
        &tx.mail_from,
    )?;
    let verdict = verdict::verdict(
        &delivered.bytes,
        &delivered.envelope_from,
        std::net::IpAddr::from(verdict::SES_SENDING_IP),
        &shared.dns,
    )
    .await;
    let record = outbox::Record {
        id: id.clone(),
        time: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        client: peer.to_string(),
        user: tx.user.clone(),
        mail_from: tx.mail_from.clone(),
        envelope_from: delivered.envelope_from.clone(),
        recipients: tx.rcpts.clone(),
        size: delivered.bytes.len(),
        mailbox_simulator: tx
            .rcpts
            .iter()
            .filter_map(|r| {
                deliver::mailbox_simulator_outcome(r).map(|o| SimOutcome {
                    recipient: r.clone(),
                    outcome: o.to_string(),
                })
            })
            .collect(),
        subject,
        header_from,
        verdict,
    };
    let dir = settings.outbox.clone();
    let bytes = delivered.bytes;
    let record =
        tokio::task::spawn_blocking(move || outbox::write(&dir, &record, &bytes).map(|()| record))
            .await??;
    tracing::info!(
        %peer,
        id = %id,
        mail_from = %record.mail_from,
        envelope_from = %record.envelope_from,
        recipients = record.recipients.len(),
        "message accepted"
    );
    Ok(id)
}
