//! kiln's kubelet configuration: the subset of the upstream
//! `KubeletConfiguration` (`apiVersion: kubelet.config.k8s.io/v1beta1`) that
//! kiln implements, with upstream's defaulting
//! (`pkg/kubelet/apis/config/v1beta1/defaults.go`) and validation
//! (`pkg/kubelet/apis/config/validation/validation.go`), plus two kiln
//! extensions (see [`KubeletConfig::image_pull_backoff`] and
//! [`KubeletConfig::crash_loop_backoff`]).
//!
//! Decoding follows the kubelet: a file whose strict decoding fails only
//! because of unknown fields is still loaded (the kubelet logs a warning), so
//! unknown fields are ignored and their names returned. Upstream fields kiln
//! does not implement are returned separately.
//!
//! Defaulting follows upstream's rule that a zero value means "unset": e.g.
//! `syncFrequency: 0s` becomes 1m and `port: 0` becomes 10250, while
//! `imageGCHighThresholdPercent` (a pointer upstream) keeps an explicit 0.
//!
//! Durations are Go `time.ParseDuration` strings (see
//! [`parse_go_duration`]); like `metav1.Duration`, a bare YAML number is
//! rejected.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use yaml_serde::{Mapping, Value};

/// The only apiVersion accepted.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// The only kind accepted.
pub const KIND: &str = "KubeletConfiguration";

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Upstream v1beta1 `KubeletConfiguration` fields that kiln accepts but does
/// not implement (from `staging/src/k8s.io/kubelet/config/v1beta1/types.go`).
const UPSTREAM_UNIMPLEMENTED_FIELDS: &[&str] = &[
    "allowedUnsafeSysctls",
    "authentication",
    "authorization",
    "cgroupDriver",
    "cgroupRoot",
    "cgroupsPerQOS",
    "configMapAndSecretChangeDetectionStrategy",
    "containerLogMaxFiles",
    "containerLogMaxSize",
    "containerLogMaxWorkers",
    "containerLogMonitorInterval",
    "containerRuntimeEndpoint",
    "contentType",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "cpuManagerPolicy",
    "cpuManagerPolicyOptions",
    "cpuManagerReconcilePeriod",
    "draManagerReconcilePeriod",
    "enableContentionProfiling",
    "enableControllerAttachDetach",
    "enableDebugFlagsHandler",
    "enableDebuggingHandlers",
    "enableProfilingHandler",
    "enableServer",
    "enableSystemLogHandler",
    "enableSystemLogQuery",
    "enforceNodeAllocatable",
    "eventBurst",
    "eventRecordQPS",
    "evictionMaxPodGracePeriod",
    "evictionMinimumReclaim",
    "evictionPressureTransitionPeriod",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "failCgroupV1",
    "failSwapOn",
    "featureGates",
    "fileCheckFrequency",
    "hairpinMode",
    "healthzBindAddress",
    "healthzPort",
    "httpCheckFrequency",
    "imagePullCredentialsVerificationPolicy",
    "imageServiceEndpoint",
    "iptablesDropBit",
    "iptablesMasqueradeBit",
    "kernelMemcgNotification",
    "kubeAPIBurst",
    "kubeAPIQPS",
    "kubeReserved",
    "kubeReservedCgroup",
    "kubeletCgroups",
    "localStorageCapacityIsolation",
    "logging",
    "makeIPTablesUtilChains",
    "maxOpenFiles",
    "memoryManagerPolicy",
    "memoryReservationPolicy",
    "memorySwap",
    "memoryThrottlingFactor",
    "mergeDefaultEvictionSettings",
    "nodeStatusMaxImages",
    "oomScoreAdj",
    "podCIDR",
    "podHousekeepingPeriod",
    "podLogsDir",
    "podsPerCore",
    "preloadedImagesVerificationAllowlist",
    "protectKernelDefaults",
    "providerID",
    "qosReserved",
    "registerNode",
    "registerWithTaints",
    "registryBurst",
    "registryPullQPS",
    "reservedMemory",
    "reservedSystemCPUs",
    "resolvConf",
    "rotateCertificates",
    "runOnce",
    "runtimeRequestTimeout",
    "seccompDefault",
    "serverTLSBootstrap",
    "showHiddenMetricsForVersion",
    "shutdownGracePeriodByPodPriority",
    "shutdownGracePeriodCriticalPods",
    "singleProcessOOMKill",
    "staticPodPath",
    "staticPodURL",
    "staticPodURLHeader",
    "streamingConnectionIdleTimeout",
    "systemCgroups",
    "systemReserved",
    "systemReservedCgroup",
    "tlsCertFile",
    "tlsCipherSuites",
    "tlsCurvePreferences",
    "tlsMinVersion",
    "tlsPrivateKeyFile",
    "topologyManagerPolicy",
    "topologyManagerPolicyOptions",
    "topologyManagerScope",
    "tracing",
    "userNamespaces",
    "volumePluginDir",
    "volumeStatsAggPeriod",
];

// ---------------------------------------------------------------------------
// Go durations
// ---------------------------------------------------------------------------

/// A malformed Go duration string; the message mirrors Go's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationParseError(String);

/// Parses a duration the way Go's `time.ParseDuration` does, returning signed
/// nanoseconds: an optional sign, then one or more `<decimal><unit>` terms,
/// where the decimal may have a fraction (`1.5h`, `.5s`, `5.s`) and the unit
/// is one of `ns`, `us`, `µs` (U+00B5), `μs` (U+03BC), `ms`, `s`, `m`, `h`.
/// A unit is required except for a lone `0` (optionally signed). Values
/// beyond the range of Go's `time.Duration` (int64 nanoseconds, about 292
/// years) are rejected. No whitespace is allowed.
pub fn parse_go_duration(input: &str) -> Result<i64, DurationParseError> {
    const LIMIT: u64 = 1 << 63;
    let invalid = || DurationParseError(format!("time: invalid duration {input:?}"));
    let mut s = input.as_bytes();
    let mut neg = false;
    if let Some(&c) = s.first()
        && (c == b'-' || c == b'+')
    {
        neg = c == b'-';
        s = &s[1..];
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // Integer part: [0-9]*
        let before = s.len();
        let mut v: u64 = 0;
        let mut i = 0;
        while i < s.len() && s[i].is_ascii_digit() {
            if v > LIMIT / 10 {
                return Err(invalid());
            }
            v = v * 10 + u64::from(s[i] - b'0');
            if v > LIMIT {
                return Err(invalid());
            }
            i += 1;
        }
        s = &s[i..];
        let pre = before != s.len();
        // Fraction: (\.[0-9]*)? -- stops gaining precision on overflow.
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let before = s.len();
            let mut overflow = false;
            let mut i = 0;
            while i < s.len() && s[i].is_ascii_digit() {
                if !overflow {
                    if frac > (LIMIT - 1) / 10 {
                        overflow = true;
                    } else {
                        let y = frac * 10 + u64::from(s[i] - b'0');
                        if y > LIMIT {
                            overflow = true;
                        } else {
                            frac = y;
                            scale *= 10.0;
                        }
                    }
                }
                i += 1;
            }
            s = &s[i..];
            post = before != s.len();
        }
        if !pre && !post {
            return Err(invalid());
        }
        // Unit: everything up to the next digit or '.'.
        let mut i = 0;
        while i < s.len() && !(s[i] == b'.' || s[i].is_ascii_digit()) {
            i += 1;
        }
        if i == 0 {
            return Err(DurationParseError(format!(
                "time: missing unit in duration {input:?}"
            )));
        }
        let unit_bytes = &s[..i];
        s = &s[i..];
        let unit: u64 = match unit_bytes {
            b"ns" => 1,
            b"us" => 1_000,
            b"\xc2\xb5s" | b"\xce\xbcs" => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60 * 1_000_000_000,
            b"h" => 3_600 * 1_000_000_000,
            _ => {
                let unit = String::from_utf8_lossy(unit_bytes);
                return Err(DurationParseError(format!(
                    "time: unknown unit {unit:?} in duration {input:?}"
                )));
            }
        };
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if frac > 0 {
            // Same float arithmetic as Go, to be nanosecond-exact for
            // fractions of hours.
            v += (frac as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        total = total.checked_add(v).ok_or_else(invalid)?;
        if total > LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        // total <= 2^63, so -total fits in i64.
        return Ok((-(i128::from(total))) as i64);
    }
    if total > LIMIT - 1 {
        return Err(invalid());
    }
    Ok(total as i64)
}

/// Formats a duration like Go's `time.Duration.String`: `0s`, `1.5s`,
/// `2m0s`, `1h30m0s`, `500ms`, `1.2µs`.
pub fn format_go_duration(d: Duration) -> String {
    format_magnitude(false, d.as_nanos())
}

/// [`format_go_duration`] for signed nanoseconds (Go's representation).
pub fn format_go_duration_nanos(nanos: i64) -> String {
    format_magnitude(nanos < 0, u128::from(nanos.unsigned_abs()))
}

fn format_magnitude(neg: bool, mut u: u128) -> String {
    // Writes `v / 10^prec`'s fractional digits (without trailing zeros) in
    // front of `out`, returning the integer part.
    fn frac(out: &mut String, mut v: u128, prec: u32) -> u128 {
        let mut digits = String::new();
        let mut print = false;
        for _ in 0..prec {
            let digit = (v % 10) as u8;
            print = print || digit != 0;
            if print {
                digits.insert(0, char::from(b'0' + digit));
            }
            v /= 10;
        }
        if print {
            out.insert_str(0, &digits);
            out.insert(0, '.');
        }
        v
    }
    let mut out = String::new();
    if u < 1_000_000_000 {
        let prec = match u {
            0 => return "0s".to_string(),
            1..=999 => {
                out.push_str("ns");
                0
            }
            1_000..=999_999 => {
                out.push_str("µs");
                3
            }
            _ => {
                out.push_str("ms");
                6
            }
        };
        let int = frac(&mut out, u, prec);
        out.insert_str(0, &int.to_string());
    } else {
        out.push('s');
        u = frac(&mut out, u, 9);
        out.insert_str(0, &(u % 60).to_string());
        u /= 60;
        if u > 0 {
            out.insert(0, 'm');
            out.insert_str(0, &(u % 60).to_string());
            u /= 60;
            if u > 0 {
                out.insert(0, 'h');
                out.insert_str(0, &u.to_string());
            }
        }
    }
    if neg {
        out.insert(0, '-');
    }
    out
}

// ---------------------------------------------------------------------------
// Public configuration types
// ---------------------------------------------------------------------------

/// Bounds of an exponential back-off (kiln extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// First delay; doubles on each further failure.
    pub initial: Duration,
    /// Cap on the delay.
    pub max: Duration,
}

