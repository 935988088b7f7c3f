//! The kubelet's image garbage-collection decision as a pure function,
//! re-implementing `pkg/kubelet/images/image_gc_manager.go`
//! (`GarbageCollect`, `freeOldImages`, `freeSpace`, `imagesInEvictionOrder`,
//! `byLastUsedAndDetected`) and the switch in `kubelet.go`
//! `StartGarbageCollection`.
//!
//! The caller keeps the image records (first detected / last used / size /
//! pinned / in use), reads the image filesystem's stats, and performs the
//! deletions this module plans. Upstream order of one GC pass:
//!
//! 1. Candidates = images not in use by any container (running or exited)
//!    and not pinned, sorted by last used, ties broken by first detected,
//!    oldest first. An image never seen in use has Go's zero `lastUsed`,
//!    modelled here as `last_used: None`, which sorts first.
//! 2. Age phase (only if `max_age > 0` and `now - gc_started > max_age`):
//!    every candidate with `now - last_used > max_age` is removed. The
//!    minimum age is *not* consulted in this phase.
//! 3. Space phase: `capacity == 0` is an error. `available` is clamped to
//!    `capacity`; `usage% = 100 - available*100/capacity` (integer
//!    division). If `usage% >= high`, the amount to free is
//!    `capacity*(100-low)/100 - available` and the remaining candidates are
//!    walked in order, skipping any with `last_used >= now` or
//!    `now - first_detected < min_age`; each removal adds its size, and the
//!    walk stops once `freed >= amount` (checked after a removal, so at least
//!    one eligible image goes even when the amount is <= 0). Freeing less
//!    than the amount is an error (`FreeDiskSpaceFailed`), but what was
//!    planned is still deleted.
//!
//! Upstream re-reads the filesystem stats between phases 2 and 3;
//! [`plan_age_gc`] and [`plan_space_gc`] let the caller do the same, and
//! [`plan_image_gc`] runs both with one set of stats, crediting the bytes the
//! age phase freed to `available`.
//!
//! Go's `sort.Sort` is not stable and upstream iterates a map, so images tied
//! on both timestamps come out in an unspecified order there; here ties are
//! broken by image id so plans are deterministic.

use std::cmp::Ordering;
use std::time::{Duration, Instant};

/// Image GC thresholds (`images.ImageGCPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Disk usage percent at or above which space-based GC runs
    /// (`imageGCHighThresholdPercent`, default 85).
    pub high_threshold_percent: u8,
    /// Usage percent that space-based GC frees down to
    /// (`imageGCLowThresholdPercent`, default 80).
    pub low_threshold_percent: u8,
    /// Images first detected less than this long ago are never removed for
    /// space (`imageMinimumGCAge`, default 2m).
    pub min_age: Duration,
    /// Images unused for longer than this are removed regardless of disk
    /// usage; zero disables (`imageMaximumGCAge`, default 0).
    pub max_age: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
            max_age: Duration::ZERO,
        }
    }
}

impl ImageGcPolicy {
    /// The checks `NewImageGCManager` makes. Note it only rejects
    /// `low > high`; the stricter `low < high` rule lives in the
    /// KubeletConfiguration validation.
    pub fn validate(&self) -> Result<(), ImageGcError> {
        if self.high_threshold_percent > 100 {
            return Err(ImageGcError::InvalidPolicy(format!(
                "invalid HighThresholdPercent {}, must be in range [0-100]",
                self.high_threshold_percent
            )));
        }
        if self.low_threshold_percent > 100 {
            return Err(ImageGcError::InvalidPolicy(format!(
                "invalid LowThresholdPercent {}, must be in range [0-100]",
                self.low_threshold_percent
            )));
        }
        if self.low_threshold_percent > self.high_threshold_percent {
            return Err(ImageGcError::InvalidPolicy(format!(
                "LowThresholdPercent {} can not be higher than HighThresholdPercent {}",
                self.low_threshold_percent, self.high_threshold_percent
            )));
        }
        Ok(())
    }

