//! The SMTP protocol core, sans I/O: framing ([`codec`]), commands ([`command`]), replies
//! ([`reply`]) and the relay's session state machine ([`session`]). Nothing here touches a
//! socket; every function takes bytes or values and returns values, so it is tested with bytes.

pub mod codec;
pub mod command;
pub mod envelope;
pub mod reply;
pub mod session;