impl Default for BackoffConfig {
    /// The kubelet's hard-coded bounds for both image pulls and crash loops:
    /// 10s initial, 300s max.
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

/// The kubelet configuration kiln implements. `Default` gives upstream's
/// v1beta1 defaults (Linux).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletConfig {
    /// `serializeImagePulls`: pull one image at a time. Default true, but
    /// false when unset and `maxParallelImagePulls` >= 2.
    pub serialize_image_pulls: bool,
    /// `maxParallelImagePulls`: `None` = no limit. Must be >= 1, and > 1 only
    /// when `serialize_image_pulls` is false.
    pub max_parallel_image_pulls: Option<u32>,
    /// `imageGCHighThresholdPercent`, 0..=100, default 85.
    pub image_gc_high_threshold_percent: u8,
    /// `imageGCLowThresholdPercent`, 0..=100 and below the high threshold,
    /// default 80.
    pub image_gc_low_threshold_percent: u8,
    /// `imageMinimumGCAge`, default 2m (an explicit 0 also means 2m).
    pub image_minimum_gc_age: Duration,
    /// `imageMaximumGCAge`, default 0 = off; when set it must exceed
    /// `imageMinimumGCAge`.
    pub image_maximum_gc_age: Duration,
    /// `address` to serve on, default "0.0.0.0".
    pub address: String,
    /// `port`, default 10250.
    pub port: u16,
    /// `readOnlyPort`, default 0 = disabled.
    pub read_only_port: u16,
    /// `nodeStatusUpdateFrequency`, default 10s.
    pub node_status_update_frequency: Duration,
    /// `nodeStatusReportFrequency`, default 5m, or `nodeStatusUpdateFrequency`
    /// when only that one is set.
    pub node_status_report_frequency: Duration,
    /// `nodeLeaseDurationSeconds`, default 40, must be > 0.
    pub node_lease_duration_seconds: u32,
    /// `syncFrequency`, default 1m.
    pub sync_frequency: Duration,
    /// `maxPods`, default 110.
    pub max_pods: u32,
    /// `podPidsLimit`, default -1 (no per-pod limit); negative values become -1.
    pub pod_pids_limit: i64,
    /// `shutdownGracePeriod`, default 0 = graceful node shutdown off; else
    /// must be >= 1s.
    pub shutdown_grace_period: Duration,
    /// `evictionHard`, signal name -> threshold, kept as strings. When the
    /// field is absent it defaults to the kubelet's Linux defaults (see
    /// [`default_eviction_hard`]); an explicit map, even an empty one, is
    /// taken as is.
    pub eviction_hard: BTreeMap<String, String>,
    /// `clusterDNS` server IPs, default empty.
    pub cluster_dns: Vec<String>,
    /// `clusterDomain`, default "".
    pub cluster_domain: String,
    /// kiln extension `imagePullBackOff: {initial, max}` (Go durations).
    /// The kubelet hard-codes 10s/300s; kiln lets tests shorten them.
    pub image_pull_backoff: BackoffConfig,
    /// kiln extension `crashLoopBackOff: {initial, max}` (Go durations).
    /// The kubelet hard-codes 10s/300s; kiln lets tests shorten them. The
    /// same YAML object also accepts upstream's
    /// `maxContainerRestartPeriod` (1s..=300s), which sets `max` and, as
    /// upstream does, lowers `initial` to it when smaller.
    pub crash_loop_backoff: BackoffConfig,
}

/// The kubelet's default `evictionHard` on Linux
/// (`pkg/kubelet/eviction/defaults_linux.go`), applied when the field is
/// absent from the file.
pub fn default_eviction_hard() -> BTreeMap<String, String> {
    [
        ("memory.available", "100Mi"),
        ("nodefs.available", "10%"),
        ("nodefs.inodesFree", "5%"),
        ("imagefs.available", "15%"),
        ("imagefs.inodesFree", "5%"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            serialize_image_pulls: true,
            max_parallel_image_pulls: None,
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            image_minimum_gc_age: Duration::from_secs(120),
            image_maximum_gc_age: Duration::ZERO,
            address: "0.0.0.0".to_string(),
            port: 10250,
            read_only_port: 0,
            node_status_update_frequency: Duration::from_secs(10),
            node_status_report_frequency: Duration::from_secs(300),
            node_lease_duration_seconds: 40,
            sync_frequency: Duration::from_secs(60),
            max_pods: 110,
            pod_pids_limit: -1,
            shutdown_grace_period: Duration::ZERO,
            eviction_hard: default_eviction_hard(),
            cluster_dns: Vec::new(),
            cluster_domain: String::new(),
            image_pull_backoff: BackoffConfig::default(),
            crash_loop_backoff: BackoffConfig::default(),
        }
    }
}

