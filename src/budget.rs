//! A process-wide budget of message bytes in flight, so many large DATA transfers at once cannot
//! grow the relay's memory without bound (issue 8: "nothing bounds the bytes in flight across
//! connections").
//!
//! One [`ByteBudget`] is shared by every connection. A transaction takes a [`Reservation`]
//! (zero bytes at first) and grows it as DATA arrives with [`Reservation::try_grow`], which never
//! waits: it either takes the bytes or says no, and then the session answers `452 4.3.1`
//! (RFC 3463 "mail system full", a temporary condition the client retries) instead of buffering
//! more. Dropping the reservation — message relayed, refused or connection lost — gives its bytes
//! back, so the budget cannot leak on any path.
//!
//! Invariant: `in_flight()` is the sum of all live reservations and never exceeds `limit()`.
//! The check and the update are one compare-and-swap, so concurrent reservations can never
//! together overshoot the limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The shared budget; cheap to clone (all clones count against the same limit).
#[derive(Debug, Clone)]
pub struct ByteBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Changed by a reload ([`ByteBudget::set_limit`]); bytes already held stay held.
    limit: AtomicUsize,
    used: AtomicUsize,
}

impl ByteBudget {
    /// A budget of `limit` bytes in flight across the whole process.
    pub fn new(limit: usize) -> ByteBudget {
        ByteBudget {
            inner: Arc::new(Inner {
                limit: AtomicUsize::new(limit),
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        self.inner.limit.load(Ordering::Acquire)
    }

    /// A new limit (a reload changed it). Reservations already held keep their bytes; a lower
    /// limit only refuses growth until enough has been given back.
    pub fn set_limit(&self, limit: usize) {
        self.inner.limit.store(limit, Ordering::Release);
    }

    /// Bytes currently held by live reservations.
    pub fn in_flight(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    /// An empty reservation against this budget, to be grown as data arrives.
    pub fn reserve(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: 0,
        }
    }

    fn take(&self, n: usize) -> bool {
        let limit = self.limit();
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        if n > 0 {
            self.inner.used.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

/// Bytes one transaction holds; returned to the budget on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: ByteBudget,
    held: usize,
}

impl Reservation {
    /// Takes `n` more bytes if the budget has room; never waits. On `false` nothing changed.
    pub fn try_grow(&mut self, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        if self.budget.take(n) {
            self.held += n;
            true
        } else {
            false
        }
    }

    /// Bytes this reservation holds.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Gives every held byte back now (the reservation stays usable, empty).
    pub fn release(&mut self) {
        self.budget.give_back(self.held);
        self.held = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_up_to_the_limit_and_not_beyond() {
        let budget = ByteBudget::new(100);
        let mut r = budget.reserve();
        assert!(r.try_grow(60));
        assert!(r.try_grow(40));
        assert_eq!(budget.in_flight(), 100);
        assert!(!r.try_grow(1));
        assert_eq!(r.held(), 100);
        assert_eq!(budget.in_flight(), 100);
        assert!(r.try_grow(0));
    }

    #[test]
    fn a_refused_grow_changes_nothing() {
        let budget = ByteBudget::new(10);
        let mut a = budget.reserve();
        assert!(a.try_grow(8));
        let mut b = budget.reserve();
        assert!(!b.try_grow(3));
        assert_eq!(b.held(), 0);
        assert_eq!(budget.in_flight(), 8);
        assert!(b.try_grow(2));
        assert_eq!(budget.in_flight(), 10);
    }

    #[test]
    fn drop_and_release_give_bytes_back() {
        let budget = ByteBudget::new(50);
        {
            let mut r = budget.reserve();
            assert!(r.try_grow(50));
            assert!(!budget.reserve().try_grow(1));
        }
        assert_eq!(budget.in_flight(), 0);
        let mut r = budget.reserve();
        assert!(r.try_grow(30));
        r.release();
        assert_eq!(budget.in_flight(), 0);
        assert!(r.try_grow(50));
        assert_eq!(budget.limit(), 50);
    }

    #[test]
    fn huge_requests_do_not_overflow() {
        let budget = ByteBudget::new(usize::MAX - 1);
        let mut r = budget.reserve();
        assert!(r.try_grow(usize::MAX - 10));
        assert!(!r.try_grow(usize::MAX));
        assert!(!budget.reserve().try_grow(20));
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        let budget = ByteBudget::new(10_000);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    let mut granted = 0usize;
                    for _ in 0..2_000 {
                        let mut r = budget.reserve();
                        while r.try_grow(7) {
                            assert!(budget.in_flight() <= budget.limit());
                            if r.held() > 3_000 {
                                break;
                            }
                        }
                        granted += r.held();
                    }
                    granted
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(total > 0);
        assert_eq!(budget.in_flight(), 0);
    }

    #[test]
    fn concurrent_holders_share_the_limit_exactly() {
        let budget = ByteBudget::new(1_000);
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let mut r = budget.reserve();
                    while r.try_grow(1) {}
                    let held = r.held();
                    // Everyone has stopped growing before anyone gives back.
                    barrier.wait();
                    held
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 1_000);
        assert_eq!(budget.in_flight(), 0);
    }

    #[test]
    fn a_new_limit_applies_to_growth_and_keeps_what_is_held() {
        let budget = ByteBudget::new(100);
        let mut a = budget.reserve();
        assert!(a.try_grow(80));
        budget.set_limit(50);
        let mut b = budget.reserve();
        assert!(!b.try_grow(1), "over the lowered limit");
        assert_eq!(a.held(), 80, "held bytes stay held");
        drop(a);
        assert!(b.try_grow(50));
        assert!(!b.try_grow(1));
        budget.set_limit(1000);
        assert!(b.try_grow(900));
    }
}
