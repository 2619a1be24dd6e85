//! Tabular text: a CSV file read as cells (quoted fields allowed), with its header detected
//! or declared and its columns named or numbered. Typing the cells (numbers, categories,
//! class names) is `tabular`'s job; this file only says precisely where a file is malformed.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Rows looked at to decide whether the first line is a header.
const HEADER_SNIFF_ROWS: usize = 100;

/// Cells that mean "no value", as pandas' `read_csv` reads them by default (a subset).
const MISSING_MARKERS: [&str; 9] = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?"];

/// Whether a cell stands for a missing value.
pub fn is_missing(cell: &str) -> bool {
    MISSING_MARKERS.contains(&cell)
}

/// A column, by its header name or its 0-based position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ColumnRef {
    Index(usize),
    Name(String),
}

impl std::fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnRef::Index(i) => write!(f, "{i} (0-based)"),
            ColumnRef::Name(name) => write!(f, "{}", Quoted(name)),
        }
    }
}

/// A cell or name from a file, quoted for a message and cut short when long: a 10 MB cell
/// must not become a 10 MB error line.
pub struct Quoted<'a>(pub &'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 40;
        match self.0.char_indices().nth(SHOWN) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// Calls `each` with every record of CSV text that is not a blank line, with its 1-based
/// line number and its cells trimmed; rows may differ in width (the caller says whether
/// that is an error). kiln's one CSV reader, for tables and numeric files alike; `path`
/// only names the file in errors.
pub(crate) fn for_each_record(
    text: &str,
    path: &Path,
    mut each: impl FnMut(usize, &csv::StringRecord) -> Result<()>,
) -> Result<()> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text); // BOM written by some spreadsheets
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    // Line numbers from byte offsets: the reader's own line count skips blank lines.
    let (mut counted_to, mut line) = (0usize, 1usize);
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return Err(Error::data(path, format!("is not valid CSV: {e}"))),
        }
        let mut start = record.position().map_or(counted_to, |p| p.byte() as usize);
        // The reported start may be that of blank lines skipped before the record.
        while matches!(text.as_bytes().get(start), Some(b'\n' | b'\r')) {
            start += 1;
        }
        line += text.as_bytes()[counted_to..start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        counted_to = start;
        // A blank (or all-space) line reads as one empty cell; `,,` is a row of gaps.
        let blank = record.len() == 1 && record[0].is_empty();
        if !blank {
            each(line, &record)?;
        }
    }
}

/// A CSV file as trimmed text cells, every row as wide as the first.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTable {
    /// The header's names, or "column 1", "column 2", … when there is none.
    pub names: Vec<String>,
    pub has_header: bool,
    /// Data rows: (1-based line number in the file, cells).
    pub rows: Vec<(usize, Vec<String>)>,
}

impl RawTable {
    /// Parses CSV text; `header` None = detect. `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path, header: Option<bool>) -> Result<RawTable> {
        let mut rows: Vec<(usize, Vec<String>)> = Vec::new();
        for_each_record(text, path, |line, record| {
            // A row without a single value is skipped, as tables always skipped it.
            if !record.iter().all(str::is_empty) {
                rows.push((line, record.iter().map(str::to_string).collect()));
            }
            Ok(())
        })?;
        let Some((_, first)) = rows.first() else {
            return Err(Error::data(path, "is empty: no rows"));
        };
        let width = first.len();
        if let Some((line, cells)) = rows.iter().find(|(_, cells)| cells.len() != width) {
            return Err(Error::data(
                path,
                format!(
                    "line {line} has {} columns, expected {width} (as on line {})",
                    cells.len(),
                    rows[0].0
                ),
            ));
        }
        let mut table = RawTable {
            names: (1..=width).map(|i| format!("column {i}")).collect(),
            has_header: false,
            rows,
        };
        if header.unwrap_or_else(|| looks_like_header(&table.rows)) {
            table.take_header(path)?;
        }
        Ok(table)
    }

    /// Makes the first row the header.
    pub fn take_header(&mut self, path: &Path) -> Result<()> {
        let (_, names) = self.rows.remove(0);
        check_names(&names, path)?;
        self.names = names;
        self.has_header = true;
        if self.rows.is_empty() {
            return Err(Error::data(path, "has a header but no data rows"));
        }
        Ok(())
    }

    /// Reads a CSV file (raw or gzip); `header` None = detect.
    pub fn read(path: &Path, header: Option<bool>) -> Result<RawTable> {
        RawTable::parse(&super::csv::read_text(path)?, path, header)
    }

    pub fn width(&self) -> usize {
        self.names.len()
    }

    /// The 0-based position of a column, or an error listing the columns there are.
    pub fn position(&self, column: &ColumnRef, path: &Path, role: &str) -> Result<usize> {
        let found = match column {
            ColumnRef::Index(i) => (*i < self.width()).then_some(*i),
            ColumnRef::Name(name) => self.names.iter().position(|n| n == name),
        };
        found.ok_or_else(|| {
            let there = match self.has_header {
                true => format!("its columns are {}", quoted_list(&self.names)),
                false => format!("it has no header and {} columns", self.width()),
            };
            Error::data(path, format!("{role} column {column} does not exist: {there}"))
        })
    }
}

