//! What the relay records in [`crate::metrics`]: a refusal's stage and reason (from its
//! enhanced status code, never from client text), each signature by its configured domain and
//! selector, and the class of each upstream outcome.
//!
//! Kept beside the pipeline rather than in it, so that each instrumented step is one call there.

use std::time::Duration;

use crate::dkim::domain::Domain;
use crate::metrics::{Metrics, Reason, SignOutcome, Stage, UpstreamClass};
use crate::server::Action;
use crate::smtp::reply::Reply;
use crate::upstream::UpstreamError;
use crate::upstream::pool::Delivery;

/// Records `reply` as a refusal at `stage` when it is one (4xx or 5xx).
pub(super) fn refusal(metrics: &Metrics, stage: Stage, reply: &Reply) {
    if reply.code >= 400 {
        metrics.rejection(stage, Reason::of_enhanced(reply.enhanced()));
    }
}

/// Records the reply an action writes, when it is a refusal.
pub(super) fn action(metrics: &Metrics, stage: Stage, action: &Action) {
    match action {
        Action::Reply(r)
        | Action::ReplyDiscard(r)
        | Action::StartData(r)
        | Action::StartTls(r)
        | Action::Close(r) => refusal(metrics, stage, r),
        Action::Drop => {}
    }
}

/// One signature attempt per active selector of the (configured) signing domain.
pub(super) fn signed(metrics: &Metrics, domain: &Domain, outcome: SignOutcome) {
    for k in &domain.active {
        metrics.signature(&domain.name, &k.selector, k.algorithm.as_str(), outcome);
    }
}

/// Records one upstream transaction: its class and how long it took.
pub(super) fn upstream(metrics: &Metrics, delivery: &Delivery, elapsed: Duration) {
    metrics.upstream(upstream_class(delivery), elapsed);
}

/// The class of an upstream outcome: its reply's, or why there was none.
pub fn upstream_class(delivery: &Delivery) -> UpstreamClass {
    let of_reply = |r: &Reply| UpstreamClass::of_reply(r.code, &r.one_line());
    match delivery {
        Delivery::Answered { reply, .. } => of_reply(reply),
        Delivery::Failed(e) => match e {
            UpstreamError::Auth(_) | UpstreamError::NoAuth => UpstreamClass::Auth,
            UpstreamError::Tls(..) | UpstreamError::NoStartTls(_) => UpstreamClass::Tls,
            UpstreamError::Greeting(r) | UpstreamError::Refused { reply: r, .. } => of_reply(r),
            UpstreamError::Connect(..)
            | UpstreamError::Timeout(_)
            | UpstreamError::Io(_)
            | UpstreamError::Closed
            | UpstreamError::Protocol(_) => UpstreamClass::Connection,
            UpstreamError::Congested(_) => UpstreamClass::Congested,
        },
    }
}
