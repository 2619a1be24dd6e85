//! Arbitrary bytes as CSV. The numeric reader (`parse_csv`) with the header detected,
//! forced on and forced off and with the label first or last; the feature-row reader for
//! prediction (`read_feature_rows`, path only: through a scratch file); the tabular
//! reader's cell parser (`RawTable::parse`) and its whole load (`load_table`, with the
//! default columns and with the label in column 0).
#![no_main]

use std::path::Path;

use kiln::data::{load_table, parse_csv, read_feature_rows, ColumnChoice, ColumnRef, CsvOptions, RawTable};
use kiln_fuzz::write_scratch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = Path::new("fuzz.csv");
    if let Ok(text) = std::str::from_utf8(data) {
        for (label_column, header) in [
            (None, None),
            (None, Some(true)),
            (None, Some(false)),
            (Some(0), None),
            (Some(1), Some(false)),
        ] {
            let options = CsvOptions { label_column, header };
            if let Ok(ds) = parse_csv(text, name, &options) {
                assert_eq!(ds.sample_shape.len(), 1);
                assert_eq!(ds.features.len(), ds.labels.len() * ds.sample_shape[0]);
                assert!(!ds.labels.is_empty());
                assert!(ds.features.iter().all(|v| v.is_finite()));
            }
        }
        for header in [None, Some(true), Some(false)] {
            if let Ok(table) = RawTable::parse(text, name, header) {
                assert!(table.rows.iter().all(|(_, cells)| cells.len() == table.width()));
            }
        }
    }
    // The path readers also take gzip, so they get the bytes as they are.
    let path = write_scratch("data.csv", data);
    if let Ok((features, rows, width)) = read_feature_rows(&path, None) {
        assert_eq!(features.len(), rows * width);
        let _ = read_feature_rows(&path, Some(width + 1));
    }
    let _ = load_table(&path, None, &ColumnChoice::default(), 0.2, 7);
    let first_is_label = ColumnChoice {
        label: Some(ColumnRef::Index(0)),
        ..ColumnChoice::default()
    };
    let _ = load_table(&path, None, &first_is_label, 0.5, 1);
});
