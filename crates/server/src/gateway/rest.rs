//! The REST API under `/v1/`: what clients without a socket need. Each handler extracts typed
//! inputs and calls the same `Core` method as its WebSocket twin.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use natter_core::{Error, Session};
use natter_proto::{
    Ack, AddMembersRequest, Conversation, ConversationId, ConversationList,
    CreateConversationRequest, DeviceId, DeviceList, Empty, ErrorBody, ErrorCode, HistoryPage,
    LoginRequest, LoginResponse, MarkRequest, Pos, Receipt, RegisterRequest, SendRequest, Seq,
    SetRoleRequest, SetTitleRequest, SyncPage, User, UserId,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::ws::bearer_token;
use crate::sessions::CloseReason;

type ApiResult<T> = Result<Json<T>, ApiError>;
type App = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/openapi.json", get(super::openapi::document))
        .route("/v1/register", post(register))
        .route("/v1/login", post(login))
        .route("/v1/logout", post(logout))
        .route("/v1/me", get(me).patch(update_me))
        .route("/v1/devices", get(devices))
        .route("/v1/devices/{device_id}", delete(revoke_device))
        .route("/v1/users/{username}", get(lookup_user))
        .route("/v1/users/by-id/{user_id}", get(lookup_user_by_id))
        .route(
            "/v1/conversations",
            get(conversations).post(create_conversation),
        )
        .route("/v1/conversations/{id}", get(conversation).patch(set_title))
        .route("/v1/conversations/{id}/messages", get(history).post(send))
        .route("/v1/conversations/{id}/members", post(add_members))
        .route(
            "/v1/conversations/{id}/members/{user_id}",
            delete(remove_member),
        )
        .route(
            "/v1/conversations/{id}/members/{user_id}/role",
            put(set_role),
        )
        .route("/v1/conversations/{id}/leave", post(leave))
        .route("/v1/conversations/{id}/markers", post(mark))
        .route("/v1/sync", get(sync))
}

/// The session of the request's bearer token.
pub struct Authed(pub Session);

impl FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer_token(&parts.headers) else {
            return Err(ApiError(Error::new(
                ErrorCode::Unauthorized,
                "send `Authorization: Bearer <token>`",
            )));
        };
        Ok(Authed(app.core.authenticate(token).await?))
    }
}

#[utoipa::path(post, path = "/v1/register", tag = "accounts", request_body = RegisterRequest,
    responses((status = 201, body = LoginResponse), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "username_taken"),
              (status = 429, body = ErrorBody)))]
pub async fn register(
    State(app): App,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<LoginResponse>), ApiError> {
    app.limiters.login(peer.ip())?;
    Ok((StatusCode::CREATED, Json(app.core.register(request).await?)))
}

#[utoipa::path(post, path = "/v1/login", tag = "accounts", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse),
              (status = 401, body = ErrorBody, description = "wrong_password"),
              (status = 403, body = ErrorBody, description = "user_disabled"),
              (status = 429, body = ErrorBody)))]
pub async fn login(
    State(app): App,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(request): ApiJson<LoginRequest>,
) -> ApiResult<LoginResponse> {
    app.limiters.login(peer.ip())?;
    Ok(Json(app.core.login(request).await?))
}

#[utoipa::path(post, path = "/v1/logout", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = Empty), (status = 401, body = ErrorBody)))]
pub async fn logout(State(app): App, Authed(session): Authed) -> ApiResult<Empty> {
    app.core.logout(&session).await?;
    app.hub
        .close_device(session.device_id, CloseReason::Revoked);
    Ok(Json(Empty {}))
}

#[utoipa::path(get, path = "/v1/me", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = ErrorBody)))]
pub async fn me(Authed(session): Authed) -> ApiResult<User> {
    Ok(Json(session.user))
}

/// `PATCH /v1/me`.
#[derive(Deserialize, ToSchema)]
pub struct UpdateMeRequest {
    pub display_name: String,
}

#[utoipa::path(patch, path = "/v1/me", tag = "accounts", security(("bearer" = [])),
    request_body = UpdateMeRequest,
    responses((status = 200, body = User), (status = 400, body = ErrorBody)))]
pub async fn update_me(
    State(app): App,
    Authed(session): Authed,
    ApiJson(request): ApiJson<UpdateMeRequest>,
) -> ApiResult<User> {
    Ok(Json(
        app.core
            .set_display_name(&session, &request.display_name)
            .await?,
    ))
}

