//! The image config a build edits step by step. Kept as JSON rather than `oci-spec`'s typed
//! config so that fields a base image carries which the OCI types do not know (docker's
//! `Healthcheck`, `OnBuild`, `ArgsEscaped`) pass through to the built image unchanged.

use serde_json::{json, Map, Value};

/// The strings of a JSON array (others skipped); nothing for anything else.
fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The `PATH` an image from `scratch` gets, as in BuildKit.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig {
    doc: Value,
}

impl ImageConfig {
    /// The config of an empty image for `os`/`architecture`.
    pub fn scratch(os: &str, architecture: &str, variant: Option<&str>) -> ImageConfig {
        let mut doc = json!({
            "architecture": architecture,
            "os": os,
            "config": { "Env": [DEFAULT_PATH] },
            "rootfs": { "type": "layers", "diff_ids": [] },
            "history": [],
        });
        if let Some(v) = variant {
            doc["variant"] = json!(v);
        }
        ImageConfig { doc }
    }

    /// A base image's config.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, String> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("image config: {e}"))?;
        if !doc.is_object() {
            return Err("image config: not a JSON object".into());
        }
        let mut config = ImageConfig { doc };
        if !config.doc["rootfs"].is_object() {
            config.doc["rootfs"] = json!({ "type": "layers", "diff_ids": [] });
        }
        Ok(config)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a Value cannot fail.
        serde_json::to_vec(&self.doc).unwrap_or_default()
    }

    fn container(&mut self) -> &mut Map<String, Value> {
        if !self.doc["config"].is_object() {
            self.doc["config"] = json!({});
        }
        match self.doc["config"].as_object_mut() {
            Some(m) => m,
            None => unreachable!("config was just made an object"),
        }
    }

    fn container_field(&self, name: &str) -> Option<&Value> {
        self.doc.get("config").and_then(|c| c.get(name))
    }

    /// `Env` as (name, value) pairs, in order.
    pub fn env(&self) -> Vec<(String, String)> {
        self.container_field("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (kv.to_string(), String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets one variable, replacing an earlier value in place as docker does.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.env();
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => env.push((key.to_string(), value.to_string())),
        }
        let list: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.container().insert("Env".into(), json!(list));
    }

    pub fn working_dir(&self) -> String {
        self.container_field("WorkingDir")
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
            .to_string()
    }

    pub fn user(&self) -> Option<String> {
        self.container_field("User")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
    }

    /// Sets a field of the container config (`Cmd`, `Entrypoint`, `WorkingDir`, `User`,
    /// `StopSignal`, `Healthcheck`...). `Value::Null` removes it.
    pub fn set(&mut self, name: &str, value: Value) {
        if value.is_null() {
            self.container().remove(name);
        } else {
            self.container().insert(name.into(), value);
        }
    }

    /// Adds `key` to an object-valued field (`ExposedPorts`, `Volumes`): docker's sets.
    pub fn add_to_set(&mut self, name: &str, key: &str) {
        let c = self.container();
        if !c.get(name).is_some_and(Value::is_object) {
            c.insert(name.into(), json!({}));
        }
        if let Some(m) = c.get_mut(name).and_then(Value::as_object_mut) {
            m.insert(key.into(), json!({}));
        }
    }

    pub fn set_label(&mut self, key: &str, value: &str) {
        let c = self.container();
        if !c.get("Labels").is_some_and(Value::is_object) {
            c.insert("Labels".into(), json!({}));
        }
        if let Some(m) = c.get_mut("Labels").and_then(Value::as_object_mut) {
            m.insert(key.into(), json!(value));
        }
    }

    /// The `OnBuild` triggers a base image carries, which its children run first.
    pub fn onbuild(&self) -> Vec<String> {
        strings(self.container_field("OnBuild"))
    }

    pub fn push_onbuild(&mut self, trigger: &str) {
        let mut all = self.onbuild();
        all.push(trigger.to_string());
        self.set("OnBuild", json!(all));
    }

    /// Shell for shell-form commands (`SHELL`), default `/bin/sh -c`.
    pub fn shell(&self) -> Vec<String> {
        let shell = strings(self.container_field("Shell"));
        if shell.is_empty() {
            vec!["/bin/sh".into(), "-c".into()]
        } else {
            shell
        }
    }

    pub fn diff_ids(&self) -> Vec<String> {
        strings(self.doc["rootfs"].get("diff_ids"))
    }

    pub fn push_diff_id(&mut self, diff_id: &str) {
        let mut ids = self.diff_ids();
        ids.push(diff_id.to_string());
        self.doc["rootfs"] = json!({ "type": "layers", "diff_ids": ids });
    }

    /// Appends a history entry as docker writes them; `empty_layer` for steps that change
    /// only the config.
    pub fn push_history(&mut self, created: &str, created_by: &str, empty_layer: bool) {
        let mut entry = json!({
            "created": created,
            "created_by": created_by,
            "comment": "kiln.dockerfile.v0",
        });
        if empty_layer {
            entry["empty_layer"] = json!(true);
        }
        if !self.doc["history"].is_array() {
            self.doc["history"] = json!([]);
        }
        if let Some(h) = self.doc["history"].as_array_mut() {
            h.push(entry);
        }
    }

    /// When the last history entry was made, if any says.
    pub fn last_created(&self) -> Option<String> {
        self.doc["history"]
            .as_array()
            .and_then(|h| h.iter().rev().find_map(|e| e["created"].as_str()))
            .or_else(|| self.doc["created"].as_str())
            .map(str::to_string)
    }

    /// Sets a top-level field (`author`).
    pub fn set_top(&mut self, name: &str, value: Value) {
        self.doc[name] = value;
    }

    /// The image's creation time (RFC 3339).
    pub fn set_created(&mut self, created: &str) {
        self.doc["created"] = json!(created);
    }

    pub fn os(&self) -> String {
        self.doc["os"].as_str().unwrap_or("linux").to_string()
    }

    pub fn architecture(&self) -> String {
        self.doc["architecture"]
            .as_str()
            .unwrap_or("amd64")
            .to_string()
    }

    /// The config as the runtime library reads it (to run a `RUN` step).
    pub fn to_oci(&self) -> Result<oci_spec::image::ImageConfiguration, String> {
        kiln_image::model::parse_config(&self.to_bytes()).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_replaces_in_place_and_appends_new_names() {
        let mut c = ImageConfig::scratch("linux", "amd64", None);
        c.set_env("A", "1");
        c.set_env("PATH", "/bin");
        c.set_env("A", "2");
        assert_eq!(
            c.env(),
            vec![("PATH".into(), "/bin".into()), ("A".into(), "2".into())]
        );
    }

    #[test]
    fn unknown_fields_of_a_base_config_pass_through() {
        let base = br#"{"os":"linux","architecture":"arm64","config":{"Healthcheck":{"Test":["NONE"]},"Env":["X=1"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"extra":7}"#;
        let mut c = ImageConfig::parse(base).expect("parse");
        c.set("Cmd", json!(["sh"]));
        c.push_history("1970-01-01T00:00:00Z", "CMD [\"sh\"]", true);
        let v: Value = serde_json::from_slice(&c.to_bytes()).expect("json");
        assert_eq!(v["extra"], 7);
        assert_eq!(v["config"]["Healthcheck"]["Test"][0], "NONE");
        assert_eq!(v["history"][0]["empty_layer"], true);
        assert_eq!(c.diff_ids(), vec!["sha256:aa"]);
    }

    #[test]
    fn a_config_that_is_not_an_object_is_refused() {
        assert!(ImageConfig::parse(b"[1]").is_err());
        assert!(ImageConfig::parse(b"{").is_err());
    }

    #[test]
    fn shell_defaults_to_sh_c() {
        let mut c = ImageConfig::scratch("linux", "amd64", None);
        assert_eq!(c.shell(), vec!["/bin/sh", "-c"]);
        c.set("Shell", json!(["/bin/bash", "-eo", "pipefail", "-c"]));
        assert_eq!(c.shell().len(), 4);
    }
}