/// A successfully loaded configuration plus the fields that were ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedConfig {
    pub config: KubeletConfig,
    /// Fields that are neither upstream v1beta1 fields nor kiln extensions
    /// (nested ones as `parent.child`), in document order. The kubelet warns
    /// about these and carries on; so should the caller.
    pub unknown_fields: Vec<String>,
    /// Valid upstream v1beta1 fields that kiln does not implement, in
    /// document order; they have no effect.
    pub ignored_fields: Vec<String>,
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The YAML field name (nested: `parent.child`, map entries:
    /// `field[key]`).
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read kubelet config file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse kubelet config YAML: {0}")]
    Yaml(String),
    #[error("kubelet config must be a YAML mapping, got {0}")]
    NotAMapping(&'static str),
    #[error("kubelet config has no {0}; expected apiVersion: {API_VERSION} and kind: {KIND}")]
    MissingTypeMeta(&'static str),
    #[error("unsupported kubelet config apiVersion {0:?}: only {API_VERSION} is supported")]
    UnsupportedApiVersion(String),
    #[error("unsupported kubelet config kind {0:?}: expected {KIND}")]
    UnsupportedKind(String),
    /// Bad field types, unparsable durations, out-of-range values, failed
    /// cross-field rules; all of them, not just the first.
    #[error("invalid kubelet configuration: {}", join_errors(.0))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    /// The field errors, if this is [`ConfigError::Invalid`].
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid(errors) => errors,
            _ => &[],
        }
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a floating-point number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Field-by-field decoder; collects every error. `null` reads as unset.
#[derive(Default)]
struct Decoder {
    errors: Vec<FieldError>,
}

impl Decoder {
    fn type_error(&mut self, field: &str, expected: &str, v: &Value) {
        self.errors.push(FieldError::new(
            field,
            format!("expected {expected}, got {}", kind_of(v)),
        ));
    }

    fn bool(&mut self, field: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            other => {
                self.type_error(field, "a boolean", other);
                None
            }
        }
    }

    /// An integer that must fit Go's `int32` (`bits == 32`) or `int64`.
    fn int(&mut self, field: &str, v: &Value, bits: u32) -> Option<i64> {
        match v {
            Value::Null => None,
            Value::Number(n) if !n.is_f64() => {
                let (lo, hi) = if bits == 32 {
                    (i64::from(i32::MIN), i64::from(i32::MAX))
                } else {
                    (i64::MIN, i64::MAX)
                };
                match n.as_i64() {
                    Some(i) if (lo..=hi).contains(&i) => Some(i),
                    _ => {
                        self.errors.push(FieldError::new(
                            field,
                            format!("{n} is out of range for int{bits}"),
                        ));
                        None
                    }
                }
            }
            other => {
                self.type_error(field, "an integer", other);
                None
            }
        }
    }

    fn string(&mut self, field: &str, v: &Value) -> Option<String> {
        match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => {
                self.type_error(field, "a string", other);
                None
            }
        }
    }

    /// A Go duration string (`metav1.Duration`), as signed nanoseconds.
    fn duration(&mut self, field: &str, v: &Value) -> Option<i64> {
        match v {
            Value::Null => None,
            Value::String(s) => match parse_go_duration(s) {
                Ok(ns) => Some(ns),
                Err(e) => {
                    self.errors.push(FieldError::new(field, e.to_string()));
                    None
                }
            },
            other => {
                self.type_error(field, "a duration string such as \"10s\"", other);
                None
            }
        }
    }

    fn string_list(&mut self, field: &str, v: &Value) -> Option<Vec<String>> {
        match v {
            Value::Null => None,
            Value::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => self.type_error(&format!("{field}[{i}]"), "a string", other),
                    }
                }
                Some(out)
            }
            other => {
                self.type_error(field, "a list of strings", other);
                None
            }
        }
    }

    fn string_map(&mut self, field: &str, v: &Value) -> Option<BTreeMap<String, String>> {
        match v {
            Value::Null => None,
            Value::Mapping(m) => {
                let mut out = BTreeMap::new();
                for (k, val) in m {
                    let Some(key) = self.key(field, k) else {
                        continue;
                    };
                    match val {
                        Value::String(s) => {
                            out.insert(key, s.clone());
                        }
                        other => self.type_error(&format!("{field}[{key}]"), "a string", other),
                    }
                }
                Some(out)
            }
            other => {
                self.type_error(field, "a mapping of strings", other);
                None
            }
        }
    }

    /// A mapping key as a string. Scalar keys are stringified, as the
    /// YAML-to-JSON conversion upstream does.
    fn key(&mut self, parent: &str, k: &Value) -> Option<String> {
        match k {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => Some("null".to_string()),
            other => {
                let at = if parent.is_empty() { "<root>" } else { parent };
                self.errors.push(FieldError::new(
                    at,
                    format!("mapping keys must be scalars, got {}", kind_of(other)),
                ));
                None
            }
        }
    }
}

#[derive(Debug, Default)]
struct RawBackoff {
    initial: Option<i64>,
    max: Option<i64>,
    /// Upstream's `crashLoopBackOff.maxContainerRestartPeriod`.
    max_container_restart_period: Option<i64>,
}

/// Field values as written (None = absent or null).
#[derive(Debug, Default)]
struct Raw {
    serialize_image_pulls: Option<bool>,
    max_parallel_image_pulls: Option<i64>,
    image_gc_high_threshold_percent: Option<i64>,
    image_gc_low_threshold_percent: Option<i64>,
    image_minimum_gc_age: Option<i64>,
    image_maximum_gc_age: Option<i64>,
    address: Option<String>,
    port: Option<i64>,
    read_only_port: Option<i64>,
    node_status_update_frequency: Option<i64>,
    node_status_report_frequency: Option<i64>,
    node_lease_duration_seconds: Option<i64>,
    sync_frequency: Option<i64>,
    max_pods: Option<i64>,
    pod_pids_limit: Option<i64>,
    shutdown_grace_period: Option<i64>,
    eviction_hard: Option<BTreeMap<String, String>>,
    cluster_dns: Option<Vec<String>>,
    cluster_domain: Option<String>,
    image_pull_backoff: RawBackoff,
    crash_loop_backoff: RawBackoff,
}

