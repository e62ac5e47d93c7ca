//! Shared application state: cheap to clone, one per running application.

use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::db::Db;
use crate::limits::Limiters;
use crate::service::auth::{JwtKeys, UserCache};

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub jwt: Arc<JwtKeys>,
    pub limiters: Arc<Limiters>,
    pub users: Arc<UserCache>,
    pub started_at: Instant,
}

impl AppState {
    pub fn new(config: Config, db: Db) -> Self {
        Self {
            jwt: Arc::new(JwtKeys::new(&config)),
            limiters: Arc::new(Limiters::new(&config)),
            users: Arc::new(UserCache::new(config.auth_cache_ttl)),
            config: Arc::new(config),
            db,
            started_at: Instant::now(),
        }
    }
}
