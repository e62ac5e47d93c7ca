//! The browser pages compiled into the binary, each a client of the public
//! API with no endpoint of its own: GraphiQL at `/graphql` (for a browser
//! asking for a page) and the admin console at `/console`, which a browser
//! opening `/` is sent to. Their files come from `assets/<page>/` (see each
//! README), gzipped for a browser that takes it; API answers are not
//! compressed: they are small, and a compressed answer beside a token is
//! what BREACH-style attacks read.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

use super::HttpState;
use super::negotiate::{accepted, header_str, quality, wants_html};
use crate::error::AppError;

/// A page: its files, and the content policy of its `index.html`.
pub trait Page: RustEmbed + Send + Sync + 'static {
    const CSP: &'static str;
}

/// GraphiQL's code, styles and the sign-in page, pinned npm builds vendored
/// in `assets/graphiql/`.
#[derive(RustEmbed)]
#[folder = "assets/graphiql/"]
#[exclude = "packages"]
#[exclude = "README.md"]
pub struct Graphiql;

impl Page for Graphiql {
    /// Its code and styles come from this server only (no inline script),
    /// it talks to this origin over HTTP and WebSocket, and nothing may
    /// frame it.
    const CSP: &'static str = "default-src 'none'; script-src 'self'; \
style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
}

/// The admin console: our modules, Preact + htm vendored, two catalogues.
#[derive(RustEmbed)]
#[folder = "assets/console/"]
#[exclude = "packages"]
#[exclude = "README.md"]
pub struct Console;

impl Page for Console {
    /// Like GraphiQL's, without inline styles or fonts (its QR code is a
    /// `data:` image).
    const CSP: &'static str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; \
frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
}

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/graphql/assets/{file}", get(file::<Graphiql>))
        .route("/", get(root))
        .route("/console", get(index::<Console>))
        .route("/console/", get(index::<Console>))
        .route("/console/{*file}", get(file::<Console>))
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
}

/// A page's `index.html`, under its content policy (and, like every answer,
/// `Cache-Control: no-store`).
pub async fn index<P: Page>() -> Response {
    match P::get("index.html") {
        Some(page) => (
            [(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(P::CSP),
            )],
            Html(page.data.into_owned()),
        )
            .into_response(),
        None => AppError::not_found("this page is not in this build").into_response(),
    }
}

/// Another file of a page, with an ETag of its contents and
/// `Cache-Control: no-cache`, so a browser revalidates it and an upgrade
/// never serves a stale script. `LICENSES` is plain text.
async fn file<P: Page>(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = P::get(&file).filter(|_| file != "index.html") else {
        return AppError::not_found(format!("no asset {file}")).into_response();
    };
    let etag = format!(
        "\"{}\"",
        crate::digest::hex(&asset.metadata.sha256_hash()[..16])
    );
    let mut response =
        if header_str(&headers, header::IF_NONE_MATCH).as_deref() == Some(etag.as_str()) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let content_type = if file == "LICENSES" {
                "text/plain; charset=utf-8".to_string()
            } else {
                asset.metadata.mimetype().to_string()
            };
            (
                [(header::CONTENT_TYPE, content_type)],
                asset.data.into_owned(),
            )
                .into_response()
        };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `/`: a browser, which names `text/html` in `Accept` (and prefers it to
/// JSON), is sent to the console; anything else (curl's `*/*`, a probe with
/// no `Accept`) learns where the API is.
async fn root(headers: HeaderMap) -> Response {
    if quality(&accepted(&headers), "text/html", &[]) > 0.0 && wants_html(&headers) {
        return Redirect::to("/console").into_response();
    }
    AppError::not_found("nothing here: the API is at /graphql, health at /api/v1/health")
        .into_response()
}
