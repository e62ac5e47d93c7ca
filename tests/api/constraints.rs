//! Unique violations are told apart by the index the database names, and
//! every key the code answers (`stockroom::error::*_KEY`) is a real unique
//! index of the migrated schema, with the columns the code expects.

use sea_orm::{ConnectionTrait, Statement};
use stockroom::error::{
    MOVEMENTS_IDEMPOTENCY_KEY, PRODUCTS_SKU_KEY, UPLOAD_ACTIVE_FILE_KEY, USERS_EMAIL_KEY,
    UniqueKey, Violated, violated_unique,
};

use crate::helpers::{is_postgres, spawn_app};

const KEYS: [&UniqueKey; 4] = [
    &PRODUCTS_SKU_KEY,
    &USERS_EMAIL_KEY,
    &UPLOAD_ACTIVE_FILE_KEY,
    &MOVEMENTS_IDEMPOTENCY_KEY,
];

/// The unique indexes of `table`: name, columns (empty for an expression
/// index) as the database's catalogue gives them.
async fn unique_indexes(conn: &impl ConnectionTrait, table: &str) -> Vec<(String, Vec<String>)> {
    let backend = conn.get_database_backend();
    let mut out = Vec::new();
    if is_postgres() {
        let rows = conn
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                "SELECT i.relname::text AS name, \
                   COALESCE(array_agg(a.attname::text ORDER BY k.n) FILTER (WHERE a.attname IS NOT NULL), '{}'::text[]) AS columns \
                 FROM pg_index x \
                 JOIN pg_class i ON i.oid = x.indexrelid \
                 JOIN pg_class t ON t.oid = x.indrelid \
                 CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, n) \
                 LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum AND k.attnum > 0 \
                 WHERE t.relname = $1 AND x.indisunique AND NOT x.indisprimary \
                 GROUP BY i.relname",
                [table.into()],
            ))
            .await
            .unwrap();
        for row in rows {
            let name: String = row.try_get("", "name").unwrap();
            let columns: Vec<String> = row.try_get("", "columns").unwrap();
            out.push((name, columns));
        }
    } else {
        let pragma = |sql: String| async move {
            conn.query_all_raw(Statement::from_string(backend, sql))
                .await
                .unwrap()
        };
        for index in pragma(format!("PRAGMA index_list('{table}')")).await {
            let unique: i32 = index.try_get("", "unique").unwrap();
            let origin: String = index.try_get("", "origin").unwrap();
            if unique == 0 || origin == "pk" {
                continue;
            }
            let name: String = index.try_get("", "name").unwrap();
            let info = pragma(format!("PRAGMA index_info('{name}')")).await;
            // An expression has no column name (cid -2).
            let columns = info
                .iter()
                .filter_map(|c| c.try_get::<Option<String>>("", "name").unwrap())
                .collect();
            out.push((name, columns));
        }
    }
    out
}

#[tokio::test]
async fn every_unique_key_is_an_index_of_the_schema_with_its_columns() {
    let app = spawn_app().await;
    let conn = app.state.services.conn();
    for key in KEYS {
        let indexes = unique_indexes(conn, key.table).await;
        // SQLite reports an index on columns by its columns (its name may be
        // SQLite's own, `sqlite_autoindex_...`, for a UNIQUE column).
        let by_columns = !is_postgres() && !key.expression;
        let found = indexes.iter().find(|(name, columns)| {
            if by_columns {
                columns == key.columns
            } else {
                name == key.name
            }
        });
        let Some((_, columns)) = found else {
            panic!(
                "{} is not a unique index of {}: {indexes:?}",
                key.name, key.table
            );
        };
        if key.expression {
            assert!(
                columns.is_empty(),
                "{} is on columns {columns:?}, not an expression",
                key.name
            );
        } else {
            assert_eq!(columns, &key.columns, "{}", key.name);
        }
    }
}

#[tokio::test]
async fn a_violation_names_the_index_it_broke_and_only_that_one() {
    use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel};
    use stockroom::entity::{product, user};
    let app = spawn_app().await;
    let conn = app.state.services.conn();

    // A second user with the admin's email: a column index.
    let mut twin = user::Entity::find().one(conn).await.unwrap().unwrap();
    twin.id = uuid::Uuid::now_v7();
    let err = twin
        .into_active_model()
        .reset_all()
        .insert(conn)
        .await
        .unwrap_err();
    let expected = if is_postgres() {
        Violated::Index(USERS_EMAIL_KEY.name.into())
    } else {
        Violated::Columns(vec!["users.email".into()])
    };
    assert_eq!(violated_unique(&err), Some(expected));

    // A second product with a SKU that differs only in case: an index on
    // an expression, named on both databases.
    let admin = app.admin_token().await;
    app.create_product(&admin, "CASE-1", 0).await;
    let mut twin = product::Entity::find().one(conn).await.unwrap().unwrap();
    twin.id = uuid::Uuid::now_v7();
    twin.sku = "case-1".into();
    let err = twin
        .into_active_model()
        .reset_all()
        .insert(conn)
        .await
        .unwrap_err();
    assert_eq!(
        violated_unique(&err),
        Some(Violated::Index(PRODUCTS_SKU_KEY.name.into()))
    );
}
