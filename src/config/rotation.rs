//! Safe rotation: `require_published` makes a selector active only once DNS serves its key.
//!
//! Why: switching `sign` to a selector whose record is not live yet (or still carries the key
//! from before a rotation) makes every message fail DKIM until DNS catches up, and nothing in
//! the SMTP exchange tells anyone. So a reload that would activate such a selector keeps the
//! domain's previous active selector instead, and says why; on first start (nothing to keep)
//! it is an error.
//!
//! This runs after [`super::load`] (which stays synchronous and DNS-free), over the previous
//! and the new snapshot, and uses the same DKIM rule as `doctor` ([`crate::dns::dkim_record`]).

use std::sync::Arc;

use super::{Diagnostic, Domain, Severity, Snapshot};
use crate::dkim::key::SelectorKey;
use crate::dns::Lookup;
use crate::dns::dkim_record::{DkimRecordOutcome, check};

/// The active selectors of a domain, by name and public key (a replaced key file counts as a
/// change).
fn active_set(d: &Domain) -> Vec<(&str, &[u8])> {
    d.active
        .iter()
        .map(|k| (k.selector.as_str(), k.public_key.as_slice()))
        .collect()
}

/// Checks each selector; returns why the first unpublished one is not usable.
async fn unpublished(
    domain: &str,
    keys: &[Arc<SelectorKey>],
    lookup: &dyn Lookup,
) -> Option<String> {
    for key in keys {
        let name = format!("{}._domainkey.{domain}", key.selector);
        let outcome = match lookup.txt(&name).await {
            Ok(records) => check(key, &records),
            Err(e) => {
                return Some(format!(
                    "selector {}: could not confirm {name} is published: {e}",
                    key.selector
                ));
            }
        };
        if let DkimRecordOutcome::Problem(problem) = outcome {
            return Some(format!("selector {}: {problem}", key.selector));
        }
    }
    None
}

fn note(snapshot: &Snapshot, severity: Severity, domain: &str, message: String) -> Diagnostic {
    let key = if domain.contains('.') {
        format!("domains.\"{domain}\".sign")
    } else {
        format!("domains.{domain}.sign")
    };
    Diagnostic {
        severity,
        file: snapshot.source.clone(),
        line: None,
        key,
        message,
    }
}

/// Applies `require_published` to `next`.
///
/// With a `previous` snapshot (a reload): for each domain that requires publication and whose
/// active set changed, every newly active selector is looked up; if one is missing or does not
/// match, the domain keeps its previous active selectors (their loaded keys are reused) — or,
/// for a domain that did not exist before, is left out — and a warning says why. Returns those
/// warnings.
///
/// Without one (first start, `check`): an active selector that is not published is an error.
pub async fn enforce(
    previous: Option<&Snapshot>,
    next: &mut Snapshot,
    lookup: &dyn Lookup,
) -> Result<Vec<Diagnostic>, Vec<Diagnostic>> {
    let mut notes = Vec::new();
    let mut errors = Vec::new();
    let names: Vec<String> = next.domains.keys().cloned().collect();
    for name in names {
        let Some(d) = next.domains.get(&name).cloned() else {
            continue;
        };
        if !d.require_published {
            continue;
        }
        let before = previous.and_then(|p| p.domains.get(&name));
        let newly: Vec<Arc<SelectorKey>> = match before {
            Some(b) => {
                if active_set(b) == active_set(&d) {
                    continue;
                }
                let old = active_set(b);
                d.active
                    .iter()
                    .filter(|k| !old.contains(&(k.selector.as_str(), k.public_key.as_slice())))
                    .cloned()
                    .collect()
            }
            None => d.active.clone(),
        };
        let Some(why) = unpublished(&name, &newly, lookup).await else {
            continue;
        };
        match (previous, before) {
            (None, _) => errors.push(note(
                next,
                Severity::Error,
                &name,
                format!(
                    "require_published: {why}; publish the record (`dkim-relay dns`), check it \
                     with `dkim-relay doctor`, then start again"
                ),
            )),
            (Some(_), Some(b)) => {
                let kept: Vec<String> = b.active.iter().map(|k| k.selector.clone()).collect();
                let mut keep = (*d).clone();
                keep.active = b.active.clone();
                for k in &b.active {
                    keep.selectors
                        .entry(k.selector.clone())
                        .or_insert_with(|| Arc::clone(k));
                }
                next.domains.insert(name.clone(), Arc::new(keep));
                notes.push(note(
                    next,
                    Severity::Warning,
                    &name,
                    format!(
                        "require_published: {why}; {name} keeps signing with {}",
                        kept.join(", ")
                    ),
                ));
            }
            (Some(_), None) => {
                next.domains.remove(&name);
                notes.push(note(
                    next,
                    Severity::Warning,
                    &name,
                    format!(
                        "require_published: {why}; {name} is not enabled until its record is \
                         published (its mail is refused meanwhile)"
                    ),
                ));
            }
        }
    }
    if errors.is_empty() {
        next.warnings.extend(notes.iter().cloned());
        Ok(notes)
    } else {
        Err(errors)
    }
}

/// Whether any domain of `snapshot` requires publication (so a DNS lookup is needed).
pub fn needed(snapshot: &Snapshot) -> bool {
    snapshot.domains.values().any(|d| d.require_published)
}
