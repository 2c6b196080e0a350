//! Pacing: the account's maximum send rate, shared by every upstream connection, so SES never
//! has a reason to answer `454 Throttling failure: Maximum sending rate exceeded.`.
//!
//! SES counts the send rate in *recipients* per second, over the whole account ("the maximum
//! number of recipients that you can send email to per second"; a message to five recipients
//! counts five). The [`Pacer`] keeps a sliding one-second window of what it let through and
//! admits a message only when the window has room for all its recipients, so the relay never
//! sends more than the rate in *any* one-second window — stricter than a token bucket, which
//! would allow a full bucket plus a second's refill (twice the rate) in a burst. A message with
//! more recipients than one window holds (rate 14, 50 recipients) goes alone into an empty
//! window and counts in full, so the windows after it stay empty until it has aged out.
//!
//! Waiters are served first come, first served (a fair `tokio::sync::Mutex` is the queue), each
//! with an optional deadline: a pass-through client waits a bounded time and then gets a
//! temporary reply; the spool can wait without a limit.
//!
//! When SES throttles anyway (another sender on the same account, a rate lowered by AWS), the
//! pacer halves its rate — at most once per second, so one burst of throttled replies counts
//! once — and then climbs back by a tenth of the configured rate per second without throttling
//! (additive increase, multiplicative decrease, as TCP does it). It never exceeds the configured
//! rate and never goes below one recipient per second.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::smtp::reply::Reply;

const WINDOW: Duration = Duration::from_secs(1);

/// The pacer's deadline passed before the window had room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no send slot before the deadline (max_send_rate pacing)")]
pub struct Late;

/// Whether `reply` is SES's send-rate throttling (not the daily quota, which is also a 454).
pub fn is_rate_throttling(reply: &Reply) -> bool {
    reply.code == 454
        && reply.lines.iter().any(|l| {
            l.to_ascii_lowercase()
                .contains("maximum sending rate exceeded")
        })
}

#[derive(Debug)]
struct Window {
    /// (when admitted, recipients) for admissions younger than [`WINDOW`], oldest first.
    admitted: VecDeque<(Instant, u32)>,
    in_window: u32,
    /// The rate in force (AIMD), between 1 and the configured maximum.
    rate: f64,
    /// When the rate last went up (or was found at its maximum).
    last_increase: Instant,
    /// When the rate was last halved.
    last_decrease: Option<Instant>,
}

impl Window {
    fn expire(&mut self, now: Instant) {
        while let Some(&(t, n)) = self.admitted.front() {
            if now.duration_since(t) >= WINDOW {
                self.admitted.pop_front();
                self.in_window -= n;
            } else {
                break;
            }
        }
    }

    /// Additive increase: one step per whole second since the last increase.
    fn recover(&mut self, now: Instant, max: f64) {
        if self.rate >= max {
            self.last_increase = now;
            return;
        }
        let secs = now.duration_since(self.last_increase).as_secs();
        if secs > 0 {
            let step = (max / 10.0).max(1.0);
            self.rate = (self.rate + step * secs as f64).min(max);
            self.last_increase += Duration::from_secs(secs);
        }
    }

    /// Recipients one window may hold at the current rate (rounded down, at least one).
    fn limit(&self) -> u32 {
        (self.rate.floor() as u32).max(1)
    }

    /// When enough of the window will have aged out to make room for `need` more.
    fn room_at(&self, need: u32, limit: u32, now: Instant) -> Instant {
        let mut freed = 0;
        for &(t, n) in &self.admitted {
            freed += n;
            if self.in_window - freed + need <= limit {
                return t + WINDOW;
            }
        }
        now + WINDOW
    }
}

/// The shared send-rate limiter of one upstream pool.
#[derive(Debug)]
pub struct Pacer {
    max_rate: f64,
    /// The queue: whoever holds it is the next to be admitted.
    turn: tokio::sync::Mutex<()>,
    window: std::sync::Mutex<Window>,
}

