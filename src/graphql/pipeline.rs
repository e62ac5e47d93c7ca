//! The one pipeline every GraphQL operation takes, over `POST /graphql`,
//! `GET /graphql` and the WebSocket alike, around the one schema
//! ([`super::schema`]). In order:
//! 1. the document: found by the SHA-256 of its text in a bounded cache of
//!    parsed documents, or parsed and kept; a request that sends only the
//!    hash (Apollo's automatic persisted queries) is answered from the
//!    same cache, or told `PERSISTED_QUERY_NOT_FOUND`;
//! 2. the operation, chosen as async-graphql chooses it; GET runs queries
//!    only, HTTP runs no subscription;
//! 3. the bounds: root fields, depth outside introspection, and the nesting
//!    of introspection's lists ([`super::document`]); complexity is the
//!    schema's own;
//! 4. the caller, resolved once from the bearer token. An error while
//!    resolving refuses the operation; a restricted account is refused every
//!    root field its restriction closes; introspection follows
//!    `GRAPHQL_INTROSPECTION`;
//! 5. the execution, with the caller, the request and its DataLoaders as
//!    data; a subscription joins the group of subscribers that share its
//!    answers ([`super::fanout`]), which checks each of them;
//! 6. error codes ([`super::codes`]) and operation metrics
//!    ([`super::observe`]).
//!
//! A request refused in steps 1 to 3 (or by validation inside the schema)
//! is a request error: it has no `data`, and HTTP may answer it with 4xx.

use std::any::TypeId;
use std::sync::Arc;
use std::time::Instant;

use async_graphql::futures_util::stream::BoxStream;
use async_graphql::parser::types::OperationType;
use async_graphql::{Data, Request, Response, Value};
use axum::http::StatusCode;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::context::RequestContext;
use super::document::{Document, MAX_INTROSPECTION_LISTS, Operation};
use super::fanout::{Audience, Fanout, GroupKey, Payload, Rendered, Subscriber};
use super::loaders::Loaders;
use super::schema::{self, AppSchema};
use super::subscriptions::DeliveryClock;
use super::{codes, observe};
use crate::config::Introspection;
use crate::error::AppError;
use crate::service::Caller;
use crate::state::AppState;

/// Documents kept, by a generous estimate of their size (a parsed document
/// holds a node, a position and often a name per token of its text): an
/// attacker sending endless distinct queries evicts entries, it cannot grow
/// the cache.
const DOCUMENT_CACHE_BYTES: u64 = 16 << 20;
const DOCUMENT_BYTES_PER_QUERY_BYTE: usize = 16;
/// Longer query texts are parsed every time rather than kept.
const MAX_KEPT_QUERY: usize = 64 << 10;

/// How an operation arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Post,
    Get,
    Socket,
}

/// What the pipeline answers.
pub enum Answer {
    /// Run (or refused per field): a GraphQL response with `data`.
    Executed(Response),
    /// Refused before execution: errors only, and the HTTP status that
    /// says so where the client accepts it. `malformed`: not a GraphQL
    /// request at all (no query, a bad persisted query, a method that may
    /// not run it), refused with 4xx whatever the media type.
    Refused {
        response: Response,
        status: StatusCode,
        malformed: bool,
    },
}

impl Answer {
    pub fn response(&self) -> &Response {
        match self {
            Self::Executed(response) | Self::Refused { response, .. } => response,
        }
    }
}

/// Cloned per request: one reference count.
#[derive(Clone)]
pub struct Pipeline(Arc<Inner>);

struct Inner {
    schema: AppSchema,
    state: AppState,
    fanout: Fanout,
    documents: moka::sync::Cache<[u8; 32], Arc<Document>>,
}

/// An operation ready to run.
struct Ready {
    request: Request,
    kind: &'static str,
    series: Option<Arc<crate::metrics::OperationSeries>>,
    /// For a subscription: what decides its answer, and its subscriber.
    shared: Option<(GroupKey, Caller, String)>,
}

/// Why an operation does not run.
struct Refusal {
    error: AppError,
    /// A request error (no `data`, 4xx) rather than a refusal of the
    /// caller (`data: null`, 200).
    status: Option<StatusCode>,
    malformed: bool,
    kind: &'static str,
    series: Option<Arc<crate::metrics::OperationSeries>>,
}

