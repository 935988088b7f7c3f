//! `RUN --mount=...` specifications (BuildKit `commands_runmount.go`).

use serde::{Deserialize, Serialize};

use super::util::{go_quote, parse_go_bool, parse_go_u32, with_suggestion};

/// The kind of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// `type=bind` (the default): a directory of the context or another stage.
    #[default]
    Bind,
    /// `type=cache`: a persistent cache directory.
    Cache,
    /// `type=tmpfs`.
    Tmpfs,
    /// `type=secret`: a build secret.
    Secret,
    /// `type=ssh`: an SSH agent socket.
    Ssh,
}

impl MountType {
    /// The name used in Dockerfiles.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// Cache mount sharing mode (`sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Concurrent builds share the cache.
    Shared,
    /// Each concurrent writer gets its own cache.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// One `--mount` of a `RUN`.
///
/// String options (`target`, `source`, `from`, `id`, `env`) are kept as
/// written, **unexpanded**: BuildKit expands build variables in mount option
/// values before using them. Typed options are parsed when literal; if any of
/// them contains `$`, it cannot be checked before expansion, so the mount is
/// left `unresolved` with that option at its default, and the builder must
/// call [`Mount::resolve`] (which it should do anyway, to expand variables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Mount {
    /// `type=`.
    #[serde(rename = "type")]
    pub kind: MountType,
    /// `target=`, `dst=` or `destination=`: where the mount appears.
    pub target: Option<String>,
    /// `source=` or `src=`: path in `from` (bind), secret/ssh id, subpath.
    pub source: Option<String>,
    /// `from=`: stage or image to mount from (bind, cache).
    pub from: Option<String>,
    /// `id=`: cache/secret/ssh id.
    pub id: Option<String>,
    /// `sharing=` (cache only).
    pub sharing: Option<Sharing>,
    /// `mode=` (octal; cache, secret, ssh).
    pub mode: Option<u32>,
    /// `uid=` (cache, secret, ssh).
    pub uid: Option<u32>,
    /// `gid=` (cache, secret, ssh).
    pub gid: Option<u32>,
    /// `required` (secret, ssh): fail when missing.
    pub required: bool,
    /// Read-only: `readonly`/`ro` (or `rw=false`). Defaults to `true` for
    /// bind, secret and ssh mounts and `false` for cache and tmpfs mounts.
    pub readonly: bool,
    /// `size=` in bytes (tmpfs only), e.g. `size=64m`.
    pub size: Option<i64>,
    /// `env=` (secret): expose the secret as this environment variable.
    pub env: Option<String>,
    /// The specification as written after `--mount=`.
    pub raw: String,
    /// A typed option depends on a variable; see the type-level docs.
    pub unresolved: bool,
}

const MOUNT_TYPES: &[&str] = &["bind", "cache", "tmpfs", "secret", "ssh"];
const SHARING_MODES: &[&str] = &["shared", "private", "locked"];
const MOUNT_KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// A single-line CSV record (tonistiigi/go-csvvalue, as BuildKit uses).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let line = line
        .strip_suffix("\r\n")
        .or_else(|| line.strip_suffix('\n'))
        .unwrap_or(line);
    if line.is_empty() {
        return Err("EOF".into());
    }
    let err = |pos: usize, what: &str| format!("parse error on line 1, column {}: {what}", pos + 1);
    let bare = "bare \" in non-quoted-field";
    let quote = "extraneous or missing \" in quoted-field";
    let mut out: Vec<String> = Vec::new();
    let mut rest = line;
    let mut pos = 0;
    loop {
        if !rest.starts_with('"') {
            let (field, next) = match rest.find(',') {
                Some(i) => (&rest[..i], Some(i)),
                None => (rest, None),
            };
            if let Some(j) = field.find('"') {
                return Err(err(pos + j, bare));
            }
            out.push(field.to_string());
            match next {
                Some(i) => {
                    rest = &rest[i + 1..];
                    pos += i + 1;
                    continue;
                }
                None => break,
            }
        }
        rest = &rest[1..];
        pos += 1;
        let mut half_open = false;
        loop {
            let Some(i) = rest.find('"') else {
                return Err(err(pos, quote));
            };
            if half_open {
                if let Some(last) = out.last_mut() {
                    last.push_str(&rest[..i]);
                }
            } else {
                out.push(rest[..i].to_string());
            }
            rest = &rest[i + 1..];
            pos += i + 1;
            if rest.starts_with('"') {
                if let Some(last) = out.last_mut() {
                    last.push('"');
                }
                rest = &rest[1..];
                pos += 1;
                half_open = true;
            } else if rest.starts_with(',') {
                rest = &rest[1..];
                pos += 1;
                break;
            } else if rest.is_empty() {
                return Ok(out);
            } else {
                return Err(err(pos - 1, quote));
            }
        }
    }
    Ok(out)
}

