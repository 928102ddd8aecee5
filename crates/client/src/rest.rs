//! The REST API under `/v1/`: accounts, devices, and everything a command can do, over plain HTTP.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use natter_proto::{
    Ack, AddMembersRequest, Conversation, ConversationId, ConversationList,
    CreateConversationRequest, DeviceId, DeviceList, Empty, ErrorBody, HistoryPage, LoginRequest,
    LoginResponse, MarkRequest, Pos, Receipt, RegisterRequest, SendRequest, Seq, SetRoleRequest,
    SetTitleRequest, SyncPage, User, UserId,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ClientError, chain};
use crate::util::{http_base, percent_encode};

/// Responses larger than this are refused rather than buffered: no page the API defines comes
/// near it, so a larger body means something is wrong.
const BODY_MAX: usize = 32 << 20;

/// A client of the REST API of one server.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct RestClient {
    /// Where the API lives, like `http://127.0.0.1:8080` (no trailing slash, no `/v1`).
    pub base: String,
    /// The bearer token sent with every request, once logged in.
    pub token: Option<String>,
    /// How long one request may take, connecting included.
    pub timeout: Duration,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl RestClient {
    /// A client without a token, for `register` and `login`. `server` is `http://host:port`
    /// (`ws://` and a bare `host:port` are accepted too).
    pub fn new(server: &str) -> Result<RestClient, ClientError> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let http = HyperClient::builder(TokioExecutor::new()).build(connector);
        Ok(RestClient {
            base: http_base(server)?,
            token: None,
            timeout: Duration::from_secs(30),
            http,
        })
    }

    /// The same client, authenticated with `token`.
    pub fn with_token(mut self, token: impl Into<String>) -> RestClient {
        self.token = Some(token.into());
        self
    }

    /// `POST /v1/register`: create an account and log its first device in.
    pub async fn register(&self, request: &RegisterRequest) -> Result<LoginResponse, ClientError> {
        self.call(Method::POST, "/v1/register", Some(request)).await
    }

    /// `POST /v1/login`: log a new device in.
    pub async fn login(&self, request: &LoginRequest) -> Result<LoginResponse, ClientError> {
        self.call(Method::POST, "/v1/login", Some(request)).await
    }

    /// `POST /v1/logout`: revoke this client's token.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.call_empty(Method::POST, "/v1/logout", None::<&Empty>)
            .await
    }

    /// `GET /v1/me`: the logged-in user.
    pub async fn me(&self) -> Result<User, ClientError> {
        self.call(Method::GET, "/v1/me", None::<&Empty>).await
    }

    /// `GET /v1/devices`: the logged-in user's devices.
    pub async fn devices(&self) -> Result<DeviceList, ClientError> {
        self.call(Method::GET, "/v1/devices", None::<&Empty>).await
    }

    /// `DELETE /v1/devices/{id}`: log one device out.
    pub async fn revoke_device(&self, device_id: DeviceId) -> Result<(), ClientError> {
        let path = format!("/v1/devices/{device_id}");
        self.call_empty(Method::DELETE, &path, None::<&Empty>).await
    }

    /// `GET /v1/users/{username}`: find a user by name.
    pub async fn user(&self, username: &str) -> Result<User, ClientError> {
        let path = format!("/v1/users/{}", percent_encode(username));
        self.call(Method::GET, &path, None::<&Empty>).await
    }

    /// `GET /v1/users/by-id/{user_id}`: a user who shares or shared a conversation with you.
    pub async fn user_by_id(&self, user_id: UserId) -> Result<User, ClientError> {
        let path = format!("/v1/users/by-id/{user_id}");
        self.call(Method::GET, &path, None::<&Empty>).await
    }

    /// `GET /v1/conversations`: the user's conversations, newest activity first.
    pub async fn conversations(&self) -> Result<ConversationList, ClientError> {
        self.call(Method::GET, "/v1/conversations", None::<&Empty>)
            .await
    }

    /// `POST /v1/conversations`: a group, or the direct conversation with a user (the existing
    /// one if there is one).
    pub async fn create_conversation(
        &self,
        request: &CreateConversationRequest,
    ) -> Result<Conversation, ClientError> {
        self.call(Method::POST, "/v1/conversations", Some(request))
            .await
    }

    /// `GET /v1/conversations/{id}`.
    pub async fn conversation(&self, id: ConversationId) -> Result<Conversation, ClientError> {
        let path = format!("/v1/conversations/{id}");
        self.call(Method::GET, &path, None::<&Empty>).await
    }

    /// `GET /v1/conversations/{id}/messages`: a page of history in ascending `seq`.
    pub async fn history(
        &self,
        id: ConversationId,
        before: Option<Seq>,
        after: Option<Seq>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, ClientError> {
        let path = format!(
            "/v1/conversations/{id}/messages{}",
            query(&[
                ("before", before),
                ("after", after),
                ("limit", limit.map(u64::from)),
            ])
        );
        self.call(Method::GET, &path, None::<&Empty>).await
    }

    /// `POST /v1/conversations/{id}/messages`: send one message. Retrying with the same
    /// `client_msg_id` is safe: the server answers `duplicate: true` instead of storing it twice.
    pub async fn send(
        &self,
        id: ConversationId,
        request: &SendRequest,
    ) -> Result<Ack, ClientError> {
        let path = format!("/v1/conversations/{id}/messages");
        self.call(Method::POST, &path, Some(request)).await
    }

    /// `POST /v1/conversations/{id}/members`: add members (owner or admin).
    pub async fn add_members(
        &self,
        id: ConversationId,
        request: &AddMembersRequest,
    ) -> Result<Conversation, ClientError> {
        let path = format!("/v1/conversations/{id}/members");
        self.call(Method::POST, &path, Some(request)).await
    }

    /// `DELETE /v1/conversations/{id}/members/{user_id}`: remove a member (owner or admin).
    pub async fn remove_member(
        &self,
        id: ConversationId,
        user_id: UserId,
    ) -> Result<Conversation, ClientError> {
        let path = format!("/v1/conversations/{id}/members/{user_id}");
        self.call(Method::DELETE, &path, None::<&Empty>).await
    }

    /// `POST /v1/conversations/{id}/leave`.
    pub async fn leave(&self, id: ConversationId) -> Result<(), ClientError> {
        let path = format!("/v1/conversations/{id}/leave");
        self.call_empty(Method::POST, &path, None::<&Empty>).await
    }

    /// `PATCH /v1/conversations/{id}`: rename a group (owner or admin).
    pub async fn set_title(
        &self,
        id: ConversationId,
        request: &SetTitleRequest,
    ) -> Result<Conversation, ClientError> {
        let path = format!("/v1/conversations/{id}");
        self.call(Method::PATCH, &path, Some(request)).await
    }

    /// `PUT /v1/conversations/{id}/members/{user_id}/role` (owner only).
    pub async fn set_role(
        &self,
        id: ConversationId,
        user_id: UserId,
        request: &SetRoleRequest,
    ) -> Result<Conversation, ClientError> {
        let path = format!("/v1/conversations/{id}/members/{user_id}/role");
        self.call(Method::PUT, &path, Some(request)).await
    }

    /// `POST /v1/conversations/{id}/markers`: move this user's delivered and/or read markers.
    pub async fn mark(
        &self,
        id: ConversationId,
        request: &MarkRequest,
    ) -> Result<Receipt, ClientError> {
        let path = format!("/v1/conversations/{id}/markers");
        self.call(Method::POST, &path, Some(request)).await
    }

    /// `GET /v1/sync`: one page of changes since `cursor`.
    pub async fn sync(&self, cursor: Pos, limit: Option<u32>) -> Result<SyncPage, ClientError> {
        let path = format!(
            "/v1/sync{}",
            query(&[("cursor", Some(cursor)), ("limit", limit.map(u64::from))])
        );
        self.call(Method::GET, &path, None::<&Empty>).await
    }

    /// For endpoints that answer `{}`: any JSON object will do, so that a server adding fields
    /// later does not break old clients.
    async fn call_empty<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ClientError> {
        self.call::<B, serde_json::Value>(method, path, body)
            .await
            .map(drop)
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let uri = format!("{}{path}", self.base);
        let mut builder = Request::builder().method(method).uri(&uri);
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let payload = match body {
            Some(body) => {
                builder = builder.header("content-type", "application/json");
                serde_json::to_vec(body)
                    .map_err(|e| ClientError::Protocol(format!("encoding request: {e}")))?
            }
            None => Vec::new(),
        };
        let request = builder
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| ClientError::Config(format!("bad request URI `{uri}`: {e}")))?;

        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| ClientError::Io(chain(&e)))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), BODY_MAX)
                .collect()
                .await
                .map_err(|e| ClientError::Io(format!("reading response: {e}")))?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(format!("{uri} after {:?}", self.timeout)))??;
        decode_response(status, &bytes)
    }
}

