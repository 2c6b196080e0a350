//! Test harness for the SES simulator: settings on 127.0.0.1:0, the example SES credentials,
//! and the simulator's conveniences on the kit's one client ([`SmtpClient`], in
//! [`super::client`]): connecting to a `RunningSim` and SES's exact wording.

use std::path::Path;

use base64::Engine;
use dkim_relay::secret::Secret;
use dkim_relay::sim::RunningSim;
use dkim_relay::sim::config::{Account, SimSettings};
use dkim_relay::smtp::reply::Reply;

use super::client::SmtpClient;

pub const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub const PASS_US_EAST_1: &str = "BLBM/9hSUELfq8Gw+rU1YcBjkOxGbhT2XG763xVLGWL9";
pub const PASS_US_EAST_2: &str = "BMPPgbAHoFVbze1Ud0oA5uNdXRwUXUZ+qOwphGJbl/cS";
pub const PASS_V2: &str = "An60U4ZD3sd4fg+FvXUjayOipTt8LO4rUUmhpdX6ctDy";

pub fn settings(dir: &Path) -> SimSettings {
    let mut s = SimSettings::resolve(None, dir).unwrap();
    s.accounts = vec![Account {
        access_key_id: KEY_ID.into(),
        secret: Secret::new(SECRET.into()),
    }];
    s.identities = vec!["example.org".into()];
    s.mail_from
        .insert("example.org".into(), "mail.example.org".into());
    s.outbox = dir.join("outbox");
    s
}

pub async fn start(settings: SimSettings) -> RunningSim {
    dkim_relay::sim::start(settings, Vec::new()).await.unwrap()
}

/// The simulator's side of the one test client ([`SmtpClient`]): connecting to a
/// [`RunningSim`] (trusting its CA) and the exact SES wording of STARTTLS and a transaction.
impl SmtpClient {
    /// Connects to the STARTTLS listener, trusting the simulator's CA; the banner is not read.
    pub async fn connect_sim(sim: &RunningSim) -> SmtpClient {
        let mut c = SmtpClient::connect_silent(sim.starttls_addr).await;
        c.trust(&sim.ca_pem);
        c
    }

    /// Connects to the implicit-TLS listener; the banner is not read.
    pub async fn connect_sim_implicit(sim: &RunningSim) -> SmtpClient {
        let addr = sim.implicit_addr.unwrap();
        SmtpClient::connect_implicit_silent(addr, &sim.ca_pem).await
    }

    /// STARTTLS, asserting SES's exact `220 Ready to start TLS`, then the handshake.
    pub async fn starttls_ses(&mut self) {
        assert_eq!(
            self.cmd_text("STARTTLS").await,
            "220 Ready to start TLS\r\n"
        );
        self.upgrade().await;
    }

    /// Banner, EHLO, STARTTLS, EHLO, AUTH PLAIN with the example credentials.
    pub async fn sim_ready(sim: &RunningSim) -> SmtpClient {
        let mut c = SmtpClient::connect_sim(sim).await;
        c.reply().await.unwrap();
        c.cmd_text("EHLO client.test").await;
        c.starttls_ses().await;
        c.cmd_text("EHLO client.test").await;
        let r = c
            .cmd_text(&format!("AUTH PLAIN {}", plain(KEY_ID, PASS_US_EAST_1)))
            .await;
        assert_eq!(r, "235 Authentication successful.\r\n");
        c
    }

    /// MAIL, RCPTs, DATA (each asserted with SES's exact wording), the message; returns the
    /// end-of-data reply.
    pub async fn message(&mut self, from: &str, rcpts: &[&str], data: &[u8]) -> Reply {
        assert_eq!(
            self.cmd_text(&format!("MAIL FROM:<{from}>")).await,
            "250 Ok\r\n"
        );
        for r in rcpts {
            assert_eq!(self.cmd_text(&format!("RCPT TO:<{r}>")).await, "250 Ok\r\n");
        }
        assert_eq!(
            self.cmd_text("DATA").await,
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        self.send_raw(&dkim_relay::upstream::framing::dot_stuff(data))
            .await;
        self.reply().await.expect("no end-of-data reply")
    }
}

pub fn plain(user: &str, pass: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub fn simple_message(from: &str) -> Vec<u8> {
    format!("From: App <{from}>\r\nTo: user@dest.test\r\nSubject: hello\r\n\r\nHello.\r\n")
        .into_bytes()
}
