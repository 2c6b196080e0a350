//! Readiness: named checks that together say whether the relay should get traffic now.
//!
//! `/readyz` (served by [`crate::http`]) runs every registered [`Check`]; the relay is ready
//! when all pass. The composition root registers what it knows (configuration and keys loaded,
//! listeners bound and not draining); other components register their own — the spool ("writable,
//! with room"), the upstream ("not paused") — through [`Readiness::register`] or
//! [`Readiness::register_fn`], without the HTTP server knowing them.
//!
//! Liveness is deliberately not here: `/livez` answers as long as the process serves HTTP.
//! An orchestrator restarts a container whose liveness fails, and restarting cannot fix a full
//! disk or a paused SES account; it only loses what is in flight. Those are readiness checks:
//! the pod stops getting traffic and keeps its spool.
//!
//! Checks must be cheap and must not block for long: a probe calls them every few seconds.
//!
//! A leaf module: it imports nothing of the crate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// One readiness condition.
pub trait Check: Send + Sync {
    /// Short, stable name (`config`, `listeners`, `spool`, `upstream`).
    fn name(&self) -> &str;
    /// `Err` says what is wrong, for `/readyz?verbose` and the log (no secrets).
    fn check(&self) -> Result<(), String>;
}

/// Every registered check.
#[derive(Default)]
pub struct Readiness {
    checks: RwLock<Vec<Arc<dyn Check>>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.read().iter().map(|c| c.name().to_string()).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

/// The outcome of every check, in registration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub results: Vec<(String, Result<(), String>)>,
}

impl Report {
    pub fn ready(&self) -> bool {
        self.results.iter().all(|(_, r)| r.is_ok())
    }

    /// Kubernetes' verbose style: one `[+]name ok` or `[-]name failed: why` line per check,
    /// then the verdict.
    pub fn verbose(&self) -> String {
        let mut out = String::new();
        for (name, r) in &self.results {
            match r {
                Ok(()) => out.push_str(&format!("[+]{name} ok\n")),
                Err(why) => out.push_str(&format!("[-]{name} failed: {why}\n")),
            }
        }
        out.push_str(if self.ready() {
            "readyz check passed\n"
        } else {
            "readyz check failed\n"
        });
        out
    }
}

impl Readiness {
    pub fn new() -> Arc<Readiness> {
        Arc::new(Readiness::default())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<dyn Check>>> {
        match self.checks.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Adds a check; one with the same name is replaced (a component that restarts
    /// re-registers).
    pub fn register(&self, check: Arc<dyn Check>) {
        let mut g = match self.checks.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.retain(|c| c.name() != check.name());
        g.push(check);
    }

    /// Adds a check from a closure.
    pub fn register_fn(
        &self,
        name: &str,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.register(Arc::new(FnCheck {
            name: name.to_string(),
            check,
        }));
    }

    /// A check that is as a [`Flag`] says, registered and returned for the owner to set.
    pub fn flag(&self, name: &str, why_not: &str) -> Arc<Flag> {
        let flag = Arc::new(Flag {
            name: name.to_string(),
            why_not: why_not.to_string(),
            ok: AtomicBool::new(false),
        });
        self.register(Arc::clone(&flag) as Arc<dyn Check>);
        flag
    }

    /// Runs every check.
    pub fn report(&self) -> Report {
        let checks: Vec<Arc<dyn Check>> = self.read().clone();
        Report {
            results: checks
                .iter()
                .map(|c| (c.name().to_string(), c.check()))
                .collect(),
        }
    }
}

struct FnCheck<F> {
    name: String,
    check: F,
}

impl<F: Fn() -> Result<(), String> + Send + Sync> Check for FnCheck<F> {
    fn name(&self) -> &str {
        &self.name
    }
    fn check(&self) -> Result<(), String> {
        (self.check)()
    }
}

/// A condition its owner sets (listeners bound, then draining).
pub struct Flag {
    name: String,
    why_not: String,
    ok: AtomicBool,
}

impl Flag {
    pub fn set(&self, ok: bool) {
        self.ok.store(ok, Ordering::SeqCst);
    }
}

impl Check for Flag {
    fn name(&self) -> &str {
        &self.name
    }
    fn check(&self) -> Result<(), String> {
        if self.ok.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(self.why_not.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passes() {
        let r = Readiness::new();
        assert!(r.report().ready(), "no checks: ready");
        let listeners = r.flag("listeners", "not listening");
        assert!(!r.report().ready());
        listeners.set(true);
        r.register_fn("spool", || Err("disk full".into()));
        let report = r.report();
        assert!(!report.ready());
        assert_eq!(
            report.verbose(),
            "[+]listeners ok\n[-]spool failed: disk full\nreadyz check failed\n"
        );
        r.register_fn("spool", || Ok(()));
        assert!(r.report().ready(), "same name replaces");
        assert_eq!(r.report().results.len(), 2);
    }
}
