//! What a request's headers ask for: the media types of `Accept` with their
//! quality, whether a browser wants a page, a header as text. Shared by the
//! GraphQL endpoint (answer media type, GraphiQL) and the pages (`/`).

use axum::http::{HeaderMap, header};

pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

pub fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// A browser navigating to the page: `text/html` (or any type) accepted at
/// least as well as the JSON types it names.
pub fn wants_html(headers: &HeaderMap) -> bool {
    let accept = accepted(headers);
    if accept.is_empty() {
        return true;
    }
    let html = quality(&accept, "text/html", &["text/*", "*/*"]);
    let json =
        quality(&accept, "application/json", &[]).max(quality(&accept, GRAPHQL_RESPONSE_JSON, &[]));
    html > 0.0 && html >= json
}

/// The quality `accept` gives `media`: its own entry's, else the best of
/// the `wildcards` that are listed.
pub fn quality(accept: &[(String, f32)], media: &str, wildcards: &[&str]) -> f32 {
    let exact = accept.iter().find(|(m, _)| m == media).map(|(_, q)| *q);
    exact.unwrap_or_else(|| {
        accept
            .iter()
            .filter(|(m, _)| wildcards.contains(&m.as_str()))
            .map(|(_, q)| *q)
            .fold(0.0, f32::max)
    })
}

/// The media types of the `Accept` header with their quality, lowercased.
pub fn accepted(headers: &HeaderMap) -> Vec<(String, f32)> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let media = parts.next()?.trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (!media.is_empty()).then_some((media, q))
        })
        .collect()
}