/// docker/go-units `RAMInBytes` (the version vendored by BuildKit): a number
/// (Go float syntax), an optional space, then an optional suffix `b`, or one
/// of `k m g t p` (binary multiples) optionally followed by `b` or `ib`,
/// case-insensitive.
fn ram_in_bytes(s: &str) -> Option<i64> {
    let sep = s.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')?;
    let (num, sfx) = if s.as_bytes()[sep] == b' ' {
        (&s[..sep], &s[sep + 1..])
    } else {
        (&s[..=sep], &s[sep + 1..])
    };
    let size: f64 = num.parse().ok()?;
    if size < 0.0 {
        return None;
    }
    let sfx = sfx.as_bytes();
    if sfx.is_empty() {
        return Some(size as i64);
    }
    if sfx.len() > 3 {
        return None;
    }
    let lower: Vec<u8> = sfx.iter().map(u8::to_ascii_lowercase).collect();
    if lower[0] == b'b' {
        return (lower.len() == 1).then_some(size as i64);
    }
    let mul: f64 = match lower[0] {
        b'k' => 1024.0,
        b'm' => 1024f64.powi(2),
        b'g' => 1024f64.powi(3),
        b't' => 1024f64.powi(4),
        b'p' => 1024f64.powi(5),
        _ => return None,
    };
    match lower.len() {
        2 if lower[1] != b'b' => return None,
        3 if &lower[1..] != b"ib" => return None,
        _ => {}
    }
    Some((size * mul) as i64)
}

/// Keys whose value is parsed into a typed field.
fn is_typed_key(key: &str) -> bool {
    matches!(
        key,
        "type"
            | "readonly"
            | "ro"
            | "readwrite"
            | "rw"
            | "required"
            | "size"
            | "sharing"
            | "mode"
            | "uid"
            | "gid"
    )
}

type Expander<'a> = &'a mut dyn FnMut(&str) -> Result<String, String>;

impl Mount {
    /// Parse a mount specification at parse time (values unexpanded). Errors
    /// are BuildKit's messages.
    pub fn parse(spec: &str) -> Result<Mount, String> {
        parse_mount(spec, None)
    }

