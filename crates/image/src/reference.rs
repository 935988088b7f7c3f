//! Image references: `[registry[:port]/]path[:tag][@digest]`, normalized the way
//! docker/distribution's `ParseNormalizedNamed` and the kubelet do.
//!
//! The grammar is distribution's, but parsed by hand rather than by one regular expression so
//! that an error can name the part that is wrong.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

pub const DEFAULT_DOMAIN: &str = "docker.io";
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
pub const DEFAULT_TAG: &str = "latest";
/// distribution's `RepositoryNameTotalLengthMax`, applied to the path.
pub const MAX_PATH_LEN: usize = 255;
pub const TAG_GRAMMAR: &str = "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}";
pub const PATH_COMPONENT_GRAMMAR: &str = "[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*";

/// A normalized, fully qualified image reference.
///
/// `domain` is never empty (familiar names get `docker.io`) and official images carry their
/// `library/` prefix. A reference may have a tag, a digest, both, or neither; `name:tag@digest`
/// keeps the tag for display but is resolved by digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format: empty reference")]
    Empty,
    #[error("invalid reference {input:?}: empty repository name")]
    EmptyName { input: String },
    #[error("invalid repository name ({input}), cannot specify 64-byte hexadecimal strings")]
    HexIdentifier { input: String },
    #[error("invalid reference {input:?}: repository name ({path}) must be lowercase")]
    Uppercase { input: String, path: String },
    #[error("invalid reference {input:?}: invalid tag {tag:?}: must match {TAG_GRAMMAR}")]
    Tag { input: String, tag: String },
    #[error("invalid reference {input:?}: {source}")]
    Digest { input: String, source: DigestError },
    #[error("invalid reference {input:?}: invalid registry host {domain:?}: must be a host name, IPv4 or [IPv6] address, with an optional :port")]
    Domain { input: String, domain: String },
    #[error("invalid reference {input:?}: invalid path component {component:?}: must match {PATH_COMPONENT_GRAMMAR}")]
    PathComponent { input: String, component: String },
    #[error("invalid reference {input:?}: repository name must not be more than {MAX_PATH_LEN} characters (found {len})")]
    TooLong { input: String, len: usize },
}

impl Reference {
    /// Parses a reference as the docker CLI and the kubelet do (`ParseNormalizedNamed`):
    /// `busybox` becomes `docker.io/library/busybox`, `localhost:5000/x` keeps its registry.
    /// No default tag is added; see [`Reference::with_default_tag`].
    pub fn parse_normalized(input: &str) -> Result<Reference, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if is_hex_identifier(input) {
            return Err(ReferenceError::HexIdentifier {
                input: input.to_string(),
            });
        }

        let (name_and_tag, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                let digest = Digest::parse(digest).map_err(|source| ReferenceError::Digest {
                    input: input.to_string(),
                    source,
                })?;
                (rest, Some(digest))
            }
            None => (input, None),
        };

        // A tag follows the last ':' that comes after the last '/'; a ':' before it belongs
        // to a registry port.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_and_tag[..at], Some(&name_and_tag[at + 1..]))
            }
            None => (name_and_tag, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::EmptyName {
                input: input.to_string(),
            });
        }
        if let Some(tag) = tag {
            if !is_valid_tag(tag) {
                return Err(ReferenceError::Tag {
                    input: input.to_string(),
                    tag: tag.to_string(),
                });
            }
        }

        let (domain, path) = split_docker_domain(name);
        if path.to_lowercase() != path {
            return Err(ReferenceError::Uppercase {
                input: input.to_string(),
                path,
            });
        }
        if !is_valid_domain(&domain) {
            return Err(ReferenceError::Domain {
                input: input.to_string(),
                domain,
            });
        }
        for component in path.split('/') {
            if !is_valid_path_component(component) {
                return Err(ReferenceError::PathComponent {
                    input: input.to_string(),
                    component: component.to_string(),
                });
            }
        }
        if path.len() > MAX_PATH_LEN {
            return Err(ReferenceError::TooLong {
                input: input.to_string(),
                len: path.len(),
            });
        }

        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// Adds `:latest` when the reference has neither tag nor digest (distribution's
    /// `TagNameOnly`, the kubelet's `applyDefaultImageTag`).
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_string());
        }
        self
    }

    /// The registry host (and port), e.g. `docker.io` or `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `domain/path`: the repository this reference lives in.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !is_valid_tag(tag) {
            return Err(ReferenceError::Tag {
                input: format!("{}:{tag}", self.repository()),
                tag: tag.to_string(),
            });
        }
        Ok(Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// The same repository pinned to a digest (and no tag).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// What a registry is asked for: the digest when there is one (`name:tag@digest` is pulled
    /// by digest), else the tag, else `latest`.
    pub fn resolvable(&self) -> ResolveBy<'_> {
        match (&self.digest, &self.tag) {
            (Some(d), _) => ResolveBy::Digest(d),
            (None, Some(t)) => ResolveBy::Tag(t),
            (None, None) => ResolveBy::Tag(DEFAULT_TAG),
        }
    }

    /// The reference a local store keys this by: `repo@digest` when pinned (the tag of
    /// `name:tag@digest` is dropped, as distribution's `ParseDockerRef` does), else
    /// `repo:tag` with `latest` as the default.
    pub fn store_key(&self) -> Reference {
        match &self.digest {
            Some(d) => self.with_digest(d.clone()),
            None => self.clone().with_default_tag(),
        }
    }

    /// The short form users type and `docker images` shows: `docker.io/library/` dropped.
    ///
    /// Unlike distribution's `FamiliarName`, a Docker Hub path whose first component looks
    /// like a registry (`docker.io/example.com/app`) keeps its domain, and an official image
    /// named like an image ID keeps `library/`, so that the short form always parses back to
    /// the same reference.
    pub fn familiar_repository(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.repository();
        }
        match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
            // A bare 64-hex name would read as an image ID; it keeps its `library/`.
            Some(rest) if !rest.contains('/') && !is_hex_identifier(rest) => rest.to_string(),
            _ => match self.path.split_once('/') {
                Some((first, _)) if first == "localhost" || first.contains(['.', ':']) => {
                    self.repository()
                }
                _ => self.path.clone(),
            },
        }
    }

    /// The full familiar form, e.g. `busybox:1.36` or `localhost:5000/app@sha256:...`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_repository();
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