    /// `StartGarbageCollection` never starts image GC when the high threshold
    /// is 100 and the maximum age is off.
    pub fn is_enabled(&self) -> bool {
        !(self.high_threshold_percent == 100 && self.max_age.is_zero())
    }
}

/// One image as tracked by the kubelet (`imageRecord` plus in-use state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub id: String,
    pub size_bytes: u64,
    /// When the kubelet first saw the image.
    pub first_detected: Instant,
    /// When the kubelet last saw a container using it; `None` if never.
    pub last_used: Option<Instant>,
    /// Used by some container on the node, running or not.
    pub in_use: bool,
    /// Pinned by the runtime (CRI `Image.pinned`), e.g. the pause image.
    pub pinned: bool,
}

/// Image filesystem capacity and free space, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
}

/// Why an image was selected (upstream's `image_garbage_collected_total`
/// `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcReason {
    /// Unused for longer than `imageMaximumGCAge`.
    Age,
    /// Freed to bring disk usage down to the low threshold.
    Space,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDeletion {
    pub id: String,
    pub size_bytes: u64,
    pub reason: GcReason,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageGcError {
    #[error("{0}")]
    InvalidPolicy(String),
    /// Upstream records an `InvalidDiskCapacity` event.
    #[error("invalid capacity 0 on image filesystem")]
    InvalidCapacity,
    /// Upstream records a `FreeDiskSpaceFailed` event.
    #[error(
        "failed to garbage collect required amount of images: disk usage {usage_percent}%, \
         wanted to free {wanted} bytes, but only found {freed} bytes eligible to free"
    )]
    FreeSpaceFailed {
        usage_percent: i64,
        wanted: i64,
        freed: u64,
    },
}

/// Outcome of the space phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceGcPlan {
    pub deletions: Vec<PlannedDeletion>,
    pub bytes_freed: u64,
    /// `None` when the capacity was 0.
    pub usage_percent: Option<i64>,
    /// Bytes the space phase tried to free; 0 when usage was below the high
    /// threshold. May be <= 0 even when GC ran (integer rounding).
    pub bytes_to_free: i64,
    /// Invalid capacity or not enough freed. Deletions are still planned.
    pub error: Option<ImageGcError>,
}

/// A full GC pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcPlan {
    /// False when [`ImageGcPolicy::is_enabled`] is false; nothing is planned.
    pub enabled: bool,
    /// Age deletions first, then space deletions, in the order to perform.
    pub deletions: Vec<PlannedDeletion>,
    /// Sum of the sizes of all planned deletions.
    pub bytes_freed: u64,
    pub usage_percent: Option<i64>,
    pub bytes_to_free: i64,
    pub error: Option<ImageGcError>,
}

impl GcPlan {
    /// The ids to delete, in order.
    pub fn ids(&self) -> Vec<&str> {
        self.deletions.iter().map(|d| d.id.as_str()).collect()
    }
}

/// Upstream's `byLastUsedAndDetected`, plus an id tie-break.
fn eviction_order(a: &ImageRecord, b: &ImageRecord) -> Ordering {
    a.last_used
        .cmp(&b.last_used)
        .then(a.first_detected.cmp(&b.first_detected))
        .then(a.id.cmp(&b.id))
}

/// `imagesInEvictionOrder`: unused, unpinned images, oldest first.
pub fn eviction_candidates(images: &[ImageRecord]) -> Vec<ImageRecord> {
    let mut out: Vec<ImageRecord> = images
        .iter()
        .filter(|i| !i.in_use && !i.pinned)
        .cloned()
        .collect();
    out.sort_by(eviction_order);
    out
}

/// Go's `later.Sub(earlier) > d`, where a negative difference is never
/// greater.
fn elapsed_gt(later: Instant, earlier: Instant, d: Duration) -> bool {
    matches!(later.checked_duration_since(earlier), Some(e) if e > d)
}

/// Go's `later.Sub(earlier) < d`, where a negative difference is always
/// smaller.
fn elapsed_lt(later: Instant, earlier: Instant, d: Duration) -> bool {
    match later.checked_duration_since(earlier) {
        Some(e) => e < d,
        None => true,
    }
}