impl Pacer {
    /// A pacer for `max_rate` recipients per second (at least 1).
    pub fn new(max_rate: f64) -> Pacer {
        let max_rate = if max_rate.is_finite() {
            max_rate.max(1.0)
        } else {
            1.0
        };
        Pacer {
            max_rate,
            turn: tokio::sync::Mutex::new(()),
            window: std::sync::Mutex::new(Window {
                admitted: VecDeque::new(),
                in_window: 0,
                rate: max_rate,
                last_increase: Instant::now(),
                last_decrease: None,
            }),
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        // Plain counters: a panic elsewhere leaves them usable.
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The configured maximum, recipients per second.
    pub fn max_rate(&self) -> f64 {
        self.max_rate
    }

    /// The rate in force now (lower than the maximum for a while after SES throttled).
    pub fn current_rate(&self) -> f64 {
        let mut w = self.window();
        w.recover(Instant::now(), self.max_rate);
        w.rate
    }

    /// Waits for room for a message to `recipients` recipients, in turn, until `deadline`
    /// (`None`: as long as it takes). On `Ok` the recipients count as sent now.
    pub async fn admit(&self, recipients: usize, deadline: Option<Instant>) -> Result<(), Late> {
        let n = u32::try_from(recipients.max(1)).unwrap_or(u32::MAX);
        let _turn = match deadline {
            Some(d) => tokio::time::timeout_at(d, self.turn.lock())
                .await
                .map_err(|_| Late)?,
            None => self.turn.lock().await,
        };
        loop {
            let now = Instant::now();
            let wake = {
                let mut w = self.window();
                w.recover(now, self.max_rate);
                w.expire(now);
                let limit = w.limit();
                let need = n.min(limit);
                if w.in_window + need <= limit {
                    w.admitted.push_back((now, n));
                    w.in_window += n;
                    return Ok(());
                }
                w.room_at(need, limit, now)
            };
            // Do not make a client wait for a turn it cannot get in time.
            if deadline.is_some_and(|d| wake > d) {
                return Err(Late);
            }
            tokio::time::sleep_until(wake).await;
        }
    }

    /// SES throttled a message for the send rate: halve the rate (once per second at most).
    pub fn throttled(&self) {
        let now = Instant::now();
        let mut w = self.window();
        if w.last_decrease
            .is_some_and(|t| now.duration_since(t) < WINDOW)
        {
            return;
        }
        w.recover(now, self.max_rate);
        w.rate = (w.rate / 2.0).max(1.0);
        w.last_decrease = Some(now);
        w.last_increase = now;
        tracing::warn!(
            rate = w.rate,
            max_send_rate = self.max_rate,
            "upstream throttled the send rate; pacing slower for a while"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The most recipients admitted in any one-second window of `grants`.
    fn busiest_second(grants: &[(Instant, u32)]) -> u32 {
        grants
            .iter()
            .map(|&(start, _)| {
                grants
                    .iter()
                    .filter(|&&(t, _)| t >= start && t < start + WINDOW)
                    .map(|&(_, n)| n)
                    .sum()
            })
            .max()
            .unwrap_or(0)
    }

    async fn burst(pacer: Arc<Pacer>, messages: usize, rcpts: usize) -> Vec<(Instant, u32)> {
        let mut tasks = Vec::new();
        for _ in 0..messages {
            let p = Arc::clone(&pacer);
            tasks.push(tokio::spawn(async move {
                p.admit(rcpts, None).await.unwrap();
                (Instant::now(), rcpts as u32)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_holds_the_rate_then_the_next_waits_a_second() {
        let p = Pacer::new(5.0);
        let start = Instant::now();
        for _ in 0..5 {
            p.admit(1, None).await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        p.admit(1, None).await.unwrap();
        assert_eq!(start.elapsed(), WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_ten_times_the_rate_never_exceeds_it_in_any_second() {
        let start = Instant::now();
        let grants = burst(Arc::new(Pacer::new(5.0)), 50, 1).await;
        assert_eq!(busiest_second(&grants), 5);
        // No slower than needed either: 50 at 5/s takes nine seconds after the first five.
        assert_eq!(start.elapsed(), Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn recipients_count_not_messages() {
        let start = Instant::now();
        let grants = burst(Arc::new(Pacer::new(10.0)), 6, 4).await;
        assert!(busiest_second(&grants) <= 10, "{grants:?}");
        // Two messages of four fit in a window of ten, a third does not.
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_larger_than_a_window_goes_alone_and_counts_in_full() {
        let p = Pacer::new(2.0);
        let start = Instant::now();
        p.admit(5, None).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        p.admit(1, None).await.unwrap();
        assert_eq!(start.elapsed(), WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_that_cannot_be_met_fails_at_once() {
        let p = Pacer::new(1.0);
        p.admit(1, None).await.unwrap();
        let start = Instant::now();
        let r = p.admit(1, Some(start + Duration::from_millis(500))).await;
        assert_eq!(r, Err(Late));
        assert_eq!(start.elapsed(), Duration::ZERO);
        // A deadline that can be met waits its turn.
        p.admit(1, Some(start + Duration::from_secs(2)))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_also_bounds_the_wait_in_the_queue() {
        let p = Arc::new(Pacer::new(1.0));
        p.admit(1, None).await.unwrap();
        // This one holds the turn while it waits a second for room.
        let first = {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.admit(1, None).await })
        };
        tokio::task::yield_now().await;
        let start = Instant::now();
        let r = p.admit(1, Some(start + Duration::from_millis(300))).await;
        assert_eq!(r, Err(Late));
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        first.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_once_per_second_and_it_recovers() {
        let p = Pacer::new(20.0);
        p.throttled();
        assert_eq!(p.current_rate(), 10.0);
        // The rest of the same burst of 454s does not halve it again.
        p.throttled();
        assert_eq!(p.current_rate(), 10.0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(p.current_rate(), 12.0);
        p.throttled();
        assert_eq!(p.current_rate(), 6.0);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(p.current_rate(), 12.0);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(p.current_rate(), 20.0);
        // Never below one per second.
        let slow = Pacer::new(1.0);
        slow.throttled();
        assert_eq!(slow.current_rate(), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_halved_rate_paces_at_the_halved_rate() {
        let p = Arc::new(Pacer::new(10.0));
        p.throttled();
        let start = Instant::now();
        let grants = burst(Arc::clone(&p), 10, 1).await;
        assert_eq!(grants.iter().filter(|(t, _)| *t == start).count(), 5);
        assert!(start.elapsed() >= WINDOW, "{:?}", start.elapsed());
    }

    #[test]
    fn throttling_replies_are_recognised() {
        assert!(is_rate_throttling(&Reply::plain(
            454,
            "Throttling failure: Maximum sending rate exceeded."
        )));
        assert!(!is_rate_throttling(&Reply::plain(
            454,
            "Throttling failure: Daily message quota exceeded."
        )));
        assert!(!is_rate_throttling(&Reply::plain(
            554,
            "Maximum sending rate exceeded."
        )));
    }
}