/// How a reference is resolved at a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveBy<'a> {
    Tag(&'a str),
    Digest(&'a Digest),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse_normalized(s)
    }
}

/// True for a bare 64-hex sha256 string, which docker reserves for image IDs.
pub fn is_hex_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `[\w][\w.-]{0,127}`
pub fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    match bytes.split_first() {
        Some((&first, rest)) => {
            word(first)
                && rest.len() <= 127
                && rest.iter().all(|&b| word(b) || b == b'.' || b == b'-')
        }
        None => false,
    }
}

/// distribution's `splitDockerDomain`: the first component is a registry when it is
/// `localhost`, contains `.` or `:`, or has uppercase letters (which paths may not).
fn split_docker_domain(name: &str) -> (String, String) {
    let (domain, path) = match name.split_once('/') {
        None => (DEFAULT_DOMAIN, name),
        Some((first, rest)) => {
            if first == "localhost" || first.contains(['.', ':']) || first.to_lowercase() != first {
                let domain = if first == LEGACY_DEFAULT_DOMAIN {
                    DEFAULT_DOMAIN
                } else {
                    first
                };
                (domain, rest)
            } else {
                (DEFAULT_DOMAIN, name)
            }
        }
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{path}")
    } else {
        path.to_string()
    };
    (domain.to_string(), path)
}

/// `host[:port]` where host is a domain name (`[a-zA-Z0-9]` components joined by dots, inner
/// dashes allowed) or an IPv6 address in brackets.
fn is_valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("[ipv6]", Some(port)),
                None => return false,
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    host == "[ipv6]" || host.split('.').all(is_valid_domain_component)
}

fn is_valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        }
        _ => false,
    }
}