impl Refusal {
    fn request(error: AppError) -> Self {
        Self {
            error,
            status: Some(StatusCode::BAD_REQUEST),
            malformed: false,
            kind: "invalid",
            series: None,
        }
    }

    fn malformed(error: AppError, status: StatusCode) -> Self {
        Self {
            status: Some(status),
            malformed: true,
            ..Self::request(error)
        }
    }

    fn of(mut self, op: &Operation, series: Option<Arc<crate::metrics::OperationSeries>>) -> Self {
        self.kind = op.kind_label();
        self.series = series;
        self
    }

    fn caller(error: AppError) -> Self {
        Self {
            status: None,
            ..Self::request(error)
        }
    }
}

impl Pipeline {
    pub fn new(state: AppState) -> Self {
        Self(Arc::new(Inner {
            schema: schema::build(state.clone()),
            fanout: Fanout::new(state.clone()),
            state,
            documents: moka::sync::Cache::builder()
                .max_capacity(DOCUMENT_CACHE_BYTES)
                .weigher(|_, doc: &Arc<Document>| {
                    u32::try_from(doc.source_len * DOCUMENT_BYTES_PER_QUERY_BYTE)
                        .unwrap_or(u32::MAX)
                })
                .build(),
        }))
    }

    /// Runs an HTTP operation of the caller `context`.
    pub async fn execute_http(
        &self,
        request: Request,
        context: RequestContext,
        transport: Transport,
    ) -> Answer {
        let start = Instant::now();
        let bearer = context.bearer().map(str::to_owned);
        let request = request.data(context);
        match self.prepare(request, bearer.as_deref(), transport).await {
            Ok(ready) => {
                let mut response = self.0.schema.execute(ready.request).await;
                codes::ensure(&mut response.errors);
                let answer = if is_request_error(&response) {
                    Answer::Refused {
                        response,
                        status: StatusCode::BAD_REQUEST,
                        malformed: false,
                    }
                } else {
                    Answer::Executed(response)
                };
                if let Some(series) = &ready.series {
                    let errors = &answer.response().errors;
                    observe::finished(series, ready.kind, start.elapsed(), errors);
                }
                answer
            }
            Err(refusal) => self.refused(refusal, start),
        }
    }

    /// The answer to a refused operation, recorded.
    fn refused(&self, refusal: Refusal, start: Instant) -> Answer {
        let response = codes::error_response(refusal.error, None);
        if self.0.state.config.metrics_enabled {
            let series = refusal
                .series
                .unwrap_or_else(crate::metrics::invalid_operation);
            observe::finished(&series, refusal.kind, start.elapsed(), &response.errors);
        }
        match refusal.status {
            Some(status) => Answer::Refused {
                response,
                status,
                malformed: refusal.malformed,
            },
            None => Answer::Executed(response),
        }
    }

    /// Steps 1 to 4 of the module docs: the request ready to execute, with
    /// its data, or why it is refused.
    async fn prepare(
        &self,
        mut request: Request,
        bearer: Option<&str>,
        transport: Transport,
    ) -> Result<Ready, Refusal> {
        let (hash, document) = self.document(&request)?;
        let op = document
            .operation(request.operation_name.as_deref())
            .map_err(Refusal::request)?;
        let config = &self.0.state.config;
        let series = config
            .metrics_enabled
            .then(|| crate::metrics::operation_series(op.name.as_deref()));
        let refuse = |refusal: Refusal| Err(refusal.of(op, series.clone()));
        if let Err(refused) = check_transport(op, transport) {
            return refuse(refused);
        }
        if let Err(error) = check_bounds(op, config) {
            return refuse(Refusal::request(error));
        }
        let caller = match self
            .0
            .state
            .auth
            .caller(&self.0.state.services, bearer)
            .await
        {
            Ok(caller) => caller,
            Err(error) => return refuse(Refusal::caller(error)),
        };
        if let Err(error) = permit(&caller, op, config.graphql_introspection) {
            return refuse(Refusal::caller(error));
        }
        let kind = op.kind_label();
        if let Some(series) = &series {
            observe::started(series, kind);
        }
        let db = &self.0.state.services;
        // A subscription lives on: its relation fields read afresh.
        let loaders = if op.kind == OperationType::Subscription {
            Loaders::uncached(db)
        } else {
            Loaders::new(db)
        };
        request.set_parsed_query(document.doc.clone());
        let shared = (op.kind == OperationType::Subscription).then(|| {
            let key = GroupKey {
                document: hash,
                operation: request.operation_name.clone(),
                variables: serde_json::to_string(&request.variables).unwrap_or_default(),
                audience: Audience::of(&caller),
            };
            let field = op.root_fields.first().cloned().unwrap_or_default();
            (key, caller.clone(), field)
        });
        Ok(Ready {
            request: request.data(caller).data(loaders),
            kind,
            series,
            shared,
        })
    }

