//! dkim-relay: an outbound DKIM-signing SMTP relay for Amazon SES.
//!
//! # Layout
//! (filled in as modules land)

pub mod cli;
pub mod config;
pub mod dkim;
pub mod dns;
pub mod message;
pub mod net;
pub mod relay;
pub mod server;
pub mod sesauth;
pub mod sim;
pub mod smtp;
pub mod tls;
pub mod upstream;
pub mod users;
