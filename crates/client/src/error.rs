//! The one error type of this crate.

use natter_proto::{ErrorBody, ErrorCode};

/// Everything that can go wrong talking to a Natter server.
///
/// `Clone` so that one failure can be handed to every request that was waiting on a connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request with an error body; the `u16` is the HTTP status (for a
    /// WebSocket command, the status the same error has in the REST API).
    #[error("server error {status} {code}: {message}", status = .1, code = .0.code.as_str(), message = .0.message)]
    Api(ErrorBody, u16),
    /// The server answered with an HTTP error status but no error body we could read.
    #[error("HTTP status {0}: {1}")]
    Http(u16, String),
    /// Transport failure: the server could not be reached, or the connection broke.
    #[error("I/O error: {0}")]
    Io(String),
    /// The server said something we did not expect or could not decode.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The WebSocket closed before a reply arrived. A command that was already written may or may
    /// not have been carried out, which is why sends carry a `client_msg_id` and are retried.
    #[error("disconnected{}: {reason}", code.map(|c| format!(" (close code {c})")).unwrap_or_default())]
    Disconnected {
        /// The WebSocket close code, when the server sent one.
        code: Option<u16>,
        /// The close reason, or what broke the connection.
        reason: String,
    },
    /// No reply within the time allowed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A request that needs a live connection was made while there is none.
    #[error("not connected")]
    NotConnected,
    /// The client was closed (or stopped for good) before the request could complete.
    #[error("client closed")]
    Closed,
    /// Bad input from the caller: an invalid URL, an unreadable config file, …
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The server's error code, for matching on `Api` errors without destructuring.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(body, _) => Some(body.code),
            _ => None,
        }
    }

    /// Build an `Api` error from a body received over the WebSocket, using the REST status the
    /// protocol assigns to that code so callers can treat both transports alike.
    pub fn from_body(body: ErrorBody) -> ClientError {
        let status = body.code.http_status();
        ClientError::Api(body, status)
    }

    /// True when the credentials were refused: retrying with the same token cannot help.
    pub fn is_auth(&self) -> bool {
        match self {
            ClientError::Api(body, status) => {
                matches!(
                    body.code,
                    ErrorCode::Unauthorized | ErrorCode::UserDisabled | ErrorCode::WrongPassword
                ) || *status == 401
            }
            ClientError::Http(status, _) => *status == 401,
            ClientError::Disconnected { code, .. } => {
                *code == Some(natter_proto::close_code::REVOKED)
            }
            _ => false,
        }
    }
}

/// Render an error with its chain of sources, because hyper's and tungstenite's top-level
/// messages ("client error (Connect)") hide the useful part.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_exposes_its_code_and_status() {
        let err = ClientError::from_body(ErrorBody {
            code: ErrorCode::NotMember,
            message: "no".into(),
            retry_after_ms: None,
        });
        assert_eq!(err.code(), Some(ErrorCode::NotMember));
        assert!(matches!(err, ClientError::Api(_, 403)));
        assert_eq!(err.to_string(), "server error 403 not_member: no");
        assert!(!err.is_auth());
    }

    #[test]
    fn revoked_close_is_an_auth_failure() {
        let err = ClientError::Disconnected {
            code: Some(4001),
            reason: "revoked".into(),
        };
        assert!(err.is_auth());
        assert_eq!(err.to_string(), "disconnected (close code 4001): revoked");
    }
}
