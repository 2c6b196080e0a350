//! `[http]` (the operator's endpoint: `/metrics`, `/livez`, `/readyz`) and `log_format`.
//!
//! `[http]` is off when absent. The address is taken as written: loopback in the example,
//! because metrics name the configured domains; a pod's probes need `0.0.0.0:9090` (the kubelet
//! connects to the pod's address), which is the operator's explicit choice.

use std::net::SocketAddr;

use super::Ctx;
use crate::config::defaults::top as default;
use crate::config::raw::RawHttp;
use crate::config::*;

pub(super) fn http(
    cx: &mut Ctx<'_>,
    raw: Option<&RawHttp>,
    log_format: Option<&str>,
) -> (Option<crate::http::Settings>, LogFormat) {
    let format = match log_format.unwrap_or(default::LOG_FORMAT) {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            cx.error(
                &["log_format"],
                format!("`{other}` is not a log format: use \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    let Some(raw) = raw else {
        return (None, format);
    };
    let Some(listen) = raw.listen.as_deref() else {
        cx.error(
            &["http"],
            "[http] needs listen = \"IP:PORT\" (for example \"127.0.0.1:9090\"); remove the \
             table to turn the endpoint off",
        );
        return (None, format);
    };
    match listen.parse::<SocketAddr>() {
        Ok(listen) => (Some(crate::http::Settings { listen }), format),
        Err(_) => {
            cx.error(
                &["http", "listen"],
                format!("`{listen}` is not IP:PORT (for example \"127.0.0.1:9090\")"),
            );
            (None, format)
        }
    }
}