    /// Parse `raw` again with every option value passed through `expand`
    /// (e.g. [`crate::dockerfile::expand_word`] with the stage's variables),
    /// validating all options. This is what the builder uses.
    pub fn resolve(
        &self,
        expand: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<Mount, String> {
        parse_mount(&self.raw, Some(expand))
    }
}

fn parse_mount(spec: &str, mut expand: Option<Expander<'_>>) -> Result<Mount, String> {
    let fields = csv_fields(spec).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
    let mut m = Mount {
        raw: spec.to_string(),
        ..Mount::default()
    };
    if expand.is_none() {
        // A typed option with a variable: check only what BuildKit checks
        // before expansion (the CSV syntax and `from`).
        let deferred = fields.iter().any(|f| {
            f.split_once('=')
                .is_some_and(|(k, v)| is_typed_key(&k.to_lowercase()) && v.contains('$'))
        });
        if deferred {
            for f in &fields {
                let Some((k, v)) = f.split_once('=') else {
                    continue;
                };
                let k = k.to_lowercase();
                if k == "from" {
                    check_from(v)?;
                }
                let v = Some(v.to_string());
                match k.as_str() {
                    "from" => m.from = v,
                    "source" | "src" => m.source = v,
                    "target" | "dst" | "destination" => m.target = v,
                    "id" => m.id = v,
                    "env" => m.env = v,
                    _ => {}
                }
            }
            m.unresolved = true;
            return Ok(m);
        }
    }
    let mut ro_auto = true;
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" => {
                    if matches!(m.kind, MountType::Secret | MountType::Ssh) {
                        m.required = true;
                    } else {
                        return Err(format!(
                            "unexpected key '{key}' for mount type '{}'",
                            m.kind.as_str()
                        ));
                    }
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let value = match expand.as_mut() {
            Some(f) => f(value)?,
            None => {
                if key == "from" {
                    check_from(value)?;
                }
                value.to_string()
            }
        };
        let bool_value =
            |v: &str| parse_go_bool(v).ok_or_else(|| format!("invalid value for {key}: {v}"));
        match key.as_str() {
            "type" => {
                m.kind = match value.to_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        return Err(with_suggestion(
                            format!("unsupported mount type {}", go_quote(&value)),
                            &value,
                            MOUNT_TYPES,
                            true,
                        ))
                    }
                }
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.readonly = bool_value(&value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !bool_value(&value)?;
                ro_auto = false;
            }
            "required" => {
                if matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    m.required = bool_value(&value)?;
                } else {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    ));
                }
            }
            "size" => {
                if m.kind == MountType::Tmpfs {
                    m.size = Some(
                        ram_in_bytes(&value)
                            .ok_or_else(|| format!("invalid value for {key}: {value}"))?,
                    );
                } else {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    ));
                }
            }
            "id" => m.id = Some(value),
            "sharing" => {
                m.sharing = Some(match value.to_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err(with_suggestion(
                            format!("unsupported sharing value {}", go_quote(&value)),
                            &value,
                            SHARING_MODES,
                            true,
                        ))
                    }
                })
            }
            "mode" => {
                m.mode = Some(
                    parse_go_u32(&value, 8)
                        .ok_or_else(|| format!("invalid value {value} for mode"))?,
                )
            }
            "uid" => {
                m.uid = Some(
                    parse_go_u32(&value, 10)
                        .ok_or_else(|| format!("invalid value {value} for uid"))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    parse_go_u32(&value, 10)
                        .ok_or_else(|| format!("invalid value {value} for gid"))?,
                )
            }
            "env" => m.env = Some(value),
            _ => {
                return Err(with_suggestion(
                    format!("unexpected key '{key}' in '{field}'"),
                    &key,
                    MOUNT_KEYS,
                    true,
                ))
            }
        }
    }
    let kind = go_quote(m.kind.as_str());
    if !matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    ) {
        if m.mode.is_some() {
            return Err(format!("mode not allowed for {kind} type mounts"));
        }
        if m.uid.is_some() {
            return Err(format!("uid not allowed for {kind} type mounts"));
        }
        if m.gid.is_some() {
            return Err(format!("gid not allowed for {kind} type mounts"));
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
    if m.kind == MountType::Secret {
        if set(&m.from) {
            return Err("secret mount should not have a from".into());
        }
        if m.sharing.is_some() {
            return Err("secret mount should not define sharing".into());
        }
        if !set(&m.source) && !set(&m.target) && !set(&m.id) {
            return Err("invalid secret mount. one of source, target required".into());
        }
        if set(&m.source) && set(&m.id) {
            return Err("both source and id can't be set".into());
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!(
            "invalid cache sharing set for {} mount",
            m.kind.as_str()
        ));
    }
    Ok(m)
}

fn check_from(value: &str) -> Result<(), String> {
    if let Some(idx) = value.find('$') {
        if idx != value.len() - 1 {
            return Err(
                "'from' doesn't support variable expansion, define alias stage instead".into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_mount() {
        let m = Mount::parse(
            "type=cache,target=/root/.cache/pip,id=pip,sharing=locked,mode=0755,uid=1000,gid=1000",
        )
        .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache/pip"));
        assert_eq!(m.id.as_deref(), Some("pip"));
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert_eq!((m.uid, m.gid), (Some(1000), Some(1000)));
        assert!(!m.readonly);
    }

    #[test]
    fn bind_secret_tmpfs() {
        let m = Mount::parse("type=bind,from=build,source=/out,dst=/in,rw").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert_eq!(m.from.as_deref(), Some("build"));
        assert_eq!(m.source.as_deref(), Some("/out"));
        assert_eq!(m.target.as_deref(), Some("/in"));
        assert!(!m.readonly);
        let m = Mount::parse("target=/src").unwrap();
        assert!(m.readonly, "bind mounts default to read-only");
        let m = Mount::parse("type=secret,id=npmrc,destination=/root/.npmrc,required").unwrap();
        assert_eq!(m.kind, MountType::Secret);
        assert!(m.required && m.readonly);
        let m = Mount::parse("type=tmpfs,target=/tmp,size=64m").unwrap();
        assert_eq!(m.size, Some(64 * 1024 * 1024));
        let m = Mount::parse("type=ssh,ro=false").unwrap();
        assert!(!m.readonly);
    }

    #[test]
    fn mount_errors() {
        let e = |s: &str| Mount::parse(s).unwrap_err();
        assert_eq!(
            e("type=cahce"),
            "unsupported mount type \"cahce\" (did you mean cache?)"
        );
        assert_eq!(
            e("type=bind,required"),
            "unexpected key 'required' for mount type 'bind'"
        );
        assert_eq!(
            e("type=cache,sharing=nope"),
            "unsupported sharing value \"nope\""
        );
        assert_eq!(
            e("type=bind,mode=0755"),
            "mode not allowed for \"bind\" type mounts"
        );
        assert_eq!(e("type=cache,mode=9"), "invalid value 9 for mode");
        assert_eq!(
            e("type=bind,size=1m"),
            "unexpected key 'size' for mount type 'bind'"
        );
        assert_eq!(
            e("type=secret"),
            "invalid secret mount. one of source, target required"
        );
        assert_eq!(
            e("type=bind,sharing=shared"),
            "invalid cache sharing set for bind mount"
        );
        assert_eq!(
            e("targte=/x"),
            "unexpected key 'targte' in 'targte=/x' (did you mean target?)"
        );
        assert_eq!(e("bogus"), "invalid field 'bogus' must be a key=value pair");
        assert_eq!(
            e("from=$X"),
            "'from' doesn't support variable expansion, define alias stage instead"
        );
        assert_eq!(e(""), "failed to parse csv mounts: EOF");
        assert_eq!(
            e("target=a\"b"),
            "failed to parse csv mounts: parse error on line 1, column 9: bare \" in non-quoted-field"
        );
    }

    #[test]
    fn variables_are_deferred_and_resolved() {
        let m = Mount::parse("type=cache,target=$HOME/.cache,uid=${UID}").unwrap();
        assert!(m.unresolved);
        assert_eq!(m.target.as_deref(), Some("$HOME/.cache"));
        let env = vec![("HOME", "/root"), ("UID", "42")];
        let r = m
            .resolve(&mut |v| {
                crate::dockerfile::expand_word(v, &env, '\\').map_err(|e| e.to_string())
            })
            .unwrap();
        assert_eq!(r.kind, MountType::Cache);
        assert_eq!(r.target.as_deref(), Some("/root/.cache"));
        assert_eq!(r.uid, Some(42));
        assert!(!r.unresolved);
    }

    #[test]
    fn csv_quotes() {
        assert_eq!(
            csv_fields("a,\"b,c\",\"d\"\"e\"").unwrap(),
            ["a", "b,c", "d\"e"]
        );
        assert!(csv_fields("\"a\"b").is_err());
        assert_eq!(ram_in_bytes("1.5k"), Some(1536));
        assert_eq!(ram_in_bytes("10 MiB"), Some(10 * 1024 * 1024));
        assert_eq!(ram_in_bytes("12"), Some(12));
        assert_eq!(ram_in_bytes("1x"), None);
        assert_eq!(ram_in_bytes("2kb"), Some(2048));
        assert_eq!(ram_in_bytes("2ki"), None);
        assert_eq!(ram_in_bytes("-1"), None);
        assert_eq!(ram_in_bytes("1e3"), Some(1000));
    }
}