/// A repository path as registries name it in URLs (`library/busybox`): `/`-separated path
/// components, at most 255 characters.
pub fn is_valid_repository_path(path: &str) -> bool {
    path.len() <= MAX_PATH_LEN && path.split('/').all(is_valid_path_component)
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn is_valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    // Alternate runs of alphanumerics and separators, starting and ending with alphanumerics.
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep_start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[sep_start..i];
        let ok =
            matches!(sep, "." | "_" | "__") || (!sep.is_empty() && sep.bytes().all(|x| x == b'-'));
        if !ok {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D256: &str = "sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";
    const D512: &str = "sha512:ee26b0dd4af7e749aa1a8ee3c10ae9923f618980772e473f8819a5d4940e0db27ac185f8a0e1d5f84f88bc887fd67b143732c304cc5fa9ad8e6f57f50028a8ff";

    /// (input, Ok(normalized with default tag) | Err(substring of the error))
    fn cases() -> Vec<(String, Result<String, &'static str>)> {
        let ok = |s: &str| Ok(s.to_string());
        let mut v: Vec<(String, Result<String, &'static str>)> = vec![
            // Seed examples and docker's familiar names.
            ("busybox".into(), ok("docker.io/library/busybox:latest")),
            ("nginx:1.25".into(), ok("docker.io/library/nginx:1.25")),
            ("nginx:latest".into(), ok("docker.io/library/nginx:latest")),
            ("my-app:1.0".into(), ok("docker.io/library/my-app:1.0")),
            (
                "myregistry.com/my-app:1.0".into(),
                ok("myregistry.com/my-app:1.0"),
            ),
            ("localhost:5000/x".into(), ok("localhost:5000/x:latest")),
            ("localhost/x".into(), ok("localhost/x:latest")),
            (
                "localhost:5000/a/b/c:v1".into(),
                ok("localhost:5000/a/b/c:v1"),
            ),
            (
                "library/busybox".into(),
                ok("docker.io/library/busybox:latest"),
            ),
            (
                "docker.io/busybox".into(),
                ok("docker.io/library/busybox:latest"),
            ),
            (
                "index.docker.io/busybox".into(),
                ok("docker.io/library/busybox:latest"),
            ),
            (
                "index.docker.io/foo/bar".into(),
                ok("docker.io/foo/bar:latest"),
            ),
            (
                "docker.io/library/busybox:1.36".into(),
                ok("docker.io/library/busybox:1.36"),
            ),
            (
                "dmcgowan/myapp".into(),
                ok("docker.io/dmcgowan/myapp:latest"),
            ),
            ("foo/bar/baz".into(), ok("docker.io/foo/bar/baz:latest")),
            ("gcr.io/project/app:v2".into(), ok("gcr.io/project/app:v2")),
            (
                "registry.k8s.io/pause:3.9".into(),
                ok("registry.k8s.io/pause:3.9"),
            ),
            (
                "quay.io/coreos/etcd:v3.5.9".into(),
                ok("quay.io/coreos/etcd:v3.5.9"),
            ),
            (
                "example.com:8080/team/app".into(),
                ok("example.com:8080/team/app:latest"),
            ),
            (
                "127.0.0.1:5000/app:dev".into(),
                ok("127.0.0.1:5000/app:dev"),
            ),
            ("[::1]:5000/app".into(), ok("[::1]:5000/app:latest")),
            ("[fe80::1]/app".into(), ok("[fe80::1]/app:latest")),
            ("foo:5000/bar".into(), ok("foo:5000/bar:latest")),
            // A bare host:port is a name with a tag, as in docker.
            (
                "localhost:5000".into(),
                ok("docker.io/library/localhost:5000"),
            ),
            ("Foo/bar".into(), ok("Foo/bar:latest")),
            ("EXAMPLE.com/app".into(), ok("EXAMPLE.com/app:latest")),
            // Separators inside path components.
            ("a.b/c".into(), ok("a.b/c:latest")),
            ("foo_bar".into(), ok("docker.io/library/foo_bar:latest")),
            ("foo__bar".into(), ok("docker.io/library/foo__bar:latest")),
            ("foo---bar".into(), ok("docker.io/library/foo---bar:latest")),
            ("foo.bar/baz".into(), ok("foo.bar/baz:latest")),
            ("ns/foo.bar".into(), ok("docker.io/ns/foo.bar:latest")),
            (
                "sub-domain.example.com/app".into(),
                ok("sub-domain.example.com/app:latest"),
            ),
            // Tags.
            ("app:_x".into(), ok("docker.io/library/app:_x")),
            (
                "app:V1.2.3-rc.1".into(),
                ok("docker.io/library/app:V1.2.3-rc.1"),
            ),
            (
                format!("app:{}", "a".repeat(128)),
                Ok(format!("docker.io/library/app:{}", "a".repeat(128))),
            ),
            // Digests: name@digest and name:tag@digest (pulled by digest, tag kept).
            (
                format!("busybox@{D256}"),
                Ok(format!("docker.io/library/busybox@{D256}")),
            ),
            (
                format!("busybox:1.36@{D256}"),
                Ok(format!("docker.io/library/busybox:1.36@{D256}")),
            ),
            (
                format!("localhost:5000/app@{D512}"),
                Ok(format!("localhost:5000/app@{D512}")),
            ),
            // Malformed input.
            ("".into(), Err("empty reference")),
            ("busybox:".into(), Err("invalid tag \"\"")),
            (
                "busybox:-bad".into(),
                Err("invalid tag \"-bad\": must match [a-zA-Z0-9_]"),
            ),
            ("busybox:.bad".into(), Err("invalid tag \".bad\"")),
            (
                "busybox:a/b".into(),
                Err("invalid registry host \"busybox:a\""),
            ),
            ("busybox:tag with space".into(), Err("invalid tag")),
            (format!("app:{}", "a".repeat(129)), Err("invalid tag")),
            (
                "Busybox".into(),
                Err("repository name (library/Busybox) must be lowercase"),
            ),
            ("docker.io/Foo/bar".into(), Err("must be lowercase")),
            ("localhost:5000/App".into(), Err("must be lowercase")),
            (":tag".into(), Err("empty repository name")),
            (format!("@{D256}"), Err("empty repository name")),
            (
                "busybox@sha256:abc".into(),
                Err("needs 64 hex characters, found 3"),
            ),
            (
                "busybox@md5:d41d8cd98f00b204e9800998ecf8427e".into(),
                Err("unsupported algorithm \"md5\""),
            ),
            ("busybox@".into(), Err("missing \"algorithm:\"")),
            (
                "busybox@sha256:7CC4B5AEFD1D0CADF8D97D4350462BA51C694EBCA145B08D7D41B41ACC8DB5AA"
                    .into(),
                Err("lowercase hex"),
            ),
            ("-foo".into(), Err("invalid path component \"-foo\"")),
            ("foo-".into(), Err("invalid path component \"foo-\"")),
            (
                "foo..bar".into(),
                Err("invalid path component \"foo..bar\""),
            ),
            ("foo___bar".into(), Err("invalid path component")),
            ("foo//bar".into(), Err("invalid path component \"\"")),
            ("foo/".into(), Err("invalid path component \"\"")),
            ("/foo".into(), Err("invalid path component \"\"")),
            ("foo bar".into(), Err("invalid path component \"foo bar\"")),
            (
                "-example.com/app".into(),
                Err("invalid registry host \"-example.com\""),
            ),
            (
                "example.com:/app".into(),
                Err("invalid registry host \"example.com:\""),
            ),
            ("example.com:port/app".into(), Err("invalid registry host")),
            ("exa_mple.com/app".into(), Err("invalid registry host")),
            ("[::1/app".into(), Err("invalid registry host")),
            ("[]:5000/app".into(), Err("invalid registry host")),
            ("[zz::1]/app".into(), Err("invalid registry host")),
            (
                "7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa".into(),
                Err("cannot specify 64-byte hexadecimal strings"),
            ),
            (
                format!("a/{}", "b".repeat(255)),
                Err("must not be more than 255 characters"),
            ),
            ("app@sha256:1@sha256:2".into(), Err("invalid digest")),
            ("ns/app:1:2".into(), Err("invalid path component \"app:1\"")),
        ];
        // Exactly at the length limit is still valid.
        let long = "b".repeat(253);
        v.push((
            format!("a/{long}"),
            Ok(format!("docker.io/a/{long}:latest")),
        ));
        v
    }

    #[test]
    fn table_of_references() {
        let cases = cases();
        assert!(cases.len() >= 60, "only {} cases", cases.len());
        for (input, want) in cases {
            let got = Reference::parse_normalized(&input).map(|r| r.with_default_tag().to_string());
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "input {input:?}"),
                (Err(e), Err(w)) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(w),
                        "input {input:?}: error {msg:?} lacks {w:?}"
                    );
                }
                _ => panic!("input {input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn familiar_forms() {
        let cases = [
            ("busybox", "busybox"),
            ("docker.io/library/busybox:1.36", "busybox:1.36"),
            ("docker.io/dmcgowan/myapp", "dmcgowan/myapp"),
            ("docker.io/library/foo/bar", "library/foo/bar"),
            ("localhost:5000/x:v1", "localhost:5000/x:v1"),
            ("myregistry.com/my-app:1.0", "myregistry.com/my-app:1.0"),
            ("docker.io/example.com/app", "docker.io/example.com/app"),
            ("docker.io/library/a.b", "a.b"),
        ];
        for (input, want) in cases {
            let r = Reference::parse_normalized(input).expect(input);
            assert_eq!(r.familiar(), want, "{input}");
            // The familiar form parses back to the same reference.
            assert_eq!(Reference::parse_normalized(want).expect(want), r);
        }
    }

    #[test]
    fn tag_and_digest_resolve_by_digest() {
        let r = Reference::parse_normalized(&format!("busybox:1.36@{D256}")).expect("valid");
        assert_eq!(r.tag(), Some("1.36"));
        assert!(matches!(r.resolvable(), ResolveBy::Digest(d) if d.to_string() == D256));
        assert_eq!(
            r.store_key().to_string(),
            format!("docker.io/library/busybox@{D256}")
        );
        let plain = Reference::parse_normalized("busybox").expect("valid");
        assert_eq!(plain.resolvable(), ResolveBy::Tag("latest"));
        assert_eq!(
            plain.store_key().to_string(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn with_tag_validates() {
        let r = Reference::parse_normalized("busybox").expect("valid");
        assert_eq!(r.with_tag("v2").expect("valid").familiar(), "busybox:v2");
        assert!(r.with_tag("-x").is_err());
    }
}