/// Age phase (`freeOldImages`) over candidates already in eviction order.
/// Returns the deletions and the candidates left for the space phase.
pub fn plan_age_gc(
    policy: &ImageGcPolicy,
    candidates: &[ImageRecord],
    now: Instant,
    gc_started: Instant,
) -> (Vec<PlannedDeletion>, Vec<ImageRecord>) {
    if policy.max_age.is_zero() {
        return (Vec::new(), candidates.to_vec());
    }
    // Wait until max_age has passed since GC started (kubelet start), or
    // images could be collected prematurely.
    if !elapsed_gt(now, gc_started, policy.max_age) {
        return (Vec::new(), candidates.to_vec());
    }
    let mut deletions = Vec::new();
    let mut remaining = Vec::new();
    for image in candidates {
        let too_old = match image.last_used {
            // Go's zero time: now.Sub(zero) saturates far above any max age.
            None => true,
            Some(last_used) => elapsed_gt(now, last_used, policy.max_age),
        };
        if too_old {
            deletions.push(PlannedDeletion {
                id: image.id.clone(),
                size_bytes: image.size_bytes,
                reason: GcReason::Age,
            });
        } else {
            remaining.push(image.clone());
        }
    }
    (deletions, remaining)
}

/// `freeSpace(bytesToFree, now, candidates)`: walk candidates (already in
/// eviction order) until at least `bytes_to_free` is freed.
fn free_space(
    policy: &ImageGcPolicy,
    bytes_to_free: i64,
    now: Instant,
    candidates: &[ImageRecord],
) -> (Vec<PlannedDeletion>, u64) {
    let mut deletions = Vec::new();
    let mut freed: u64 = 0;
    for image in candidates {
        // Images in use were given a last-used time of "now".
        if matches!(image.last_used, Some(t) if t >= now) {
            continue;
        }
        // Too new: it may just have been pulled for a container about to start.
        if elapsed_lt(now, image.first_detected, policy.min_age) {
            continue;
        }
        deletions.push(PlannedDeletion {
            id: image.id.clone(),
            size_bytes: image.size_bytes,
            reason: GcReason::Space,
        });
        freed = freed.saturating_add(image.size_bytes);
        if i128::from(freed) >= i128::from(bytes_to_free) {
            break;
        }
    }
    (deletions, freed)
}

/// Space phase of `GarbageCollect` over candidates in eviction order (the
/// `remaining` output of [`plan_age_gc`]) and freshly read fs stats.
pub fn plan_space_gc(
    policy: &ImageGcPolicy,
    fs: FsStats,
    candidates: &[ImageRecord],
    now: Instant,
) -> SpaceGcPlan {
    let capacity = i128::from(fs.capacity_bytes);
    let available = i128::from(fs.available_bytes).min(capacity);
    if capacity == 0 {
        return SpaceGcPlan {
            deletions: Vec::new(),
            bytes_freed: 0,
            usage_percent: None,
            bytes_to_free: 0,
            error: Some(ImageGcError::InvalidCapacity),
        };
    }
    let usage_percent = (100 - available * 100 / capacity) as i64;
    if usage_percent < i64::from(policy.high_threshold_percent) {
        return SpaceGcPlan {
            deletions: Vec::new(),
            bytes_freed: 0,
            usage_percent: Some(usage_percent),
            bytes_to_free: 0,
            error: None,
        };
    }
    let amount = capacity * (100 - i128::from(policy.low_threshold_percent)) / 100 - available;
    let amount = amount.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    let (deletions, freed) = free_space(policy, amount, now, candidates);
    let error = (i128::from(freed) < i128::from(amount)).then_some(ImageGcError::FreeSpaceFailed {
        usage_percent,
        wanted: amount,
        freed,
    });
    SpaceGcPlan {
        deletions,
        bytes_freed: freed,
        usage_percent: Some(usage_percent),
        bytes_to_free: amount,
        error,
    }
}

