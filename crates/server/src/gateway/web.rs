//! The web app at `/`: every file of `web/` and the JavaScript SDK (`clients/js/src/`, under
//! `/sdk/`), embedded at compile time and served with its content type. Nothing is fetched from
//! anywhere else: the Content-Security-Policy says so too.
//!
//! The list of files is explicit: a file added to `web/` or to the SDK must be added here.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const MANIFEST: &str = "application/manifest+json";

/// Assets are not fingerprinted: browsers revalidate them on each load (a 304 costs a few bytes).
const CACHE_CONTROL: &str = "no-cache";
/// Scripts, styles, images and sockets from this server only; no frames, no plugins.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file and the URL path it is served at.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../", $file)),
        }
    };
}

/// Every file served, by URL path.
pub static ASSETS: &[Asset] = &[
    asset!("/", "web/index.html", HTML),
    asset!("/style.css", "web/style.css", CSS),
    asset!("/app.js", "web/app.js", JS),
    asset!("/ui.js", "web/ui.js", JS),
    asset!("/format.js", "web/format.js", JS),
    asset!("/icons.js", "web/icons.js", JS),
    asset!("/favicon.svg", "web/favicon.svg", SVG),
    asset!(
        "/manifest.webmanifest",
        "web/manifest.webmanifest",
        MANIFEST
    ),
    asset!("/sdk/index.js", "clients/js/src/index.js", JS),
    asset!("/sdk/client.js", "clients/js/src/client.js", JS),
    asset!("/sdk/connection.js", "clients/js/src/connection.js", JS),
    asset!("/sdk/rest.js", "clients/js/src/rest.js", JS),
    asset!("/sdk/order.js", "clients/js/src/order.js", JS),
    asset!("/sdk/backoff.js", "clients/js/src/backoff.js", JS),
    asset!("/sdk/storage.js", "clients/js/src/storage.js", JS),
    asset!("/sdk/errors.js", "clients/js/src/errors.js", JS),
    asset!("/sdk/util.js", "clients/js/src/util.js", JS),
    asset!("/sdk/types.js", "clients/js/src/types.js", JS),
];

/// The routes of every embedded file.
pub fn routes() -> Router<Arc<AppState>> {
    let mut router = Router::new();
    for (index, asset) in ASSETS.iter().enumerate() {
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(index, &headers) }),
        );
    }
    router
}

/// A strong validator per asset, computed once: FNV-1a of the bytes.
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let hash = asset.body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                });
                HeaderValue::from_str(&format!("\"{hash:016x}\""))
                    .unwrap_or(HeaderValue::from_static("\"0\""))
            })
            .collect()
    })
}

fn serve(index: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = etags()[index].clone();
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|tag| tag.trim() == "*" || tag.trim().as_bytes() == etag.as_bytes())
        });
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        ),
        (header::ETAG, etag),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (StatusCode::OK, headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_once_with_a_content_type() {
        let mut paths: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ASSETS.len());
        for asset in ASSETS {
            assert!(!asset.body.is_empty(), "{} is empty", asset.path);
            assert!(!asset.content_type.is_empty());
        }
        assert_eq!(ASSETS[0].path, "/");
    }

    #[test]
    fn the_web_app_loads_nothing_from_elsewhere() {
        for asset in ASSETS.iter().filter(|a| !a.path.starts_with("/sdk/")) {
            let text = String::from_utf8_lossy(asset.body);
            for needle in ["http://", "https://", "//cdn", "fonts.googleapis"] {
                let outside = text
                    .match_indices(needle)
                    .any(|(i, _)| !text[i..].starts_with("http://www.w3.org/2000/svg"));
                assert!(!outside, "{} refers to {needle}", asset.path);
            }
        }
    }

    #[test]
    fn every_file_of_the_app_and_the_sdk_is_listed() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for dir in ["web", "clients/js/src"] {
            let entries = std::fs::read_dir(root.join(dir)).expect("the folder exists");
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let served = [".html", ".js", ".css", ".svg", ".webmanifest"];
                if !served.iter().any(|ext| name.ends_with(ext)) {
                    continue;
                }
                let body = std::fs::read(entry.path()).expect("readable");
                assert!(
                    ASSETS.iter().any(|a| a.body == body.as_slice()),
                    "{dir}/{name} is not in ASSETS"
                );
            }
        }
    }

    #[test]
    fn a_matching_etag_gets_not_modified() {
        let mut headers = HeaderMap::new();
        let response = serve(0, &headers);
        assert_eq!(response.status(), StatusCode::OK);
        let etag = response.headers()[header::ETAG].clone();
        headers.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve(0, &headers).status(), StatusCode::NOT_MODIFIED);
    }
}