/// Turn a status and body into the expected value or the server's error.
fn decode_response<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, ClientError> {
    if status.is_success() {
        // An empty body stands for `{}`, so endpoints without an answer decode into `Empty`/`Value`.
        let body = if body.is_empty() { b"{}" } else { body };
        return serde_json::from_slice(body).map_err(|e| {
            ClientError::Protocol(format!(
                "unexpected response body ({e}): {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        });
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => Err(ClientError::Api(error, status.as_u16())),
        Err(_) => Err(ClientError::Http(
            status.as_u16(),
            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        )),
    }
}

/// A query string of the parameters that are set (`""` when none is).
fn query(params: &[(&str, Option<u64>)]) -> String {
    let mut out = String::new();
    for (name, value) in params {
        if let Some(value) = value {
            out.push(if out.is_empty() { '?' } else { '&' });
            out.push_str(name);
            out.push('=');
            out.push_str(&value.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use natter_proto::ErrorCode;

    #[test]
    fn query_keeps_only_set_parameters() {
        assert_eq!(query(&[("before", None), ("after", None)]), "");
        assert_eq!(
            query(&[("before", None), ("after", Some(3)), ("limit", Some(50))]),
            "?after=3&limit=50"
        );
    }

    #[test]
    fn error_bodies_become_api_errors_with_their_status() {
        let body = br#"{"code":"username_taken","message":"taken"}"#;
        let err = decode_response::<User>(StatusCode::CONFLICT, body).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UsernameTaken));
        assert!(matches!(err, ClientError::Api(_, 409)));
    }

    #[test]
    fn error_statuses_without_a_body_are_http_errors() {
        let err = decode_response::<User>(StatusCode::BAD_GATEWAY, b"bad gateway").unwrap_err();
        assert!(matches!(err, ClientError::Http(502, ref text) if text == "bad gateway"));
    }

    #[test]
    fn success_bodies_decode_and_empty_means_empty_object() {
        let user: User = decode_response(
            StatusCode::OK,
            br#"{"id":1,"username":"alice","display_name":"Alice"}"#,
        )
        .unwrap();
        assert_eq!(user.username, "alice");
        let _: Empty = decode_response(StatusCode::OK, b"").unwrap();
        let err = decode_response::<User>(StatusCode::OK, b"{}").unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_io_error() {
        // Port 1 on loopback refuses connections; nothing leaves the machine.
        let client = RestClient::new("http://127.0.0.1:1").unwrap();
        let err = client.me().await.unwrap_err();
        assert!(matches!(err, ClientError::Io(_)), "{err:?}");
    }
}
