//! Per-key exponential back-off, re-implementing client-go's
//! `k8s.io/client-go/util/flowcontrol.Backoff` (util/flowcontrol/backoff.go)
//! the way the kubelet uses it for image pulls (`ImagePullBackOff`) and
//! container restarts (`CrashLoopBackOff`).
//!
//! Time is always passed in as [`Instant`] so callers (and tests) control the
//! clock. No jitter: the kubelet builds both of its back-offs with
//! `flowcontrol.NewBackOff`, whose jitter factor is 0.
//!
//! Semantics mirrored from upstream:
//! * [`Backoff::next`] on a key without an entry, or whose entry has expired,
//!   (re)starts at `initial` (not capped by `max`); otherwise the delay doubles
//!   and is capped at `max`. The entry's last-update time becomes `now`.
//! * An entry expires when `event_time - last_update > 2 * max` (client-go's
//!   default `hasExpired`, strict `>`), unless a custom reset window was set
//!   with [`Backoff::with_reset_after`]; the kubelet's CrashLoopBackOff uses a
//!   fixed 600 s window (`kubelet.go`: `HasExpiredFunc` returns
//!   `eventTime.Sub(lastUpdate) > 600*time.Second`).
//! * "In back-off" comparisons are strict `<` against the current delay.
//!
//! Typical use:
//! * image pulls (`images/image_manager.go`): before pulling,
//!   `is_in_backoff_since_update(key, now)`; on failure `next(key, now)`; on
//!   success `gc(now)`. Key is `"{pod UID}_{image}"`.
//! * crash loops (`kuberuntime_manager.go` `doBackOff`): with
//!   `finished_at` = FinishedAt of the newest exited instance,
//!   `is_in_backoff_since(key, finished_at, now)`; if not in back-off,
//!   `next_since(key, finished_at, now)` and start the container.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Kubelet's initial image pull back-off (`imageBackOffPeriod`, kubelet.go).
pub const IMAGE_PULL_INITIAL: Duration = Duration::from_secs(10);
/// Kubelet's maximum image pull back-off (`MaxImageBackOff`, kubelet.go).
pub const IMAGE_PULL_MAX: Duration = Duration::from_secs(300);
/// Kubelet's initial CrashLoopBackOff (`initialCrashLoopBackOff`, kubelet.go).
pub const CRASH_LOOP_INITIAL: Duration = Duration::from_secs(10);
/// Kubelet's maximum CrashLoopBackOff (`MaxContainerBackOff`, v1beta1 defaults.go).
pub const CRASH_LOOP_MAX: Duration = Duration::from_secs(300);
/// The kubelet resets a container's CrashLoopBackOff after it has not been
/// bumped for this long (hard-coded `HasExpiredFunc` in kubelet.go).
pub const CRASH_LOOP_RESET_AFTER: Duration = Duration::from_secs(600);

/// When an entry counts as expired (and is restarted / garbage collected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// client-go default: `event_time - last_update > 2 * max`.
    TwiceMax,
    /// Custom window: `event_time - last_update > window`.
    After(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    backoff: Duration,
    last_update: Instant,
}

/// Per-key exponential back-off. Not internally synchronised: wrap it in a
/// `Mutex` to share it between tasks.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    expiry: Expiry,
    entries: HashMap<String, Entry>,
}

/// `later - earlier` as a signed quantity: `None` when `later < earlier`
/// (a negative Go `time.Duration`).
fn signed_elapsed(later: Instant, earlier: Instant) -> Option<Duration> {
    later.checked_duration_since(earlier)
}

