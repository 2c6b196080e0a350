//! `dkim-relay dmarc-report FILE... [--json]`: receivers' DMARC aggregate reports, explained.
//! Reading and analysing is [`crate::dmarc_report`]'s job; this module words it for a person
//! (one block per day, source and outcome; every failure with its cause and fix; totals) or
//! prints the analysis as JSON for a script.
//!
//! Exit status: 0 when every file was read, 1 when any could not be (the others are still
//! reported; each unreadable file is named on stderr with the reason).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::dmarc_report::{self, Analysis};

/// Reads every file, prints the analysis.
pub fn run(files: &[PathBuf], json: bool) -> ExitCode {
    let mut reports = Vec::new();
    let mut failed = 0;
    for f in files {
        match dmarc_report::read(f) {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    let analysis = dmarc_report::analyse(&reports);
    if json {
        match serde_json::to_string_pretty(&analysis) {
            Ok(text) => outln!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else if !reports.is_empty() {
        out!("{}", text(&analysis));
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The human-readable report.
pub fn text(a: &Analysis) -> String {
    let mut out = String::new();
    for r in &a.reports {
        let _ = writeln!(
            out,
            "report {} from {} for {} (p={}), {}{}: {}",
            r.report_id,
            r.reporter,
            r.domain,
            r.policy,
            r.begin,
            if r.end != r.begin {
                format!(" to {}", r.end)
            } else {
                String::new()
            },
            plural(r.messages, "message")
        );
    }
    for row in &a.rows {
        out.push('\n');
        let _ = writeln!(
            out,
            "{}  {}  {} ({})  {}  DMARC {}  disposition {}{}",
            row.day,
            row.header_from,
            row.source_ip,
            if row.ses { "Amazon SES" } else { "not SES" },
            plural(row.messages, "message"),
            row.dmarc,
            row.disposition,
            if row.overrides.is_empty() {
                String::new()
            } else {
                format!(" ({})", row.overrides.join(", "))
            }
        );
        let sigs: Vec<String> = row
            .signatures
            .iter()
            .map(|s| {
                format!(
                    "d={} s={} {}{}",
                    s.domain,
                    s.selector,
                    s.result,
                    if s.aligned {
                        ", aligned"
                    } else {
                        ", not aligned"
                    }
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "    DKIM {}: {}",
            row.dkim,
            if sigs.is_empty() {
                "no signature".to_string()
            } else {
                sigs.join("; ")
            }
        );
        let spf: Vec<String> = row
            .spf_checks
            .iter()
            .map(|s| {
                format!(
                    "{} {} {}{}",
                    s.scope,
                    s.domain,
                    s.result,
                    if s.aligned {
                        ", aligned"
                    } else {
                        ", not aligned"
                    }
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "    SPF  {}: {}{}",
            row.spf,
            if spf.is_empty() {
                "no check".to_string()
            } else {
                spf.join("; ")
            },
            if row.envelope_from.is_empty() {
                String::new()
            } else {
                format!(" (envelope from {})", row.envelope_from)
            }
        );
        let _ = writeln!(
            out,
            "    reported by {}",
            row.reporters.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        for f in &row.findings {
            let class = serde_json::to_value(f.class)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(out, "    ! {class}: {}", f.explanation);
        }
    }
    let t = &a.totals;
    out.push('\n');
    let pct = |n: u64| {
        if t.messages == 0 {
            0.0
        } else {
            100.0 * n as f64 / t.messages as f64
        }
    };
    let _ = writeln!(
        out,
        "total: {}, DMARC pass {} ({:.1} %), fail {} ({:.1} %)",
        plural(t.messages, "message"),
        t.dmarc_pass,
        pct(t.dmarc_pass),
        t.dmarc_fail,
        pct(t.dmarc_fail)
    );
    for (class, n) in &t.findings {
        let _ = writeln!(out, "  {class}: {}", plural(*n, "message"));
    }
    out
}