/// One full GC pass (`GarbageCollect(ctx, beganGC)`), given the fs stats read
/// before the pass. `gc_started` is when the kubelet started its image GC
/// loop (`beganGC`). Bytes freed by the age phase are credited to
/// `available` (capped at capacity) before the space phase.
pub fn plan_image_gc(
    policy: &ImageGcPolicy,
    fs: FsStats,
    images: &[ImageRecord],
    now: Instant,
    gc_started: Instant,
) -> GcPlan {
    if !policy.is_enabled() {
        return GcPlan {
            enabled: false,
            deletions: Vec::new(),
            bytes_freed: 0,
            usage_percent: None,
            bytes_to_free: 0,
            error: None,
        };
    }
    let candidates = eviction_candidates(images);
    let (mut deletions, remaining) = plan_age_gc(policy, &candidates, now, gc_started);
    let age_freed: u64 = deletions.iter().map(|d| d.size_bytes).sum();
    let fs_after_age = FsStats {
        capacity_bytes: fs.capacity_bytes,
        available_bytes: fs
            .available_bytes
            .saturating_add(age_freed)
            .min(fs.capacity_bytes),
    };
    let space = plan_space_gc(policy, fs_after_age, &remaining, now);
    let bytes_freed = age_freed.saturating_add(space.bytes_freed);
    deletions.extend(space.deletions);
    GcPlan {
        enabled: true,
        deletions,
        bytes_freed,
        usage_percent: space.usage_percent,
        bytes_to_free: space.bytes_to_free,
        error: space.error,
    }
}