    /// The parsed document of `request`, from the cache when it is there
    /// (by the hash of its text, or by the hash a persisted query sends).
    fn document(&self, request: &Request) -> Result<([u8; 32], Arc<Document>), Refusal> {
        let malformed = |error| Refusal::malformed(error, StatusCode::BAD_REQUEST);
        let persisted = persisted_hash(request).map_err(malformed)?;
        let hash: [u8; 32] = match (&persisted, request.query.is_empty()) {
            (Some(hash), true) => {
                let doc = self.0.documents.get(hash).ok_or_else(|| {
                    Refusal::request(AppError::PersistedQueryNotFound(
                        "PersistedQueryNotFound".into(),
                    ))
                })?;
                return Ok((*hash, doc));
            }
            (Some(hash), false) => {
                let actual: [u8; 32] = Sha256::digest(request.query.as_bytes()).into();
                if &actual != hash {
                    return Err(malformed(AppError::bad_input(
                        "extensions.persistedQuery.sha256Hash",
                        "provided sha does not match query",
                    )));
                }
                actual
            }
            (None, true) => {
                return Err(malformed(AppError::bad_input(
                    "query",
                    "the request carries no query (send `query`, or a persisted query's hash)",
                )));
            }
            (None, false) => Sha256::digest(request.query.as_bytes()).into(),
        };
        if let Some(doc) = self.0.documents.get(&hash) {
            crate::metrics::document_cache(true);
            return Ok((hash, doc));
        }
        crate::metrics::document_cache(false);
        let doc = Document::parse(&request.query)
            .map(Arc::new)
            .map_err(|message| Refusal::request(AppError::bad_input("query", message)))?;
        if request.query.len() <= MAX_KEPT_QUERY {
            self.0.documents.insert(hash, Arc::clone(&doc));
        }
        Ok((hash, doc))
    }
}

/// GET runs queries only (a link or a prefetch must not write), and
/// subscriptions are served over the WebSocket.
fn check_transport(op: &Operation, transport: Transport) -> Result<(), Refusal> {
    match (transport, op.kind) {
        (Transport::Get, OperationType::Query) | (Transport::Socket, _) => Ok(()),
        (Transport::Get, _) => Err(Refusal::malformed(
            AppError::bad_input(
                "method",
                format!("a {} cannot be sent with GET: use POST", op.kind_label()),
            ),
            StatusCode::METHOD_NOT_ALLOWED,
        )),
        (Transport::Post, OperationType::Subscription) => {
            Err(Refusal::request(AppError::bad_input(
                "subscription",
                "subscriptions are served over WebSocket at /graphql/ws",
            )))
        }
        (Transport::Post, _) => Ok(()),
    }
}

/// The root-field, depth and introspection bounds.
fn check_bounds(op: &Operation, config: &crate::config::Config) -> Result<(), AppError> {
    let bounds = [
        (
            op.root_selections,
            config.graphql_max_root_fields,
            "root fields selected (aliases included)",
            "GRAPHQL_MAX_ROOT_FIELDS",
        ),
        (
            op.depth,
            config.graphql_max_depth,
            "fields nested",
            "GRAPHQL_MAX_DEPTH",
        ),
        (
            op.introspection_lists,
            MAX_INTROSPECTION_LISTS,
            "introspection lists (fields, inputFields, interfaces, possibleTypes) nested",
            "graphql-js's bound",
        ),
    ];
    match bounds.into_iter().find(|(n, max, ..)| n > max) {
        Some((n, max, what, setting)) => Err(AppError::bad_input(
            "query",
            format!("{n} {what}; at most {max} are allowed ({setting})"),
        )),
        None => Ok(()),
    }
}

