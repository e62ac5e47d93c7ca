//! Role guards, as annotated in the contract.

use async_graphql::{Context, Guard};

use super::context::{current_user, gql};
use crate::entity::user::Role;
use crate::service::require_role;

/// Allows the given role and every more powerful one.
pub struct RoleGuard(pub Role);

impl Guard for RoleGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let user = current_user(ctx).map_err(gql)?;
        require_role(user.role, self.0).map_err(gql)
    }
}
