//! DataLoaders for relation fields, created per request so that nothing is
//! cached across callers.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::db::Db;
use crate::entity::{product, stock_movement, user};
use crate::error::AppError;
use crate::service::{Page, PageRequest, stock};

pub struct ProductLoader(Db);
pub struct UserLoader(Db);
/// Movements of many products in one go, keyed by product and page.
pub struct MovementPageLoader(Db);

/// One product's page of movements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MovementPageKey {
    pub product_id: Uuid,
    pub first: u64,
    pub after: Option<Uuid>,
}

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

impl Loader<MovementPageKey> for MovementPageLoader {
    type Value = Page<stock_movement::Model>;
    type Error = Arc<AppError>;

    async fn load(
        &self,
        keys: &[MovementPageKey],
    ) -> Result<HashMap<MovementPageKey, Self::Value>, Self::Error> {
        // Keys of one request normally share one page shape; group by it.
        let mut shapes: HashMap<(u64, Option<Uuid>), Vec<Uuid>> = HashMap::new();
        for k in keys {
            shapes
                .entry((k.first, k.after))
                .or_default()
                .push(k.product_id);
        }
        let mut out = HashMap::with_capacity(keys.len());
        for ((first, after), ids) in shapes {
            let page = PageRequest {
                first,
                after,
                with_total: true,
            };
            let pages = stock::list_for_products(self.0.conn(), &ids, page)
                .await
                .map_err(Arc::new)?;
            for (product_id, rows) in pages {
                out.insert(
                    MovementPageKey {
                        product_id,
                        first,
                        after,
                    },
                    rows,
                );
            }
        }
        Ok(out)
    }
}

/// Per request, with a cache: a key is loaded once per request at most.
pub struct Loaders {
    pub products: DataLoader<ProductLoader, HashMapCache>,
    pub users: DataLoader<UserLoader, HashMapCache>,
    pub movements: DataLoader<MovementPageLoader, HashMapCache>,
}

impl Loaders {
    pub fn new(db: &Db) -> Self {
        Self {
            products: DataLoader::with_cache(
                ProductLoader(db.clone()),
                tokio::spawn,
                HashMapCache::default(),
            ),
            users: DataLoader::with_cache(
                UserLoader(db.clone()),
                tokio::spawn,
                HashMapCache::default(),
            ),
            movements: DataLoader::with_cache(
                MovementPageLoader(db.clone()),
                tokio::spawn,
                HashMapCache::default(),
            ),
        }
    }

    /// For a WebSocket connection: it lives for hours, so nothing is cached
    /// across the events it delivers.
    pub fn uncached(db: &Db) -> Self {
        let loaders = Self::new(db);
        loaders.products.enable_all_cache(false);
        loaders.users.enable_all_cache(false);
        loaders.movements.enable_all_cache(false);
        loaders
    }
}
