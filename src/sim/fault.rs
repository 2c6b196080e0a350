//! Faults changed while the simulator runs: a handle ([`LiveFaults`], from
//! [`super::RunningSim::faults`]) that a test — or an operator UI — uses to script what SES does
//! next, without restarting the listener (so the client's pooled connections and counters stay).
//!
//! The configured `[simulator.faults]` (see [`super::config::Faults`]) describe a steady state;
//! these are one-shot or per-connection deviations a client must survive against real SES
//! (ses-smtp.md §5, §8): an end-of-data outcome for the next messages (a reply, a silent drop,
//! `250` then a close, no answer at all), a drop or a reply-then-close at the next MAIL (SES's
//! per-session cap is a `421` at MAIL), and a downgraded or tampered greeting (no STARTTLS, a
//! different AUTH list, plaintext injected behind `220 Ready to start TLS`) that a client must
//! refuse or discard. The session stays sans-IO: greeting faults are read once per connection
//! into its [`super::session::Policy`]; MAIL and end-of-data faults are taken by the handler.
//! Off by default: an untouched handle changes nothing and costs one uncontended lock per
//! connection, MAIL and message.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::smtp::reply::Reply;

/// The end-of-data outcome of one message, taken before the configured `script`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eod {
    /// Run the normal checks (and the configured script).
    Normal,
    /// Answer with this reply instead; nothing is stored.
    Reply(Reply),
    /// Close the connection without a reply.
    Drop,
    /// Run the normal checks, answer, then close the connection (SES dropping a connection).
    AnswerThenClose,
    /// Never answer and keep the connection open: the client's own timeout must fire.
    Silent,
}

/// What the next MAIL gets instead of the session's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailFault {
    /// Close the connection without a reply.
    Drop,
    /// Send this reply, then close.
    ReplyThenClose(Reply),
}

/// The per-connection greeting faults, read once when a connection is accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Greeting {
    /// Never offer STARTTLS (a downgrade, or the wrong server): EHLO omits it, the verb is `502`.
    pub hide_starttls: bool,
    /// What `250-AUTH …` lists instead of `PLAIN LOGIN`.
    pub auth_mechanisms: Option<String>,
    /// Plaintext written in the same packet right after `220 Ready to start TLS`.
    pub starttls_trailer: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct State {
    eod: VecDeque<Eod>,
    drop_on_mail: usize,
    mail_reply_then_close: Option<Reply>,
    greeting: Greeting,
}

/// The live fault settings of one simulator; clones share them.
#[derive(Debug, Clone, Default)]
pub struct LiveFaults(Arc<Mutex<State>>);

impl LiveFaults {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data behind the lock: a panic elsewhere leaves it usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the end-of-data outcome of the next message (in order, shared by all sessions).
    pub fn push_eod(&self, step: Eod) {
        self.lock().eod.push_back(step);
    }

    /// Closes the connection (without a reply) at each of the next `n` MAIL commands.
    pub fn drop_on_next_mail(&self, n: usize) {
        self.lock().drop_on_mail = n;
    }

    /// Answers the next MAIL with `reply` (e.g. SES's `421` per-session cap), then closes.
    pub fn reply_to_next_mail_then_close(&self, reply: Reply) {
        self.lock().mail_reply_then_close = Some(reply);
    }

    /// The greeting faults for connections accepted from now on.
    pub fn set_greeting(&self, greeting: Greeting) {
        self.lock().greeting = greeting;
    }

    /// The outcome of the message whose data was just read.
    pub(crate) fn next_eod(&self) -> Eod {
        self.lock().eod.pop_front().unwrap_or(Eod::Normal)
    }

    /// The fault for a MAIL that passed the TLS and AUTH gates, if one is scripted.
    pub(crate) fn on_mail(&self) -> Option<MailFault> {
        let mut s = self.lock();
        if s.drop_on_mail > 0 {
            s.drop_on_mail -= 1;
            return Some(MailFault::Drop);
        }
        s.mail_reply_then_close
            .take()
            .map(MailFault::ReplyThenClose)
    }

    /// The greeting faults for a connection being accepted.
    pub(crate) fn greeting(&self) -> Greeting {
        self.lock().greeting.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_faults_are_taken_once_in_order() {
        let f = LiveFaults::default();
        assert_eq!(f.next_eod(), Eod::Normal);
        assert_eq!(f.on_mail(), None);
        f.push_eod(Eod::Drop);
        f.push_eod(Eod::Silent);
        f.drop_on_next_mail(2);
        f.reply_to_next_mail_then_close(Reply::plain(421, "bye"));
        assert_eq!(f.clone().next_eod(), Eod::Drop);
        assert_eq!(f.next_eod(), Eod::Silent);
        assert_eq!(f.next_eod(), Eod::Normal);
        assert_eq!(f.on_mail(), Some(MailFault::Drop));
        assert_eq!(f.on_mail(), Some(MailFault::Drop));
        assert_eq!(
            f.on_mail(),
            Some(MailFault::ReplyThenClose(Reply::plain(421, "bye")))
        );
        assert_eq!(f.on_mail(), None);
    }
}
