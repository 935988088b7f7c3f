//! Instruction flags (`--name=value`), checked like BuildKit's `BFlags`.

use std::collections::HashMap;

use super::util::with_suggestion;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Str,
    Strs,
}

#[derive(Debug, Default)]
pub(crate) struct Flags {
    bools: HashMap<&'static str, bool>,
    strs: HashMap<&'static str, String>,
    lists: HashMap<&'static str, Vec<String>>,
}

impl Flags {
    pub(crate) fn bool(&self, name: &str) -> bool {
        self.bools.get(name).copied().unwrap_or(false)
    }

    /// `Some(b)` only when the flag was given.
    pub(crate) fn opt_bool(&self, name: &str) -> Option<bool> {
        self.bools.get(name).copied()
    }

    /// The value, or `None` when absent or empty.
    pub(crate) fn str(&self, name: &str) -> Option<String> {
        self.strs.get(name).filter(|s| !s.is_empty()).cloned()
    }

    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.lists.get(name).cloned().unwrap_or_default()
    }
}

/// Check `args` against the allowed `specs`.
pub(crate) fn parse(args: &[String], specs: &[(&'static str, Kind)]) -> Result<Flags, String> {
    let mut out = Flags::default();
    let mut used: Vec<&'static str> = Vec::new();
    for a in args {
        if a == "--" {
            return Ok(out);
        }
        if !a.starts_with("--") {
            return Err(format!("arg should start with -- : {a}"));
        }
        let (flag_name, value) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (a.as_str(), None),
        };
        let name = &flag_name[2..];
        let Some(&(key, kind)) = specs.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = specs.iter().map(|(n, _)| *n).collect();
            return Err(with_suggestion(
                format!("unknown flag: {flag_name}"),
                name,
                &names,
                true,
            ));
        };
        if used.contains(&key) && kind != Kind::Strs {
            return Err(format!("duplicate flag specified: {flag_name}"));
        }
        used.push(key);
        match kind {
            Kind::Bool => {
                if value == Some("") {
                    return Err(format!("missing a value on flag: {flag_name}"));
                }
                let v = value.unwrap_or("");
                let b = match v.to_lowercase().as_str() {
                    "true" | "" => true,
                    "false" => false,
                    _ => {
                        return Err(format!(
                            "expecting boolean value for flag {flag_name}, not: {v}"
                        ))
                    }
                };
                out.bools.insert(key, b);
            }
            Kind::Str => {
                let Some(v) = value else {
                    return Err(format!("missing a value on flag: {flag_name}"));
                };
                out.strs.insert(key, v.to_string());
            }
            Kind::Strs => {
                let Some(v) = value else {
                    return Err(format!("missing a value on flag: {flag_name}"));
                };
                out.lists.entry(key).or_default().push(v.to_string());
            }
        }
    }
    Ok(out)
}