/// The names as `"a", "b", "c"`.
pub fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| Quoted(n).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_names(names: &[String], path: &Path) -> Result<()> {
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(Error::data(path, format!("header: column {} has no name", i + 1)));
        }
        if names[..i].contains(name) {
            return Err(Error::data(
                path,
                format!("header: column name {} appears twice", Quoted(name)),
            ));
        }
    }
    Ok(())
}

/// A first row is a header when one of its cells is text in a column whose other cells are
/// numbers (or missing); or, in a table of text columns only, when none of its cells occurs
/// again in its column (a header names a column, a value repeats).
pub(super) fn looks_like_header(rows: &[(usize, Vec<String>)]) -> bool {
    let (_, first) = &rows[0];
    let body = &rows[1..rows.len().min(HEADER_SNIFF_ROWS + 1)];
    if body.is_empty() {
        return first.iter().any(|c| !is_missing(c) && !is_number(c));
    }
    let numeric_body = |col: usize| {
        body.iter()
            .all(|(_, r)| is_missing(&r[col]) || is_number(&r[col]))
    };
    let numeric_columns: Vec<usize> = (0..first.len()).filter(|&c| numeric_body(c)).collect();
    if numeric_columns
        .iter()
        .any(|&c| !is_missing(&first[c]) && !is_number(&first[c]))
    {
        return true;
    }
    numeric_columns.is_empty()
        && first
            .iter()
            .enumerate()
            .all(|(c, cell)| !is_missing(cell) && body.iter().all(|(_, r)| &r[c] != cell))
}

pub fn is_number(cell: &str) -> bool {
    cell.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RawTable> {
        RawTable::parse(text, Path::new("t.csv"), None)
    }

    #[test]
    fn detects_headers_over_numeric_and_text_columns() {
        assert!(parse("a,b,label\n1,2,x\n3,4,y\n").unwrap().has_header);
        assert!(!parse("1,2,x\n3,4,y\n").unwrap().has_header);
        assert!(parse("colour,size\nred,S\nblue,M\nred,M\n").unwrap().has_header);
        // A repeated first value is data, not a name.
        assert!(!parse("red,S\nblue,M\nred,M\n").unwrap().has_header);
        // A gap in the first data row is a missing value, not a header.
        assert!(!parse("1,,0\n3,4,1\n").unwrap().has_header);
    }

    #[test]
    fn reads_quoted_cells_and_skips_blank_lines() {
        let t = parse("city,n\n\"New York, NY\",3\n\n  Paris , 4 \n").unwrap();
        assert_eq!(t.names, vec!["city", "n"]);
        assert_eq!(t.rows[0].1, vec!["New York, NY", "3"]);
        assert_eq!(t.rows[1], (4, vec!["Paris".to_string(), "4".to_string()]));
        let t = parse("\n\n1,\"a\nb\"\n\n2,c\n").unwrap();
        assert_eq!((t.rows[0].0, t.rows[1].0), (3, 6));
    }

    #[test]
    fn malformed_files_are_errors_naming_the_place() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert_eq!(err(""), "t.csv: is empty: no rows");
        assert_eq!(err("\n \n"), "t.csv: is empty: no rows");
        assert_eq!(err("a,b\n"), "t.csv: has a header but no data rows");
        let ragged = err("a,b,c\n1,2,3\n4,5\n");
        assert_eq!(ragged, "t.csv: line 3 has 2 columns, expected 3 (as on line 1)");
        assert!(err("a,a\n1,2\n").contains("\"a\" appears twice"));
    }

    #[test]
    fn finds_columns_by_name_or_position() {
        let t = parse("x,y,kind\n1,2,a\n").unwrap();
        let path = Path::new("t.csv");
        assert_eq!(
            t.position(&ColumnRef::Name("kind".into()), path, "label")
                .unwrap(),
            2
        );
        assert_eq!(t.position(&ColumnRef::Index(1), path, "label").unwrap(), 1);
        let e = t
            .position(&ColumnRef::Name("class".into()), path, "label")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv: label column \"class\" does not exist: its columns are \"x\", \"y\", \"kind\""
        );
        assert!(t.position(&ColumnRef::Index(3), path, "feature").is_err());
    }

    #[test]
    fn recognises_missing_markers() {
        for m in ["", "NA", "?", "NaN", "null"] {
            assert!(is_missing(m), "{m}");
        }
        assert!(!is_missing("0") && !is_missing("na ") && !is_missing("none"));
    }

    #[test]
    fn a_long_cell_is_cut_in_messages() {
        assert_eq!(Quoted("abc").to_string(), "\"abc\"");
        let long = "x".repeat(10 << 20);
        let shown = Quoted(&long).to_string();
        assert!(
            shown.len() < 80 && shown.ends_with("… (10485760 bytes)"),
            "{shown}"
        );
        // Cut on a character boundary.
        assert!(Quoted(&"é".repeat(100)).to_string().contains("(200 bytes)"));
    }
}
