//! The columns of each upload kind, and a file's rows typed against them.
//! Everything here depends only on the file; what depends on the database
//! (does the SKU exist, is there enough stock) is the worker's.

use std::collections::HashMap;

use super::format::{FileError, RawRow, RowVisitor};
use crate::entity::stock_movement::MovementKind;
use crate::entity::upload_job::UploadKind;
use crate::service::products::normalize_sku;

/// A refused row: the column at fault (as named in the file's header
/// convention) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub column: Option<String>,
    pub message: String,
}

impl RowError {
    pub fn new(column: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            column: column.map(String::from),
            message: message.into(),
        }
    }
}

/// One PRODUCTS row; `None` is an empty cell (or no such column).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductRow {
    pub sku: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub unit: Option<String>,
    pub low_stock_threshold: Option<i64>,
    pub unit_cost: Option<i64>,
    pub initial_stock: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementRow {
    pub sku: String,
    pub kind: MovementKind,
    pub quantity: i64,
    pub note: Option<String>,
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowData {
    Product(ProductRow),
    Movement(MovementRow),
}

impl RowData {
    pub fn sku(&self) -> &str {
        match self {
            Self::Product(p) => &p.sku,
            Self::Movement(m) => &m.sku,
        }
    }
}

/// A row as the worker gets it: typed, or refused for what the file alone
/// shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub number: u32,
    pub data: Result<RowData, RowError>,
}

/// The columns a kind accepts, the required ones first.
pub fn columns(kind: UploadKind) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        UploadKind::Products => (
            &["sku"],
            &[
                "name",
                "description",
                "category",
                "unit",
                "low_stock_threshold",
                "unit_cost",
                "initial_stock",
            ],
        ),
        UploadKind::StockMovements => (&["sku", "kind", "quantity"], &["note", "reference"]),
    }
}

