//! The SASL exchange of SMTP AUTH (RFC 4954) for the PLAIN (RFC 4616) and LOGIN mechanisms,
//! sans I/O: fed the AUTH command's arguments and then each continuation line, it answers
//! with the next challenge, a cancellation, a typed error, or the final credentials.
//!
//! One machine serves every server in the crate — the relay, the SES simulator and the tests'
//! scripted upstream — so they cannot drift apart on decoding. It never verifies anything:
//! checking a password is each protocol's business (the relay checks password hashes on the
//! blocking pool, the simulator compares SES SigV4 SMTP passwords), and each protocol words
//! its own replies from [`SaslError`].
//!
//! Rules: the initial response and every continuation line are base64 (`=` alone is an empty
//! initial response, RFC 4954 §4); a line `*` cancels (RFC 4954 §4); a PLAIN message is exactly
//! `authzid NUL authcid NUL passwd`, each part UTF-8 (RFC 4616 §2); LOGIN (no RFC; the de facto
//! form) asks `Username:` then `Password:` and also requires UTF-8. Credentials mask the
//! password in `Debug` so it cannot reach a log line by accident.

use base64::Engine;

/// The base64 challenge LOGIN sends for the user name (`Username:`).
pub const LOGIN_USERNAME: &str = "VXNlcm5hbWU6";
/// The base64 challenge LOGIN sends for the password (`Password:`).
pub const LOGIN_PASSWORD: &str = "UGFzc3dvcmQ6";

/// The mechanisms this machine speaks, as advertised in EHLO (`AUTH PLAIN LOGIN`).
pub const MECHANISMS: &str = "PLAIN LOGIN";

/// Why an exchange failed. Each protocol maps these to its own reply text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// A mechanism other than PLAIN or LOGIN.
    #[error("unsupported SASL mechanism")]
    UnknownMechanism,
    /// A response that is not valid base64.
    #[error("response is not valid base64")]
    BadBase64,
    /// A PLAIN message that is not `authzid NUL authcid NUL passwd`.
    #[error("malformed PLAIN message")]
    MalformedPlain,
    /// A name or password that is not UTF-8.
    #[error("credentials are not UTF-8")]
    NotUtf8,
}

impl SaslError {
    /// Whether the error came from the PLAIN message's structure (some servers word it apart).
    pub fn is_plain_structure(self) -> bool {
        matches!(self, SaslError::MalformedPlain | SaslError::NotUtf8)
    }
}

/// The credentials a finished exchange yields. `authzid` is empty when the client did not ask
/// to act as somebody else.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub authzid: String,
    pub username: String,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &"********")
            .finish()
    }
}

/// What the server does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `334 <challenge>` and feed the client's next line to [`Exchange::step`].
    Challenge(&'static str),
    /// The client sent `*`: the exchange is over (RFC 4954: answer 501).
    Cancelled,
    /// The exchange failed; it is over.
    Failed(SaslError),
    /// The exchange is complete; verify these credentials.
    Done(Credentials),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Plain,
    LoginUser,
    LoginPass(String),
    Over,
}

/// One AUTH exchange in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    state: State,
}

impl Exchange {
    /// Starts an exchange for `AUTH <mechanism> [initial]`. The returned exchange is over
    /// (see [`Exchange::is_over`]) unless the step is a [`Step::Challenge`].
    pub fn start(mechanism: &str, initial: Option<&[u8]>) -> (Exchange, Step) {
        let mut ex = Exchange { state: State::Over };
        let step = if mechanism.eq_ignore_ascii_case("PLAIN") {
            match initial {
                Some(resp) => plain(resp),
                None => {
                    ex.state = State::Plain;
                    Step::Challenge("")
                }
            }
        } else if mechanism.eq_ignore_ascii_case("LOGIN") {
            match initial {
                Some(user) => ex.login_user(user),
                None => {
                    ex.state = State::LoginUser;
                    Step::Challenge(LOGIN_USERNAME)
                }
            }
        } else {
            Step::Failed(SaslError::UnknownMechanism)
        };
        (ex, step)
    }

    /// Whether the exchange has ended (no continuation line is expected).
    pub fn is_over(&self) -> bool {
        self.state == State::Over
    }

    /// Which mechanism is waiting for a line (for logs), if any.
    pub fn waiting_for(&self) -> Option<&'static str> {
        match self.state {
            State::Plain => Some("PLAIN"),
            State::LoginUser | State::LoginPass(_) => Some("LOGIN"),
            State::Over => None,
        }
    }

    /// Feeds one continuation line (without CRLF).
    pub fn step(&mut self, line: &[u8]) -> Step {
        let state = std::mem::replace(&mut self.state, State::Over);
        if line == b"*" {
            return Step::Cancelled;
        }
        match state {
            State::Over => Step::Failed(SaslError::MalformedPlain),
            State::Plain => plain(line),
            State::LoginUser => self.login_user(line),
            State::LoginPass(username) => match decode(line) {
                Ok(raw) => match String::from_utf8(raw) {
                    Ok(password) => Step::Done(Credentials {
                        authzid: String::new(),
                        username,
                        password: password.into_bytes(),
                    }),
                    Err(_) => Step::Failed(SaslError::NotUtf8),
                },
                Err(e) => Step::Failed(e),
            },
        }
    }

    fn login_user(&mut self, b64: &[u8]) -> Step {
        match decode(b64).map(String::from_utf8) {
            Ok(Ok(user)) => {
                self.state = State::LoginPass(user);
                Step::Challenge(LOGIN_PASSWORD)
            }
            Ok(Err(_)) => Step::Failed(SaslError::NotUtf8),
            Err(e) => Step::Failed(e),
        }
    }
}

