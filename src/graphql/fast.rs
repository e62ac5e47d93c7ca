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
//! Kept answers: a query that reads one product by SKU and selects only
//! the product's own scalar fields (`productBySku(sku: $s) { id sku stock }`,
//! the commonest read there is) has an answer that is a function of the
//! query text, its variables and that one product row. Its serialized answer
//! is kept beside the row it was rendered from, and given again while the
//! product read cache ([`crate::cache::ProductCache`]) still holds that very
//! row: the answer is exactly as fresh as a resolver reading the cache. The
//! caller is authenticated, and its account checked, on every request.
//!
//! Anything else takes the full schema unchanged: text that does not parse
//! (its error is the full schema's to report), an operation that cannot be
//! chosen, a subscription over HTTP, a multipart upload, and queries and
//! mutations over a WebSocket.

use std::sync::Arc;
use std::time::Instant;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::{Name, Request, Response, Value};
use axum::body::Bytes;

use super::loaders::Loaders;
use super::{AppSchema, RequestContext, authenticated, limits, observe};
use crate::cache::ProductCache;
use crate::entity::product;
use crate::service::products;
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
    /// Where the SKU comes from, when the answer depends on one product row
    /// and nothing else.
    one_product: Option<SkuSource>,
}

/// The `sku` argument of a one-product query.
enum SkuSource {
    Literal(String),
    Variable(Name),
}

/// The fields of `Product` that are read from its row alone.
const ROW_FIELDS: &[&str] = &[
    "__typename",
    "id",
    "sku",
    "name",
    "description",
    "category",
    "unit",
    "stock",
    "lowStockThreshold",
    "version",
    "archivedAt",
    "createdAt",
    "updatedAt",
    "isLowStock",
];

