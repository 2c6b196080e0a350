//! The web pages: the message list (`/`, live through `/api/events` when JavaScript runs,
//! filterable by verdict with a plain form when it does not) and the message view
//! (`/view/{ID}`), rendered here on the server: tabs Authentication, HTML, Text, Headers, Raw.
//!
//! Every byte that comes from a message goes through [`esc`] (text and attribute values alike).
//! The HTML body is shown in an `<iframe sandbox srcdoc>`: no scripts, an opaque origin, and a
//! Content-Security-Policy — the page's (inherited by `srcdoc` documents) and one more `<meta>`
//! inside — that forbids every remote load, so opening a message never tells its sender. No
//! build step, no CDN: the stylesheet and the script are in `assets/`, embedded with
//! `include_str!`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::api;
use super::explain::{self, Explanation};
use super::mailbox::Entry;
use super::mailpit::{self, MailAddress, MessageSummary};
use crate::sim::feedback;

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");

/// The pages' policy: own stylesheet and script only, WebSocket/fetch to this server only,
/// nothing remote; message HTML (srcdoc, inheriting it) may use inline styles and data: images.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                        img-src 'self' data:; font-src data:; connect-src 'self'; frame-src 'self'; \
                        base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// Added inside the HTML body's document as well.
const FRAME_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:";

/// Rows the list page shows (the API pages through all of them).
const LIST_ROWS: usize = 200;

/// The verdict filters offered on the list (Mailpit `tag:` terms).
const FILTERS: &[(&str, &str)] = &[
    ("", "All messages"),
    ("dmarc-pass", "DMARC pass"),
    ("dmarc-fail", "DMARC fail"),
    ("dmarc-none", "DMARC none (no record)"),
    ("dkim-pass", "DKIM pass"),
    ("dkim-fail", "DKIM fail"),
    ("dkim-aligned", "DKIM aligned pass"),
    ("spf-pass", "SPF pass"),
    ("spf-aligned", "SPF aligned"),
    ("simulator-bounce", "Mailbox simulator: bounce"),
    ("simulator-complaint", "Mailbox simulator: complaint"),
    ("feedback", "Feedback from SES"),
];

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html_response(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
         <script src=\"/assets/app.js\" defer></script></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header class=\"top\"><a href=\"/\" class=\"brand\">dkim-relay · SES simulator</a></header>\
         <main id=\"main\">{body}</main></body></html>\n",
        title = esc(title)
    )
}

pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

fn badge(word: &str, label: &str) -> String {
    let class = match word {
        "pass" => "ok",
        "fail" | "permerror" | "softfail" => "bad",
        _ => "warn",
    };
    let word = if word.is_empty() { "none" } else { word };
    if label.is_empty() {
        format!("<span class=\"badge {class}\">{}</span>", esc(word))
    } else {
        format!(
            "<span class=\"badge {class}\">{} {}</span>",
            esc(label),
            esc(word)
        )
    }
}

fn addr_text(a: &MailAddress) -> String {
    if a.name.is_empty() {
        a.address.clone()
    } else {
        format!("{} <{}>", a.name, a.address)
    }
}

fn tag_value<'a>(tags: &'a [String], prefix: &str) -> &'a str {
    tags.iter()
        .find_map(|t| {
            t.strip_prefix(prefix)
                .filter(|v| !v.is_empty() && *v != "aligned")
        })
        .unwrap_or("none")
}

fn row(m: &MessageSummary) -> String {
    let from = m.from.as_ref().map(addr_text).unwrap_or_default();
    let to: Vec<String> = m.to.iter().map(addr_text).collect();
    let subject = if m.subject.is_empty() {
        "(no subject)"
    } else {
        &m.subject
    };
    format!(
        "<tr data-id=\"{id}\" class=\"{read}\"><td><time datetime=\"{t}\">{t}</time></td>\
         <td>{from}</td><td>{to}</td><td><a href=\"/view/{id}\">{subject}</a></td>\
         <td>{dkim} {spf} {dmarc}</td></tr>",
        id = esc(&m.id),
        read = if m.read { "read" } else { "unread" },
        t = esc(&m.created),
        from = esc(&from),
        to = esc(&to.join(", ")),
        subject = esc(subject),
        dkim = badge(tag_value(&m.tags, "dkim-"), "DKIM"),
        spf = badge(tag_value(&m.tags, "spf-"), "SPF"),
        dmarc = badge(tag_value(&m.tags, "dmarc-"), "DMARC"),
    )
}

