//! When a node pulls an image: Kubernetes' `imagePullPolicy`.

/// `Always` asks the registry every time (and uses the local copy if the digest is
/// unchanged), `IfNotPresent` pulls only what is missing, `Never` uses only what is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The policy Kubernetes gives a container that names none: `Always` for `:latest` or
    /// an untagged image, else `IfNotPresent`. A digest counts as pinned.
    pub fn default_for(image: &str) -> PullPolicy {
        if image.contains('@') {
            return PullPolicy::IfNotPresent;
        }
        // The tag follows the last ':' after the last '/' (a ':' before it is a port).
        let last_part = image.rsplit('/').next().unwrap_or(image);
        match last_part.rsplit_once(':') {
            Some((_, "latest")) | None => PullPolicy::Always,
            Some(_) => PullPolicy::IfNotPresent,
        }
    }

    /// The policy a container names, else its default.
    pub fn of(named: Option<&str>, image: &str) -> PullPolicy {
        match named {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            _ => PullPolicy::default_for(image),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_tag() {
        for (image, policy) in [
            ("busybox", PullPolicy::Always),
            ("busybox:latest", PullPolicy::Always),
            ("busybox:1.36", PullPolicy::IfNotPresent),
            ("localhost:5000/app", PullPolicy::Always),
            ("localhost:5000/app:v1", PullPolicy::IfNotPresent),
            ("app@sha256:0000", PullPolicy::IfNotPresent),
            ("app:latest@sha256:0000", PullPolicy::IfNotPresent),
        ] {
            assert_eq!(PullPolicy::default_for(image), policy, "{image}");
        }
        assert_eq!(PullPolicy::of(Some("Never"), "x"), PullPolicy::Never);
        assert_eq!(PullPolicy::of(None, "x:1"), PullPolicy::IfNotPresent);
    }
}