impl Backoff {
    /// `flowcontrol.NewBackOff(initial, max)`: entries expire after `2 * max`
    /// without an update.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            expiry: Expiry::TwiceMax,
            entries: HashMap::new(),
        }
    }

    /// Like [`Backoff::new`] but entries expire once `event_time - last_update
    /// > reset_after` (a custom `HasExpiredFunc`).
    pub fn with_reset_after(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        Backoff {
            expiry: Expiry::After(reset_after),
            ..Backoff::new(initial, max)
        }
    }

    /// The kubelet's image pull back-off with the given bounds (upstream:
    /// 10 s / 300 s, expiry after 2 * max).
    pub fn for_image_pulls(initial: Duration, max: Duration) -> Self {
        Backoff::new(initial, max)
    }

    /// The kubelet's CrashLoopBackOff with the given bounds (upstream:
    /// 10 s / 300 s) and its fixed 600 s reset window.
    pub fn for_crash_loops(initial: Duration, max: Duration) -> Self {
        Backoff::with_reset_after(initial, max, CRASH_LOOP_RESET_AFTER)
    }

    pub fn initial(&self) -> Duration {
        self.initial
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    pub fn expiry(&self) -> Expiry {
        self.expiry
    }

    /// Number of keys currently tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The current delay for `key`; zero when the key has no entry (`Get`).
    pub fn get(&self, key: &str) -> Duration {
        self.entries
            .get(key)
            .map(|e| e.backoff)
            .unwrap_or(Duration::ZERO)
    }

    /// When `key`'s delay was last bumped, if it has an entry.
    pub fn last_update(&self, key: &str) -> Option<Instant> {
        self.entries.get(key).map(|e| e.last_update)
    }

    fn expiry_window(&self) -> Duration {
        match self.expiry {
            Expiry::TwiceMax => self.max.checked_mul(2).unwrap_or(Duration::MAX),
            Expiry::After(d) => d,
        }
    }

    /// `hasExpired(eventTime, lastUpdate, max)`: strictly more than the
    /// window has passed. An event before the last update never expires.
    fn has_expired(&self, event_time: Instant, last_update: Instant) -> bool {
        match signed_elapsed(event_time, last_update) {
            Some(elapsed) => elapsed > self.expiry_window(),
            None => false,
        }
    }

    /// Moves `key` to its next delay (`Next(key, now)`): starts at `initial`
    /// for a new or expired entry, otherwise doubles, capped at `max`.
    /// Records `now` as the entry's last update.
    pub fn next(&mut self, key: &str, now: Instant) {
        self.next_since(key, now, now);
    }

    /// `Next(key, event_time)` with the clock reading `now`: expiry is judged
    /// from `event_time` (e.g. the container's FinishedAt), while the last
    /// update is recorded as `now`, exactly as client-go does
    /// (`entry.lastUpdate = p.Clock.Now()`).
    pub fn next_since(&mut self, key: &str, event_time: Instant, now: Instant) {
        let fresh = match self.entries.get(key) {
            None => true,
            Some(e) => self.has_expired(event_time, e.last_update),
        };
        let backoff = if fresh {
            self.initial
        } else {
            let current = self.entries[key].backoff;
            current
                .checked_mul(2)
                .unwrap_or(Duration::MAX)
                .min(self.max)
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                backoff,
                last_update: now,
            },
        );
    }

    /// `IsInBackOffSinceUpdate(key, now)`: true while less than the current
    /// delay has passed since the last [`Backoff::next`]. False for unknown
    /// or expired keys.
    pub fn is_in_backoff_since_update(&self, key: &str, now: Instant) -> bool {
        let Some(e) = self.entries.get(key) else {
            return false;
        };
        if self.has_expired(now, e.last_update) {
            return false;
        }
        match signed_elapsed(now, e.last_update) {
            Some(elapsed) => elapsed < e.backoff,
            None => true,
        }
    }

    /// `IsInBackOffSince(key, event_time)` with the clock reading `now`: true
    /// while `now - event_time` is less than the current delay. Expiry is
    /// judged between `event_time` and the entry's last update. This is the
    /// CrashLoopBackOff check, with `event_time` = the container's FinishedAt.
    pub fn is_in_backoff_since(&self, key: &str, event_time: Instant, now: Instant) -> bool {
        let Some(e) = self.entries.get(key) else {
            return false;
        };
        if self.has_expired(event_time, e.last_update) {
            return false;
        }
        match signed_elapsed(now, event_time) {
            Some(elapsed) => elapsed < e.backoff,
            None => true,
        }
    }

    /// How long until `key`'s back-off ends (zero if it has none or it is over).
    pub fn remaining(&self, key: &str, now: Instant) -> Duration {
        self.last_update(key)
            .map(|at| (at + self.get(key)).saturating_duration_since(now))
            .unwrap_or_default()
    }

    /// Forgets `key` (`Reset` / `DeleteEntry`).
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Drops every entry that has expired as of `now` (`GC`).
    pub fn gc(&mut self, now: Instant) {
        let window = self.expiry_window();
        self.entries
            .retain(|_, e| !matches!(signed_elapsed(now, e.last_update), Some(d) if d > window));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn unknown_key_is_not_in_backoff_and_has_zero_delay() {
        let b = Backoff::new(secs(10), secs(300));
        let t0 = Instant::now();
        assert_eq!(b.get("k"), Duration::ZERO);
        assert!(!b.is_in_backoff_since_update("k", t0));
        assert!(!b.is_in_backoff_since("k", t0, t0));
        assert!(b.is_empty());
    }

    #[test]
    fn next_doubles_from_initial_up_to_max() {
        let mut b = Backoff::new(secs(10), secs(300));
        let t0 = Instant::now();
        let mut seen = Vec::new();
        for i in 0..8 {
            b.next("k", t0 + secs(i));
            seen.push(b.get("k").as_secs());
        }
        assert_eq!(seen, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn initial_above_max_is_used_once_then_capped() {
        // Upstream does not cap the initial delay, only the doubled ones.
        let mut b = Backoff::new(secs(10), secs(5));
        let t0 = Instant::now();
        b.next("k", t0);
        assert_eq!(b.get("k"), secs(10));
        b.next("k", t0 + secs(1));
        assert_eq!(b.get("k"), secs(5));
    }

    #[test]
    fn in_backoff_since_update_is_strictly_less_than_delay() {
        let mut b = Backoff::new(secs(10), secs(300));
        let t0 = Instant::now();
        b.next("k", t0);
        assert!(b.is_in_backoff_since_update("k", t0));
        assert!(b.is_in_backoff_since_update("k", t0 + Duration::from_millis(9_999)));
        assert!(!b.is_in_backoff_since_update("k", t0 + secs(10)));
        assert!(!b.is_in_backoff_since_update("k", t0 + secs(11)));
        // Keys are independent.
        assert!(!b.is_in_backoff_since_update("other", t0));
    }

    #[test]
    fn entry_resets_only_after_strictly_more_than_twice_max() {
        let mut b = Backoff::new(secs(1), secs(10));
        let t0 = Instant::now();
        b.next("k", t0); // 1s
        b.next("k", t0); // 2s
        b.next("k", t0); // 4s
        assert_eq!(b.get("k"), secs(4));
        // Exactly 2*max later: not expired, keeps doubling.
        b.next("k", t0 + secs(20));
        assert_eq!(b.get("k"), secs(8));
        // Strictly more than 2*max after the last update: starts over.
        b.next("k", t0 + secs(20) + secs(20) + Duration::from_nanos(1));
        assert_eq!(b.get("k"), secs(1));
    }

    #[test]
    fn expired_entry_is_not_in_backoff() {
        // Only reachable when the delay exceeds the expiry window.
        let mut b = Backoff::with_reset_after(secs(100), secs(300), secs(50));
        let t0 = Instant::now();
        b.next("k", t0);
        assert!(b.is_in_backoff_since_update("k", t0 + secs(50)));
        assert!(!b.is_in_backoff_since_update("k", t0 + secs(51)));
    }

    #[test]
    fn reset_forgets_the_key() {
        let mut b = Backoff::new(secs(10), secs(300));
        let t0 = Instant::now();
        b.next("k", t0);
        b.next("k", t0);
        b.reset("k");
        assert_eq!(b.get("k"), Duration::ZERO);
        assert!(!b.is_in_backoff_since_update("k", t0));
        b.next("k", t0);
        assert_eq!(b.get("k"), secs(10));
    }

    #[test]
    fn gc_drops_only_expired_entries() {
        let mut b = Backoff::new(secs(10), secs(300));
        let t0 = Instant::now();
        b.next("old", t0);
        b.next("new", t0 + secs(100));
        b.gc(t0 + secs(600)); // exactly 2*max for "old": kept
        assert_eq!(b.len(), 2);
        b.gc(t0 + secs(601));
        assert_eq!(b.len(), 1);
        assert_eq!(b.get("old"), Duration::ZERO);
        assert_eq!(b.get("new"), secs(10));
    }

    #[test]
    fn crash_loop_uses_event_time_and_fixed_reset_window() {
        let mut b = Backoff::for_crash_loops(CRASH_LOOP_INITIAL, CRASH_LOOP_MAX);
        let t0 = Instant::now();
        // Container exits at t0; first restart is immediate and arms 10s.
        assert!(!b.is_in_backoff_since("c", t0, t0));
        b.next_since("c", t0, t0);
        assert_eq!(b.last_update("c"), Some(t0));
        // It restarted and exited again 1s later: in back-off for 10s from
        // that exit.
        let exit2 = t0 + secs(1);
        assert!(b.is_in_backoff_since("c", exit2, exit2 + secs(9)));
        assert!(!b.is_in_backoff_since("c", exit2, exit2 + secs(10)));
        b.next_since("c", exit2, exit2 + secs(10));
        assert_eq!(b.get("c"), secs(20));
        // The reset window is 600s, not 2*max (which would also be 600s with
        // the defaults), so use a short max to tell them apart.
        let mut short = Backoff::for_crash_loops(secs(1), secs(2));
        short.next_since("c", t0, t0);
        short.next_since("c", t0 + secs(5), t0 + secs(5));
        assert_eq!(short.get("c"), secs(2));
        // 5s after the last update is > 2*max but < 600s: no reset.
        short.next_since("c", t0 + secs(10), t0 + secs(10));
        assert_eq!(short.get("c"), secs(2));
        // 601s after the last update: reset to initial.
        short.next_since("c", t0 + secs(611), t0 + secs(611));
        assert_eq!(short.get("c"), secs(1));
    }

    #[test]
    fn event_before_last_update_counts_as_in_backoff() {
        let mut b = Backoff::new(secs(10), secs(300));
        let t0 = Instant::now();
        b.next("k", t0 + secs(5));
        // Go: a negative elapsed time is always below the delay.
        assert!(b.is_in_backoff_since_update("k", t0));
        assert!(b.is_in_backoff_since("k", t0 + secs(5), t0));
    }

    #[test]
    fn image_pull_constructor_uses_twice_max() {
        let b = Backoff::for_image_pulls(IMAGE_PULL_INITIAL, IMAGE_PULL_MAX);
        assert_eq!(b.expiry(), Expiry::TwiceMax);
        assert_eq!(b.initial(), secs(10));
        assert_eq!(b.max(), secs(300));
    }
}