/// The service's field names (camelCase) as the file's column names.
pub fn column_of_field(field: &str) -> String {
    let mut out = String::with_capacity(field.len() + 4);
    for c in field.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Types rows against a kind's columns; for PRODUCTS, a SKU seen on an
/// earlier row (of the whole file, rows skipped on resume included) is an
/// error on every later row.
pub struct RowTyper {
    kind: UploadKind,
    /// For each accepted column, its index in the file.
    index: HashMap<&'static str, usize>,
    width: usize,
    seen: HashMap<String, u32>,
}

impl RowTyper {
    /// Checks the header: every required column present, no unknown or
    /// repeated one (names trimmed, any case).
    pub fn new(kind: UploadKind, header: &[String]) -> Result<Self, FileError> {
        let (required, optional) = columns(kind);
        let mut index = HashMap::new();
        for (i, raw) in header.iter().enumerate() {
            let name = raw.trim().to_lowercase();
            let Some(known) = required.iter().chain(optional).find(|c| **c == name) else {
                let shown = if name.is_empty() {
                    format!("column {} has no name", i + 1)
                } else {
                    format!("unknown column \"{}\"", raw.trim())
                };
                return Err(FileError::new(format!(
                    "{shown}; the columns of a {} file are {}",
                    kind.as_str(),
                    required
                        .iter()
                        .chain(optional)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            if index.insert(*known, i).is_some() {
                return Err(FileError::new(format!("column \"{known}\" appears twice")));
            }
        }
        let missing: Vec<&str> = required
            .iter()
            .filter(|c| !index.contains_key(*c))
            .copied()
            .collect();
        if !missing.is_empty() {
            return Err(FileError::new(format!(
                "missing required column{} {}",
                if missing.len() > 1 { "s" } else { "" },
                missing
                    .iter()
                    .map(|c| format!("\"{c}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(Self {
            kind,
            index,
            width: header.len(),
            seen: HashMap::new(),
        })
    }

    fn cell<'a>(&self, row: &'a RawRow, column: &str) -> Option<&'a str> {
        let i = *self.index.get(column)?;
        row.cells
            .get(i)
            .map(String::as_str)
            .filter(|c| !c.is_empty())
    }

    fn whole(&self, row: &RawRow, column: &str) -> Result<Option<i64>, RowError> {
        match self.cell(row, column) {
            None => Ok(None),
            Some(text) => text.replace('_', "").parse::<i64>().map(Some).map_err(|_| {
                RowError::new(Some(column), format!("\"{text}\" is not a whole number"))
            }),
        }
    }

    pub fn type_row(&mut self, raw: &RawRow) -> Row {
        Row {
            number: raw.number,
            data: self.typed(raw),
        }
    }

    fn typed(&mut self, raw: &RawRow) -> Result<RowData, RowError> {
        if raw.extra_cells > 0 {
            return Err(RowError::new(
                None,
                format!(
                    "the row has values beyond the header's {} columns",
                    self.width
                ),
            ));
        }
        let sku = match self.cell(raw, "sku") {
            None => return Err(RowError::new(Some("sku"), "sku is required")),
            Some(s) => {
                normalize_sku("sku", s).map_err(|e| RowError::new(Some("sku"), e.to_string()))?
            }
        };
        let text = |c: &str| self.cell(raw, c).map(String::from);
        match self.kind {
            UploadKind::Products => {
                let key = sku.to_ascii_lowercase();
                if let Some(first) = self.seen.get(&key) {
                    return Err(RowError::new(
                        Some("sku"),
                        format!(
                            "SKU {sku} appears more than once in this file (first on row {first})"
                        ),
                    ));
                }
                let row = ProductRow {
                    name: text("name"),
                    description: text("description"),
                    category: text("category"),
                    unit: text("unit"),
                    low_stock_threshold: self.whole(raw, "low_stock_threshold")?,
                    unit_cost: self.whole(raw, "unit_cost")?,
                    initial_stock: self.whole(raw, "initial_stock")?,
                    sku,
                };
                self.seen.insert(key, raw.number);
                Ok(RowData::Product(row))
            }
            UploadKind::StockMovements => {
                let kind = match self
                    .cell(raw, "kind")
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                {
                    Some("inbound") => MovementKind::Inbound,
                    Some("outbound") => MovementKind::Outbound,
                    Some("return") => MovementKind::Return,
                    Some("adjustment") => MovementKind::Adjustment,
                    None => return Err(RowError::new(Some("kind"), "kind is required")),
                    Some(other) => {
                        return Err(RowError::new(
                            Some("kind"),
                            format!(
                                "\"{other}\" is not a movement kind (inbound, outbound, return or adjustment)"
                            ),
                        ));
                    }
                };
                let quantity = self
                    .whole(raw, "quantity")?
                    .ok_or_else(|| RowError::new(Some("quantity"), "quantity is required"))?;
                Ok(RowData::Movement(MovementRow {
                    sku,
                    kind,
                    quantity,
                    note: text("note"),
                    reference: text("reference"),
                }))
            }
        }
    }
}

/// Counts the rows of a file and checks its header, applying nothing: what
/// the worker does before the first batch.
pub struct Scan {
    pub kind: UploadKind,
    pub max_rows: u32,
    pub rows: u32,
}

impl RowVisitor for Scan {
    fn header(&mut self, columns: &[String]) -> Result<(), FileError> {
        RowTyper::new(self.kind, columns).map(drop)
    }

    fn row(&mut self, _row: RawRow) -> Result<bool, FileError> {
        self.rows += 1;
        if self.rows > self.max_rows {
            return Err(FileError::new(format!(
                "the file has more than UPLOAD_MAX_ROWS ({}) data rows; split it",
                self.max_rows
            )));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(cols: &[&str]) -> Vec<String> {
        cols.iter().map(|c| c.to_string()).collect()
    }

    fn raw(number: u32, cells: &[&str]) -> RawRow {
        RawRow {
            number,
            cells: cells.iter().map(|c| c.to_string()).collect(),
            extra_cells: 0,
        }
    }

    #[test]
    fn headers_are_checked_by_name_in_any_case() {
        let err = |kind, cols: &[&str]| {
            RowTyper::new(kind, &header(cols))
                .err()
                .map(|e| e.0)
                .unwrap_or_default()
        };
        assert!(RowTyper::new(UploadKind::Products, &header(&[" SKU ", "Name"])).is_ok());
        assert!(err(UploadKind::Products, &["name"]).contains("missing required column \"sku\""));
        assert!(
            err(UploadKind::Products, &["sku", "colour"]).contains("unknown column \"colour\"")
        );
        assert!(err(UploadKind::Products, &["sku", "sku"]).contains("twice"));
        assert!(err(UploadKind::StockMovements, &["sku"]).contains("\"kind\", \"quantity\""));
    }

    #[test]
    fn rows_are_typed_with_the_column_at_fault() -> Result<(), FileError> {
        let mut t = RowTyper::new(
            UploadKind::StockMovements,
            &header(&["sku", "kind", "quantity", "note"]),
        )?;
        let ok = t.type_row(&raw(1, &["A-1", "OutBound", "1_000", ""]));
        assert_eq!(
            ok.data,
            Ok(RowData::Movement(MovementRow {
                sku: "A-1".into(),
                kind: MovementKind::Outbound,
                quantity: 1000,
                note: None,
                reference: None,
            }))
        );
        let column = |r: Row| r.data.err().and_then(|e| e.column);
        assert_eq!(
            column(t.type_row(&raw(2, &["", "inbound", "1", ""]))),
            Some("sku".into())
        );
        assert_eq!(
            column(t.type_row(&raw(3, &["A", "sideways", "1", ""]))),
            Some("kind".into())
        );
        assert_eq!(
            column(t.type_row(&raw(4, &["A", "inbound", "1.5", ""]))),
            Some("quantity".into())
        );
        Ok(())
    }

    #[test]
    fn a_sku_twice_in_a_products_file_fails_the_later_rows() -> Result<(), FileError> {
        let mut t = RowTyper::new(UploadKind::Products, &header(&["sku", "name"]))?;
        assert!(t.type_row(&raw(1, &["ab-1", "x"])).data.is_ok());
        let again = t.type_row(&raw(5, &["AB-1", "y"]));
        assert!(
            again
                .data
                .err()
                .is_some_and(|e| e.message.contains("first on row 1"))
        );
        Ok(())
    }

    #[test]
    fn field_names_become_column_names() {
        assert_eq!(column_of_field("lowStockThreshold"), "low_stock_threshold");
        assert_eq!(column_of_field("sku"), "sku");
    }
}
