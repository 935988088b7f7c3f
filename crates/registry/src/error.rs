//! The distribution spec's error codes and their HTTP form:
//! `{"errors":[{"code":"...","message":"...","detail":...}]}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One error code of the OCI distribution spec (plus `TAG_INVALID`, a legacy code the spec
/// still names). Only these may appear in an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    TagInvalid,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::TagInvalid => "TAG_INVALID",
        }
    }

    fn default_message(self) -> &'static str {
        match self {
            Code::BlobUnknown => "blob unknown to registry",
            Code::BlobUploadInvalid => "blob upload invalid",
            Code::BlobUploadUnknown => "blob upload unknown to registry",
            Code::DigestInvalid => "provided digest did not match uploaded content",
            Code::ManifestBlobUnknown => {
                "manifest references a manifest or blob unknown to registry"
            }
            Code::ManifestInvalid => "manifest invalid",
            Code::ManifestUnknown => "manifest unknown to registry",
            Code::NameInvalid => "invalid repository name",
            Code::NameUnknown => "repository name not known to registry",
            Code::SizeInvalid => "provided length did not match content length",
            Code::Unauthorized => "authentication required",
            Code::Denied => "requested access to the resource is denied",
            Code::Unsupported => "the operation is unsupported",
            Code::TooManyRequests => "too many requests",
            Code::TagInvalid => "manifest tag did not match URI",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An error answer: a spec code, a message, an optional detail, and extra headers (the
/// `WWW-Authenticate` challenge, an upload's `Range`).
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub status: StatusCode,
    pub message: String,
    pub detail: serde_json::Value,
    pub headers: Vec<(&'static str, String)>,
    /// Answer with the status and headers only (a 416 to a ranged GET has no error body).
    pub bodiless: bool,
}

impl ApiError {
    pub fn new(code: Code) -> ApiError {
        ApiError {
            code,
            status: code.status(),
            message: code.default_message().to_string(),
            detail: serde_json::Value::Null,
            headers: Vec::new(),
            bodiless: false,
        }
    }

    pub fn bodiless(mut self) -> ApiError {
        self.bodiless = true;
        self
    }

    pub fn message(mut self, message: impl Into<String>) -> ApiError {
        self.message = message.into();
        self
    }

    pub fn detail(mut self, detail: impl serde::Serialize) -> ApiError {
        self.detail = serde_json::to_value(detail).unwrap_or(serde_json::Value::Null);
        self
    }

    pub fn status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    /// A failure of the registry itself (storage, database): 500, logged with its cause.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "{context}");
        ApiError {
            code: Code::Unsupported,
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("{context}: internal error"),
            detail: serde_json::Value::Null,
            headers: Vec::new(),
            bodiless: false,
        }
    }
}

pub fn code(code: Code) -> ApiError {
    ApiError::new(code)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errors": [{
                "code": if self.status.is_server_error() { "UNKNOWN" } else { self.code.as_str() },
                "message": self.message,
                "detail": self.detail,
            }]
        });
        let mut response = if self.bodiless {
            (self.status, [(axum::http::header::CONTENT_LENGTH, "0")]).into_response()
        } else {
            (self.status, axum::Json(body)).into_response()
        };
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, v);
            }
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