/// Values after defaulting, still signed (Go's types) so validation can
/// report what was written.
#[derive(Debug, Clone)]
struct Resolved {
    serialize_image_pulls: bool,
    max_parallel_image_pulls: Option<i64>,
    image_gc_high_threshold_percent: i64,
    image_gc_low_threshold_percent: i64,
    image_minimum_gc_age: i64,
    image_maximum_gc_age: i64,
    address: String,
    port: i64,
    read_only_port: i64,
    node_status_update_frequency: i64,
    node_status_report_frequency: i64,
    node_lease_duration_seconds: i64,
    sync_frequency: i64,
    max_pods: i64,
    pod_pids_limit: i64,
    shutdown_grace_period: i64,
    eviction_hard: BTreeMap<String, String>,
    cluster_dns: Vec<String>,
    cluster_domain: String,
    image_pull_backoff: (i64, i64),
    crash_loop_backoff: (i64, i64),
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn from_nanos(ns: i64) -> Duration {
    Duration::from_nanos(ns.max(0) as u64)
}

fn secs(n: i64) -> i64 {
    n * NANOS_PER_SEC
}

impl From<&KubeletConfig> for Resolved {
    fn from(c: &KubeletConfig) -> Self {
        Resolved {
            serialize_image_pulls: c.serialize_image_pulls,
            max_parallel_image_pulls: c.max_parallel_image_pulls.map(i64::from),
            image_gc_high_threshold_percent: i64::from(c.image_gc_high_threshold_percent),
            image_gc_low_threshold_percent: i64::from(c.image_gc_low_threshold_percent),
            image_minimum_gc_age: nanos(c.image_minimum_gc_age),
            image_maximum_gc_age: nanos(c.image_maximum_gc_age),
            address: c.address.clone(),
            port: i64::from(c.port),
            read_only_port: i64::from(c.read_only_port),
            node_status_update_frequency: nanos(c.node_status_update_frequency),
            node_status_report_frequency: nanos(c.node_status_report_frequency),
            node_lease_duration_seconds: i64::from(c.node_lease_duration_seconds),
            sync_frequency: nanos(c.sync_frequency),
            max_pods: i64::from(c.max_pods),
            pod_pids_limit: c.pod_pids_limit,
            shutdown_grace_period: nanos(c.shutdown_grace_period),
            eviction_hard: c.eviction_hard.clone(),
            cluster_dns: c.cluster_dns.clone(),
            cluster_domain: c.cluster_domain.clone(),
            image_pull_backoff: (
                nanos(c.image_pull_backoff.initial),
                nanos(c.image_pull_backoff.max),
            ),
            crash_loop_backoff: (
                nanos(c.crash_loop_backoff.initial),
                nanos(c.crash_loop_backoff.max),
            ),
        }
    }
}

impl Resolved {
    /// Only called after [`check`] found nothing, so every narrowing
    /// conversion is in range.
    fn into_config(self) -> KubeletConfig {
        let narrow = |v: i64| -> u32 { u32::try_from(v).unwrap_or(0) };
        KubeletConfig {
            serialize_image_pulls: self.serialize_image_pulls,
            max_parallel_image_pulls: self.max_parallel_image_pulls.map(narrow),
            image_gc_high_threshold_percent: u8::try_from(self.image_gc_high_threshold_percent)
                .unwrap_or(100),
            image_gc_low_threshold_percent: u8::try_from(self.image_gc_low_threshold_percent)
                .unwrap_or(0),
            image_minimum_gc_age: from_nanos(self.image_minimum_gc_age),
            image_maximum_gc_age: from_nanos(self.image_maximum_gc_age),
            address: self.address,
            port: u16::try_from(self.port).unwrap_or(0),
            read_only_port: u16::try_from(self.read_only_port).unwrap_or(0),
            node_status_update_frequency: from_nanos(self.node_status_update_frequency),
            node_status_report_frequency: from_nanos(self.node_status_report_frequency),
            node_lease_duration_seconds: narrow(self.node_lease_duration_seconds),
            sync_frequency: from_nanos(self.sync_frequency),
            max_pods: narrow(self.max_pods),
            pod_pids_limit: self.pod_pids_limit,
            shutdown_grace_period: from_nanos(self.shutdown_grace_period),
            eviction_hard: self.eviction_hard,
            cluster_dns: self.cluster_dns,
            cluster_domain: self.cluster_domain,
            image_pull_backoff: BackoffConfig {
                initial: from_nanos(self.image_pull_backoff.0),
                max: from_nanos(self.image_pull_backoff.1),
            },
            crash_loop_backoff: BackoffConfig {
                initial: from_nanos(self.crash_loop_backoff.0),
                max: from_nanos(self.crash_loop_backoff.1),
            },
        }
    }
}

fn decode_backoff(
    dec: &mut Decoder,
    field: &str,
    v: &Value,
    allow_upstream_max: bool,
    unknown: &mut Vec<String>,
) -> RawBackoff {
    let mut out = RawBackoff::default();
    let m = match v {
        Value::Null => return out,
        Value::Mapping(m) => m,
        other => {
            dec.type_error(field, "a mapping with initial and max", other);
            return out;
        }
    };
    for (k, val) in m {
        let Some(key) = dec.key(field, k) else {
            continue;
        };
        let path = format!("{field}.{key}");
        match key.as_str() {
            "initial" => out.initial = dec.duration(&path, val),
            "max" => out.max = dec.duration(&path, val),
            "maxContainerRestartPeriod" if allow_upstream_max => {
                out.max_container_restart_period = dec.duration(&path, val)
            }
            _ => unknown.push(path),
        }
    }
    out
}

fn decode_fields(map: &Mapping) -> Result<(Raw, Vec<String>, Vec<String>), ConfigError> {
    let mut dec = Decoder::default();
    let mut raw = Raw::default();
    let mut unknown = Vec::new();
    let mut ignored = Vec::new();
    for (k, v) in map {
        let Some(key) = dec.key("", k) else {
            continue;
        };
        let f = key.as_str();
        match f {
            "apiVersion" | "kind" => {}
            "serializeImagePulls" => raw.serialize_image_pulls = dec.bool(f, v),
            "maxParallelImagePulls" => raw.max_parallel_image_pulls = dec.int(f, v, 32),
            "imageGCHighThresholdPercent" => {
                raw.image_gc_high_threshold_percent = dec.int(f, v, 32)
            }
            "imageGCLowThresholdPercent" => raw.image_gc_low_threshold_percent = dec.int(f, v, 32),
            "imageMinimumGCAge" => raw.image_minimum_gc_age = dec.duration(f, v),
            "imageMaximumGCAge" => raw.image_maximum_gc_age = dec.duration(f, v),
            "address" => raw.address = dec.string(f, v),
            "port" => raw.port = dec.int(f, v, 32),
            "readOnlyPort" => raw.read_only_port = dec.int(f, v, 32),
            "nodeStatusUpdateFrequency" => raw.node_status_update_frequency = dec.duration(f, v),
            "nodeStatusReportFrequency" => raw.node_status_report_frequency = dec.duration(f, v),
            "nodeLeaseDurationSeconds" => raw.node_lease_duration_seconds = dec.int(f, v, 32),
            "syncFrequency" => raw.sync_frequency = dec.duration(f, v),
            "maxPods" => raw.max_pods = dec.int(f, v, 32),
            "podPidsLimit" => raw.pod_pids_limit = dec.int(f, v, 64),
            "shutdownGracePeriod" => raw.shutdown_grace_period = dec.duration(f, v),
            "evictionHard" => raw.eviction_hard = dec.string_map(f, v),
            "clusterDNS" => raw.cluster_dns = dec.string_list(f, v),
            "clusterDomain" => raw.cluster_domain = dec.string(f, v),
            "imagePullBackOff" => {
                raw.image_pull_backoff = decode_backoff(&mut dec, f, v, false, &mut unknown)
            }
            "crashLoopBackOff" => {
                raw.crash_loop_backoff = decode_backoff(&mut dec, f, v, true, &mut unknown)
            }
            _ if UPSTREAM_UNIMPLEMENTED_FIELDS.contains(&f) => ignored.push(key),
            _ => unknown.push(key),
        }
    }
    if dec.errors.is_empty() {
        Ok((raw, unknown, ignored))
    } else {
        Err(ConfigError::Invalid(dec.errors))
    }
}

/// Zero or unset means "use the default" (upstream's `== zeroDuration`).
fn or_default_if_zero(v: Option<i64>, default: i64) -> i64 {
    match v {
        None | Some(0) => default,
        Some(x) => x,
    }
}

fn resolve_backoff(
    field: &str,
    raw: &RawBackoff,
    defaults: BackoffConfig,
    errors: &mut Vec<FieldError>,
) -> (i64, i64) {
    let mut initial = raw.initial.unwrap_or(nanos(defaults.initial));
    let mut max = raw.max.unwrap_or(nanos(defaults.max));
    if let Some(period) = raw.max_container_restart_period {
        let path = format!("{field}.maxContainerRestartPeriod");
        if raw.max.is_some() {
            errors.push(FieldError::new(
                path,
                format!("cannot be combined with the kiln extension {field}.max; set one of them"),
            ));
            return (nanos(defaults.initial), nanos(defaults.max));
        }
        // Upstream: IsInRange(Milliseconds(), 1000, 300000).
        let ms = period / 1_000_000;
        if !(1_000..=300_000).contains(&ms) {
            errors.push(FieldError::new(
                path,
                format!(
                    "(got: {} seconds) must be set between 1s and 300s",
                    period as f64 / NANOS_PER_SEC as f64
                ),
            ));
            return (nanos(defaults.initial), nanos(defaults.max));
        }
        max = period;
        // newCrashLoopBackOff: the initial delay never exceeds the max.
        initial = initial.min(max);
    } else if raw.initial.is_none() && raw.max.is_some() {
        // Only the max was given: lower the default initial delay to it
        // rather than rejecting the file.
        initial = initial.min(max);
    }
    (initial, max)
}

fn resolve(raw: Raw, errors: &mut Vec<FieldError>) -> Resolved {
    let update = raw.node_status_update_frequency.unwrap_or(0);
    let report = match raw.node_status_report_frequency {
        None | Some(0) if update != 0 => update,
        other => or_default_if_zero(other, secs(300)),
    };
    let serialize = raw.serialize_image_pulls.unwrap_or(matches!(
        raw.max_parallel_image_pulls,
        None | Some(i64::MIN..=1)
    ));
    Resolved {
        serialize_image_pulls: serialize,
        max_parallel_image_pulls: raw.max_parallel_image_pulls,
        image_gc_high_threshold_percent: raw.image_gc_high_threshold_percent.unwrap_or(85),
        image_gc_low_threshold_percent: raw.image_gc_low_threshold_percent.unwrap_or(80),
        image_minimum_gc_age: or_default_if_zero(raw.image_minimum_gc_age, secs(120)),
        image_maximum_gc_age: raw.image_maximum_gc_age.unwrap_or(0),
        address: match raw.address {
            Some(a) if !a.is_empty() => a,
            _ => "0.0.0.0".to_string(),
        },
        port: or_default_if_zero(raw.port, 10250),
        read_only_port: raw.read_only_port.unwrap_or(0),
        node_status_update_frequency: or_default_if_zero(Some(update), secs(10)),
        node_status_report_frequency: report,
        node_lease_duration_seconds: or_default_if_zero(raw.node_lease_duration_seconds, 40),
        sync_frequency: or_default_if_zero(raw.sync_frequency, secs(60)),
        max_pods: or_default_if_zero(raw.max_pods, 110),
        pod_pids_limit: match raw.pod_pids_limit {
            Some(v) if v >= 0 => v,
            _ => -1,
        },
        shutdown_grace_period: raw.shutdown_grace_period.unwrap_or(0),
        eviction_hard: raw.eviction_hard.unwrap_or_else(default_eviction_hard),
        cluster_dns: raw.cluster_dns.unwrap_or_default(),
        cluster_domain: raw.cluster_domain.unwrap_or_default(),
        image_pull_backoff: resolve_backoff(
            "imagePullBackOff",
            &raw.image_pull_backoff,
            BackoffConfig::default(),
            errors,
        ),
        crash_loop_backoff: resolve_backoff(
            "crashLoopBackOff",
            &raw.crash_loop_backoff,
            BackoffConfig::default(),
            errors,
        ),
    }
}

/// Upstream's validation rules for the fields kiln implements (messages
/// follow validation.go), plus kiln's own rules for what Rust's types cannot
/// hold (negative durations) and for the back-off extensions.
fn check(r: &Resolved) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut push = |field: &str, msg: String| errs.push(FieldError::new(field, msg));
    let d = format_go_duration_nanos;

