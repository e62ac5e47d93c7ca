//! GraphQL operation metrics: each operation counted and timed by type and
//! (bounded) name, and each error counted by its `extensions.code`. The
//! pipeline calls these around every operation, when metrics are on.

use std::time::Duration;

use async_graphql::ServerError;

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
        crate::metrics::graphql_error(kind, series.label(), super::codes::of(err));
    }
}
