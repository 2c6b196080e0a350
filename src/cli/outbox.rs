//! `dkim-relay outbox list|show`: the simulator's outbox as text or JSON, for a person or a
//! script. Reading and formatting the records is [`crate::sim::outbox`]'s job; this module
//! picks the format the user asked for, words the empty outbox and prints.
//!
//! Why here: printing is the subcommand's job, so the simulator carries no CLI wording. `show`
//! refuses an ID that is not a plain outbox ID (no path traversal: `sim::outbox::show` checks
//! it). Nothing raw reaches the terminal: the text forms escape control characters that came
//! from a message (`sim::outbox` formats them through [`crate::message::printable`]), and the
//! JSON forms escape the ones serde leaves raw (DEL, C1, bidi controls) as `\uXXXX`, which is
//! the same JSON value.

use std::path::Path;
use std::process::ExitCode;

use super::print_or_fail;
use crate::message::printable::json_safe;
use crate::sim::outbox;

/// `dkim-relay outbox list [--json]`.
pub fn list(dir: &Path, json: bool) -> ExitCode {
    print_or_fail(list_text(dir, json))
}

/// `dkim-relay outbox show ID [--json]`.
pub fn show(dir: &Path, id: &str, json: bool) -> ExitCode {
    print_or_fail(show_text(dir, id, json))
}

/// What `outbox list` prints: a JSON array, a table, or a line saying the outbox is empty.
pub fn list_text(dir: &Path, json: bool) -> anyhow::Result<String> {
    let records = outbox::list(dir)?;
    Ok(if json {
        json_safe(&outbox::format_json(&records)).into_owned()
    } else if records.is_empty() {
        format!("outbox {} is empty\n", dir.display())
    } else {
        outbox::format_table(&records)
    })
}

/// What `outbox show ID` prints: the record as JSON, or the record and the delivered message.
pub fn show_text(dir: &Path, id: &str, json: bool) -> anyhow::Result<String> {
    let (record, eml) = outbox::show(dir, id)?;
    Ok(if json {
        json_safe(&serde_json::to_string_pretty(&record)?).into_owned()
    } else {
        outbox::format_show(&record, &eml)
    })
}