    if r.node_lease_duration_seconds <= 0 {
        push("nodeLeaseDurationSeconds", "must be greater than 0".into());
    }
    for (field, v) in [
        (
            "imageGCHighThresholdPercent",
            r.image_gc_high_threshold_percent,
        ),
        (
            "imageGCLowThresholdPercent",
            r.image_gc_low_threshold_percent,
        ),
    ] {
        if !(0..=100).contains(&v) {
            push(field, format!("{v} must be between 0 and 100, inclusive"));
        }
    }
    if r.image_gc_low_threshold_percent >= r.image_gc_high_threshold_percent {
        push(
            "imageGCLowThresholdPercent",
            format!(
                "{} must be less than imageGCHighThresholdPercent {}",
                r.image_gc_low_threshold_percent, r.image_gc_high_threshold_percent
            ),
        );
    }
    if r.image_minimum_gc_age < 0 {
        push(
            "imageMinimumGCAge",
            format!("{} must not be negative", d(r.image_minimum_gc_age)),
        );
    }
    if r.image_maximum_gc_age < 0 {
        push(
            "imageMaximumGCAge",
            format!("{} must not be negative", d(r.image_maximum_gc_age)),
        );
    }
    if r.image_maximum_gc_age > 0 && r.image_maximum_gc_age <= r.image_minimum_gc_age {
        push(
            "imageMaximumGCAge",
            format!(
                "{} must be greater than imageMinimumGCAge {}",
                d(r.image_maximum_gc_age),
                d(r.image_minimum_gc_age)
            ),
        );
    }
    if r.max_pods < 0 {
        push(
            "maxPods",
            format!("{} must not be a negative number", r.max_pods),
        );
    }
    if !(1..=65535).contains(&r.port) {
        push(
            "port",
            format!("{} must be between 1 and 65535, inclusive", r.port),
        );
    }
    if r.read_only_port != 0 && !(1..=65535).contains(&r.read_only_port) {
        push(
            "readOnlyPort",
            format!(
                "{} must be between 0 and 65535, inclusive",
                r.read_only_port
            ),
        );
    }
    if let Some(n) = r.max_parallel_image_pulls {
        if n < 1 {
            push(
                "maxParallelImagePulls",
                format!("{n} must be a positive number"),
            );
        }
        if r.serialize_image_pulls && n > 1 {
            push(
                "maxParallelImagePulls",
                "cannot be larger than 1 unless serializeImagePulls is set to false".into(),
            );
        }
    }
    let sgp = r.shutdown_grace_period;
    if sgp < 0 || (sgp > 0 && sgp < NANOS_PER_SEC) {
        push(
            "shutdownGracePeriod",
            format!("{} must be either zero or otherwise >= 1 sec", d(sgp)),
        );
    }
    // kiln: std Durations cannot be negative; upstream does not check these.
    for (field, v) in [
        ("syncFrequency", r.sync_frequency),
        ("nodeStatusUpdateFrequency", r.node_status_update_frequency),
        ("nodeStatusReportFrequency", r.node_status_report_frequency),
    ] {
        if v < 0 {
            push(field, format!("{} must not be negative", d(v)));
        }
    }
    // kiln extensions.
    for (field, (initial, max)) in [
        ("imagePullBackOff", r.image_pull_backoff),
        ("crashLoopBackOff", r.crash_loop_backoff),
    ] {
        if initial <= 0 {
            push(
                &format!("{field}.initial"),
                format!("{} must be greater than 0", d(initial)),
            );
        }
        if max < initial {
            push(
                &format!("{field}.max"),
                format!(
                    "{} must not be less than {field}.initial {}",
                    d(max),
                    d(initial)
                ),
            );
        }
    }
    errs
}

fn check_type_meta(map: &Mapping) -> Result<(), ConfigError> {
    let field = |name: &str| map.get(name).filter(|v| !v.is_null());
    match field("apiVersion") {
        None => return Err(ConfigError::MissingTypeMeta("apiVersion")),
        Some(Value::String(s)) if s == API_VERSION => {}
        Some(Value::String(s)) => return Err(ConfigError::UnsupportedApiVersion(s.clone())),
        Some(other) => {
            return Err(ConfigError::Invalid(vec![FieldError::new(
                "apiVersion",
                format!("expected a string, got {}", kind_of(other)),
            )]));
        }
    }
    match field("kind") {
        None => Err(ConfigError::MissingTypeMeta("kind")),
        Some(Value::String(s)) if s == KIND => Ok(()),
        Some(Value::String(s)) => Err(ConfigError::UnsupportedKind(s.clone())),
        Some(other) => Err(ConfigError::Invalid(vec![FieldError::new(
            "kind",
            format!("expected a string, got {}", kind_of(other)),
        )])),
    }
}

impl KubeletConfig {
    /// Parses, defaults and validates a KubeletConfiguration YAML document.
    pub fn from_yaml_str(yaml: &str) -> Result<LoadedConfig, ConfigError> {
        let mut doc: Value =
            yaml_serde::from_str(yaml).map_err(|e| ConfigError::Yaml(e.to_string()))?;
        doc.apply_merge()
            .map_err(|e| ConfigError::Yaml(e.to_string()))?;
        let map = match &doc {
            Value::Mapping(m) => m,
            Value::Null => return Err(ConfigError::MissingTypeMeta("apiVersion")),
            other => return Err(ConfigError::NotAMapping(kind_of(other))),
        };
        check_type_meta(map)?;
        let (raw, unknown_fields, ignored_fields) = decode_fields(map)?;
        let mut errors = Vec::new();
        let resolved = resolve(raw, &mut errors);
        errors.extend(check(&resolved));
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        Ok(LoadedConfig {
            config: resolved.into_config(),
            unknown_fields,
            ignored_fields,
        })
    }