/// What a `POST /graphql` gets back.
pub enum Answer {
    /// Serialized already (a kept answer, or one just kept).
    Serialized(Bytes),
    Fresh(Response),
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
    /// otherwise hands it back, with its data ([`with_data`]), for the full
    /// schema.
    pub async fn execute(
        &self,
        state: &AppState,
        context: RequestContext,
        request: Request,
    ) -> Result<Answer, Request> {
        let found = self.operation(&request);
        let caller = match (&found, context.bearer()) {
            (Some(_), Some(_)) => Some(authenticated(state, &context).await),
            _ => None,
        };
        let qualified = match found {
            Some((_, OperationType::Subscription, _)) => None,
            _ if !request.uploads.is_empty() => None,
            // A restricted account takes the full schema, whose extension
            // refuses its fields one by one.
            Some(_)
                if caller
                    .as_ref()
                    .is_some_and(|user| user.as_ref().is_ok_and(|u| u.restriction.is_some())) =>
            {
                None
            }
            found => found,
        };
        let Some((prepared, kind, name)) = qualified else {
            return Err(with_data(request, state, context));
        };
        let series = self
            .0
            .metrics
            .then(|| crate::metrics::operation_series(name.as_deref()));
        let start = Instant::now();
        // A one-product query of a caller allowed to read products: its
        // answer may be kept, or given again.
        let reader = caller.is_some_and(|user| {
            user.is_ok_and(|u| {
                crate::service::require_role(u.role, super::products::PRODUCT_READER).is_ok()
            })
        });
        let one_product = prepared
            .one_product
            .as_ref()
            .filter(|_| reader)
            .and_then(|source| one_product(state, source, &request));
        if let Some((cache, key, _, product)) = &one_product
            && let Some(body) = cache.answer(key, product)
        {
            if let Some(series) = series {
                observe::finished(&series, operation_kind(kind), start.elapsed(), &[]);
                crate::metrics::answer_reused();
            }
            return Ok(Answer::Serialized(body));
        }
        let mut request = with_data(request, state, context);
        request.set_parsed_query(prepared.doc.clone());
        let response = self.0.schema.execute(request).await;
        if let Some(series) = series {
            let elapsed = start.elapsed();
            observe::finished(&series, operation_kind(kind), elapsed, &response.errors);
        }
        match one_product {
            Some((cache, key, sku, product)) if response.is_ok() => {
                match serde_json::to_vec(&response) {
                    Ok(body) => {
                        let body = Bytes::from(body);
                        cache.keep_answer(&sku, key, product, body.clone());
                        Ok(Answer::Serialized(body))
                    }
                    Err(_) => Ok(Answer::Fresh(response)),
                }
            }
            _ => Ok(Answer::Fresh(response)),
        }
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
            observe::started(
                &crate::metrics::operation_series(name.as_deref()),
                "subscription",
            );
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
            one_product: one_product_source(&doc),
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

/// `request` with what its resolvers need: the caller and the request's
/// DataLoaders. Added only when the request is run (a kept answer needs
/// neither).
fn with_data(request: Request, state: &AppState, context: RequestContext) -> Request {
    request.data(context).data(Loaders::new(&state.db))
}

/// For a one-product query whose product the read cache holds: the cache,
/// the key of the answer (operation name, variables, query text), the SKU's
/// key, and the row the cache holds now (read before the execution, so that
/// an answer rendered from it is kept only if it is still the cached row).
fn one_product<'a>(
    state: &'a AppState,
    source: &SkuSource,
    request: &Request,
) -> Option<(&'a ProductCache, String, String, Arc<product::Model>)> {
    let sku = match source {
        SkuSource::Literal(sku) => sku.as_str(),
        SkuSource::Variable(name) => match request.variables.get(name)? {
            Value::String(sku) => sku.as_str(),
            _ => return None,
        },
    };
    let cache = state.db.bus().product_cache()?;
    let sku = products::sku_key(sku);
    let product = cache.get_by_sku(&sku)?;
    let variables = serde_json::to_string(&request.variables).ok()?;
    // Each part's length first: no two requests share a key unless their
    // operation name, variables and text are the same.
    let name = request.operation_name.as_deref();
    let key = format!(
        "{}:{}|{}:{}|{}",
        name.map_or(-1, |n| n.len() as i64),
        name.unwrap_or_default(),
        variables.len(),
        variables,
        request.query
    );
    if key.len() > MAX_KEPT_QUERY {
        return None;
    }
    Some((cache, key, sku, product))
}

/// Where the SKU of a one-product query comes from: a document of one
/// query, without fragments or directives, whose only root field is
/// `productBySku(sku: ...)` selecting fields of the product's row and no
/// others. `None` for any other document.
fn one_product_source(doc: &ExecutableDocument) -> Option<SkuSource> {
    if !doc.fragments.is_empty() {
        return None;
    }
    let op = match &doc.operations {
        DocumentOperations::Single(op) => op,
        DocumentOperations::Multiple(ops) if ops.len() == 1 => ops.values().next()?,
        DocumentOperations::Multiple(_) => return None,
    };
    let op = &op.node;
    if op.ty != OperationType::Query || !op.directives.is_empty() {
        return None;
    }
    let [root] = op.selection_set.node.items.as_slice() else {
        return None;
    };
    let Selection::Field(field) = &root.node else {
        return None;
    };
    let field = &field.node;
    let [(arg, value)] = field.arguments.as_slice() else {
        return None;
    };
    if field.name.node != "productBySku"
        || arg.node != "sku"
        || !field.directives.is_empty()
        || !row_fields_only(&field.selection_set.node)
    {
        return None;
    }
    match &value.node {
        async_graphql_value::Value::String(sku) => Some(SkuSource::Literal(sku.clone())),
        async_graphql_value::Value::Variable(name) => Some(SkuSource::Variable(name.clone())),
        _ => None,
    }
}

/// Every selection a plain field of the product's row.
fn row_fields_only(selection: &SelectionSet) -> bool {
    !selection.items.is_empty()
        && selection.items.iter().all(|item| match &item.node {
            Selection::Field(field) => {
                let field = &field.node;
                field.arguments.is_empty()
                    && field.directives.is_empty()
                    && field.selection_set.node.items.is_empty()
                    && ROW_FIELDS.contains(&field.name.node.as_str())
            }
            _ => false,
        })
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
        (DocumentOperations::Single(op), None) => Some((op.node.ty, None)),
        // async-graphql refuses a name for an anonymous operation.
        (DocumentOperations::Single(_), Some(_)) => None,
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