fn decode(b64: &[u8]) -> Result<Vec<u8>, SaslError> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| SaslError::BadBase64)
}

/// A PLAIN message (RFC 4616 §2); `=` is the empty initial response (RFC 4954 §4).
fn plain(b64: &[u8]) -> Step {
    let raw = if b64 == b"=" {
        Vec::new()
    } else {
        match decode(b64) {
            Ok(r) => r,
            Err(e) => return Step::Failed(e),
        }
    };
    let parts: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
    let [authzid, user, pass] = parts.as_slice() else {
        return Step::Failed(SaslError::MalformedPlain);
    };
    let utf8 = |b: &[u8]| std::str::from_utf8(b).map(str::to_string);
    match (utf8(authzid), utf8(user), utf8(pass)) {
        (Ok(authzid), Ok(username), Ok(password)) => Step::Done(Credentials {
            authzid,
            username,
            password: password.into_bytes(),
        }),
        _ => Step::Failed(SaslError::NotUtf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;

    fn done(step: Step) -> Credentials {
        match step {
            Step::Done(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_initial_response() {
        let (ex, step) = Exchange::start("plain", Some(B64.encode(b"az\0app\0pw").as_bytes()));
        let c = done(step);
        assert_eq!((c.authzid.as_str(), c.username.as_str()), ("az", "app"));
        assert_eq!(c.password, b"pw");
        assert!(ex.is_over());
        assert!(!format!("{c:?}").contains("pw"));
    }

    #[test]
    fn plain_continuation() {
        let (mut ex, step) = Exchange::start("PLAIN", None);
        assert_eq!(step, Step::Challenge(""));
        assert_eq!(ex.waiting_for(), Some("PLAIN"));
        let c = done(ex.step(B64.encode(b"\0app\0pw").as_bytes()));
        assert_eq!(c.username, "app");
        assert!(ex.is_over());
    }

    #[test]
    fn plain_errors() {
        let start = |b: &[u8]| Exchange::start("PLAIN", Some(b)).1;
        assert_eq!(start(b"!!!"), Step::Failed(SaslError::BadBase64));
        assert_eq!(start(b"="), Step::Failed(SaslError::MalformedPlain));
        let two = B64.encode(b"app\0pw");
        assert_eq!(
            start(two.as_bytes()),
            Step::Failed(SaslError::MalformedPlain)
        );
        let four = B64.encode(b"\0app\0pw\0x");
        assert_eq!(
            start(four.as_bytes()),
            Step::Failed(SaslError::MalformedPlain)
        );
        let latin1 = B64.encode(b"\0\xe9\0pw");
        assert_eq!(start(latin1.as_bytes()), Step::Failed(SaslError::NotUtf8));
        assert!(SaslError::NotUtf8.is_plain_structure());
        assert!(!SaslError::BadBase64.is_plain_structure());
    }

    #[test]
    fn login_both_ways() {
        let (mut ex, step) = Exchange::start("LOGIN", None);
        assert_eq!(step, Step::Challenge(LOGIN_USERNAME));
        assert_eq!(ex.step(b"YXBw"), Step::Challenge(LOGIN_PASSWORD));
        let c = done(ex.step(b"cHc="));
        assert_eq!(
            (c.username.as_str(), c.password.as_slice()),
            ("app", &b"pw"[..])
        );
        let (mut ex, step) = Exchange::start("login", Some(b"YXBw"));
        assert_eq!(step, Step::Challenge(LOGIN_PASSWORD));
        assert_eq!(done(ex.step(b"cHc=")).username, "app");
        assert_eq!(
            Exchange::start("LOGIN", Some(b"%%")).1,
            Step::Failed(SaslError::BadBase64)
        );
        let (mut ex, _) = Exchange::start("LOGIN", None);
        assert_eq!(ex.step(b"6Q=="), Step::Failed(SaslError::NotUtf8));
    }

    #[test]
    fn cancel_and_unknown() {
        let (mut ex, _) = Exchange::start("LOGIN", None);
        assert_eq!(ex.step(b"*"), Step::Cancelled);
        assert!(ex.is_over());
        let (mut ex, _) = Exchange::start("PLAIN", None);
        assert_eq!(ex.step(b"*"), Step::Cancelled);
        let (ex, step) = Exchange::start("CRAM-MD5", None);
        assert_eq!(step, Step::Failed(SaslError::UnknownMechanism));
        assert!(ex.is_over());
    }

    proptest::proptest! {
        /// Any PLAIN triple without NULs round-trips; any input never panics.
        #[test]
        fn plain_round_trip(a in "[^\u{0}]{0,20}", u in "[^\u{0}]{0,20}", p in "[^\u{0}]{0,20}") {
            let msg = B64.encode(format!("{a}\0{u}\0{p}"));
            let c = done(Exchange::start("PLAIN", Some(msg.as_bytes())).1);
            proptest::prop_assert_eq!(c.authzid, a);
            proptest::prop_assert_eq!(c.username, u);
            proptest::prop_assert_eq!(c.password, p.into_bytes());
        }

        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..4)) {
            let (mut ex, _) = Exchange::start("LOGIN", None);
            for l in &lines {
                let _ = ex.step(l);
            }
        }
    }
}
