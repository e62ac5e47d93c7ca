//! Account restrictions at the root of every operation: a user whose
//! password expired, or whose role requires two-factor login they have not
//! turned on, may only use the fields that lead out of it (see
//! [`crate::service::Restriction::allows`]).

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo,
};
use async_graphql::{ServerError, ServerResult, Value};

use super::{RequestContext, authenticated};
use crate::state::AppState;

pub struct AccountRestrictions;

impl ExtensionFactory for AccountRestrictions {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AccountRestrictions)
    }
}

#[async_trait::async_trait]
impl Extension for AccountRestrictions {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        if info.path_node.parent.is_none()
            && let (Some(state), Some(req)) = (
                ctx.data_opt::<AppState>(),
                ctx.data_opt::<RequestContext>(),
            )
            && req.bearer().is_some()
            // An invalid token is the resolver's to report (or to ignore, for
            // public fields).
            && let Ok(user) = authenticated(state, req).await
            && let Err(err) = user.check_allowed(info.name)
        {
            let mut e = ServerError::new(err.to_string(), None);
            e.path = vec![async_graphql::PathSegment::Field(
                info.alias.unwrap_or(info.name).to_string(),
            )];
            e.extensions
                .get_or_insert_with(Default::default)
                .set("code", err.code());
            return Err(e);
        }
        next.run(ctx, info).await
    }
}
