//! The admin console at `/console`: a client of the public API (GraphQL over
//! HTTP, graphql-ws for live data) whose files are compiled into the binary
//! from `assets/console/` (see its README). It has no endpoint of its own.

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::graphql::{embedded_asset, embedded_page, wants_html};
use crate::error::AppError;

#[derive(rust_embed::RustEmbed)]
#[folder = "assets/console/"]
#[exclude = "packages"]
#[exclude = "README.md"]
struct ConsoleAssets;

/// `/console`: the page, under the console's content policy.
pub async fn page() -> Response {
    embedded_page::<ConsoleAssets>(super::CONSOLE_CSP)
}

/// `/console/{file}`: its scripts, styles and catalogues.
pub async fn asset(
    axum::extract::Path(file): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    embedded_asset::<ConsoleAssets>(&file, &headers)
}

/// `/`: a browser asking for a page is sent to the console; anything else
/// learns where the API is.
pub async fn root(headers: HeaderMap) -> Response {
    if wants_html(&headers) && accepts_html_explicitly(&headers) {
        return Redirect::to("/console").into_response();
    }
    AppError::not_found("nothing here: the API is at /graphql, health at /api/v1/health")
        .into_response()
}

/// A client that sends no Accept header (curl, a probe) is not a browser.
fn accepts_html_explicitly(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}
