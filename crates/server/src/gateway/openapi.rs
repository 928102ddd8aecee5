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
    modifiers(&BearerAuth, &CommonErrors)
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

/// The errors any route may answer, beside those its handler lists: `400 invalid_request` (a
/// malformed path, query or body), `401 unauthorized` and `403 user_disabled` where a token is
/// needed, `413 frame_too_large` where there is a body, and `500 internal` (protocol.md §8.2,
/// §11).
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            ResponseBuilder::new()
                .description(description)
                .content("application/json", content)
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let mut common = vec![("400", "invalid_request: a malformed path, query or body")];
                if operation.security.is_some() {
                    common.push(("401", "unauthorized: no valid token"));
                    common.push(("403", "user_disabled: the account is disabled"));
                }
                if operation.request_body.is_some() {
                    common.push(("413", "frame_too_large: a body over frame_bytes_max"));
                }
                common.push(("500", "internal: a failure of the server, in its log"));
                for (status, description) in common {
                    let responses = &mut operation.responses.responses;
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| error(description).into());
                }
            }
        }
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

    /// Optional fields are absent when they have no value, never `null` (protocol.md §1); the one
    /// field sent as `null` is a `created` event's `title` (§7.3.1). Device.current is always sent.
    #[test]
    fn only_fields_sent_as_null_are_nullable() {
        fn nullable(value: &serde_json::Value, path: String, found: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    let null = |v: &serde_json::Value| v == "null" || v["type"] == "null";
                    let typed = map.get("type").and_then(|t| t.as_array());
                    let one_of = map.get("oneOf").and_then(|t| t.as_array());
                    if typed.is_some_and(|t| t.iter().any(null))
                        || one_of.is_some_and(|t| t.iter().any(null))
                    {
                        found.push(path.clone());
                    }
                    for (key, inner) in map {
                        nullable(inner, format!("{path}/{key}"), found);
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, inner) in items.iter().enumerate() {
                        nullable(inner, format!("{path}/{i}"), found);
                    }
                }
                _ => {}
            }
        }
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut found = Vec::new();
        nullable(&json["components"]["schemas"], String::new(), &mut found);
        assert_eq!(found, ["/SystemEvent/oneOf/0/properties/title"]);
        let device = &json["components"]["schemas"]["Device"]["required"];
        assert!(device.as_array().unwrap().contains(&"current".into()));
    }

    #[test]
    fn every_operation_lists_the_errors_any_route_may_answer() {
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let sync = &json["paths"]["/v1/sync"]["get"]["responses"];
        for status in ["200", "400", "401"] {
            assert!(sync.get(status).is_some(), "GET /v1/sync: {status}");
        }
        let send = &json["paths"]["/v1/conversations/{id}/messages"]["post"]["responses"];
        for status in ["400", "401", "403", "413", "429"] {
            assert!(send.get(status).is_some(), "POST messages: {status}");
        }
        let register = &json["paths"]["/v1/register"]["post"]["responses"];
        assert!(register.get("401").is_none(), "register needs no token");
    }

    /// Every status a route answers (protocol.md §5's error tables, through §8.2's statuses) is
    /// in the document, beside the common ones.
    #[test]
    fn every_operation_lists_the_statuses_its_command_answers() {
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let expected: &[(&str, &str, &[&str])] = &[
            (
                "/v1/register",
                "post",
                &["201", "400", "409", "413", "429", "500"],
            ),
            (
                "/v1/login",
                "post",
                &["200", "400", "401", "403", "413", "429", "500"],
            ),
            ("/v1/logout", "post", &["200", "400", "401", "403", "500"]),
            ("/v1/me", "get", &["200", "400", "401", "403", "500"]),
            (
                "/v1/me",
                "patch",
                &["200", "400", "401", "403", "413", "500"],
            ),
            ("/v1/devices", "get", &["200", "400", "401", "403", "500"]),
            (
                "/v1/devices/{device_id}",
                "delete",
                &["200", "400", "401", "403", "404", "500"],
            ),
            (
                "/v1/users/{username}",
                "get",
                &["200", "400", "401", "403", "404", "500"],
            ),
            (
                "/v1/users/by-id/{user_id}",
                "get",
                &["200", "400", "401", "403", "404", "500"],
            ),
            (
                "/v1/conversations",
                "get",
                &["200", "400", "401", "403", "500"],
            ),
            (
                "/v1/conversations",
                "post",
                &["200", "400", "401", "403", "404", "413", "500"],
            ),
            (
                "/v1/conversations/{id}",
                "get",
                &["200", "400", "401", "403", "500"],
            ),
            (
                "/v1/conversations/{id}",
                "patch",
                &["200", "400", "401", "403", "413", "500"],
            ),
            (
                "/v1/conversations/{id}/messages",
                "get",
                &["200", "400", "401", "403", "500"],
            ),
            (
                "/v1/conversations/{id}/messages",
                "post",
                &["200", "400", "401", "403", "413", "429", "500"],
            ),
            (
                "/v1/conversations/{id}/members",
                "post",
                &["200", "400", "401", "403", "404", "413", "500"],
            ),
            (
                "/v1/conversations/{id}/members/{user_id}",
                "delete",
                &["200", "400", "401", "403", "404", "409", "500"],
            ),
            (
                "/v1/conversations/{id}/members/{user_id}/role",
                "put",
                &["200", "400", "401", "403", "404", "409", "413", "500"],
            ),
            (
                "/v1/conversations/{id}/leave",
                "post",
                &["200", "400", "401", "403", "409", "500"],
            ),
            (
                "/v1/conversations/{id}/markers",
                "post",
                &["200", "400", "401", "403", "413", "429", "500"],
            ),
            ("/v1/sync", "get", &["200", "400", "401", "403", "500"]),
        ];
        let mut listed = 0;
        for (path, method, statuses) in expected {
            let responses = json["paths"][path][method]["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} missing"));
            let mut found: Vec<&str> = responses.keys().map(String::as_str).collect();
            found.sort_unstable();
            assert_eq!(found, *statuses, "{method} {path}");
            listed += 1;
        }
        let operations: usize = json["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(listed, operations, "every operation is checked");
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
