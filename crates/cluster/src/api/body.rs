//! Request bodies in, response bodies out.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::Request;
use crate::objects::MAX_OBJECT_BYTES;
use crate::status::{ApiError, ApiResult};

pub fn json_response(code: StatusCode, value: &Value) -> Response {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// The object a create or update carries.
pub fn decode_object(req: &Request) -> ApiResult<Value> {
    if req.body.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!(
                "the request body is {} bytes; the limit is {MAX_OBJECT_BYTES}",
                req.body.len()
            ),
        ));
    }
    let content_type = req.header("content-type").unwrap_or("application/json");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" | "" => {
            let value: Value = serde_json::from_slice(&req.body).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
            })?;
            if !value.is_object() {
                return Err(ApiError::bad_request(
                    "the request body must be a JSON object",
                ));
            }
            Ok(value)
        }
        "application/yaml" => {
            let value: Value = yaml_serde::from_slice(&req.body).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
            })?;
            if !value.is_object() {
                return Err(ApiError::bad_request(
                    "the request body must be a YAML mapping",
                ));
            }
            Ok(value)
        }
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(&req.body).map_err(|e| {
            ApiError::bad_request(format!(
                "the request body is not a valid protobuf object: {e}"
            ))
        }),
        _ => Err(ApiError::unsupported_media_type(content_type)),
    }
}

/// How strictly unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn of(req: &Request) -> ApiResult<FieldValidation> {
        match req.param("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", not {other:?}"
            ))),
        }
    }
}
