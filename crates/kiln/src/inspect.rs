//! The image records `kiln inspect` and `kiln images` print, shaped like docker's.

use kiln_image::store::RefEntry;
use kiln_image::{Image, ImageStore, Platform, Target};
use serde_json::{json, Value};

/// The names that point at one target, in docker's familiar forms.
pub struct Names {
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub last_tag_time: Option<i64>,
}

pub fn names_of(refs: &[RefEntry], target: &Target) -> Names {
    let mut repo_tags = Vec::new();
    let mut repo_digests = Vec::new();
    let mut last_tag_time = None;
    for e in refs.iter().filter(|e| e.target.digest == target.digest) {
        if let Some(tag) = e.name.tag() {
            repo_tags.push(format!("{}:{tag}", e.name.familiar_repository()));
            last_tag_time = last_tag_time.max(Some(e.updated));
        }
        let pinned = format!("{}@{}", e.name.familiar_repository(), target.digest);
        if !repo_digests.contains(&pinned) {
            repo_digests.push(pinned);
        }
    }
    Names {
        repo_tags,
        repo_digests,
        last_tag_time,
    }
}

fn rfc3339(unix: i64) -> Value {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or(Value::Null, Value::String)
}

/// docker's `image inspect` object, plus the manifest's layer blobs with their sizes.
pub fn image_record(
    store: &ImageStore,
    refs: &[RefEntry],
    target: &Target,
) -> anyhow::Result<Value> {
    let image: Image = store.image(target, &Platform::host())?;
    let raw: Value = serde_json::from_slice(&image.config_raw)?;
    let names = names_of(refs, target);
    let field = |k: &str| raw.get(k).cloned().unwrap_or(Value::String(String::new()));
    let diff_ids = image.config.rootfs().diff_ids();
    let layers: Vec<Value> = image
        .manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            json!({
                "Digest": l.digest().to_string(),
                "DiffID": diff_ids.get(i),
                "MediaType": l.media_type().to_string(),
                "Size": l.size(),
            })
        })
        .collect();
    let mut record = json!({
        "Id": image.config_digest.to_string(),
        "RepoTags": names.repo_tags,
        "RepoDigests": names.repo_digests,
        "Parent": "",
        "Comment": raw.pointer("/history/0/comment").cloned().unwrap_or(Value::String(String::new())),
        "Created": field("created"),
        "DockerVersion": "",
        "Author": field("author"),
        "Config": raw.get("config").cloned().unwrap_or(Value::Null),
        "Architecture": field("architecture"),
        "Os": field("os"),
        "Size": image.content_size(),
        "RootFS": { "Type": "layers", "Layers": diff_ids },
        "Metadata": { "LastTagTime": names.last_tag_time.map_or(Value::Null, rfc3339) },
        "Descriptor": {
            "mediaType": target.media_type,
            "digest": target.digest.to_string(),
            "size": target.size,
        },
        "Manifest": {
            "Digest": image.manifest_digest.to_string(),
            "Layers": layers,
        },
    });
    if let Some(v) = raw.get("variant") {
        record["Variant"] = v.clone();
    }
    Ok(record)
}
