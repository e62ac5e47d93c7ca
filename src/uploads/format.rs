//! Reading an uploaded file as a header and data rows, whatever its format:
//! CSV (UTF-8, with or without BOM; comma, semicolon or tab, detected from
//! the header row) or Excel `.xlsx` (the first sheet), told apart by content,
//! not by name. Rows are handed to a visitor one at a time: the file is never
//! held parsed as a whole.

use std::io::Cursor;

use calamine::{DataRef, Reader, Xlsx};

/// Why a whole file is refused; the job FAILS with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FileError(pub String);

impl FileError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv { delimiter: u8 },
    Xlsx,
}

/// One data row: its 1-based number (the header excluded) and its cells in
/// the header's column order, trimmed; a missing cell is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    pub number: u32,
    pub cells: Vec<String>,
    /// The row has more cells than the header has columns.
    pub extra_cells: usize,
}

impl RawRow {
    fn is_blank(&self) -> bool {
        self.extra_cells == 0 && self.cells.iter().all(String::is_empty)
    }
}

/// What reading a file calls back into.
pub trait RowVisitor {
    /// The header row, trimmed as written. Refusing it stops the read.
    fn header(&mut self, columns: &[String]) -> Result<(), FileError>;
    /// A data row that is not blank; `false` stops the read.
    fn row(&mut self, row: RawRow) -> Result<bool, FileError>;
}

const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
const OLE_MAGIC: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Tells the format from the first bytes.
pub fn detect(bytes: &[u8]) -> Result<Format, FileError> {
    if bytes.starts_with(ZIP_MAGIC) {
        return Ok(Format::Xlsx);
    }
    if bytes.starts_with(OLE_MAGIC) {
        return Err(FileError::new(
            "this is an Excel 97-2003 (.xls) workbook, which is not supported: save it as .xlsx or CSV UTF-8",
        ));
    }
    let text = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    if let Err(e) = std::str::from_utf8(text) {
        let what = if text.iter().take(8192).any(|b| *b == 0) {
            "the file is neither CSV text nor an Excel .xlsx workbook (it looks binary)".to_string()
        } else {
            format!(
                "the file is not valid UTF-8 (at byte {}): save it as CSV UTF-8 or .xlsx",
                e.valid_up_to() + 1
            )
        };
        return Err(FileError::new(what));
    }
    if text.contains(&0) {
        return Err(FileError::new(
            "the file is neither CSV text nor an Excel .xlsx workbook (it contains NUL bytes)",
        ));
    }
    let first_line = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let count = |d: u8| first_line.iter().filter(|b| **b == d).count();
    let delimiter = [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| (count(*d), *d == b','))
        .unwrap_or(b',');
    Ok(Format::Csv { delimiter })
}

/// Reads `bytes` into `visitor`: the header, then each data row that is not
/// blank. Returns the format it read.
pub fn read(bytes: &[u8], visitor: &mut dyn RowVisitor) -> Result<Format, FileError> {
    let format = detect(bytes)?;
    match format {
        Format::Csv { delimiter } => read_csv(bytes, delimiter, visitor)?,
        Format::Xlsx => read_xlsx(bytes, visitor)?,
    }
    Ok(format)
}

fn read_csv(bytes: &[u8], delimiter: u8, visitor: &mut dyn RowVisitor) -> Result<(), FileError> {
    let text = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(text);
    let mut record = csv::StringRecord::new();
    let csv_error = |e: csv::Error| {
        let line = e.position().map(|p| p.line()).unwrap_or_default();
        FileError::new(format!("the CSV file cannot be read at line {line}: {e}"))
    };
    if !reader.read_record(&mut record).map_err(csv_error)? {
        return Err(FileError::new(
            "the file is empty: a header row is required",
        ));
    }
    let header: Vec<String> = record.iter().map(|c| c.trim().to_string()).collect();
    let width = header.len();
    visitor.header(&header)?;
    let mut number = 0u32;
    while reader.read_record(&mut record).map_err(csv_error)? {
        number += 1;
        let mut cells: Vec<String> = record
            .iter()
            .take(width)
            .map(|c| c.trim().to_string())
            .collect();
        cells.resize(width, String::new());
        let extra_cells = record
            .iter()
            .skip(width)
            .filter(|c| !c.trim().is_empty())
            .count();
        let row = RawRow {
            number,
            cells,
            extra_cells,
        };
        if !row.is_blank() && !visitor.row(row)? {
            break;
        }
    }
    Ok(())
}

/// A cell as the text a user sees; whole numbers without a decimal point.
fn cell_text(cell: &DataRef<'_>) -> String {
    match cell {
        DataRef::Int(i) => i.to_string(),
        DataRef::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        DataRef::Float(f) => f.to_string(),
        DataRef::String(s) => s.trim().to_string(),
        DataRef::SharedString(s) => s.trim().to_string(),
        DataRef::Bool(b) => b.to_string(),
        DataRef::DateTime(d) => d.as_f64().to_string(),
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
        DataRef::Error(e) => format!("#{e:?}"),
        DataRef::Empty => String::new(),
    }
}