#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    query: Option<String>,
    tag: Option<String>,
}

/// `GET /`: the message list (newest first), `?query=` (Mailpit syntax) and `?tag=` filters.
pub async fn index(State(state): State<Arc<AppState>>, Query(q): Query<ListQuery>) -> Response {
    if let Err(e) = state.mailbox.refresh_async().await {
        return api::bad_request(e.to_string());
    }
    let all = state.mailbox.all();
    let text = q.query.clone().unwrap_or_default();
    let tag = q.tag.clone().unwrap_or_default();
    let mut query = text.trim().to_string();
    if !tag.is_empty() {
        query = format!("{query} tag:{tag}").trim().to_string();
    }
    let rows: Vec<MessageSummary> = if query.is_empty() {
        all.iter().map(Entry::summary).collect()
    } else {
        api::matching(&all, &query)
    };
    let options: String = FILTERS
        .iter()
        .map(|(value, label)| {
            format!(
                "<option value=\"{v}\"{sel}>{l}</option>",
                v = esc(value),
                sel = if *value == tag { " selected" } else { "" },
                l = esc(label)
            )
        })
        .collect();
    let body_rows: String = rows.iter().take(LIST_ROWS).map(row).collect();
    let more = if rows.len() > LIST_ROWS {
        format!(
            "<p>Showing the newest {LIST_ROWS} of {}; search to narrow the list.</p>",
            rows.len()
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Outbox</h1>\
         <p class=\"lead\">Every message the simulator accepted, as SES would deliver it, with \
         the DKIM, SPF and DMARC verdict a receiver would reach. The list updates live.</p>\
         <form class=\"filters\" method=\"get\" action=\"/\" role=\"search\">\
         <label for=\"query\">Search</label>\
         <input id=\"query\" name=\"query\" type=\"search\" value=\"{text}\" \
          placeholder=\"from:, to:, subject:, tag:, is:unread\">\
         <label for=\"tag\">Verdict</label><select id=\"tag\" name=\"tag\">{options}</select>\
         <button type=\"submit\">Filter</button></form>\
         <p id=\"status\" role=\"status\" aria-live=\"polite\">{count} message{s}</p>\
         <table id=\"messages\" data-query=\"{query}\"><caption class=\"visually-hidden\">Messages, newest first</caption>\
         <thead><tr><th scope=\"col\">Received</th><th scope=\"col\">From</th><th scope=\"col\">To</th>\
         <th scope=\"col\">Subject</th><th scope=\"col\">Verdict</th></tr></thead>\
         <tbody>{body_rows}</tbody></table>{more}",
        text = esc(&text),
        query = esc(&query),
        count = rows.len(),
        s = if rows.len() == 1 { "" } else { "s" },
    );
    html_response(layout("Outbox · dkim-relay SES simulator", &body))
}

fn hint(h: &Option<String>) -> String {
    match h {
        Some(h) => format!("<p class=\"hint\"><strong>Fix:</strong> {}</p>", esc(h)),
        None => String::new(),
    }
}

/// The Authentication tab.
fn auth_panel(x: &Explanation, entry: &Entry) -> String {
    let mut out = String::new();
    let verdict = match x.summary.as_str() {
        "pass" => "DMARC passes: a receiver would treat this message as authentically from its \
                   From domain."
            .to_string(),
        "none" => format!(
            "DMARC does not apply (no policy for {}): receivers decide on their own.",
            x.from_domain
        ),
        other => format!(
            "DMARC {other}: a receiver would apply the policy ({}).",
            if x.dmarc.disposition.as_str().is_empty() {
                "none"
            } else {
                x.dmarc.disposition.as_str()
            }
        ),
    };
    out.push_str(&format!(
        "<div class=\"verdict {cls}\" id=\"verdict-summary\"><p>{b}</p><p>{v}</p></div>",
        cls = match x.summary.as_str() {
            "pass" => "ok",
            "none" => "warn",
            _ => "bad",
        },
        b = badge(&x.summary, "DMARC"),
        v = esc(&verdict)
    ));
    // Domains and alignment.
    out.push_str(
        "<h3>Domains a receiver compares</h3><table class=\"domains\"><thead><tr>\
         <th scope=\"col\">Identifier</th><th scope=\"col\">Domain</th>\
         <th scope=\"col\">Check</th><th scope=\"col\">Aligned with From</th></tr></thead><tbody>",
    );
    for (i, id) in x.identifiers.iter().enumerate() {
        let check = if i == 0 {
            "—".to_string()
        } else {
            badge(if id.passed { "pass" } else { "fail" }, "")
        };
        let aligned = if i == 0 {
            "—".to_string()
        } else {
            badge(if id.aligned { "pass" } else { "fail" }, "aligned:")
        };
        out.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{check}</td><td>{aligned}</td></tr>",
            esc(&id.role),
            esc(&id.domain)
        ));
    }
    out.push_str("</tbody></table>");
    // DKIM cards.
    if x.dkim.is_empty() {
        out.push_str(
            "<section class=\"card\"><h3>DKIM</h3><p>No DKIM-Signature in the message.</p></section>",
        );
    }
    for (i, d) in x.dkim.iter().enumerate() {
        out.push_str(&format!(
            "<section class=\"card dkim\" aria-labelledby=\"dkim-{i}\"><h3 id=\"dkim-{i}\">DKIM signature {n} — {who}</h3>\
             <p>{res} {al}</p><dl>\
             <dt>Domain (d=)</dt><dd><code>{dom}</code></dd>\
             <dt>Selector (s=)</dt><dd><code>{sel}</code></dd>\
             <dt>Algorithm</dt><dd>{alg}</dd>\
             <dt>Signed headers (h=)</dt><dd>{h}</dd>\
             <dt>Reason</dt><dd class=\"reason\">{reason}</dd></dl>{hint}</section>",
            n = i + 1,
            who = if d.signer == "ses" {
                "SES's (d=amazonses.com)"
            } else {
                "yours"
            },
            res = badge(d.result.as_str(), "DKIM"),
            al = badge(if d.aligned { "pass" } else { "fail" }, "aligned:"),
            dom = esc(&d.domain),
            sel = esc(&d.selector),
            alg = esc(&d.algorithm),
            h = esc(&d.signed_headers.join(":")),
            reason = esc(&d.reason),
            hint = hint(&d.hint),
        ));
    }
    // SPF.
    out.push_str(&format!(
        "<section class=\"card spf\" aria-labelledby=\"spf-h\"><h3 id=\"spf-h\">SPF</h3><p>{res} {al}</p><dl>\
         <dt>MAIL FROM domain</dt><dd><code>{dom}</code></dd>\
         <dt>Envelope sender (as delivered)</dt><dd><code>{env}</code></dd>\
         <dt>Reason</dt><dd class=\"reason\">{reason}</dd></dl>{hint}</section>",
        res = badge(x.spf.result.as_str(), "SPF"),
        al = badge(if x.spf.aligned { "pass" } else { "fail" }, "aligned:"),
        dom = esc(&x.spf.domain),
        env = esc(&x.envelope_from),
        reason = esc(&x.spf.reason),
        hint = hint(&x.spf_hint),
    ));
    // DMARC.
    out.push_str(&format!(
        "<section class=\"card dmarc\" aria-labelledby=\"dmarc-h\"><h3 id=\"dmarc-h\">DMARC</h3><p>{res}</p><dl>\
         <dt>From domain</dt><dd><code>{dom}</code></dd>\
         <dt>Policy</dt><dd>{pol}</dd><dt>Disposition</dt><dd>{dis}</dd>\
         <dt>Record</dt><dd><code>{rec}</code></dd>\
         <dt>Reason</dt><dd class=\"reason\">{reason}</dd></dl>{hint}</section>",
        res = badge(x.dmarc.result.as_str(), "DMARC"),
        dom = esc(&x.dmarc.from_domain),
        pol = esc(match x.dmarc.policy.as_str() {
            "" => "(no record)",
            p => p,
        }),
        dis = esc(match x.dmarc.disposition.as_str() {
            "" => "none",
            p => p,
        }),
        rec = esc(x.dmarc.record.as_deref().unwrap_or("(none)")),
        reason = esc(&x.dmarc.reason),
        hint = hint(&x.dmarc_hint),
    ));
    // What SES changed.
    let c = &x.ses_changes;
    let added: String = c
        .added
        .iter()
        .map(|a| format!("<li><code>{}</code></li>", esc(a)))
        .collect();
    let removed: String = c
        .removed
        .iter()
        .map(|a| format!("<li>{}</li>", esc(a)))
        .collect();
    out.push_str(&format!(
        "<section class=\"card\" aria-labelledby=\"ses-h\"><h3 id=\"ses-h\">What SES changed</h3><dl>\
         <dt>Message-ID (replaced)</dt><dd><code>{mid}</code></dd>\
         <dt>Date (replaced)</dt><dd><code>{date}</code></dd>\
         <dt>Envelope sender</dt><dd><code>{env}</code> (MAIL FROM was <code>{mf}</code>: \
         bounces and complaints go there)</dd></dl>\
         <h4>Added</h4><ul>{added}</ul><h4>Removed</h4><ul>{removed}</ul></section>",
        mid = esc(&c.message_id),
        date = esc(&c.date),
        env = esc(&c.envelope_from),
        mf = esc(&x.mail_from),
    ));
    if !entry.record.mailbox_simulator.is_empty() {
        let items: String = entry
            .record
            .mailbox_simulator
            .iter()
            .map(|o| {
                format!(
                    "<li><code>{}</code>: {}</li>",
                    esc(&o.recipient),
                    esc(&o.outcome)
                )
            })
            .collect();
        out.push_str(&format!(
            "<section class=\"card\" aria-labelledby=\"sim-h\"><h3 id=\"sim-h\">Mailbox simulator</h3><ul>{items}</ul></section>"
        ));
    }
    out.push_str(&format!(
        "<section class=\"card\" aria-labelledby=\"ar-h\"><h3 id=\"ar-h\">The header a receiver would add</h3>\
         <pre class=\"ar\">{}</pre></section>",
        esc(&x.authentication_results.replace("\r\n", "\n"))
    ));
    out
}