#[utoipa::path(get, path = "/v1/devices", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = DeviceList), (status = 401, body = ErrorBody)))]
pub async fn devices(State(app): App, Authed(session): Authed) -> ApiResult<DeviceList> {
    Ok(Json(app.core.devices(&session).await?))
}

#[utoipa::path(delete, path = "/v1/devices/{device_id}", tag = "accounts", security(("bearer" = [])),
    params(("device_id" = u64, Path)),
    responses((status = 200, body = Empty), (status = 404, body = ErrorBody)))]
pub async fn revoke_device(
    State(app): App,
    Authed(session): Authed,
    ApiPath(device_id): ApiPath<DeviceId>,
) -> ApiResult<Empty> {
    app.core.revoke_device(&session, device_id).await?;
    app.hub.close_device(device_id, CloseReason::Revoked);
    Ok(Json(Empty {}))
}

#[utoipa::path(get, path = "/v1/users/{username}", tag = "accounts", security(("bearer" = [])),
    params(("username" = String, Path)),
    responses((status = 200, body = User), (status = 404, body = ErrorBody)))]
pub async fn lookup_user(
    State(app): App,
    Authed(session): Authed,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<User> {
    Ok(Json(app.core.lookup_user(&session, &username).await?))
}

#[utoipa::path(get, path = "/v1/users/by-id/{user_id}", tag = "accounts", security(("bearer" = [])),
    params(("user_id" = u64, Path)),
    responses((status = 200, body = User), (status = 404, body = ErrorBody)))]
pub async fn lookup_user_by_id(
    State(app): App,
    Authed(session): Authed,
    ApiPath(user_id): ApiPath<UserId>,
) -> ApiResult<User> {
    Ok(Json(app.core.lookup_user_by_id(&session, user_id).await?))
}

#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])),
    responses((status = 200, body = ConversationList), (status = 401, body = ErrorBody)))]
pub async fn conversations(
    State(app): App,
    Authed(session): Authed,
) -> ApiResult<ConversationList> {
    Ok(Json(app.core.conversations(&session).await?))
}

#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])),
    request_body = CreateConversationRequest,
    responses((status = 200, body = Conversation), (status = 404, body = ErrorBody)))]
pub async fn create_conversation(
    State(app): App,
    Authed(session): Authed,
    ApiJson(request): ApiJson<CreateConversationRequest>,
) -> ApiResult<Conversation> {
    let conversation = match request {
        CreateConversationRequest::Direct { user_id } => {
            app.core.create_direct(&session, user_id).await?
        }
        CreateConversationRequest::Group { title, member_ids } => {
            app.core.create_group(&session, &title, &member_ids).await?
        }
    };
    Ok(Json(conversation))
}

#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = u64, Path)),
    responses((status = 200, body = Conversation), (status = 403, body = ErrorBody, description = "not_member")))]
pub async fn conversation(
    State(app): App,
    Authed(session): Authed,
    ApiPath(id): ApiPath<ConversationId>,
) -> ApiResult<Conversation> {
    Ok(Json(app.core.conversation(&session, id).await?))
}

#[utoipa::path(patch, path = "/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = u64, Path)), request_body = SetTitleRequest,
    responses((status = 200, body = Conversation), (status = 403, body = ErrorBody)))]
pub async fn set_title(
    State(app): App,
    Authed(session): Authed,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(request): ApiJson<SetTitleRequest>,
) -> ApiResult<Conversation> {
    Ok(Json(
        app.core.set_title(&session, id, &request.title).await?,
    ))
}

/// Query of `GET /v1/conversations/{id}/messages`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only messages with a smaller `seq` (newest first, returned ascending).
    pub before: Option<Seq>,
    /// Only messages with a larger `seq` (oldest first).
    pub after: Option<Seq>,
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = u64, Path), HistoryQuery),
    responses((status = 200, body = HistoryPage), (status = 403, body = ErrorBody)))]
