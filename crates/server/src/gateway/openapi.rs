//! The OpenAPI document of the REST API, generated from the handlers and types themselves.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::rest;

#[derive(OpenApi)]
#[openapi(
    info(title = "Natter REST API", description = "Accounts, conversations, history and sync. \
        Real-time events travel over the WebSocket at /v1/ws; see docs/protocol.md."),
    paths(
        rest::register, rest::login, rest::logout, rest::me, rest::update_me, rest::devices,
        rest::revoke_device, rest::lookup_user, rest::lookup_user_by_id, rest::conversations, rest::create_conversation,
        rest::conversation, rest::set_title, rest::history, rest::send, rest::add_members,
        rest::remove_member, rest::set_role, rest::leave, rest::mark, rest::sync
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /v1/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_route_and_schema() {
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = json["paths"].as_object().unwrap();
        for path in ["/v1/login", "/v1/sync", "/v1/conversations/{id}/messages"] {
            assert!(paths.contains_key(path), "{path} missing");
        }
        let schemas = json["components"]["schemas"].as_object().unwrap();
        for schema in ["Message", "Content", "SyncPage", "ErrorBody", "ErrorCode"] {
            assert!(schemas.contains_key(schema), "{schema} missing");
        }
    }

    #[test]
    fn path_parameters_are_in_the_path_and_the_rest_in_the_query() {
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for (path, operations) in json["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                let parameters = operation["parameters"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for parameter in parameters {
                    let name = parameter["name"].as_str().unwrap();
                    let in_path = path.contains(&format!("{{{name}}}"));
                    let place = if in_path { "path" } else { "query" };
                    assert_eq!(parameter["in"], place, "{method} {path}: {name}");
                    assert_eq!(
                        parameter["required"].as_bool(),
                        Some(in_path || name == "cursor"),
                        "{method} {path}: {name}"
                    );
                }
            }
        }
    }
}
