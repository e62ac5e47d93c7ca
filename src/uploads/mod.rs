//! CSV and Excel imports: reading a file into typed rows ([`rows`]) and the
//! worker that applies them ([`worker`]).

pub mod format;
pub mod rows;
pub mod worker;

pub use worker::UploadWorker;
