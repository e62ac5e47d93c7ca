//! Every GraphQL error leaves with an `extensions.code`, chosen by the
//! error's kind, never by its message:
//! - errors raised by the service layer carry their code already
//!   ([`crate::error::AppError::code`], through `gql` in `context.rs`);
//! - errors of the request itself (it does not parse, does not validate
//!   against the schema, its variables do not fit, its operation cannot be
//!   chosen) carry no path: they are the client's, `BAD_USER_INPUT`;
//! - during execution, async-graphql raises errors of its own only for
//!   argument values it cannot coerce, and those carry no source:
//!   `BAD_USER_INPUT` too;
//! - any other error without a code has a source: a resolver failed in a way
//!   nobody mapped. It is `INTERNAL`, logged with its message (inside the
//!   request's span, so with its request id) and shown as "internal error".

use async_graphql::{ErrorExtensions, PathSegment, Response, ServerError, Value};

/// What kind of error a codeless one is (see the module docs).
fn default_code(err: &ServerError) -> &'static str {
    if err.path.is_empty() || err.source.is_none() {
        "BAD_USER_INPUT"
    } else {
        "INTERNAL"
    }
}

fn existing_code(err: &ServerError) -> Option<&str> {
    match err.extensions.as_ref().and_then(|e| e.get("code")) {
        Some(Value::String(code)) => Some(code),
        Some(_) => Some("INTERNAL"),
        None => None,
    }
}

/// Gives every error its code (see the module docs).
pub fn ensure(errors: &mut [ServerError]) {
    for err in errors {
        if existing_code(err).is_some() {
            continue;
        }
        let code = default_code(err);
        if code == "INTERNAL" {
            tracing::error!(error = %err.message, path = ?err.path, "internal error in a resolver");
            err.message = "internal error".into();
        }
        err.extensions
            .get_or_insert_with(Default::default)
            .set("code", code);
    }
}

/// The `extensions.code` an error has or will get.
pub fn of(err: &ServerError) -> &str {
    existing_code(err).unwrap_or_else(|| default_code(err))
}

/// A service error as a GraphQL response of one coded error, `data` null;
/// `field` is its path when it ends a field's stream.
pub fn error_response(error: crate::error::AppError, field: Option<&str>) -> Response {
    let error = error.extend();
    let mut errors = vec![ServerError {
        message: error.message,
        source: None,
        locations: Vec::new(),
        path: field
            .map(|f| vec![PathSegment::Field(f.to_string())])
            .unwrap_or_default(),
        extensions: error.extensions,
    }];
    ensure(&mut errors);
    Response::from_errors(errors)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_graphql::{PathSegment, ServerError};

    use super::ensure;

    fn error(message: &str, path: &[&str], source: bool) -> ServerError {
        let mut e = ServerError::new(message, None);
        e.path = path
            .iter()
            .map(|p| PathSegment::Field(p.to_string()))
            .collect();
        if source {
            e.source = Some(Arc::new(std::io::Error::other("cause")));
        }
        e
    }

    fn code(e: &ServerError) -> String {
        match e.extensions.as_ref().and_then(|x| x.get("code")) {
            Some(async_graphql::Value::String(s)) => s.clone(),
            other => panic!("no code: {other:?}"),
        }
    }

    #[test]
    fn a_codeless_resolver_error_with_a_source_is_internal_and_its_message_hidden() {
        let mut errors = vec![error("connection reset by peer", &["product"], true)];
        ensure(&mut errors);
        assert_eq!(code(&errors[0]), "INTERNAL");
        assert_eq!(errors[0].message, "internal error");
    }

    #[test]
    fn request_errors_and_engine_coercion_errors_are_the_clients_whatever_they_say() {
        let mut errors = vec![
            // Request errors have no path, whatever their words.
            error("anything at all", &[], false),
            // The engine's own coercion errors have a path and no source.
            error("any words", &["products"], false),
        ];
        ensure(&mut errors);
        assert!(errors.iter().all(|e| code(e) == "BAD_USER_INPUT"));
        assert_eq!(errors[1].message, "any words");
    }

    #[test]
    fn an_existing_code_is_kept() {
        let mut e = error("no", &["x"], true);
        e.extensions
            .get_or_insert_with(Default::default)
            .set("code", "FORBIDDEN");
        let mut errors = vec![e];
        ensure(&mut errors);
        assert_eq!(code(&errors[0]), "FORBIDDEN");
    }
}