/// `DeleteUnusedImages` (used by the eviction manager under disk pressure):
/// every unused, unpinned image old enough by `min_age`, regardless of the
/// thresholds. Returns the deletions in order and the bytes they free.
pub fn plan_delete_unused(
    policy: &ImageGcPolicy,
    images: &[ImageRecord],
    now: Instant,
) -> (Vec<PlannedDeletion>, u64) {
    let candidates = eviction_candidates(images);
    free_space(policy, i64::MAX, now, &candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1_000_000_000;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    struct Clock {
        base: Instant,
    }

    impl Clock {
        fn new() -> Self {
            Clock {
                base: Instant::now(),
            }
        }
        fn at(&self, s: u64) -> Instant {
            self.base + secs(s)
        }
    }

    fn img(id: &str, size: u64, first: Instant, last: Option<Instant>) -> ImageRecord {
        ImageRecord {
            id: id.to_string(),
            size_bytes: size,
            first_detected: first,
            last_used: last,
            in_use: false,
            pinned: false,
        }
    }

    fn policy() -> ImageGcPolicy {
        ImageGcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: secs(120),
            max_age: Duration::ZERO,
        }
    }

    fn fs(capacity: u64, available: u64) -> FsStats {
        FsStats {
            capacity_bytes: capacity,
            available_bytes: available,
        }
    }

    #[test]
    fn below_high_threshold_frees_nothing() {
        let c = Clock::new();
        let now = c.at(10_000);
        let images = vec![img("a", GB, c.at(0), None)];
        // 84% used.
        let plan = plan_image_gc(&policy(), fs(100 * GB, 16 * GB), &images, now, c.at(0));
        assert!(plan.enabled);
        assert!(plan.deletions.is_empty());
        assert_eq!(plan.usage_percent, Some(84));
        assert_eq!(plan.bytes_to_free, 0);
        assert_eq!(plan.error, None);
    }

    #[test]
    fn at_high_threshold_frees_down_to_low_threshold() {
        let c = Clock::new();
        let now = c.at(10_000);
        let images = vec![
            img("a", 2 * GB, c.at(0), Some(c.at(100))),
            img("b", 2 * GB, c.at(0), Some(c.at(50))),
            img("c", 2 * GB, c.at(0), Some(c.at(200))),
        ];
        // Exactly 85% used (>= high): free 100*20/100 - 15 = 5 GB.
        let plan = plan_image_gc(&policy(), fs(100 * GB, 15 * GB), &images, now, c.at(0));
        assert_eq!(plan.usage_percent, Some(85));
        assert_eq!(plan.bytes_to_free, 5 * GB as i64);
        // Least recently used first; stop once freed >= 5 GB.
        assert_eq!(plan.ids(), vec!["b", "a", "c"]);
        assert_eq!(plan.bytes_freed, 6 * GB);
        assert_eq!(plan.error, None);
        assert!(plan.deletions.iter().all(|d| d.reason == GcReason::Space));
    }

    #[test]
    fn stops_as_soon_as_enough_is_freed() {
        let c = Clock::new();
        let now = c.at(10_000);
        let images = vec![
            img("a", 5 * GB, c.at(0), Some(c.at(1))),
            img("b", 5 * GB, c.at(0), Some(c.at(2))),
        ];
        let plan = plan_image_gc(&policy(), fs(100 * GB, 15 * GB), &images, now, c.at(0));
        assert_eq!(plan.ids(), vec!["a"]);
        assert_eq!(plan.bytes_freed, 5 * GB);
    }

    #[test]
    fn usage_percent_uses_integer_division() {
        let c = Clock::new();
        let now = c.at(10_000);
        let images = vec![img("a", 1, c.at(0), None)];
        // available*100/capacity = 15.99 -> 15 -> usage 85: GC runs.
        let plan = plan_image_gc(&policy(), fs(10_000, 1_599), &images, now, c.at(0));
        assert_eq!(plan.usage_percent, Some(85));
        assert_eq!(plan.bytes_to_free, 10_000 * 20 / 100 - 1_599);
    }

    #[test]
    fn in_use_and_pinned_images_are_never_candidates() {
        let c = Clock::new();
        let now = c.at(10_000);
        let mut used = img("used", GB, c.at(0), Some(now));
        used.in_use = true;
        let mut pinned = img("pinned", GB, c.at(0), None);
        pinned.pinned = true;
        let free = img("free", GB, c.at(0), Some(c.at(5)));
        let plan = plan_image_gc(
            &policy(),
            fs(100 * GB, 0),
            &[used, pinned, free],
            now,
            c.at(0),
        );
        assert_eq!(plan.ids(), vec!["free"]);
        assert_eq!(
            plan.error,
            Some(ImageGcError::FreeSpaceFailed {
                usage_percent: 100,
                wanted: 20 * GB as i64,
                freed: GB,
            })
        );
    }

    #[test]
    fn minimum_age_is_judged_on_first_detected() {
        let c = Clock::new();
        let now = c.at(1_000);
        let images = vec![
            // Age exactly min_age (120s): eligible (skip only when < min_age).
            img("just-old-enough", GB, c.at(880), None),
            // 119s old: skipped, but the walk continues past it.
            img("too-new", GB, c.at(881), None),
            img("old", GB, c.at(0), Some(c.at(900))),
        ];
        let plan = plan_image_gc(&policy(), fs(100 * GB, 0), &images, now, c.at(0));
        assert_eq!(plan.ids(), vec!["just-old-enough", "old"]);
    }

    #[test]
    fn images_used_at_or_after_now_are_skipped() {
        let c = Clock::new();
        let now = c.at(1_000);
        let images = vec![
            img("a", GB, c.at(0), Some(now)),
            img("b", GB, c.at(0), Some(c.at(2_000))),
            img("c", GB, c.at(0), Some(c.at(999))),
        ];
        let plan = plan_image_gc(&policy(), fs(100 * GB, 0), &images, now, c.at(0));
        assert_eq!(plan.ids(), vec!["c"]);
    }

    #[test]
    fn order_is_last_used_then_first_detected_never_used_first() {
        let c = Clock::new();
        let now = c.at(10_000);
        let images = vec![
            img("used-late", GB, c.at(0), Some(c.at(500))),
            img("used-early-detected-late", GB, c.at(20), Some(c.at(100))),
            img("used-early-detected-early", GB, c.at(10), Some(c.at(100))),
            img("never-used-detected-late", GB, c.at(30), None),
            img("never-used-detected-early", GB, c.at(5), None),
        ];
        let order: Vec<String> = eviction_candidates(&images)
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(
            order,
            vec![
                "never-used-detected-early",
                "never-used-detected-late",
                "used-early-detected-early",
                "used-early-detected-late",
                "used-late",
            ]
        );
        let (deleted, freed) = plan_delete_unused(&policy(), &images, now);
        assert_eq!(deleted.len(), 5);
        assert_eq!(freed, 5 * GB);
    }

    #[test]
    fn max_age_removes_unused_images_regardless_of_disk_usage() {
        let c = Clock::new();
        let p = ImageGcPolicy {
            max_age: secs(3_600),
            ..policy()
        };
        let now = c.at(10_000);
        let images = vec![
            // Unused for 3601s: removed.
            img("stale", GB, c.at(0), Some(c.at(6_399))),
            // Unused for exactly max_age: kept (strict >).
            img("borderline", GB, c.at(0), Some(c.at(6_400))),
            // Never used: Go zero time, always older than max age.
            img("never-used", GB, c.at(9_990), None),
        ];
        // Plenty of free space.
        let plan = plan_image_gc(&p, fs(100 * GB, 90 * GB), &images, now, c.at(0));
        assert_eq!(plan.ids(), vec!["never-used", "stale"]);
        assert!(plan.deletions.iter().all(|d| d.reason == GcReason::Age));
        assert_eq!(plan.bytes_freed, 2 * GB);
        // 90 GB free plus the 2 GB credited from the age phase.
        assert_eq!(plan.usage_percent, Some(8));
    }

    #[test]
    fn max_age_waits_for_max_age_since_gc_started() {
        let c = Clock::new();
        let p = ImageGcPolicy {
            max_age: secs(3_600),
            ..policy()
        };
        let images = vec![img("stale", GB, c.at(0), Some(c.at(1)))];
        let started = c.at(1_000);
        // Exactly max_age since start: not yet.
        let plan = plan_image_gc(&p, fs(100 * GB, 90 * GB), &images, c.at(4_600), started);
        assert!(plan.deletions.is_empty());
        let plan = plan_image_gc(&p, fs(100 * GB, 90 * GB), &images, c.at(4_601), started);
        assert_eq!(plan.ids(), vec!["stale"]);
    }

    #[test]
    fn max_age_zero_disables_age_phase() {
        let c = Clock::new();
        let images = vec![img("ancient", GB, c.at(0), None)];
        let plan = plan_image_gc(
            &policy(),
            fs(100 * GB, 90 * GB),
            &images,
            c.at(1_000_000),
            c.at(0),
        );
        assert!(plan.deletions.is_empty());
    }

    #[test]
    fn age_phase_ignores_min_age_and_runs_before_space_phase() {
        let c = Clock::new();
        let p = ImageGcPolicy {
            max_age: secs(300),
            min_age: secs(120),
            ..policy()
        };
        let now = c.at(10_000);
        let images = vec![
            // Detected 10s ago and never used: age phase removes it anyway.
            img("fresh-never-used", GB, c.at(9_990), None),
            img("recent", 5 * GB, c.at(0), Some(c.at(9_900))),
            img("recent2", 4 * GB, c.at(0), Some(c.at(9_950))),
        ];
        // 86% used; the age phase frees 1 GB -> 85% -> still >= high.
        let plan = plan_image_gc(&p, fs(100 * GB, 14 * GB), &images, now, c.at(0));
        assert_eq!(plan.ids(), vec!["fresh-never-used", "recent"]);
        assert_eq!(plan.deletions[0].reason, GcReason::Age);
        assert_eq!(plan.deletions[1].reason, GcReason::Space);
        assert_eq!(plan.usage_percent, Some(85));
        assert_eq!(plan.bytes_to_free, 5 * GB as i64);
        assert_eq!(plan.bytes_freed, 6 * GB);
    }

    #[test]
    fn split_phases_let_the_caller_reread_stats() {
        let c = Clock::new();
        let p = ImageGcPolicy {
            max_age: secs(300),
            ..policy()
        };
        let now = c.at(10_000);
        let images = vec![
            img("stale", GB, c.at(0), Some(c.at(1))),
            img("recent", GB, c.at(0), Some(c.at(9_900))),
        ];
        let candidates = eviction_candidates(&images);
        let (aged, remaining) = plan_age_gc(&p, &candidates, now, c.at(0));
        assert_eq!(aged.len(), 1);
        assert_eq!(remaining.len(), 1);
        let space = plan_space_gc(&p, fs(100 * GB, 50 * GB), &remaining, now);
        assert!(space.deletions.is_empty());
        assert_eq!(space.usage_percent, Some(50));
    }

    #[test]
    fn zero_capacity_is_an_error() {
        let c = Clock::new();
        let images = vec![img("a", GB, c.at(0), None)];
        let plan = plan_image_gc(&policy(), fs(0, 0), &images, c.at(1_000), c.at(0));
        assert_eq!(plan.error, Some(ImageGcError::InvalidCapacity));
        assert!(plan.deletions.is_empty());
        assert_eq!(plan.usage_percent, None);
    }

    #[test]
    fn available_is_clamped_to_capacity() {
        let c = Clock::new();
        let images = vec![img("a", GB, c.at(0), None)];
        let plan = plan_image_gc(&policy(), fs(10, 20), &images, c.at(1_000), c.at(0));
        assert_eq!(plan.usage_percent, Some(0));
        assert!(plan.deletions.is_empty());
    }

    #[test]
    fn non_positive_amount_still_removes_one_image() {
        // NewImageGCManager allows low == high; then the amount can be <= 0
        // and freeSpace still deletes the first eligible image.
        let c = Clock::new();
        let p = ImageGcPolicy {
            high_threshold_percent: 80,
            low_threshold_percent: 80,
            ..policy()
        };
        let images = vec![
            img("a", GB, c.at(0), Some(c.at(1))),
            img("b", GB, c.at(0), Some(c.at(2))),
        ];
        // 80% used: amount = 20 - 20 = 0.
        let plan = plan_image_gc(&p, fs(100, 20), &images, c.at(1_000), c.at(0));
        assert_eq!(plan.bytes_to_free, 0);
        assert_eq!(plan.ids(), vec!["a"]);
        assert_eq!(plan.error, None);
    }

    #[test]
    fn high_threshold_100_without_max_age_disables_gc() {
        let c = Clock::new();
        let p = ImageGcPolicy {
            high_threshold_percent: 100,
            low_threshold_percent: 90,
            ..policy()
        };
        assert!(!p.is_enabled());
        let images = vec![img("a", GB, c.at(0), None)];
        let plan = plan_image_gc(&p, fs(100, 0), &images, c.at(1_000), c.at(0));
        assert!(!plan.enabled);
        assert!(plan.deletions.is_empty());
        let with_age = ImageGcPolicy {
            max_age: secs(60),
            ..p
        };
        assert!(with_age.is_enabled());
    }

    #[test]
    fn policy_validation_mirrors_new_image_gc_manager() {
        assert!(policy().validate().is_ok());
        let equal = ImageGcPolicy {
            high_threshold_percent: 80,
            low_threshold_percent: 80,
            ..policy()
        };
        assert!(equal.validate().is_ok());
        let inverted = ImageGcPolicy {
            high_threshold_percent: 70,
            low_threshold_percent: 80,
            ..policy()
        };
        assert!(inverted.validate().is_err());
        let too_high = ImageGcPolicy {
            high_threshold_percent: 101,
            ..policy()
        };
        assert!(too_high.validate().is_err());
    }

    #[test]
    fn ties_are_broken_by_id_for_determinism() {
        let c = Clock::new();
        let images = vec![
            img("b", GB, c.at(0), Some(c.at(1))),
            img("a", GB, c.at(0), Some(c.at(1))),
        ];
        let order: Vec<String> = eviction_candidates(&images)
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(order, vec!["a", "b"]);
    }
}
