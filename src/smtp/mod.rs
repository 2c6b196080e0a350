//! The SMTP protocol core, sans I/O: framing ([`codec`]), commands and their typed errors
//! ([`command`]), replies ([`reply`]), the SASL PLAIN/LOGIN exchange every server shares
//! ([`sasl`]) and the relay's session state machine ([`session`]). Nothing here touches a
//! socket; every function takes bytes or values and returns values, so it is tested with bytes.
//! The socket side is the one server shell, `crate::server`.

pub mod codec;
pub mod command;
pub mod envelope;
pub mod reply;
pub mod sasl;
pub mod session;
