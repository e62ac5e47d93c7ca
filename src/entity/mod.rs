//! SeaORM entities, one file per table. GraphQL never exposes these directly.

pub mod alert;
pub mod audit_log;
pub mod notification_settings;
pub mod product;
pub mod recovery_code;
pub mod refresh_token;
pub mod stock_movement;
pub mod upload_job;
pub mod upload_job_error;
pub mod upload_job_file;
pub mod user;
