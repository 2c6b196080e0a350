//! Log output: one line per event on stderr, as text (default) or as one JSON object per line
//! (`log_format = "json"`, for log shippers that would otherwise have to parse the text).
//!
//! Both formats carry the same fields — timestamp, level, message and every structured field
//! of the event (`conn`, `client`, `d`, `s`, `ses_id`, …) — JSON puts the event's fields at the
//! top level (`flatten_event`), so `{"level":"INFO","message":"message relayed","conn":3,…}`.
//! `RUST_LOG` refines the level in both (default `info`). Secrets are never logged as fields, so
//! the format changes nothing about what is revealed.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// The subscriber for `format`, writing to `writer`.
pub fn subscriber<W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).with_ansi(false).finish()),
    }
}

/// Installs the process-wide subscriber (stderr); a second call changes nothing.
pub fn init(format: LogFormat) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = subscriber(format, std::io::stderr, ansi).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn emit(format: LogFormat) -> String {
        let buf = Buffer::default();
        let out = buf.clone();
        let sub = subscriber(format, move || out.clone(), false);
        tracing::subscriber::with_default(sub, || {
            tracing::info!(
                conn = 7,
                d = "example.org",
                ses_id = "0100-abc",
                "message relayed"
            );
            tracing::warn!(error = "connection lost", "upstream delivery failed");
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_is_one_object_per_line_with_the_text_lines_fields() {
        let text = emit(LogFormat::Text);
        let json = emit(LogFormat::Json);
        let lines: Vec<&str> = json.lines().collect();
        assert_eq!(lines.len(), 2, "{json}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "message relayed");
        assert_eq!(first["conn"], 7);
        assert_eq!(first["d"], "example.org");
        assert_eq!(first["ses_id"], "0100-abc");
        assert!(first["timestamp"].is_string());
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["level"], "WARN");
        assert_eq!(second["error"], "connection lost");
        // The text line carries the same fields.
        let t: Vec<&str> = text.lines().collect();
        assert!(
            t[0].contains("INFO") && t[0].contains("message relayed"),
            "{text}"
        );
        for field in ["conn=7", "d=\"example.org\"", "ses_id=\"0100-abc\""] {
            assert!(t[0].contains(field), "{field} in {text}");
        }
    }
}