/// Links between a message and the feedback SES would send for it.
fn related(state: &AppState, e: &Entry) -> String {
    if let Some(original) = feedback::original_of(&e.record) {
        return format!(
            "<p class=\"related\">Feedback SES would send to the MAIL FROM for \
             <a href=\"/view/{o}\">message {o}</a>.</p>",
            o = esc(original)
        );
    }
    let items: String = state
        .mailbox
        .all()
        .iter()
        .filter(|x| feedback::original_of(&x.record) == Some(e.record.id.as_str()))
        .map(|x| {
            format!(
                "<li><a href=\"/view/{}\">{}</a></li>",
                esc(&x.record.id),
                esc(x.record.subject.as_deref().unwrap_or("(no subject)"))
            )
        })
        .collect();
    if items.is_empty() {
        String::new()
    } else {
        format!(
            "<section class=\"related\" aria-labelledby=\"fb-h\"><h2 id=\"fb-h\">Feedback SES \
             would send for this message</h2><ul>{items}</ul></section>"
        )
    }
}

/// `GET /view/{ID}`: one message, server-rendered.
pub async fn view(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let e = match api::entry(&state, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let eml = match api::raw_bytes(&state, &e.record.id).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    state
        .mailbox
        .set_read(std::slice::from_ref(&e.record.id), true);
    let x = explain::explain(&e.record, &eml);
    let related = related(&state, &e);
    let p = &e.parsed;
    let subject = if p.subject.is_empty() {
        "(no subject)"
    } else {
        &p.subject
    };
    let from = p.from.as_ref().map(addr_text).unwrap_or_default();
    let to: Vec<String> = p.to.iter().map(addr_text).collect();
    let tags: String = mailpit::tags(&e.record)
        .iter()
        .map(|t| format!("<li>{}</li>", esc(t)))
        .collect();
    let html_panel = if p.html.is_empty() {
        "<p>This message has no HTML part.</p>".to_string()
    } else {
        let doc = format!(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"{FRAME_CSP}\">{}",
            p.html
        );
        format!(
            "<iframe class=\"body\" title=\"HTML body of the message\" sandbox=\"\" \
             referrerpolicy=\"no-referrer\" srcdoc=\"{}\"></iframe>",
            esc(&doc)
        )
    };
    let text_panel = if p.text.is_empty() {
        "<p>This message has no text part.</p>".to_string()
    } else {
        format!("<pre class=\"text\">{}</pre>", esc(&p.text))
    };
    let header_rows: String = mailpit::header_fields(&eml)
        .iter()
        .map(|(n, v)| {
            format!(
                "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
                esc(n),
                esc(v)
            )
        })
        .collect();
    let raw = String::from_utf8_lossy(&eml);
    let body = format!(
        "<p><a href=\"/\">← All messages</a></p>\
         <h1 id=\"subject\">{subject}</h1>\
         <dl class=\"meta\"><dt>From</dt><dd>{from}</dd><dt>To</dt><dd>{to}</dd>\
         <dt>Received</dt><dd><time datetime=\"{time}\">{time}</time></dd>\
         <dt>ID</dt><dd><code>{id}</code></dd><dt>Tags</dt><dd><ul class=\"tags\">{tags}</ul></dd></dl>{related}\
         <nav class=\"tabs\" aria-label=\"Message views\"><ul>\
         <li><a href=\"#auth\">Authentication</a></li><li><a href=\"#html\">HTML</a></li>\
         <li><a href=\"#text\">Text</a></li><li><a href=\"#headers\">Headers</a></li>\
         <li><a href=\"#raw\">Raw</a></li></ul></nav>\
         <section class=\"panel\" id=\"auth\" aria-labelledby=\"auth-h\"><h2 id=\"auth-h\">Authentication</h2>{auth}</section>\
         <section class=\"panel\" id=\"html\" aria-labelledby=\"html-h\"><h2 id=\"html-h\">HTML</h2>{html}</section>\
         <section class=\"panel\" id=\"text\" aria-labelledby=\"text-h\"><h2 id=\"text-h\">Text</h2>{text}</section>\
         <section class=\"panel\" id=\"headers\" aria-labelledby=\"headers-h\"><h2 id=\"headers-h\">Headers</h2>\
         <table class=\"headers\"><tbody>{header_rows}</tbody></table></section>\
         <section class=\"panel\" id=\"raw\" aria-labelledby=\"raw-h\"><h2 id=\"raw-h\">Raw</h2>\
         <p><a href=\"/api/v1/message/{id}/raw?dl=1\">Download .eml</a> · \
         <a href=\"/api/v1/message/{id}/verdict\">Verdict as JSON</a></p>\
         <pre class=\"raw\">{raw}</pre></section>",
        subject = esc(subject),
        from = esc(&from),
        to = esc(&to.join(", ")),
        time = esc(&e.record.time),
        id = esc(&e.record.id),
        auth = if feedback::original_of(&e.record).is_some() {
            "<p>This notification was written by the simulator on SES's behalf (see the \
             feedback model in the README); it carries no signature and is not evaluated.</p>"
                .to_string()
        } else {
            auth_panel(&x, &e)
        },
        html = html_panel,
        text = text_panel,
        raw = esc(&raw),
    );
    html_response(layout(
        &format!("{subject} · dkim-relay SES simulator"),
        &body,
    ))
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}
