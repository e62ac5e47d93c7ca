//! The HTTP fast path: operations over `POST /graphql` run on a second
//! schema with no extensions, their documents parsed once and kept.
//!
//! With any extension installed, async-graphql sends every field of every
//! response through the extension chain (a registry lookup and a boxed
//! future per extension and field), and it parses every request's text with
//! its pest grammar. Profiles of the two catalogue reads put both at about a
//! fifth of the CPU time. What the extensions do is done here once per
//! request instead, with the same rules:
//! - the root-field bound ([`limits::root_fields_error`]) is checked when a
//!   document is first parsed and kept with it;
//! - account restrictions: a request whose bearer belongs to a restricted
//!   account goes to the full schema, whose extension refuses the fields
//!   (the user is authenticated once here and the result reused by the
//!   resolvers, as before);
//! - operation metrics are recorded around the execution, by the same series
//!   ([`crate::metrics::operation_series`]).
//!
//! WebSocket subscriptions run here too ([`FastPath::subscription`]): each
//! event goes through the fields of every subscriber's selection, so the
//! extension chain cost once per event and subscriber.
//!
//! Anything else takes the full schema unchanged: text that does not parse
//! (its error is the full schema's to report), an operation that cannot be
//! chosen, a subscription over HTTP, a multipart upload, and queries and
//! mutations over a WebSocket.

use std::sync::Arc;
use std::time::Instant;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Request, Response};

use super::{AppSchema, RequestContext, authenticated, limits};
use crate::state::AppState;

/// Documents kept, by a generous estimate of their size (a parsed document
/// holds a node, a position and often a name per token of its text): an
/// attacker sending endless distinct queries evicts entries, it cannot grow
/// the cache.
const DOCUMENT_CACHE_BYTES: u64 = 8 << 20;
const DOCUMENT_BYTES_PER_QUERY_BYTE: usize = 16;
/// Longer query texts are parsed every time rather than kept.
const MAX_KEPT_QUERY: usize = 16 << 10;

/// A parsed document and what the extensions would have found in it.
struct Prepared {
    doc: ExecutableDocument,
    /// Some operation selects more root fields than allowed.
    too_broad: bool,
}

/// Which schema a request runs on.
pub enum Route {
    Fast(Request),
    Full(Request),
}

/// Cloned with every request's state: one reference count.
#[derive(Clone)]
pub struct FastPath(Arc<Inner>);

struct Inner {
    schema: AppSchema,
    documents: moka::sync::Cache<Arc<str>, Arc<Prepared>>,
    max_root_fields: usize,
    metrics: bool,
}

impl FastPath {
    pub fn new(schema: AppSchema, max_root_fields: usize, metrics: bool) -> Self {
        Self(Arc::new(Inner {
            schema,
            documents: moka::sync::Cache::builder()
                .max_capacity(DOCUMENT_CACHE_BYTES)
                .weigher(|query: &Arc<str>, _| {
                    u32::try_from(query.len() * DOCUMENT_BYTES_PER_QUERY_BYTE).unwrap_or(u32::MAX)
                })
                .build(),
            max_root_fields,
            metrics,
        }))
    }

    /// Runs `request` (of the caller `context`) here when it qualifies;
    /// otherwise hands it back, with `context` in its data, for the full
    /// schema.
    pub async fn execute(
        &self,
        state: &AppState,
        context: RequestContext,
        request: Request,
    ) -> Result<Response, Request> {
        let qualified = match self.operation(&request) {
            Some((_, OperationType::Subscription, _)) => None,
            _ if !request.uploads.is_empty() => None,
            // A restricted account takes the full schema, whose extension
            // refuses its fields one by one.
            Some(_)
                if context.bearer().is_some()
                    && authenticated(state, &context)
                        .await
                        .is_ok_and(|user| user.restriction.is_some()) =>
            {
                None
            }
            found => found,
        };
        let mut request = request.data(context);
        let Some((prepared, kind, name)) = qualified else {
            return Err(request);
        };
        let series = self
            .0
            .metrics
            .then(|| crate::metrics::operation_series(name.as_deref()));
        request.set_parsed_query(prepared.doc.clone());
        let start = Instant::now();
        let response = self.0.schema.execute(request).await;
        if let Some(series) = series {
            let kind = operation_kind(kind);
            series.record(kind, Some(start.elapsed()));
            for err in &response.errors {
                crate::metrics::graphql_error(kind, series.label(), super::error_code(err));
            }
        }
        Ok(response)
    }

    /// A WebSocket subscription, made ready for [`Self::schema`] when it
    /// qualifies, or handed back for the full schema. Subscriptions check
    /// account restrictions themselves when they start (they authenticate
    /// afresh), so they need no extension for it; queries and mutations
    /// over a WebSocket take the full schema.
    pub fn subscription(&self, mut request: Request) -> Route {
        let Some((prepared, OperationType::Subscription, name)) = self.operation(&request) else {
            return Route::Full(request);
        };
        if self.0.metrics {
            // A subscription's stream is not a request that ends: it is
            // counted when it starts.
            crate::metrics::operation_series(name.as_deref()).record("subscription", None);
        }
        request.set_parsed_query(prepared.doc.clone());
        Route::Fast(request)
    }

    /// The schema without extensions.
    pub fn schema(&self) -> &AppSchema {
        &self.0.schema
    }

    /// The kept document of `request` and the operation it runs, unless the
    /// full schema has to answer it (text that does not parse, too many
    /// root fields, an operation that cannot be chosen).
    fn operation(
        &self,
        request: &Request,
    ) -> Option<(Arc<Prepared>, OperationType, Option<String>)> {
        let prepared = self.prepare(&request.query)?;
        if prepared.too_broad {
            return None;
        }
        let (kind, name) = selected_operation(&prepared.doc, request.operation_name.as_deref())?;
        Some((prepared, kind, name))
    }

    /// The document of `query`, parsed once while it is kept.
    fn prepare(&self, query: &str) -> Option<Arc<Prepared>> {
        if let Some(p) = self.0.documents.get(query) {
            return Some(p);
        }
        let doc = async_graphql::parser::parse_query(query).ok()?;
        let prepared = Arc::new(Prepared {
            too_broad: limits::root_fields_error(&doc, self.0.max_root_fields).is_some(),
            doc,
        });
        if query.len() <= MAX_KEPT_QUERY {
            self.0
                .documents
                .insert(Arc::from(query), Arc::clone(&prepared));
        }
        Some(prepared)
    }
}

/// The label of an operation type.
pub fn operation_kind(ty: OperationType) -> &'static str {
    match ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

/// The operation a request runs, with its name: the named one when a name
/// is given, the only one otherwise. `None` when it cannot be chosen.
pub fn selected_operation(
    doc: &ExecutableDocument,
    wanted: Option<&str>,
) -> Option<(OperationType, Option<String>)> {
    // An anonymous operation is `Single`; named ones are `Multiple`, even
    // when there is one.
    match (&doc.operations, wanted) {
        (DocumentOperations::Single(op), _) => Some((op.node.ty, None)),
        (DocumentOperations::Multiple(ops), Some(name)) => ops
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(n, op)| (op.node.ty, Some(n.to_string()))),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops
            .iter()
            .next()
            .map(|(n, op)| (op.node.ty, Some(n.to_string()))),
        (DocumentOperations::Multiple(_), None) => None,
    }
}