/// The caller's restriction and the introspection setting, for every root
/// field of the operation.
fn permit(caller: &Caller, op: &Operation, introspection: Introspection) -> Result<(), AppError> {
    for field in &op.root_fields {
        caller.permit(field)?;
    }
    if op.introspects {
        match introspection {
            Introspection::Everyone => {}
            Introspection::SignedIn => {
                caller.user().map_err(|_| {
                    AppError::Unauthenticated(
                        "introspection needs a signed-in caller (GRAPHQL_INTROSPECTION=signed-in)"
                            .into(),
                    )
                })?;
            }
            Introspection::Nobody => {
                return Err(AppError::Forbidden(
                    "introspection is turned off (GRAPHQL_INTROSPECTION=nobody)".into(),
                ));
            }
        }
    }
    Ok(())
}

/// The hash of an Apollo persisted query (`extensions.persistedQuery`).
fn persisted_hash(request: &Request) -> Result<Option<[u8; 32]>, AppError> {
    let Some(persisted) = request.extensions.0.get("persistedQuery") else {
        return Ok(None);
    };
    let bad = |message: &str| AppError::bad_input("extensions.persistedQuery", message);
    let Value::Object(fields) = persisted else {
        return Err(bad("persistedQuery must be an object"));
    };
    if fields.get("version") != Some(&Value::from(1)) {
        return Err(bad("only persistedQuery version 1 is supported"));
    }
    let Some(Value::String(hex)) = fields.get("sha256Hash") else {
        return Err(bad("persistedQuery needs a sha256Hash"));
    };
    crate::digest::from_hex::<32>(hex)
        .map(Some)
        .ok_or_else(|| bad("sha256Hash must be 64 hexadecimal digits"))
}

/// An answer streamed over the socket: coded, and counted by its series.
fn finished(
    mut response: Response,
    series: Option<&crate::metrics::OperationSeries>,
    kind: &'static str,
    start: Instant,
) -> Response {
    codes::ensure(&mut response.errors);
    if let Some(series) = series {
        observe::finished(series, kind, start.elapsed(), &response.errors);
    }
    response
}

/// Refused by the schema before execution (validation, variables): no
/// data, and every error without a path.
fn is_request_error(response: &Response) -> bool {
    response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// WebSocket operations (graphql-transport-ws and graphql-ws).
impl Pipeline {
    /// The answers to one operation sent over a socket, whose session data
    /// holds the connection's [`RequestContext`]: a shared subscription's
    /// answers come from its group, already serialized; anything else is
    /// this socket's own.
    pub fn operate(&self, request: Request, session: Arc<Data>) -> BoxStream<'static, Payload> {
        let this = self.clone();
        // Boxed, so that the preparation's state is freed once it is done
        // instead of staying inline in the stream for the subscription's life.
        futures_util::stream::once(Box::pin(async move {
            let start = Instant::now();
            let bearer = session
                .get(&TypeId::of::<RequestContext>())
                .and_then(|data| data.downcast_ref::<RequestContext>())
                .and_then(|context| context.bearer().map(str::to_owned));
            match this
                .prepare(request, bearer.as_deref(), Transport::Socket)
                .await
            {
                Ok(Ready {
                    request,
                    kind,
                    series,
                    shared: Some((key, caller, field)),
                }) => {
                    // Executed once for its group, by a task of the group's.
                    let schema = this.0.schema.clone();
                    let execute = move |opening| {
                        let clock = DeliveryClock::default();
                        let request = request.data(opening).data(clock.clone());
                        schema
                            .execute_stream(request)
                            .map(move |response| {
                                let response = finished(response, series.as_deref(), kind, start);
                                let (published, cursor) = clock.take();
                                Rendered::new(&response, published, cursor)
                            })
                            .boxed()
                    };
                    let subscriber = Subscriber {
                        caller,
                        bearer: bearer.unwrap_or_default(),
                        session,
                        field,
                    };
                    this.0.fanout.subscribe(subscriber, key, execute)
                }
                Ok(ready) => {
                    let (kind, series) = (ready.kind, ready.series);
                    this.0
                        .schema
                        .execute_stream_with_session_data(ready.request, session)
                        .map(move |response| {
                            Payload::own(finished(response, series.as_deref(), kind, start))
                        })
                        .boxed()
                }
                Err(refusal) => {
                    let answer = this.refused(refusal, start);
                    let response = match answer {
                        Answer::Executed(response) | Answer::Refused { response, .. } => response,
                    };
                    futures_util::stream::once(std::future::ready(Payload::own(response))).boxed()
                }
            }
        }))
        .flatten()
        .boxed()
    }
}