    /// Reads and parses a KubeletConfiguration file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<LoadedConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        KubeletConfig::from_yaml_str(&text)
    }

    /// Checks the cross-field and range rules (the same ones applied when
    /// parsing), e.g. for a configuration built or modified in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let errors = check(&Resolved::from(self));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

    fn load(body: &str) -> Result<LoadedConfig, ConfigError> {
        KubeletConfig::from_yaml_str(&format!("{HEADER}{body}"))
    }

    fn cfg(body: &str) -> KubeletConfig {
        load(body).expect("config should load").config
    }

    fn errors(body: &str) -> Vec<FieldError> {
        match load(body) {
            Err(ConfigError::Invalid(errs)) => errs,
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    fn error_fields(body: &str) -> Vec<String> {
        errors(body).into_iter().map(|e| e.field).collect()
    }

    fn ns(s: &str) -> i64 {
        parse_go_duration(s).unwrap()
    }

    // -- Go durations -------------------------------------------------------

    #[test]
    fn parses_go_durations() {
        let s = NANOS_PER_SEC;
        assert_eq!(ns("0"), 0);
        assert_eq!(ns("+0"), 0);
        assert_eq!(ns("-0"), 0);
        assert_eq!(ns("0s"), 0);
        assert_eq!(ns("5s"), 5 * s);
        assert_eq!(ns("2m"), 120 * s);
        assert_eq!(ns("1h30m"), 5_400 * s);
        assert_eq!(ns("500ms"), 500_000_000);
        assert_eq!(ns("1.5h"), 5_400 * s);
        assert_eq!(ns("-1.5h"), -5_400 * s);
        assert_eq!(ns("+10s"), 10 * s);
        assert_eq!(ns(".5s"), 500_000_000);
        assert_eq!(ns("5.s"), 5 * s);
        assert_eq!(ns("1.004s"), 1_004_000_000);
        assert_eq!(ns("100.00100s"), 100_001_000_000);
        assert_eq!(ns("10ns"), 10);
        assert_eq!(ns("11us"), 11_000);
        assert_eq!(ns("12µs"), 12_000);
        assert_eq!(ns("13μs"), 13_000);
        assert_eq!(ns("1h2m3s4ms5us6ns"), 3_723_004_005_006);
        assert_eq!(ns("39h9m14.425s"), 140_954_425_000_000);
        // Terms may repeat and need no particular order.
        assert_eq!(ns("1s1s"), 2 * s);
        assert_eq!(ns("1m1h"), 3_660 * s);
        // Precision: Go's own test cases.
        assert_eq!(ns("52763797000ns"), 52_763_797_000);
        assert_eq!(ns("0.3333333333333333333h"), 20 * 60 * s);
        assert_eq!(ns("9007199254740993ns"), 9_007_199_254_740_993);
        assert_eq!(ns("9223372036854775807ns"), i64::MAX);
        assert_eq!(ns("9223372036854775.807us"), i64::MAX);
        assert_eq!(ns("9223372036s854ms775us807ns"), i64::MAX);
        assert_eq!(ns("-9223372036854775808ns"), i64::MIN);
        assert_eq!(ns("-9223372036s854ms775us808ns"), i64::MIN);
        assert_eq!(ns("0.100000000000000000000h"), 6 * 60 * s);
        assert_eq!(
            ns("0.830103483285477580700h"),
            49 * 60 * s + 48 * s + 372_539_827
        );
    }

    #[test]
    fn rejects_malformed_go_durations() {
        for bad in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "1.5.s",
            "1 s",
            " 1s",
            "1s ",
            "1S",
            "1sec",
            "x1s",
            "1e3s",
            "\u{00b5}s",
            "1µ",
        ] {
            assert!(
                parse_go_duration(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        // Overflow.
        for bad in [
            "9223372036854775808ns",
            "-9223372036854775809ns",
            "9223372036854775808s",
            "3000000h",
            "9223372036854775807ns1ns",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should overflow");
        }
    }

    #[test]
    fn duration_errors_match_go_messages() {
        assert_eq!(
            parse_go_duration("3").unwrap_err().to_string(),
            "time: missing unit in duration \"3\""
        );
        assert_eq!(
            parse_go_duration("1d").unwrap_err().to_string(),
            "time: unknown unit \"d\" in duration \"1d\""
        );
        assert_eq!(
            parse_go_duration("").unwrap_err().to_string(),
            "time: invalid duration \"\""
        );
    }

    #[test]
    fn formats_like_go() {
        let f = |s: &str| format_go_duration_nanos(ns(s));
        assert_eq!(f("0s"), "0s");
        assert_eq!(f("1ns"), "1ns");
        assert_eq!(f("1.1us"), "1.1µs");
        assert_eq!(f("2.2ms"), "2.2ms");
        assert_eq!(f("500ms"), "500ms");
        assert_eq!(f("3.3s"), "3.3s");
        assert_eq!(f("10s"), "10s");
        assert_eq!(f("2m"), "2m0s");
        assert_eq!(f("4m5s"), "4m5s");
        assert_eq!(f("4m5.001s"), "4m5.001s");
        assert_eq!(f("5h6m7.001s"), "5h6m7.001s");
        assert_eq!(f("1h"), "1h0m0s");
        assert_eq!(f("-1.5s"), "-1.5s");
        assert_eq!(
            format_go_duration_nanos(i64::MAX),
            "2562047h47m16.854775807s"
        );
        assert_eq!(
            format_go_duration_nanos(i64::MIN),
            "-2562047h47m16.854775808s"
        );
        assert_eq!(format_go_duration(Duration::from_secs(300)), "5m0s");
    }

    // -- type meta ----------------------------------------------------------

    #[test]
    fn header_only_yields_defaults() {
        let loaded = load("").unwrap();
        assert_eq!(loaded.config, KubeletConfig::default());
        assert!(loaded.unknown_fields.is_empty());
        assert!(loaded.ignored_fields.is_empty());
        assert!(KubeletConfig::default().validate().is_ok());
    }

    #[test]
    fn defaults_match_upstream_v1beta1() {
        let c = KubeletConfig::default();
        assert!(c.serialize_image_pulls);
        assert_eq!(c.max_parallel_image_pulls, None);
        assert_eq!(c.image_gc_high_threshold_percent, 85);
        assert_eq!(c.image_gc_low_threshold_percent, 80);
        assert_eq!(c.image_minimum_gc_age, Duration::from_secs(120));
        assert_eq!(c.image_maximum_gc_age, Duration::ZERO);
        assert_eq!(c.address, "0.0.0.0");
        assert_eq!(c.port, 10250);
        assert_eq!(c.read_only_port, 0);
        assert_eq!(c.node_status_update_frequency, Duration::from_secs(10));
        assert_eq!(c.node_status_report_frequency, Duration::from_secs(300));
        assert_eq!(c.node_lease_duration_seconds, 40);
        assert_eq!(c.sync_frequency, Duration::from_secs(60));
        assert_eq!(c.max_pods, 110);
        assert_eq!(c.pod_pids_limit, -1);
        assert_eq!(c.shutdown_grace_period, Duration::ZERO);
        assert_eq!(c.eviction_hard.len(), 5);
        assert_eq!(c.eviction_hard["memory.available"], "100Mi");
        assert_eq!(c.eviction_hard["imagefs.inodesFree"], "5%");
        assert!(c.cluster_dns.is_empty());
        assert_eq!(c.cluster_domain, "");
        assert_eq!(c.image_pull_backoff, BackoffConfig::default());
        assert_eq!(c.crash_loop_backoff.initial, Duration::from_secs(10));
        assert_eq!(c.crash_loop_backoff.max, Duration::from_secs(300));
    }

    #[test]
    fn refuses_other_kinds_and_versions() {
        let err = KubeletConfig::from_yaml_str(
            "apiVersion: kubelet.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::UnsupportedApiVersion(ref v) if v == "kubelet.config.k8s.io/v1alpha1")
        );
        assert!(err.to_string().contains("kubelet.config.k8s.io/v1beta1"));

        let err = KubeletConfig::from_yaml_str(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: CredentialProviderConfig\n",
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::UnsupportedKind(ref k) if k == "CredentialProviderConfig")
        );

        let err =
            KubeletConfig::from_yaml_str("kind: KubeletConfiguration\nport: 1\n").unwrap_err();
        assert!(matches!(err, ConfigError::MissingTypeMeta("apiVersion")));
        let err = KubeletConfig::from_yaml_str("apiVersion: kubelet.config.k8s.io/v1beta1\n")
            .unwrap_err();
        assert!(matches!(err, ConfigError::MissingTypeMeta("kind")));
        let err = KubeletConfig::from_yaml_str("").unwrap_err();
        assert!(matches!(err, ConfigError::MissingTypeMeta("apiVersion")));
        let err = KubeletConfig::from_yaml_str("- a\n- b\n").unwrap_err();
        assert!(matches!(err, ConfigError::NotAMapping("a list")));
    }

    #[test]
    fn malformed_yaml_is_an_error() {
        let err = KubeletConfig::from_yaml_str("apiVersion: [unclosed\n").unwrap_err();
        assert!(matches!(err, ConfigError::Yaml(_)), "{err:?}");
        let err = load("port: 1\nport: 2\n").unwrap_err();
        assert!(matches!(err, ConfigError::Yaml(_)), "{err:?}");
    }

    // -- unknown / ignored fields ------------------------------------------

    #[test]
    fn unknown_and_unimplemented_fields_are_reported_not_fatal() {
        let loaded = load(
            "port: 10251\nfooBar: 1\ncgroupDriver: systemd\nauthentication:\n  anonymous:\n    enabled: false\nimagePullBackOff:\n  initial: 1s\n  jitter: 0.1\nPort: 3\n",
        )
        .unwrap();
        assert_eq!(loaded.config.port, 10251);
        assert_eq!(
            loaded.unknown_fields,
            vec!["fooBar", "imagePullBackOff.jitter", "Port"]
        );
        assert_eq!(
            loaded.ignored_fields,
            vec!["cgroupDriver", "authentication"]
        );
    }

    #[test]
    fn yaml_merge_keys_are_applied() {
        let c = cfg("<<: {maxPods: 20}\n");
        assert_eq!(c.max_pods, 20);
    }

    // -- field decoding -----------------------------------------------------

    #[test]
    fn parses_all_fields() {
        let c = cfg(r#"
serializeImagePulls: false
maxParallelImagePulls: 3
imageGCHighThresholdPercent: 90
imageGCLowThresholdPercent: 70
imageMinimumGCAge: 1m30s
imageMaximumGCAge: 168h
address: 127.0.0.1
port: 11250
readOnlyPort: 10255
nodeStatusUpdateFrequency: 4s
nodeStatusReportFrequency: 1m
nodeLeaseDurationSeconds: 20
syncFrequency: 30s
maxPods: 50
podPidsLimit: 4096
shutdownGracePeriod: 30s
evictionHard:
  memory.available: 200Mi
  nodefs.available: "5%"
clusterDNS: [10.96.0.10, fd00::a]
clusterDomain: cluster.local
imagePullBackOff: {initial: 100ms, max: 2s}
crashLoopBackOff:
  initial: 500ms
  max: 5s
"#);
        assert!(!c.serialize_image_pulls);
        assert_eq!(c.max_parallel_image_pulls, Some(3));
        assert_eq!(c.image_gc_high_threshold_percent, 90);
        assert_eq!(c.image_gc_low_threshold_percent, 70);
        assert_eq!(c.image_minimum_gc_age, Duration::from_secs(90));
        assert_eq!(c.image_maximum_gc_age, Duration::from_secs(168 * 3600));
        assert_eq!(c.address, "127.0.0.1");
        assert_eq!(c.port, 11250);
        assert_eq!(c.read_only_port, 10255);
        assert_eq!(c.node_status_update_frequency, Duration::from_secs(4));
        assert_eq!(c.node_status_report_frequency, Duration::from_secs(60));
        assert_eq!(c.node_lease_duration_seconds, 20);
        assert_eq!(c.sync_frequency, Duration::from_secs(30));
        assert_eq!(c.max_pods, 50);
        assert_eq!(c.pod_pids_limit, 4096);
        assert_eq!(c.shutdown_grace_period, Duration::from_secs(30));
        assert_eq!(c.eviction_hard.len(), 2);
        assert_eq!(c.eviction_hard["memory.available"], "200Mi");
        assert_eq!(c.eviction_hard["nodefs.available"], "5%");
        assert_eq!(c.cluster_dns, vec!["10.96.0.10", "fd00::a"]);
        assert_eq!(c.cluster_domain, "cluster.local");
        assert_eq!(
            c.image_pull_backoff,
            BackoffConfig {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(2)
            }
        );
        assert_eq!(
            c.crash_loop_backoff,
            BackoffConfig {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(5)
            }
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn type_errors_name_the_field_and_are_all_reported() {
        let errs = errors(
            "port: \"10250\"\nserializeImagePulls: maybe\nsyncFrequency: 10\nclusterDNS: 10.0.0.1\nevictionHard:\n  memory.available: 100\nmaxPods: 1.5\n",
        );
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "port",
                "serializeImagePulls",
                "syncFrequency",
                "clusterDNS",
                "evictionHard[memory.available]",
                "maxPods"
            ]
        );
        assert!(errs[0].to_string().starts_with("port: expected an integer"));
    }

    #[test]
    fn bad_durations_name_the_field() {
        let errs = errors("imageMinimumGCAge: 2 minutes\ncrashLoopBackOff: {max: 5}\n");
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].field, "imageMinimumGCAge");
        assert!(errs[0].message.contains("time: "), "{}", errs[0]);
        assert_eq!(errs[1].field, "crashLoopBackOff.max");
        let err = load("syncFrequency: 1d\n").unwrap_err();
        assert!(err.to_string().contains("syncFrequency"), "{err}");
    }

    #[test]
    fn int32_overflow_is_an_error() {
        assert_eq!(error_fields("maxPods: 4294967296\n"), vec!["maxPods"]);
        // podPidsLimit is int64 upstream.
        assert_eq!(
            cfg("podPidsLimit: 4294967296\n").pod_pids_limit,
            4_294_967_296
        );
    }

    #[test]
    fn null_means_unset() {
        let c = cfg("port: null\nimageGCHighThresholdPercent: ~\nevictionHard: null\n");
        assert_eq!(c, KubeletConfig::default());
    }

    // -- defaulting -----------------------------------------------------------

    #[test]
    fn zero_values_take_defaults_like_upstream() {
        let c = cfg(
            "port: 0\nmaxPods: 0\nnodeLeaseDurationSeconds: 0\nsyncFrequency: 0s\nimageMinimumGCAge: 0s\nnodeStatusUpdateFrequency: \"0\"\naddress: \"\"\n",
        );
        assert_eq!(c, KubeletConfig::default());
    }

    #[test]
    fn explicit_zero_percent_is_kept() {
        // Pointer fields upstream: only nil is defaulted.
        let c = cfg("imageGCHighThresholdPercent: 1\nimageGCLowThresholdPercent: 0\n");
        assert_eq!(c.image_gc_low_threshold_percent, 0);
        assert_eq!(c.image_gc_high_threshold_percent, 1);
    }

    #[test]
    fn report_frequency_follows_explicit_update_frequency() {
        let c = cfg("nodeStatusUpdateFrequency: 20s\n");
        assert_eq!(c.node_status_update_frequency, Duration::from_secs(20));
        assert_eq!(c.node_status_report_frequency, Duration::from_secs(20));
        let c = cfg("nodeStatusUpdateFrequency: 20s\nnodeStatusReportFrequency: 1m\n");
        assert_eq!(c.node_status_report_frequency, Duration::from_secs(60));
        let c = cfg("nodeStatusReportFrequency: 1m\n");
        assert_eq!(c.node_status_update_frequency, Duration::from_secs(10));
        assert_eq!(c.node_status_report_frequency, Duration::from_secs(60));
    }

    #[test]
    fn negative_pod_pids_limit_becomes_minus_one() {
        assert_eq!(cfg("podPidsLimit: -5\n").pod_pids_limit, -1);
        assert_eq!(cfg("podPidsLimit: 0\n").pod_pids_limit, 0);
    }

    #[test]
    fn serialize_image_pulls_defaults_from_max_parallel() {
        let c = cfg("maxParallelImagePulls: 5\n");
        assert!(!c.serialize_image_pulls);
        assert_eq!(c.max_parallel_image_pulls, Some(5));
        let c = cfg("maxParallelImagePulls: 1\n");
        assert!(c.serialize_image_pulls);
        assert_eq!(c.max_parallel_image_pulls, Some(1));
        let c = cfg("serializeImagePulls: true\nmaxParallelImagePulls: 1\n");
        assert!(c.serialize_image_pulls);
    }

    #[test]
    fn eviction_hard_explicit_map_replaces_defaults() {
        assert!(cfg("evictionHard: {}\n").eviction_hard.is_empty());
        let c = cfg("evictionHard:\n  memory.available: 1Gi\n");
        assert_eq!(c.eviction_hard.len(), 1);
    }

    // -- validation -----------------------------------------------------------

    #[test]
    fn max_parallel_image_pulls_rules() {
        let errs = errors("maxParallelImagePulls: 0\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "maxParallelImagePulls");
        assert_eq!(errs[0].message, "0 must be a positive number");

        let errs = errors("serializeImagePulls: true\nmaxParallelImagePulls: 2\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].message,
            "cannot be larger than 1 unless serializeImagePulls is set to false"
        );
        assert_eq!(
            error_fields("maxParallelImagePulls: -3\n"),
            vec!["maxParallelImagePulls"]
        );
    }

    #[test]
    fn image_gc_threshold_rules() {
        assert_eq!(
            error_fields("imageGCHighThresholdPercent: 101\n"),
            vec!["imageGCHighThresholdPercent"]
        );
        assert_eq!(
            error_fields("imageGCLowThresholdPercent: -1\n"),
            vec!["imageGCLowThresholdPercent"]
        );
        // low must be strictly below high.
        let errs = errors("imageGCHighThresholdPercent: 80\nimageGCLowThresholdPercent: 80\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "imageGCLowThresholdPercent");
        assert_eq!(
            errs[0].message,
            "80 must be less than imageGCHighThresholdPercent 80"
        );
        // low default 80 vs explicit high 50.
        assert_eq!(
            error_fields("imageGCHighThresholdPercent: 50\n"),
            vec!["imageGCLowThresholdPercent"]
        );
        assert!(load("imageGCHighThresholdPercent: 100\nimageGCLowThresholdPercent: 0\n").is_ok());
    }

    #[test]
    fn image_gc_age_rules() {
        let errs = errors("imageMaximumGCAge: 1m\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "imageMaximumGCAge");
        assert_eq!(
            errs[0].message,
            "1m0s must be greater than imageMinimumGCAge 2m0s"
        );
        assert_eq!(
            error_fields("imageMaximumGCAge: 2m\n"),
            vec!["imageMaximumGCAge"]
        );
        assert!(load("imageMaximumGCAge: 2m1s\n").is_ok());
        assert_eq!(
            error_fields("imageMinimumGCAge: -1s\n"),
            vec!["imageMinimumGCAge"]
        );
        assert_eq!(
            error_fields("imageMaximumGCAge: -1s\n"),
            vec!["imageMaximumGCAge"]
        );
    }

    #[test]
    fn port_rules() {
        assert_eq!(error_fields("port: 65536\n"), vec!["port"]);
        assert_eq!(error_fields("port: -1\n"), vec!["port"]);
        assert_eq!(error_fields("readOnlyPort: 70000\n"), vec!["readOnlyPort"]);
        assert_eq!(error_fields("readOnlyPort: -1\n"), vec!["readOnlyPort"]);
        assert_eq!(cfg("port: 65535\nreadOnlyPort: 1\n").port, 65535);
    }

    #[test]
    fn misc_range_rules() {
        assert_eq!(
            error_fields("nodeLeaseDurationSeconds: -1\n"),
            vec!["nodeLeaseDurationSeconds"]
        );
        assert_eq!(error_fields("maxPods: -1\n"), vec!["maxPods"]);
        assert_eq!(
            error_fields("shutdownGracePeriod: 500ms\n"),
            vec!["shutdownGracePeriod"]
        );
        assert_eq!(
            error_fields("shutdownGracePeriod: -1s\n"),
            vec!["shutdownGracePeriod"]
        );
        assert_eq!(
            cfg("shutdownGracePeriod: 1s\n").shutdown_grace_period,
            Duration::from_secs(1)
        );
        assert_eq!(error_fields("syncFrequency: -1s\n"), vec!["syncFrequency"]);
    }

    #[test]
    fn all_validation_errors_are_reported_together() {
        let err = load("port: 70000\nmaxPods: -2\nimageGCHighThresholdPercent: 200\n").unwrap_err();
        let fields: Vec<&str> = err
            .field_errors()
            .iter()
            .map(|e| e.field.as_str())
            .collect();
        assert_eq!(
            fields,
            vec!["imageGCHighThresholdPercent", "maxPods", "port"]
        );
        let text = err.to_string();
        assert!(
            text.starts_with("invalid kubelet configuration: "),
            "{text}"
        );
        assert!(
            text.contains("port: 70000 must be between 1 and 65535, inclusive"),
            "{text}"
        );
    }

    // -- kiln back-off extensions ------------------------------------------

    #[test]
    fn backoff_extension_rules() {
        assert_eq!(
            error_fields("imagePullBackOff: {initial: 0s}\n"),
            vec!["imagePullBackOff.initial"]
        );
        assert_eq!(
            error_fields("imagePullBackOff: {initial: 2s, max: 1s}\n"),
            vec!["imagePullBackOff.max"]
        );
        // Only max given, below the default initial: initial follows it down.
        let c = cfg("crashLoopBackOff: {max: 2s}\n");
        assert_eq!(
            c.crash_loop_backoff,
            BackoffConfig {
                initial: Duration::from_secs(2),
                max: Duration::from_secs(2)
            }
        );
        // Only initial given.
        let c = cfg("imagePullBackOff: {initial: 1s}\n");
        assert_eq!(c.image_pull_backoff.initial, Duration::from_secs(1));
        assert_eq!(c.image_pull_backoff.max, Duration::from_secs(300));
        assert_eq!(
            error_fields("crashLoopBackOff: {initial: 1s, max: 0s}\n"),
            vec!["crashLoopBackOff.max"]
        );
        assert_eq!(
            error_fields("imagePullBackOff: 10s\n"),
            vec!["imagePullBackOff"]
        );
    }

    #[test]
    fn upstream_max_container_restart_period_is_understood() {
        let c = cfg("crashLoopBackOff:\n  maxContainerRestartPeriod: 5s\n");
        assert_eq!(
            c.crash_loop_backoff,
            BackoffConfig {
                initial: Duration::from_secs(5),
                max: Duration::from_secs(5)
            }
        );
        let c = cfg("crashLoopBackOff:\n  maxContainerRestartPeriod: 60s\n");
        assert_eq!(c.crash_loop_backoff.initial, Duration::from_secs(10));
        assert_eq!(c.crash_loop_backoff.max, Duration::from_secs(60));
        assert_eq!(
            error_fields("crashLoopBackOff: {maxContainerRestartPeriod: 301s}\n"),
            vec!["crashLoopBackOff.maxContainerRestartPeriod"]
        );
        assert_eq!(
            error_fields("crashLoopBackOff: {maxContainerRestartPeriod: 999ms}\n"),
            vec!["crashLoopBackOff.maxContainerRestartPeriod"]
        );
        assert_eq!(
            error_fields("crashLoopBackOff: {maxContainerRestartPeriod: 5s, max: 5s}\n"),
            vec!["crashLoopBackOff.maxContainerRestartPeriod"]
        );
        // Not an upstream field for image pulls.
        let loaded = load("imagePullBackOff: {maxContainerRestartPeriod: 5s}\n").unwrap();
        assert_eq!(
            loaded.unknown_fields,
            vec!["imagePullBackOff.maxContainerRestartPeriod"]
        );
    }

    #[test]
    fn validate_checks_programmatic_configs() {
        let mut c = KubeletConfig {
            port: 0,
            ..KubeletConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field_errors()[0].field, "port");
        c.port = 10250;
        c.image_gc_low_threshold_percent = 90;
        assert!(c.validate().is_err());
        c.image_gc_low_threshold_percent = 80;
        c.max_parallel_image_pulls = Some(4);
        assert!(c.validate().is_err());
        c.serialize_image_pulls = false;
        assert!(c.validate().is_ok());
        c.max_parallel_image_pulls = Some(0);
        assert!(c.validate().is_err());
    }

    #[test]
    fn from_file_reads_and_reports_io_errors() {
        let dir = std::env::temp_dir().join(format!("kiln-kubeletcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(&path, format!("{HEADER}maxPods: 7\n")).unwrap();
        assert_eq!(KubeletConfig::from_file(&path).unwrap().config.max_pods, 7);
        let missing = dir.join("missing.yaml");
        let err = KubeletConfig::from_file(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }));
        assert!(err.to_string().contains("missing.yaml"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