fn read_xlsx(bytes: &[u8], visitor: &mut dyn RowVisitor) -> Result<(), FileError> {
    let bad =
        |e: calamine::XlsxError| FileError::new(format!("not a readable .xlsx workbook: {e}"));
    let mut workbook: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).map_err(bad)?;
    let first = workbook
        .sheet_names()
        .into_iter()
        .next()
        .ok_or_else(|| FileError::new("the workbook has no sheet"))?;
    let mut cells = workbook.worksheet_cells_reader(&first).map_err(bad)?;
    // Header: the first row with a cell; its columns by sheet position.
    let mut header_row: Option<u32> = None;
    let mut columns: Vec<(u32, String)> = Vec::new();
    let mut current: Option<RawRow> = None;
    let mut positions: Vec<u32> = Vec::new();
    let finish = |row: Option<RawRow>, visitor: &mut dyn RowVisitor| -> Result<bool, FileError> {
        match row {
            Some(r) if !r.is_blank() => visitor.row(r),
            _ => Ok(true),
        }
    };
    while let Some(cell) = cells.next_cell().map_err(bad)? {
        let (r, c) = cell.get_position();
        let text = cell_text(cell.get_value());
        match header_row {
            None => {
                header_row = Some(r);
                columns.push((c, text));
            }
            Some(h) if h == r => columns.push((c, text)),
            Some(h) => {
                if positions.is_empty() {
                    let names: Vec<String> = columns.iter().map(|(_, n)| n.clone()).collect();
                    visitor.header(&names)?;
                    positions = columns.iter().map(|(c, _)| *c).collect();
                }
                let number = r - h;
                if current.as_ref().is_some_and(|row| row.number != number)
                    && !finish(current.take(), visitor)?
                {
                    return Ok(());
                }
                let row = current.get_or_insert_with(|| RawRow {
                    number,
                    cells: vec![String::new(); positions.len()],
                    extra_cells: 0,
                });
                match positions.iter().position(|p| *p == c) {
                    Some(i) => row.cells[i] = text,
                    None if !text.is_empty() => row.extra_cells += 1,
                    None => {}
                }
            }
        }
    }
    if header_row.is_none() {
        return Err(FileError::new(
            "the first sheet is empty: a header row is required",
        ));
    }
    if positions.is_empty() {
        let names: Vec<String> = columns.iter().map(|(_, n)| n.clone()).collect();
        visitor.header(&names)?;
    }
    finish(current.take(), visitor)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        header: Vec<String>,
        rows: Vec<RawRow>,
    }

    impl RowVisitor for Collect {
        fn header(&mut self, columns: &[String]) -> Result<(), FileError> {
            self.header = columns.to_vec();
            Ok(())
        }
        fn row(&mut self, row: RawRow) -> Result<bool, FileError> {
            self.rows.push(row);
            Ok(true)
        }
    }

    fn read_all(bytes: &[u8]) -> Result<(Format, Collect), FileError> {
        let mut c = Collect::default();
        let f = read(bytes, &mut c)?;
        Ok((f, c))
    }

    #[test]
    fn csv_delimiters_are_detected_from_the_header() -> Result<(), FileError> {
        for (text, d) in [
            ("sku,name\nA,x\n", b','),
            ("sku;name\nA;x,y\n", b';'),
            ("sku\tname\nA\tx;y\n", b'\t'),
        ] {
            let (format, c) = read_all(text.as_bytes())?;
            assert_eq!(format, Format::Csv { delimiter: d });
            assert_eq!(c.header, ["sku", "name"]);
            assert_eq!(c.rows[0].cells[0], "A");
        }
        Ok(())
    }

    #[test]
    fn csv_bom_quotes_blank_lines_and_short_rows() -> Result<(), FileError> {
        let text = "\u{feff} SKU , Name\n\"A,1\",\"two\nlines\"\n\n,\nB\nC,c,extra\n";
        let (_, c) = read_all(text.as_bytes())?;
        assert_eq!(c.header, ["SKU", "Name"]);
        assert_eq!(c.rows.len(), 3);
        assert_eq!(c.rows[0].cells, ["A,1", "two\nlines"]);
        assert_eq!((c.rows[1].number, c.rows[1].cells[1].as_str()), (3, ""));
        assert_eq!((c.rows[2].number, c.rows[2].extra_cells), (4, 1));
        Ok(())
    }

    #[test]
    fn binary_and_legacy_files_are_refused_with_a_reason() {
        let err = |b: &[u8]| read_all(b).err().map(|e| e.0).unwrap_or_default();
        assert!(err(&[0, 159, 146, 150, 0, 1]).contains("binary"));
        assert!(err(OLE_MAGIC).contains(".xls"));
        assert!(err(b"PK\x03\x04garbage").contains(".xlsx"));
        assert!(err(b"sku,name\n\xff\xfe,x\n").contains("UTF-8"));
        assert!(err(b"").contains("empty"));
    }
}
