//! Numeric CSV: comma-separated numbers, one sample per line, an optional header line.
//! Read with the same CSV reader as tables (`table::for_each_record`, the `csv` crate), a
//! record at a time straight into numbers; every error names the file, line, column and
//! offending text.

use std::path::Path;

use crate::error::{Error, Result};

use super::gzip::read_maybe_gzip;
use super::table::{for_each_record, Quoted};
use super::Dataset;

/// How to read a labelled CSV file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsvOptions {
    /// 0-based index of the column holding the class label; `None` = the last column.
    pub label_column: Option<usize>,
    /// Whether the first line is a header; `None` = detect (a header has a non-numeric cell).
    pub header: Option<bool>,
}

/// Reads a labelled CSV file (raw or gzip, recognised by content) into a data set whose
/// sample shape is [number of feature columns].
pub fn read_csv(path: &Path, options: &CsvOptions) -> Result<Dataset> {
    parse_csv(&read_text(path)?, path, options)
}

/// Parses labelled CSV text; `path` only names the file in errors.
pub fn parse_csv(text: &str, path: &Path, options: &CsvOptions) -> Result<Dataset> {
    let label = match options.label_column {
        Some(c) => Label::At(c),
        None => Label::Last,
    };
    let table = parse_table(text, path, options.header, label)?;
    Dataset::new(table.features, vec![table.width], table.labels)
}

/// Reads unlabelled rows for prediction: (features row-major, rows, width). The header is
/// detected. With `expected_width`, a file with another number of columns is an error.
pub fn read_feature_rows(path: &Path, expected_width: Option<usize>) -> Result<(Vec<f32>, usize, usize)> {
    let table = parse_table(&read_text(path)?, path, None, Label::Absent)?;
    if let Some(expected) = expected_width.filter(|&e| e != table.width) {
        return Err(Error::data(
            path,
            format!(
                "rows have {} columns, expected {expected} (the model's input size)",
                table.width
            ),
        ));
    }
    Ok((table.features, table.labels.len(), table.width))
}

/// The file's text, decompressed if gzip. Binary content (a NUL byte, or bytes that are
/// not UTF-8) is named as such, with the byte and where it is.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = read_maybe_gzip(path)?;
    let binary = |at: usize, byte: u8| {
        Error::data(
            path,
            format!(
                "is binary, not CSV text (byte {byte:#04x} at offset {at}); nor is it IDX, whose files start with two zero bytes"
            ),
        )
    };
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(binary(at, 0));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        binary(at, e.as_bytes()[at])
    })
}

#[derive(Clone, Copy)]
enum Label {
    Absent,
    Last,
    At(usize),
}

/// Parsed rows: `width` features per row, and one label per row (a row count when unlabelled).
struct Table {
    features: Vec<f32>,
    labels: Vec<u32>,
    width: usize,
}

fn parse_table(text: &str, path: &Path, header: Option<bool>, label: Label) -> Result<Table> {
    // Set from the first record: the column count, the label's column, and the table.
    let mut layout: Option<(usize, Option<usize>, Table)> = None;
    for_each_record(text, path, |line_no, record| {
        let cells: Vec<&str> = record.iter().collect();
        match &mut layout {
            Some((columns, label_at, table)) => parse_row(&cells, line_no, *columns, *label_at, path, table),
            None => {
                let columns = cells.len();
                let label_at = label_index(label, columns, path)?;
                let (columns, label_at, table) = layout.insert((
                    columns,
                    label_at,
                    Table {
                        features: Vec::new(),
                        labels: Vec::new(),
                        width: columns - usize::from(label_at.is_some()),
                    },
                ));
                match header.unwrap_or_else(|| looks_like_header(&cells)) {
                    true => Ok(()),
                    false => parse_row(&cells, line_no, *columns, *label_at, path, table),
                }
            }
        }
    })?;
    let Some((_, _, table)) = layout else {
        return Err(Error::data(path, "is empty: no rows"));
    };
    if table.labels.is_empty() {
        return Err(Error::data(path, "has a header but no data rows"));
    }
    Ok(table)
}

