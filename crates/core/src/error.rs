//! The one error type of the domain: a stable code from the protocol and a message for humans.

use natter_proto::{ErrorBody, ErrorCode};

/// A failure the client is told about, with its stable [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_ms: Option<u64>,
}

/// The result of every fallible domain operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::InvalidRequest, message)
    }

    pub fn not_found(what: impl Into<String>) -> Error {
        Error::new(ErrorCode::NotFound, what)
    }

    pub fn not_member() -> Error {
        Error::new(
            ErrorCode::NotMember,
            "you are not a member of this conversation",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Forbidden, message)
    }

    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Conflict, message)
    }

    /// A failure of the server itself (storage, a bug); the details go to the log, not the client.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Internal, message)
    }

    pub fn rate_limited(retry_after_ms: u64) -> Error {
        Error {
            code: ErrorCode::RateLimited,
            message: "too many requests; slow down".into(),
            retry_after_ms: Some(retry_after_ms),
        }
    }

    /// The wire form of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message.clone(),
            retry_after_ms: self.retry_after_ms,
        }
    }
}
