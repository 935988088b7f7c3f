//! Content discovery: `tags/list`, `_catalog` and `referrers`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use kiln_image::model::media_types as mt;

use super::{internal, parse_digest, query_value, Shared};
use crate::error::{code, ApiResult, Code};

/// `n` and `last` of a paginated list.
fn pagination(query: &[(String, String)]) -> ApiResult<(Option<usize>, Option<String>)> {
    let n = match query_value(query, "n") {
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            code(Code::Unsupported)
                .status(StatusCode::BAD_REQUEST)
                .message(format!(
                    "invalid page size n={n:?}: must be a non-negative integer"
                ))
        })?),
        None => None,
    };
    Ok((n, query_value(query, "last").map(str::to_string)))
}

/// Cuts a list fetched with one extra row to `n` and builds the `Link` to the next page.
fn page(mut items: Vec<String>, n: Option<usize>, path: &str) -> (Vec<String>, Option<String>) {
    match n {
        Some(n) if items.len() > n => {
            items.truncate(n);
            let link = items
                .last()
                .map(|last| format!("<{path}?n={n}&last={}>; rel=\"next\"", urlencode(last)));
            (items, link)
        }
        _ => (items, None),
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn json_with_link(body: serde_json::Value, link: Option<String>) -> Response {
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    if let Some(v) = link.and_then(|l| l.parse().ok()) {
        response.headers_mut().insert(header::LINK, v);
    }
    response
}

pub(super) fn tags(r: &Shared, name: &str, query: &[(String, String)]) -> ApiResult<Response> {
    let (n, last) = pagination(query)?;
    let list = r.all_tags(name).map_err(internal("listing tags"))?;
    let all = &list.tags;
    if all.is_empty() && !r.meta.repo_exists(name).map_err(internal("listing tags"))? {
        return Err(code(Code::NameUnknown).detail(serde_json::json!({ "name": name })));
    }
    if n.is_none() && last.is_none() {
        let mut response = (StatusCode::OK, list.json.clone()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }
    // Tags are sorted by bytes, as SQLite's default collation and the spec's lexical order.
    let start = match &last {
        Some(l) => all.partition_point(|t| t.as_str() <= l.as_str()),
        None => 0,
    };
    let end = n.map_or(all.len(), |n| {
        all.len().min(start.saturating_add(n).saturating_add(1))
    });
    let (tags, link) = page(
        all[start..end].to_vec(),
        n,
        &format!("/v2/{name}/tags/list"),
    );
    Ok(json_with_link(
        serde_json::json!({ "name": name, "tags": tags }),
        link,
    ))
}

pub(super) fn catalog(r: &Shared, query: &[(String, String)]) -> ApiResult<Response> {
    let (n, last) = pagination(query)?;
    let repos = r
        .meta
        .repositories(last.as_deref(), n)
        .map_err(internal("listing repositories"))?;
    let (repos, link) = page(repos, n, "/v2/_catalog");
    Ok(json_with_link(
        serde_json::json!({ "repositories": repos }),
        link,
    ))
}

pub(super) fn referrers(
    r: &Shared,
    name: &str,
    digest: &str,
    query: &[(String, String)],
) -> ApiResult<Response> {
    let subject = parse_digest(digest)?;
    let filter = query_value(query, "artifactType").filter(|f| !f.is_empty());
    let rows = r
        .meta
        .referrers(name, &subject)
        .map_err(internal("listing referrers"))?;
    let manifests: Vec<serde_json::Value> = rows
        .into_iter()
        .filter(|row| filter.is_none() || row.artifact_type.as_deref() == filter)
        .map(|row| {
            let mut d = serde_json::json!({
                "mediaType": row.media_type,
                "digest": row.digest,
                "size": row.size,
            });
            if let Some(t) = row.artifact_type {
                d["artifactType"] = t.into();
            }
            if let Some(a) = row
                .annotations
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_INDEX,
        "manifests": manifests,
    });
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(mt::OCI_INDEX),
    );
    if filter.is_some() {
        response.headers_mut().insert(
            "oci-filters-applied",
            header::HeaderValue::from_static("artifactType"),
        );
    }
    Ok(response)
}