/// The label's column, checked against the number of columns; a labelled file needs at
/// least one feature besides it.
fn label_index(label: Label, columns: usize, path: &Path) -> Result<Option<usize>> {
    let at = match label {
        Label::Absent => return Ok(None),
        Label::Last => columns - 1,
        Label::At(c) if c < columns => c,
        Label::At(c) => {
            return Err(Error::data(
                path,
                format!("label column {c} (0-based) does not exist: rows have {columns} columns"),
            ))
        }
    };
    if columns < 2 {
        return Err(Error::data(
            path,
            "rows have 1 column: need at least one feature besides the label",
        ));
    }
    Ok(Some(at))
}

/// A header line has a cell that is not a number; an empty cell is a missing value, not a
/// name, so a data row with a gap is reported as an error rather than dropped as a header.
fn looks_like_header(cells: &[&str]) -> bool {
    cells.iter().any(|c| !c.is_empty() && c.parse::<f64>().is_err())
}

fn parse_row(
    cells: &[&str],
    line_no: usize,
    columns: usize,
    label_at: Option<usize>,
    path: &Path,
    table: &mut Table,
) -> Result<()> {
    if cells.len() != columns {
        return Err(Error::data(
            path,
            format!("line {line_no} has {} columns, expected {columns}", cells.len()),
        ));
    }
    for (col, &cell) in cells.iter().enumerate() {
        let at =
            |message: String| Error::data(path, format!("line {line_no}, column {}: {message}", col + 1));
        if Some(col) == label_at {
            table.labels.push(parse_label(cell).map_err(at)?);
        } else {
            table.features.push(parse_value(cell).map_err(at)?);
        }
    }
    if label_at.is_none() {
        table.labels.push(0); // unlabelled: one placeholder per row keeps the row count
    }
    Ok(())
}

fn parse_value(cell: &str) -> std::result::Result<f32, String> {
    match cell.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("{} is not a finite number", Quoted(cell))),
        Err(_) if cell.is_empty() => Err("empty cell: missing value".to_string()),
        Err(_) => Err(format!("{} is not a number", Quoted(cell))),
    }
}

