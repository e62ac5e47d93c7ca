//! Upload jobs: the queue of CSV and Excel imports, their files and their
//! row errors.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum UploadJobs {
    Table,
    Id,
    Kind,
    Filename,
    Status,
    DryRun,
    ContentSha256,
    ContentBytes,
    TotalRows,
    ProcessedRows,
    SucceededRows,
    FailedRows,
    ResumeRow,
    Error,
    CancelRequested,
    LeaseToken,
    LeaseUntil,
    Attempts,
    CreatedBy,
    CreatedAt,
    StartedAt,
    FinishedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum UploadJobFiles {
    Table,
    JobId,
    Content,
}

#[derive(DeriveIden)]
enum UploadJobErrors {
    Table,
    Id,
    JobId,
    Row,
    ColumnName,
    Message,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(UploadJobs::Table)
                    .if_not_exists()
                    .col(pk_uuid(UploadJobs::Id))
                    .col(string_len(UploadJobs::Kind, 32).check((
                        "upload_jobs_kind_check",
                        Expr::col(UploadJobs::Kind).is_in(["PRODUCTS", "STOCK_MOVEMENTS"]),
                    )))
                    .col(string_len(UploadJobs::Filename, 255))
                    .col(string_len(UploadJobs::Status, 16).check((
                        "upload_jobs_status_check",
                        Expr::col(UploadJobs::Status).is_in([
                            "QUEUED",
                            "PROCESSING",
                            "COMPLETED",
                            "FAILED",
                            "CANCELLED",
                        ]),
                    )))
                    .col(boolean(UploadJobs::DryRun).default(false))
                    .col(string_len(UploadJobs::ContentSha256, 64))
                    .col(big_integer(UploadJobs::ContentBytes))
                    .col(integer_null(UploadJobs::TotalRows))
                    .col(integer(UploadJobs::ProcessedRows).default(0))
                    .col(integer(UploadJobs::SucceededRows).default(0))
                    .col(integer(UploadJobs::FailedRows).default(0))
                    // The first data row not yet applied: a new claim resumes there.
                    .col(integer(UploadJobs::ResumeRow).default(1))
                    .col(text_null(UploadJobs::Error))
                    .col(boolean(UploadJobs::CancelRequested).default(false))
                    .col(uuid_null(UploadJobs::LeaseToken))
                    .col(timestamp_with_time_zone_null(UploadJobs::LeaseUntil))
                    .col(integer(UploadJobs::Attempts).default(0))
                    .col(uuid_null(UploadJobs::CreatedBy))
                    .col(timestamp_with_time_zone(UploadJobs::CreatedAt))
                    .col(timestamp_with_time_zone_null(UploadJobs::StartedAt))
                    .col(timestamp_with_time_zone_null(UploadJobs::FinishedAt))
                    .col(timestamp_with_time_zone(UploadJobs::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("upload_jobs_created_by_fkey")
                            .from(UploadJobs::Table, UploadJobs::CreatedBy)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        // What the worker claims and the health figures count.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("upload_jobs_status_created_at_idx")
                    .table(UploadJobs::Table)
                    .col(UploadJobs::Status)
                    .col(UploadJobs::CreatedAt)
                    .to_owned(),
            )
            .await?;
        // One queued or running job per file, kind and mode: a file sent twice
        // answers the job already there.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS upload_jobs_active_file_key \
                 ON upload_jobs (content_sha256, kind, dry_run) \
                 WHERE status IN ('QUEUED', 'PROCESSING')",
            )
            .await?;
        // The bytes, apart from the job row so that listing jobs never reads
        // them; dropped after UPLOAD_RETENTION_DAYS.
        manager
            .create_table(
                Table::create()
                    .table(UploadJobFiles::Table)
                    .if_not_exists()
                    .col(uuid(UploadJobFiles::JobId).primary_key())
                    .col(blob(UploadJobFiles::Content))
                    .foreign_key(
                        ForeignKey::create()
                            .name("upload_job_files_job_id_fkey")
                            .from(UploadJobFiles::Table, UploadJobFiles::JobId)
                            .to(UploadJobs::Table, UploadJobs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UploadJobErrors::Table)
                    .if_not_exists()
                    .col(pk_uuid(UploadJobErrors::Id))
                    .col(uuid(UploadJobErrors::JobId))
                    .col(integer(UploadJobErrors::Row))
                    .col(string_len_null(UploadJobErrors::ColumnName, 64))
                    .col(text(UploadJobErrors::Message))
                    .foreign_key(
                        ForeignKey::create()
                            .name("upload_job_errors_job_id_fkey")
                            .from(UploadJobErrors::Table, UploadJobErrors::JobId)
                            .to(UploadJobs::Table, UploadJobs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("upload_job_errors_job_id_row_idx")
                    .table(UploadJobErrors::Table)
                    .col(UploadJobErrors::JobId)
                    .col(UploadJobErrors::Row)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            UploadJobErrors::Table.into_iden(),
            UploadJobFiles::Table.into_iden(),
            UploadJobs::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