pub async fn history(
    State(app): App,
    Authed(session): Authed,
    ApiPath(id): ApiPath<ConversationId>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> ApiResult<HistoryPage> {
    Ok(Json(
        app.core
            .history(&session, id, query.before, query.after, query.limit)
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(("id" = u64, Path)), request_body = SendRequest,
    responses((status = 200, body = Ack), (status = 403, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn send(
    State(app): App,
    Authed(session): Authed,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(request): ApiJson<SendRequest>,
) -> ApiResult<Ack> {
    app.limiters.send(session.user.id)?;
    let started = std::time::Instant::now();
    let ack = app
        .core
        .send(
            &session,
            id,
            request.client_msg_id,
            request.content,
            request.reply_to,
        )
        .await?;
    app.metrics
        .send_ack_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(Json(ack))
}

#[utoipa::path(post, path = "/v1/conversations/{id}/members", tag = "conversations", security(("bearer" = [])),
    params(("id" = u64, Path)), request_body = AddMembersRequest,
    responses((status = 200, body = Conversation),
              (status = 403, body = ErrorBody, description = "not_member, forbidden"),
              (status = 404, body = ErrorBody, description = "not_found: a user id is unknown or disabled")))]
pub async fn add_members(
    State(app): App,
    Authed(session): Authed,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(request): ApiJson<AddMembersRequest>,
) -> ApiResult<Conversation> {
    Ok(Json(
        app.core
            .add_members(&session, id, &request.user_ids)
            .await?,
    ))
}

#[utoipa::path(delete, path = "/v1/conversations/{id}/members/{user_id}", tag = "conversations",
    security(("bearer" = [])), params(("id" = u64, Path), ("user_id" = u64, Path)),
    responses((status = 200, body = Conversation),
              (status = 403, body = ErrorBody, description = "not_member, forbidden"),
              (status = 404, body = ErrorBody, description = "not_found: the target is not a current member"),
              (status = 409, body = ErrorBody, description = "conflict: your own id as the owner of a group with others in it (a leave)")))]
pub async fn remove_member(
    State(app): App,
    Authed(session): Authed,
    ApiPath((id, user_id)): ApiPath<(ConversationId, UserId)>,
) -> ApiResult<Conversation> {
    Ok(Json(app.core.remove_member(&session, id, user_id).await?))
}

#[utoipa::path(put, path = "/v1/conversations/{id}/members/{user_id}/role", tag = "conversations",
    security(("bearer" = [])), params(("id" = u64, Path), ("user_id" = u64, Path)),
    request_body = SetRoleRequest,
    responses((status = 200, body = Conversation),
              (status = 403, body = ErrorBody, description = "not_member, forbidden"),
              (status = 404, body = ErrorBody, description = "not_found: the target is not a current member"),
              (status = 409, body = ErrorBody, description = "conflict: the target is yourself")))]
pub async fn set_role(
    State(app): App,
    Authed(session): Authed,
    ApiPath((id, user_id)): ApiPath<(ConversationId, UserId)>,
    ApiJson(request): ApiJson<SetRoleRequest>,
) -> ApiResult<Conversation> {
    Ok(Json(
        app.core
            .set_role(&session, id, user_id, request.role)
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/conversations/{id}/leave", tag = "conversations", security(("bearer" = [])),
    params(("id" = u64, Path)),
    responses((status = 200, body = Empty),
              (status = 403, body = ErrorBody, description = "not_member; forbidden: a direct conversation"),
              (status = 409, body = ErrorBody, description = "conflict: the owner, with others still members")))]
pub async fn leave(
    State(app): App,
    Authed(session): Authed,
    ApiPath(id): ApiPath<ConversationId>,
) -> ApiResult<Empty> {
    app.core.leave(&session, id).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(post, path = "/v1/conversations/{id}/markers", tag = "messages", security(("bearer" = [])),
    params(("id" = u64, Path)), request_body = MarkRequest,
    responses((status = 200, body = Receipt), (status = 403, body = ErrorBody, description = "not_member"),
              (status = 429, body = ErrorBody, description = "rate_limited: the budget `send` spends too")))]
pub async fn mark(
    State(app): App,
    Authed(session): Authed,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(request): ApiJson<MarkRequest>,
) -> ApiResult<Receipt> {
    app.limiters.send(session.user.id)?;
    Ok(Json(
        app.core
            .mark(&session, id, request.delivered, request.read)
            .await?,
    ))
}

/// Query of `GET /v1/sync`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// The cursor of the last page applied; 0 the first time.
    pub cursor: Pos,
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/sync", tag = "messages", security(("bearer" = [])),
    params(SyncQuery),
    responses((status = 200, body = SyncPage), (status = 401, body = ErrorBody)))]
pub async fn sync(
    State(app): App,
    Authed(session): Authed,
    ApiQuery(query): ApiQuery<SyncQuery>,
) -> ApiResult<SyncPage> {
    Ok(Json(
        app.core.sync(&session, query.cursor, query.limit).await?,
    ))
}
