//! Request bodies of the REST API under `/v1/` that are not commands already.

use serde::{Deserialize, Serialize};

use crate::types::*;

/// `POST /v1/conversations`: a direct conversation with one user, or a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CreateConversationRequest {
    Direct {
        user_id: UserId,
    },
    Group {
        title: String,
        #[serde(default, deserialize_with = "crate::frames::empty_unless_given")]
        member_ids: Vec<UserId>,
    },
}

/// `POST /v1/conversations/{id}/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct SendRequest {
    pub client_msg_id: String,
    pub content: Content,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(nullable = false))]
    pub reply_to: Option<Seq>,
}

/// `POST /v1/conversations/{id}/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AddMembersRequest {
    pub user_ids: Vec<UserId>,
}

/// `POST /v1/conversations/{id}/markers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct MarkRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(nullable = false))]
    pub delivered: Option<Seq>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(nullable = false))]
    pub read: Option<Seq>,
}

/// `PATCH /v1/conversations/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct SetTitleRequest {
    pub title: String,
}

/// `PUT /v1/conversations/{id}/members/{user_id}/role`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct SetRoleRequest {
    pub role: Role,
}
