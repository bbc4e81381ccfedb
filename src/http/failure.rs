//! Error answers of the server: every one is JSON with at least `error` and `message`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::model::ClientError;

/// Why a request was answered with an error status.
#[derive(Debug)]
pub(crate) enum Failure {
    /// An error of the service (or of the API's own validation), with its fixed status.
    Client(ClientError),
    /// A failure only HTTP knows of: bad route, method, body or JSON.
    Http {
        /// The status to answer with.
        status: StatusCode,
        /// Stable machine-readable kind.
        kind: &'static str,
        /// Human-readable explanation.
        message: String,
    },
}

impl Failure {
    /// An HTTP-level failure.
    pub fn http(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Failure::Http {
            status,
            kind,
            message: message.into(),
        }
    }

    /// A 400 `invalid_option` (bad `?r=` / `?w=`).
    pub fn option(message: impl Into<String>) -> Self {
        Failure::Client(ClientError::InvalidOption(message.into()))
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Client(e) => {
                let status = StatusCode::from_u16(e.http_status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if status.is_server_error()
                    && !matches!(
                        e,
                        ClientError::InsufficientAcks(_) | ClientError::InsufficientReplies(_)
                    )
                {
                    tracing::warn!(error = %e, "request failed");
                }
                (status, Json(e.body())).into_response()
            }
            Failure::Http {
                status,
                kind,
                message,
            } => (status, Json(json!({ "error": kind, "message": message }))).into_response(),
        }
    }
}
