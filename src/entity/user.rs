use sea_orm::entity::prelude::*;

/// Roles, most to least powerful.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    async_graphql::Enum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Role {
    #[sea_orm(string_value = "ADMIN")]
    Admin,
    #[sea_orm(string_value = "MANAGER")]
    Manager,
    #[sea_orm(string_value = "STAFF")]
    Staff,
    #[sea_orm(string_value = "VIEWER")]
    Viewer,
}

impl Role {
    /// Higher is more powerful.
    pub fn rank(self) -> u8 {
        match self {
            Role::Admin => 3,
            Role::Manager => 2,
            Role::Staff => 1,
            Role::Viewer => 0,
        }
    }

    /// True when this role may do what `required` may.
    pub fn includes(self, required: Role) -> bool {
        self.rank() >= required.rank()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: Role,
    pub is_active: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub last_login_at: Option<DateTimeUtc>,
    /// None only for rows older than the column; read through
    /// [`Model::password_set_at`].
    pub password_changed_at: Option<DateTimeUtc>,
    pub failed_login_count: i32,
    pub locked_until: Option<DateTimeUtc>,
    /// Encrypted (see `service::two_factor`); never leaves the server.
    pub totp_secret: Option<String>,
    pub totp_enabled_at: Option<DateTimeUtc>,
    pub totp_last_step: Option<i64>,
}

impl Model {
    pub fn two_factor_enabled(&self) -> bool {
        self.totp_enabled_at.is_some()
    }

    pub fn password_set_at(&self) -> DateTimeUtc {
        self.password_changed_at.unwrap_or(self.created_at)
    }

    /// The end of a lock still in force at `now`.
    pub fn locked_at(&self, now: DateTimeUtc) -> Option<DateTimeUtc> {
        self.locked_until.filter(|until| *until > now)
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
