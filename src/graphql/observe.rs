//! GraphQL operation metrics: each operation counted and timed by type and
//! (bounded) name, and each error counted by its `extensions.code`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, Response, ServerError, ServerResult, Variables};

use crate::metrics::OperationSeries;

/// Counts an operation as it starts when it is a subscription: its stream
/// is not a request that ends.
pub fn started(series: &OperationSeries, kind: &'static str) {
    if kind == "subscription" {
        series.record(kind, None);
    }
}

/// Records a finished operation: counted and timed (a subscription was
/// counted when it started), and its errors by code.
pub fn finished(
    series: &OperationSeries,
    kind: &'static str,
    elapsed: Duration,
    errors: &[ServerError],
) {
    if kind != "subscription" {
        series.record(kind, Some(elapsed));
    }
    for err in errors {
        crate::metrics::graphql_error(kind, series.label(), super::error_code(err));
    }
}

pub struct OperationMetrics;

impl ExtensionFactory for OperationMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationMetricsExtension::default())
    }
}

/// One request's operation, as the later hooks learn it.
#[derive(Default)]
struct OperationMetricsExtension {
    name: Mutex<Option<String>>,
    operation: Mutex<Option<(&'static str, Arc<OperationSeries>)>>,
}

#[async_trait::async_trait]
impl Extension for OperationMetricsExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Ok(mut name) = self.name.lock() {
            name.clone_from(&request.operation_name);
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let wanted = self.name.lock().ok().and_then(|n| n.clone());
        let found = super::fast::selected_operation(&doc, wanted.as_deref())
            .map(|(ty, name)| (super::fast::operation_kind(ty), name));
        if let Some((kind, name)) = found {
            let series = crate::metrics::operation_series(name.as_deref());
            started(&series, kind);
            if let Ok(mut op) = self.operation.lock() {
                *op = Some((kind, series));
            }
        }
        Ok(doc)
    }

    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let start = Instant::now();
        let response = next.run(ctx).await;
        let (kind, series) = self
            .operation
            .lock()
            .ok()
            .and_then(|mut op| op.take())
            .unwrap_or_else(|| ("invalid", crate::metrics::invalid_operation()));
        finished(&series, kind, start.elapsed(), &response.errors);
        response
    }
}