/// Class labels are non-negative integers; "3.0" is accepted, as numeric exports write it.
fn parse_label(cell: &str) -> std::result::Result<u32, String> {
    match cell.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f64 => Ok(v as u32),
        _ => Err(format!("label {} is not a non-negative integer", Quoted(cell))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::{gzip, TempDir};

    fn parse(text: &str, options: &CsvOptions) -> Result<Dataset> {
        parse_csv(text, Path::new("data.csv"), options)
    }

    fn err(text: &str) -> String {
        parse(text, &CsvOptions::default()).unwrap_err().to_string()
    }

    #[test]
    fn reads_features_and_last_column_labels_skipping_blank_lines() {
        let ds = parse("1, 2.5, 0\n\n  -3,4e1,2  \r\n", &CsvOptions::default()).unwrap();
        assert_eq!(ds.features, vec![1.0, 2.5, -3.0, 40.0]);
        assert_eq!(ds.labels, vec![0, 2]);
        assert_eq!(ds.sample_shape, vec![2]);
    }

    #[test]
    fn detects_a_header_or_follows_the_option() {
        let text = "x,y,label\n1,2,1\n3,4,0\n";
        let ds = parse(text, &CsvOptions::default()).unwrap();
        assert_eq!((ds.len(), ds.labels.clone()), (2, vec![1, 0]));
        assert_eq!(parse("1,2,1\n3,4,0\n", &CsvOptions::default()).unwrap().len(), 2);
        // Forcing a header on numeric data drops the first row; forcing none on names fails.
        let forced = CsvOptions {
            header: Some(true),
            ..Default::default()
        };
        assert_eq!(parse("1,2,1\n3,4,0\n", &forced).unwrap().labels, vec![0]);
        let no_header = CsvOptions {
            header: Some(false),
            ..Default::default()
        };
        let text = parse(text, &no_header).unwrap_err().to_string();
        assert_eq!(text, "data.csv: line 1, column 1: \"x\" is not a number");
    }

    #[test]
    fn takes_the_label_from_the_chosen_column() {
        let options = CsvOptions {
            label_column: Some(0),
            header: None,
        };
        let ds = parse("7,1,2\n3,4,5\n", &options).unwrap();
        assert_eq!(ds.labels, vec![7, 3]);
        assert_eq!(ds.features, vec![1.0, 2.0, 4.0, 5.0]);
        let options = CsvOptions {
            label_column: Some(3),
            header: None,
        };
        assert!(parse("7,1,2\n", &options)
            .unwrap_err()
            .to_string()
            .contains("label column 3"));
    }

    #[test]
    fn a_non_numeric_cell_is_reported_with_line_column_and_text() {
        assert_eq!(
            err("1,2,0\n\n3,abc,1\n"),
            "data.csv: line 3, column 2: \"abc\" is not a number"
        );
        assert_eq!(
            err("1,2,0\n3,,1\n"),
            "data.csv: line 2, column 2: empty cell: missing value"
        );
    }

    #[test]
    fn non_finite_values_are_rejected() {
        assert!(err("1,2,0\nNaN,2,0\n").contains("line 2, column 1: \"NaN\" is not a finite number"));
        assert!(err("1,inf,0\n").contains("\"inf\" is not a finite number"));
        assert!(err("1,1e60,0\n").contains("\"1e60\" is not a finite number"));
    }

    #[test]
    fn a_row_of_empty_cells_is_a_gap_not_a_blank_line() {
        let e = err("1,2,0\n,,\n3,4,1\n");
        assert!(e.contains("line 2, column 1") && e.contains("empty cell"), "{e}");
    }

    #[test]
    fn a_ragged_row_is_reported() {
        assert_eq!(
            err("1,2,0\n1,2,0\n1,2,3,0\n"),
            "data.csv: line 3 has 4 columns, expected 3"
        );
        assert_eq!(err("1,2,0\n1,0\n"), "data.csv: line 2 has 2 columns, expected 3");
    }

    #[test]
    fn labels_must_be_non_negative_integers() {
        assert_eq!(
            err("1,2,-1\n"),
            "data.csv: line 1, column 3: label \"-1\" is not a non-negative integer"
        );
        assert!(err("1,2,0\n1,2,2.5\n").contains("line 2, column 3: label \"2.5\""));
        assert_eq!(
            parse("1,2,3.0\n", &CsvOptions::default()).unwrap().labels,
            vec![3]
        );
    }

    #[test]
    fn empty_input_and_header_only_are_errors() {
        assert_eq!(err(""), "data.csv: is empty: no rows");
        assert_eq!(err(" \n\n"), "data.csv: is empty: no rows");
        assert!(err("a,b,c\n").contains("no data rows"));
        assert!(err("1\n2\n").contains("at least one feature"));
    }

    #[test]
    fn reads_gzip_files_and_feature_rows() {
        let dir = TempDir::new("csv");
        let path = dir.path().join("train.csv");
        std::fs::write(&path, gzip(b"a,b,y\n1,2,1\n3,4,0\n")).unwrap();
        let ds = read_csv(&path, &CsvOptions::default()).unwrap();
        assert_eq!((ds.features, ds.labels), (vec![1.0, 2.0, 3.0, 4.0], vec![1, 0]));

        let rows = dir.path().join("x.csv");
        std::fs::write(&rows, "f1,f2\n0.5,1\n2,3\n4,5\n").unwrap();
        assert_eq!(
            read_feature_rows(&rows, Some(2)).unwrap(),
            (vec![0.5, 1.0, 2.0, 3.0, 4.0, 5.0], 3, 2)
        );
        let text = read_feature_rows(&rows, Some(64)).unwrap_err().to_string();
        assert!(text.contains("x.csv: rows have 2 columns, expected 64"), "{text}");
        let missing = read_csv(&dir.path().join("nope.csv"), &CsvOptions::default()).unwrap_err();
        assert!(missing.to_string().contains("nope.csv"));
    }
}
