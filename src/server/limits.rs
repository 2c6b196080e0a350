//! Connection limits: how many connections are open, in total and per client address. A slot
//! is taken at accept and given back when its guard drops, however the connection ends (a
//! panic or an abort included), so the counts cannot leak.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Inner {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The open connections of one server.
#[derive(Clone, Default)]
pub(super) struct Counts(Arc<Mutex<Inner>>);

/// One admitted connection; dropping it frees the slot.
pub(super) struct Slot {
    counts: Counts,
    ip: IpAddr,
}

impl Counts {
    pub(super) fn new() -> Counts {
        Counts::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Takes a slot for `ip` unless a limit is reached.
    pub(super) fn admit(&self, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Option<Slot> {
        let mut c = self.lock();
        let ip_count = c.per_ip.get(&ip).copied().unwrap_or(0);
        if c.total >= max_total || ip_count >= max_per_ip {
            return None;
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_insert(0) += 1;
        Some(Slot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_per_ip_limits_and_release() {
        let counts = Counts::new();
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let s1 = counts.admit(a, 3, 2).unwrap();
        let _s2 = counts.admit(a, 3, 2).unwrap();
        assert!(counts.admit(a, 3, 2).is_none(), "per-IP limit");
        let _s3 = counts.admit(b, 3, 2).unwrap();
        assert!(counts.admit(b, 3, 2).is_none(), "total limit");
        drop(s1);
        assert!(
            counts.admit(a, 3, 2).is_some(),
            "a dropped slot is given back"
        );
    }
}
