//! DataLoaders for relation fields, created per request so that nothing is
//! cached across callers.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::db::Db;
use crate::entity::{product, user};

pub struct ProductLoader(Db);
pub struct UserLoader(Db);

impl Loader<Uuid> for ProductLoader {
    type Value = product::Model;
    type Error = Arc<sea_orm::DbErr>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = product::Entity::find()
            .filter(product::Column::Id.is_in(keys.iter().copied()))
            .all(self.0.conn())
            .await
            .map_err(Arc::new)?;
        Ok(rows.into_iter().map(|p| (p.id, p)).collect())
    }
}

impl Loader<Uuid> for UserLoader {
    type Value = user::Model;
    type Error = Arc<sea_orm::DbErr>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = user::Entity::find()
            .filter(user::Column::Id.is_in(keys.iter().copied()))
            .all(self.0.conn())
            .await
            .map_err(Arc::new)?;
        Ok(rows.into_iter().map(|u| (u.id, u)).collect())
    }
}

pub struct Loaders {
    pub products: DataLoader<ProductLoader>,
    pub users: DataLoader<UserLoader>,
}

impl Loaders {
    pub fn new(db: &Db) -> Self {
        Self {
            products: DataLoader::new(ProductLoader(db.clone()), tokio::spawn),
            users: DataLoader::new(UserLoader(db.clone()), tokio::spawn),
        }
    }
}
